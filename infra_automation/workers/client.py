"""The submitting side (``infra apply`` / ``infra resume`` with a broker): queue a run in the
record, send it to the schedulers, follow its progress in the record.

::

    run_id = submit(engine, plan, check=False, parallel=None, docs=True)
    result = follow(engine, run_id)        # engine.observers see the run's events
"""

from __future__ import annotations

import logging
import time
from typing import Literal

from infra_automation.engine import Engine
from infra_automation.events import Event
from infra_automation.exceptions import ConfigurationError
from infra_automation.planner import Plan
from infra_automation.record import INTERRUPTED, QUEUED, RUNNING, RunRecord, recorded_result
from infra_automation.results import RunResult
from infra_automation.workers.app import SCHEDULE_RUN, Celery, describe, make_app
from infra_automation.workers.queues import require_plan_mapped

log = logging.getLogger(__name__)
FOLLOW_POLL = 0.1
UNFINISHED = (QUEUED, RUNNING)
LOOKBACK = 50


def submit(
    engine: Engine,
    plan: Plan,
    *,
    check: bool = False,
    parallel: int | None = None,
    docs: bool = True,
    app: Celery | None = None,
) -> str:
    """Queue ``plan`` as a run (RunLocked if its project is busy) and send it; its id.
    ConfigurationError before anything is queued if a department of the plan has no queue
    (:mod:`~infra_automation.workers.queues`)."""
    require_plan_mapped(engine.settings, plan)
    run_id = engine.submit(plan, check=check, parallel=parallel, docs=docs)
    _send(engine, run_id, app)
    return run_id


def submit_resume(
    engine: Engine,
    run_id: str,
    *,
    parallel: int | None = None,
    plan: Plan | None = None,
    changed: Literal["rerun", "refuse"] = "rerun",
    docs: bool = True,
    app: Celery | None = None,
) -> str:
    """Queue a resume of ``run_id`` and send it; the new run's id (refused as :func:`submit`
    is if a department of the plan has no queue)."""
    plan = plan or engine.resume_plan(run_id)
    require_plan_mapped(engine.settings, plan)
    new = engine.submit_resume(run_id, parallel=parallel, plan=plan, changed=changed, docs=docs)
    _send(engine, new, app)
    return new


def _send(engine: Engine, run_id: str, app: Celery | None) -> None:
    """Send ``infra.schedule_run``; the run is queued in the record either way (a scheduler's
    sweep takes it when the broker is back)."""
    app = app or make_app(engine.settings)
    try:
        app.send_task(SCHEDULE_RUN, args=(run_id,), queue=engine.settings.scheduler_queue)
    except Exception as exc:  # kombu raises OperationalError and friends
        raise ConfigurationError(
            f"run {run_id} is queued, but the broker {describe(engine.settings)} cannot be "
            f"reached ({type(exc).__name__}: {exc}); a scheduler takes it once it is back"
        ) from None


def follow(engine: Engine, run_id: str, *, poll: float = FOLLOW_POLL) -> RunResult:
    """Show ``engine.observers`` the events of ``run_id`` as the workers record them, until
    it ends; an interrupted run that a scheduler resumes is followed into its resume."""
    shown: set[int] = set()
    last = 0
    interrupted_at: float | None = None
    while True:
        last = _show(engine, run_id, shown, last)
        run = engine.store.get_run(run_id)
        if run.status == INTERRUPTED:
            resumed = _resumed_by(engine, run)
            interrupted_at = interrupted_at or time.monotonic()
            if resumed is not None:
                run_id, shown, last, interrupted_at = resumed, set(), 0, None
            elif time.monotonic() - interrupted_at > engine.settings.lease_ttl:
                return _result(run)  # not resumed by itself: `infra resume` it
        elif run.status not in UNFINISHED:
            _show(engine, run_id, shown, last)
            return _result(run)
        time.sleep(poll)


def _show(engine: Engine, run_id: str, shown: set[int], last: int) -> int:
    """Deliver the events not shown yet. Events of parallel writers may commit out of seq
    order, so the last ``LOOKBACK`` seqs are read again."""
    for record in engine.store.events(run_id, after=max(0, last - LOOKBACK)):
        if record.seq in shown:
            continue
        shown.add(record.seq)
        last = max(last, record.seq)
        event = Event(run_id, record.kind, record.step_id, record.data, record.at)
        for observer in engine.observers:
            observer.on_event(event)
    return last


def _resumed_by(engine: Engine, run: RunRecord) -> str | None:
    for other in engine.store.list_runs(project=run.project, limit=20):
        if other.resumed_from == run.id:
            return other.id
    return None


def _result(run: RunRecord) -> RunResult:
    steps = {s.step_id: recorded_result(s) for s in run.steps if s.status not in UNFINISHED}
    return RunResult(run_id=run.id, project=run.project, check=run.check, steps=steps)
