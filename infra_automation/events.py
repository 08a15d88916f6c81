"""Run events and their observers (the progress view, the docs writer, the run record).

Observers see every event of a run, in order per step. Kinds:

- ``run.started``   data: service, project, check, steps (ids), requester
- ``step.started``  step_id, data: department, executor
- ``step.log``      step_id, data: whatever the executor emitted (``ctx.emit(kind, data)``;
                    the executor's kind is in ``data["kind"]``, e.g. per-host Ansible task events)
- ``step.finished`` step_id, data: status, changed, error, duration
- ``run.finished``  data: status, failed_steps, skipped_steps, changed
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
