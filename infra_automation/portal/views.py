"""View models of the run and change pages, read from the run record and its events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from infra_automation.changes import ChangeView
from infra_automation.portal.picture import nodes_of, svg
from infra_automation.record import EventRecord, RunRecord, StepRecord
from infra_automation.server import queries
from infra_automation.server.state import ServerState

MAX_EVENTS = 100_000


@dataclass(frozen=True)
class DepartmentView:
    name: str
    steps: list[StepRecord]
    current: str  # the department's current task ("" when none runs)

    @property
    def status(self) -> str:
        found = {s.status for s in self.steps}
        for status in ("failed", "running", "pending", "skipped"):
            if status in found:
                return status
        return "success"


@dataclass(frozen=True)
class RunView:
    run: RunRecord
    status: str  # the recorded status, or "interrupted" for a run no process holds
    live: bool
    departments: list[DepartmentView]
    picture: Markup
    last_seq: int
    failures: list[StepRecord] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not self.live


@dataclass
class Tracker:
    """What a follower of a run has read of its events: the last ``seq`` and the latest
    task each running step reported (``step.log`` events with a ``task``)."""

    last: int = 0
    tasks: dict[str, str] = field(default_factory=dict)

    def read(self, state: ServerState, run_id: str) -> bool:
        """Read the events after :attr:`last`; whether there were any."""
        found = queries.events_after(state.engine.db, run_id, self.last, MAX_EVENTS)
        self.update(found)
        return bool(found)

    def update(self, found: Sequence[EventRecord]) -> None:
        for event in found:
            self.last = event.seq
            if event.step_id is not None:
                self._note(event)

    def _note(self, event: EventRecord) -> None:
        sid = str(event.step_id)
        if event.kind == "step.log" and event.data.get("task"):
            host = event.data.get("host")
            task = str(event.data["task"])
            self.tasks[sid] = f"{host}: {task}" if host else task
        elif event.kind == "step.started":
            self.tasks.setdefault(sid, "started")
        elif event.kind == "step.finished":
            self.tasks.pop(sid, None)


def run_view(state: ServerState, run_id: str, tracker: Tracker | None = None) -> RunView:
    """The run as recorded now; ``tracker`` (read up to date by the caller, or here from
    the start) gives the current tasks."""
    if tracker is None:
        tracker = Tracker()
        tracker.read(state, run_id)
    db = state.engine.db
    live = queries.run_is_live(db, run_id)
    run = state.engine.store.get_run(run_id)
    status = run.status if live or run.status != "running" else "interrupted"
    departments = _departments(run.steps, tracker.tasks)
    picture = svg(nodes_of(run.plan), {s.step_id: s.status for s in run.steps})
    failures = [s for s in run.steps if s.status == "failed"]
    return RunView(run, status, live, departments, picture, tracker.last, failures)


def _departments(steps: Sequence[StepRecord], tasks: Mapping[str, str]) -> list[DepartmentView]:
    by_name: dict[str, list[StepRecord]] = {}
    for step in steps:
        by_name.setdefault(step.department, []).append(step)
    out = []
    for name, own in by_name.items():
        running = [
            f"{s.step_id} — {tasks.get(s.step_id, 'running')}" for s in own if s.status == "running"
        ]
        out.append(DepartmentView(name, own, "; ".join(running)))
    return out


def diffs_by_department(content: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """A change record's (or a dry run's) step diffs, grouped by the steps' departments."""
    out: dict[str, list[dict[str, Any]]] = {}
    steps = content.get("steps", {})
    for planned in content.get("plan", []):
        result = steps.get(planned["id"], {})
        out.setdefault(str(planned["department"]), []).append({"id": planned["id"], **result})
    return out


def change_picture(view: ChangeView) -> Markup:
    plan = view.record.content.get("plan", [])
    return svg(nodes_of(plan))
