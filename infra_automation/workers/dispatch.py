"""The scheduler's side of a step: send it to its queue, wait for its result in the record.

One :class:`StepWatcher` per process polls the record for every step its runs wait on (one
query per tick, however many runs): a step recorded finished ends the wait; a step that
reads ``running`` while its lease ``step:<run>:<step>`` has expired lost its worker
(``interrupted``); a step still ``pending`` after the lease TTL is sent again (its message
may have been lost with the broker; a repeated message is dropped by the worker).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa

from infra_automation.events import Event, utcnow
from infra_automation.executors.base import ExecutorInfo
from infra_automation.executors.registry import ExecutorRegistry
from infra_automation.planner import Plan, PlannedStep
from infra_automation.record import RunStore, leases, recorded_result, steps
from infra_automation.results import ErrorKind, StepResult
from infra_automation.scheduler import RunEnvironment, StepRunner, finished_payload
from infra_automation.workers.app import RUN_STEP, Celery

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from infra_automation.config import Settings
    from infra_automation.engine import EventBus

log = logging.getLogger(__name__)
POLL = 0.01  # seconds between two looks at the record
WAITING = frozenset({"pending", "interrupted"})  # not started (again) yet
INTERRUPTED = "interrupted"


def step_key(run_id: str, step_id: str) -> str:
    return f"step:{run_id}:{step_id}"


def rerun_safe(info: ExecutorInfo) -> bool:
    """Whether a step of this executor may run again after its worker died mid-step
    (``ExecutorInfo.rerun_safe``)."""
    return info.rerun_safe


@dataclass
class _Wait:
    run_id: str
    step_id: str
    resend: Callable[[], None]
    sent: float = field(default_factory=time.monotonic)
    outcome: str | None = None  # "finished" | "interrupted"
    done: threading.Event = field(default_factory=threading.Event)


class StepWatcher:
    """Waits on steps in the record for all the runs this process schedules."""

    def __init__(self, db: Engine, *, resend_after: float, poll: float = POLL) -> None:
        self.db = db
        self.resend_after = resend_after
        self.poll = poll
        self._waits: dict[tuple[str, str], _Wait] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def wait(self, run_id: str, step_id: str, resend: Callable[[], None]) -> str:
        """Block until the step is finished or interrupted in the record; which one."""
        waiting = _Wait(run_id, step_id, resend)
        with self._lock:
            self._waits[(run_id, step_id)] = waiting
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="infra-step-watcher", daemon=True
                )
                self._thread.start()
        waiting.done.wait()
        assert waiting.outcome is not None
        return waiting.outcome

    def _loop(self) -> None:
        while True:
            time.sleep(self.poll)
            with self._lock:
                waits = list(self._waits.values())
            if not waits:
                continue
            try:
                self._look(waits)
            except sa.exc.SQLAlchemyError as exc:  # the database is away: look again
                log.warning("cannot read the steps' state: %s", exc)

    def _look(self, waits: list[_Wait]) -> None:
        states = self._states({w.run_id for w in waits})
        running = [w for w in waits if states.get((w.run_id, w.step_id)) == "running"]
        stale = [w for w in waits if states.get((w.run_id, w.step_id)) in WAITING]
        live = self._live_leases([*running, *stale])
        unleased = [w for w in running if step_key(w.run_id, w.step_id) not in live]
        if unleased:  # read again: a step that finished between the two reads is no orphan
            again = self._states({w.run_id for w in unleased})
            for w in unleased:
                key = (w.run_id, w.step_id)
                states[key] = again.get(key, states[key])
        now = time.monotonic()
        for w in waits:
            state = states.get((w.run_id, w.step_id), "pending")
            if state not in WAITING and state != "running":
                self._end(w, "finished")
            elif state == "running" and step_key(w.run_id, w.step_id) not in live:
                self._end(w, INTERRUPTED)
            elif (
                state in WAITING
                and now - w.sent > self.resend_after
                and step_key(w.run_id, w.step_id) not in live
            ):
                self._resend(w, now)

    def _states(self, run_ids: Iterable[str]) -> dict[tuple[str, str], str]:
        query = sa.select(steps.c.run_id, steps.c.step_id, steps.c.status).where(
            steps.c.run_id.in_(sorted(run_ids))
        )
        with self.db.connect() as conn:
            return {(r, s): st for r, s, st in conn.execute(query)}

    def _live_leases(self, waits: list[_Wait]) -> set[str]:
        if not waits:
            return set()
        keys = sorted(step_key(w.run_id, w.step_id) for w in waits)
        query = sa.select(leases.c.key).where(
            leases.c.key.in_(keys), leases.c.expires_at > utcnow()
        )
        with self.db.connect() as conn:
            return set(conn.execute(query).scalars())

    def _end(self, w: _Wait, outcome: str) -> None:
        with self._lock:
            self._waits.pop((w.run_id, w.step_id), None)
        w.outcome = outcome
        w.done.set()

    def _resend(self, w: _Wait, now: float) -> None:
        w.sent = now
        log.warning("step %s of run %s not started yet: sending it again", w.step_id, w.run_id)
        try:
            w.resend()
        except Exception as exc:  # the broker is away: the next look tries again
            log.warning("cannot send step %s of run %s: %s", w.step_id, w.run_id, exc)


class CeleryDispatcher:
    """:class:`~infra_automation.engine.StepDispatcher` over Celery queues."""

    def __init__(
        self, app: Celery, settings: Settings, registry: ExecutorRegistry, db: Engine
    ) -> None:
        self.app = app
        self.settings = settings
        self.registry = registry
        self.store = RunStore(db)
        self.watcher = StepWatcher(db, resend_after=settings.lease_ttl)

    def runner(self, plan: Plan, env: RunEnvironment, bus: EventBus) -> StepRunner:
        def run(step: PlannedStep) -> StepResult:
            return self._run(step, env.run_id, bus)

        return run

    def send(self, run_id: str, step: PlannedStep) -> None:
        queue = self.settings.queue_of(step.department)
        self.app.send_task(RUN_STEP, args=(run_id, step.id, queue), queue=queue)

    def _run(self, step: PlannedStep, run_id: str, bus: EventBus) -> StepResult:
        seen = 0
        safe = rerun_safe(self.registry.info(step.executor))
        while True:
            self._send_now(run_id, step)
            outcome = self.watcher.wait(run_id, step.id, lambda: self.send(run_id, step))
            if bus.local or bus.observers:
                seen = self._replay(bus, run_id, step.id, seen)
            if outcome == "finished":
                return recorded_result(self.store.get_step(run_id, step.id))
            result = self._interrupted(step, run_id, bus, safe)
            if not safe:
                return result

    def _send_now(self, run_id: str, step: PlannedStep) -> None:
        try:
            self.send(run_id, step)
        except Exception as exc:  # the broker is away: the watcher sends it again later
            log.warning("cannot send step %s of run %s: %s", step.id, run_id, exc)

    def _interrupted(self, step: PlannedStep, run_id: str, bus: EventBus, safe: bool) -> StepResult:
        then = "it runs again" if safe else "not safe to re-run: resume the run (infra resume)"
        result = StepResult.failure(
            f"interrupted: its worker died (step lease expired); {then}", kind=ErrorKind.INTERNAL
        )
        payload = {**finished_payload(step, result), "status": INTERRUPTED}
        bus.emit(Event(run_id, "step.finished", step_id=step.id, data=payload))
        return result

    def _replay(self, bus: EventBus, run_id: str, step_id: str, after: int) -> int:
        """Show this process's observers the step's events the worker recorded."""
        for record in self.store.events(run_id, step_id=step_id, after=after):
            after = record.seq
            if record.kind != "step.finished" or record.data.get("status") != INTERRUPTED:
                bus.replay(
                    Event(run_id, record.kind, step_id=step_id, data=record.data, at=record.at)
                )
        return after
