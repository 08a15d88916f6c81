"""The OLA clock: how long a delivery waited on each department.

A step's clock starts when the step is *ready* — every step it needs has succeeded (a step
that needs none: when the delivery's first run started) — and stops when it succeeds, in
whichever run of the delivery that is. While the step waits on a step of another department
its clock is paused (it has not started yet); while it waits for a resume after it failed
it runs on (the failure is its own department's). A step never done has no clock.

A department's waiting time in one delivery is the union of its steps' clocks (two of its
steps running side by side count once).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

from infra_automation.metrics.history import Delivery, StepFact


class StepClock(NamedTuple):
    """The OLA clock of one step (a named tuple: there is one per step of every delivery)."""

    project: str
    service: str
    delivery_id: str  # the id of the delivery's first run
    department: str
    step_id: str
    run_id: str  # the run in which the step succeeded
    ready_at: datetime
    done_at: datetime

    @property
    def waited(self) -> float:
        return (self.done_at - self.ready_at).total_seconds()


def step_clocks(delivery: Delivery) -> list[StepClock]:
    """The clock of every step of ``delivery`` that got done, in plan order."""
    done = _successes(delivery)
    first = delivery.first
    head = (first.project, first.service, first.id)
    started = first.started_at
    new = tuple.__new__  # StepClock(...) without its Python-level __new__
    clocks = []
    for step in _plan(delivery):
        finish = done.get(step.step_id)
        if finish is None:
            continue
        ready = started
        for need in step.needs:
            upstream = done.get(need)
            if upstream is None:
                break  # never ready: a step it needs was not done
            if upstream[0] > ready:
                ready = upstream[0]
        else:
            clock = (*head, step.department, step.step_id, finish[1], ready, finish[0])
            clocks.append(new(StepClock, clock))
    return clocks


def department_waits(clocks: Sequence[StepClock]) -> dict[str, float]:
    """Seconds a delivery (its ``clocks``) waited on each department."""
    by_department: dict[str, list[tuple[datetime, datetime]]] = {}
    for _, _, _, department, _, _, ready, done in clocks:  # the StepClock fields, unpacked
        spans = by_department.get(department)
        if spans is None:
            by_department[department] = [(ready, done)]
        else:
            spans.append((ready, done))
    return {
        d: (spans[0][1] - spans[0][0]).total_seconds() if len(spans) == 1 else union_seconds(spans)
        for d, spans in by_department.items()
    }


def union_seconds(spans: Iterable[tuple[datetime, datetime]]) -> float:
    """The length of the union of the time spans, in seconds."""
    total = 0.0
    end: datetime | None = None
    for start, stop in sorted(spans):
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return total


def _successes(delivery: Delivery) -> dict[str, tuple[datetime, str]]:
    """Step id -> (finish, run id) of its first success; one that ran in a run of the delivery
    wins over a reused one (whose run may be outside the range read)."""
    found: dict[str, tuple[datetime, str]] = {}
    reused: dict[str, tuple[datetime, str]] = {}
    for run in delivery.runs:
        run_id = run.id
        for _, step_id, _, _, status, was_reused, _, finished, _ in run.steps:  # StepFact's
            if status != "success" or finished is None:
                continue
            into = reused if was_reused else found
            if step_id not in into:
                into[step_id] = (finished, run_id)
    return {**reused, **found} if reused else found


def _plan(delivery: Delivery) -> Sequence[StepFact]:
    """The steps of the delivery's newest run (its plan), in order."""
    newest = delivery.runs[-1]
    return newest.steps or delivery.first.steps
