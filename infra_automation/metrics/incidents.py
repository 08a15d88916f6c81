"""Incidents, derived from the record: failed runs and detected drift.

- **A failed run** (``failed``, or ``interrupted``: its process died) of a project and
  service opens an incident ``run:<run id>`` for the department of the step that failed
  first, *opened* when the run finished (an interrupted run: when its last step started).
  Later runs of the same project and service join it until one succeeds: that run's finish
  *resolves* it.
- **Drift**: a verification that finds a department's resources of a project drifted opens
  ``drift:<verify id>:<department>`` (opened when the verification finished); the first later
  verification of the project that finds all of that department's resources in sync resolves
  it. Unverifiable resources neither open nor resolve.

An incident is *responded to* at the first act after it opened: an acknowledgement
(:mod:`infra_automation.metrics.store`), the request of a later applied run of the project
(a resume, a rerun, a repair) or an approval of a change of the project. Response time is
opened -> responded, resolution time opened -> resolved.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from infra_automation.metrics.history import History, RunFact, VerificationFact


@dataclass(frozen=True)
class Incident:
    id: str
    source: str  # run | drift
    project: str
    service: str | None  # None: drift (a project's resources, not one request)
    department: str
    opened_at: datetime
    cause: str  # the failed run's id or the verification's id
    step_id: str | None = None  # the failing step (runs)
    responded_at: datetime | None = None
    responded_by: str | None = None  # what the response was: "ack alice", "run <id>", ...
    resolved_at: datetime | None = None
    resolved_by: str | None = None  # the run or verification that resolved it

    @property
    def response_time(self) -> float | None:
        return _seconds(self.opened_at, self.responded_at)

    @property
    def resolution_time(self) -> float | None:
        return _seconds(self.opened_at, self.resolved_at)

    @property
    def open(self) -> bool:
        return self.resolved_at is None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "source": self.source,
            "project": self.project,
            "service": self.service,
            "department": self.department,
            "cause": self.cause,
            "step_id": self.step_id,
            "opened_at": self.opened_at.isoformat(),
            "responded_at": _iso(self.responded_at),
            "responded_by": self.responded_by,
            "resolved_at": _iso(self.resolved_at),
            "resolved_by": self.resolved_by,
            "response_time": self.response_time,
            "resolution_time": self.resolution_time,
        }


def derive_incidents(history: History) -> tuple[Incident, ...]:
    """Every incident of ``history`` with its response and resolution, oldest first."""
    found = [*_run_incidents(history.applied), *_drift_incidents(history.verifications)]
    acts = _Acts(history)
    responded = [_with_response(i, acts) for i in found]
    return tuple(sorted(responded, key=lambda i: (i.opened_at, i.id)))


def _run_incidents(runs: Sequence[RunFact]) -> Iterator[Incident]:
    by_request: dict[tuple[str, str], list[RunFact]] = defaultdict(list)
    for run in runs:
        by_request[(run.project, run.service)].append(run)
    for chain in by_request.values():
        yield from _incidents_of(chain)


def _incidents_of(runs: Sequence[RunFact]) -> Iterator[Incident]:
    current: Incident | None = None
    for run in runs:
        if run.status == "success" and current is not None:
            yield replace(current, resolved_at=run.finished_at, resolved_by=run.id)
            current = None
        elif run.failed and current is None:
            current = _opened_by(run)
    if current is not None:
        yield current


def _opened_by(run: RunFact) -> Incident:
    step = run.failing_step()
    opened = run.finished_at or (step.started_at if step else None) or run.started_at
    return Incident(
        id=f"run:{run.id}",
        source="run",
        project=run.project,
        service=run.service,
        department=step.department if step else "",
        opened_at=opened,
        cause=run.id,
        step_id=step.step_id if step else None,
    )


def _drift_incidents(verifications: Sequence[VerificationFact]) -> Iterator[Incident]:
    current: dict[tuple[str, str], Incident] = {}
    for check in sorted(verifications, key=lambda v: v.finished_at):
        for department in sorted({r.department for r in check.resources}):
            key, state = (check.project, department), check.state_of(department)
            if state == "drifted" and key not in current:
                current[key] = Incident(
                    id=f"drift:{check.id}:{department}",
                    source="drift",
                    project=check.project,
                    service=None,
                    department=department,
                    opened_at=check.finished_at,
                    cause=check.id,
                )
            elif state == "in-sync" and key in current:
                done = current.pop(key)
                yield replace(done, resolved_at=check.finished_at, resolved_by=check.id)
    yield from current.values()


class _Acts:
    """The acts that can answer an incident, indexed once per history."""

    def __init__(self, history: History) -> None:
        self.acks: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        for ack in history.acknowledgements:
            self.acks[ack.incident_id].append((ack.at, f"ack {ack.actor}"))
        self.by_project: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
        for run in history.applied:
            self.by_project[run.project].append((run.requested_at, f"run {run.id}"))
        for change in history.changes:
            approved = ((at, f"approval {who}") for who, at in change.approvals)
            self.by_project[change.project].extend(approved)
        for acts in self.by_project.values():
            acts.sort()

    def first(self, incident: Incident) -> tuple[datetime, str] | None:
        """The first act at or after the incident opened (and not after it was resolved)."""
        after, until = incident.opened_at, incident.resolved_at
        acts = self.by_project.get(incident.project, [])
        candidates = [a for a in self.acks.get(incident.id, []) if a[0] >= after]
        at = bisect_left(acts, (after, ""))
        if at < len(acts):
            candidates.append(acts[at])
        found = min(candidates, default=None)
        if found is None or (until is not None and found[0] > until):
            return None
        return found


def _with_response(incident: Incident, acts: _Acts) -> Incident:
    found = acts.first(incident)
    if found is None:
        return incident
    return replace(incident, responded_at=found[0], responded_by=found[1])


def _seconds(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds()


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
