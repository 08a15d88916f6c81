"""SLA and OLA targets (``sla.yml`` in the project root) and their breaches.

Every key is optional; durations are ``90s``, ``30m``, ``4h``, ``2d`` (or a number of
seconds)::

    incidents:                      # the defaults of every incident
      response: 15m
      resolution: 4h
    services:                       # per catalog service
      project-landscape:
        delivery: 4h                # approval (the request when not approved) -> done
        incident_response: 15m      # incidents of runs of this service
        incident_resolution: 4h
    departments:                    # per department (the OLA)
      network:
        step: 30m                   # each step: ready (its needs done) -> done
        incident_response: 10m      # incidents the department owns (wins over the service)
        incident_resolution: 2h

:func:`breaches` flags each delivery, step and incident over its target with the run or
incident that caused it; one still open whose target has already passed is flagged
``ongoing`` (measured up to the end of the range).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from infra_automation import yamlio
from infra_automation.exceptions import ConfigurationError, InputFileError
from infra_automation.metrics.clock import StepClock
from infra_automation.metrics.history import Delivery
from infra_automation.metrics.incidents import Incident

SLA_FILE = "sla.yml"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds of ``90s``/``30m``/``4h``/``2d`` or of a number of seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m or 4h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as 90s, 30m, 4h or 2d")
        seconds = float(match[1]) * _UNIT[match[2]]
    if seconds <= 0:
        raise ValueError("a duration must be more than 0")
    return seconds


def parse_moment(value: str, now: datetime) -> datetime:
    """A span back from ``now`` (``30d``) or an ISO 8601 date/time (UTC when naive)."""
    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a span (90m, 12h, 30d) nor an ISO 8601 date"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IncidentTargets(_Model):
    response: Duration | None = None
    resolution: Duration | None = None


class ServiceTargets(_Model):
    delivery: Duration | None = None
    incident_response: Duration | None = None
    incident_resolution: Duration | None = None


class DepartmentTargets(_Model):
    step: Duration | None = None
    incident_response: Duration | None = None
    incident_resolution: Duration | None = None


class Targets(_Model):
    incidents: IncidentTargets = Field(default_factory=IncidentTargets)
    services: dict[str, ServiceTargets] = Field(default_factory=dict)
    departments: dict[str, DepartmentTargets] = Field(default_factory=dict)

    def incident_target(self, incident: Incident, which: str) -> float | None:
        """``which`` (response | resolution): the department's, the service's, the default."""
        department = self.departments.get(incident.department)
        service = self.services.get(incident.service or "")
        for declared in (department, service):
            value = getattr(declared, f"incident_{which}", None) if declared else None
            if value is not None:
                return float(value)
        default: float | None = getattr(self.incidents, which)
        return default


def load_targets(path: Path) -> Targets:
    """The targets declared in ``path`` (none when the file does not exist)."""
    if not path.is_file():
        return Targets()
    try:
        data = yamlio.load_mapping(path)
    except InputFileError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    return parse_targets(data, str(path))


def parse_targets(data: Mapping[str, Any], source: str) -> Targets:
    try:
        return Targets.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"{source}: {errors}") from exc


@dataclass(frozen=True)
class Breach:
    kind: str  # delivery | step | incident_response | incident_resolution
    target: float  # seconds
    actual: float  # seconds (up to the end of the range when ongoing)
    project: str
    service: str | None
    department: str | None
    run_id: str | None = None
    step_id: str | None = None
    incident_id: str | None = None
    ongoing: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "target": self.target,
            "actual": self.actual,
            "over": self.actual - self.target,
            "project": self.project,
            "service": self.service,
            "department": self.department,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "incident_id": self.incident_id,
            "ongoing": self.ongoing,
        }


def breaches(
    targets: Targets,
    deliveries: Sequence[Delivery],
    clocks: Sequence[StepClock],
    incidents: Sequence[Incident],
    now: datetime,
) -> list[Breach]:
    """Every delivery, step and incident over its target, in that order."""
    return [
        *_delivery_breaches(targets, deliveries, now),
        *_step_breaches(targets, clocks),
        *_incident_breaches(targets, incidents, now),
    ]


def _delivery_breaches(
    targets: Targets, deliveries: Sequence[Delivery], now: datetime
) -> Iterator[Breach]:
    for delivery in deliveries:
        declared = targets.services.get(delivery.service)
        if declared is None or declared.delivery is None:
            continue
        start = delivery.approved_at or delivery.requested_at
        done = delivery.done_at
        actual = ((done or now) - start).total_seconds()
        if actual > declared.delivery:
            run = delivery.done_run or delivery.runs[-1]
            yield Breach(
                "delivery",
                declared.delivery,
                actual,
                delivery.project,
                delivery.service,
                None,
                run_id=run.id,
                ongoing=done is None,
            )


def _step_breaches(targets: Targets, clocks: Sequence[StepClock]) -> Iterator[Breach]:
    if all(d.step is None for d in targets.departments.values()):
        return  # no step targets: no clock to look at
    for clock in clocks:
        declared = targets.departments.get(clock.department)
        if declared is None or declared.step is None or clock.waited <= declared.step:
            continue
        yield Breach(
            "step",
            declared.step,
            clock.waited,
            clock.project,
            clock.service,
            clock.department,
            run_id=clock.run_id,
            step_id=clock.step_id,
        )


def _incident_breaches(
    targets: Targets, incidents: Sequence[Incident], now: datetime
) -> Iterator[Breach]:
    for incident in incidents:
        ends = (("response", incident.responded_at), ("resolution", incident.resolved_at))
        for which, end in ends:
            target = targets.incident_target(incident, which)
            if target is None:
                continue
            actual = ((end or now) - incident.opened_at).total_seconds()
            if actual > target:
                yield Breach(
                    f"incident_{which}",
                    target,
                    actual,
                    incident.project,
                    incident.service,
                    incident.department,
                    run_id=incident.cause if incident.source == "run" else None,
                    incident_id=incident.id,
                    ongoing=end is None,
                )
