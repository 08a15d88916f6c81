"""Run events and their observers (the progress view, the docs writer, the run record).

Observers see every event of a run, in order per step. Observers are found through the
``infra_automation.observers`` entry-point group; each factory is called with the project
root (``Path``) and the run database (a SQLAlchemy ``Engine``) and returns an
:class:`Observer`. Payloads (``Event.data``), JSON-safe and already passed through
:func:`infra_automation.secrets.redact`:

- ``run.started``   service, project, requester, check (bool), parallel, resumed_from
                    (run id or None), request (the validated request: service, project,
                    requester, params), plan: list of {id, department, executor, needs: [ids],
                    description}
- ``step.started``  (step_id set) department, executor
- ``step.log``      (step_id set) kind (the executor's event kind), plus what it emitted
                    (e.g. {"kind": "task", "host": "debian1", "task": "nginx", "status": "ok"})
- ``step.finished`` (step_id set) department, executor, status ("success" | "failed" |
                    "skipped"), changed, error, error_kind (None or one of
                    results.ErrorKind: unreachable, auth, timeout, rejected, invalid,
                    internal), diff, outputs, targets: list of {target, status, changed,
                    diff, error, error_kind, details}, artifacts, started_at,
                    finished_at (ISO 8601 or None), duration (seconds or None), reused (bool:
                    True when resume reused an earlier run's result)
- ``run.finished``  status ("success" | "failed"), failed_steps, skipped_steps, changed,
                    started_at, finished_at

``request`` of ``run.started`` also carries ``inventory`` (the request's inventory folder or
None), which ``infra resume`` needs. Reused steps of a resumed run get only ``step.finished``
(``reused`` True), right after ``run.started``; steps skipped because a dependency did not
succeed get only ``step.finished`` (``status`` "skipped", ``error`` names the dependency).
Diagnostics go to the run record and the progress view, never to entry-point observers:
``observer.error`` (observer, event, error) and ``run.warning`` (message).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Event:
    run_id: str
    kind: str
    step_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=utcnow)


class Observer(Protocol):
    """Receives run events. Must not raise; exceptions are caught and logged by the engine."""

    def on_event(self, event: Event) -> None: ...
