"""The server's own run workers: a small bounded thread pool.

:meth:`RunPool.start` hands a run to a free worker and returns its run id as soon as the run
is recorded (its ``run.started`` event), or the error that stopped it before (the project is
locked, the inventory is invalid). With no free worker it returns ``None`` at once: the
caller answers 503 and the client retries; nothing is queued, so nothing is lost if the
server stops.

:func:`change_job` is the job of an approved change (the API's submit and approve, through
the change gate): it claims the change just before the run starts (approved ->
implementing), so a change rejected or voided since the gate never runs, and records the
outcome on the change afterwards.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from infra_automation.changes import ChangeService
from infra_automation.engine import Engine
from infra_automation.events import Event
from infra_automation.exceptions import RunLocked, RunNotFound
from infra_automation.planner import Plan
from infra_automation.results import RunResult

log = logging.getLogger(__name__)
START_TIMEOUT = 60.0


@dataclass
class _Slot:
    """Where a worker reports the start (run id) or early failure of its run."""

    done: threading.Event = field(default_factory=threading.Event)
    run_id: str | None = None
    error: BaseException | None = None

    def started(self, run_id: str) -> None:
        if not self.done.is_set():
            self.run_id = run_id
            self.done.set()

    def failed(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class _StartSignal:
    """Engine observer: tells the worker's slot the id of the run it started.

    The engine emits ``run.started`` in the thread that called it, so a thread-local slot
    finds the right submission."""

    def __init__(self) -> None:
        self.local = threading.local()

    def on_event(self, event: Event) -> None:
        slot: _Slot | None = getattr(self.local, "slot", None)
        if slot is not None and event.kind == "run.started":
            slot.started(event.run_id)


class RunPool:
    """Runs jobs of ``engine`` in at most ``workers`` threads."""

    def __init__(self, engine: Engine, workers: int = 4) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="infra-run")
        self._free = threading.BoundedSemaphore(workers)
        self._signal = _StartSignal()
        self._store = engine.store
        engine.observers.append(self._signal)

    def start(self, job: Callable[[], RunResult], timeout: float = START_TIMEOUT) -> str | None:
        """Run ``job`` in a worker; its run id, or None when every worker is busy.

        Raises what ``job`` raised before its run was recorded (RunLocked, PlanningError...)."""
        if not self._free.acquire(blocking=False):
            return None
        slot = _Slot()
        try:
            self._pool.submit(self._work, job, slot)
        except RuntimeError:  # shutting down
            self._free.release()
            return None
        if not slot.done.wait(timeout):
            raise TimeoutError(f"the run did not start within {timeout:.0f} s")
        if slot.error is not None:
            raise slot.error
        assert slot.run_id is not None
        self._recorded(slot.run_id, timeout)
        return slot.run_id

    def _recorded(self, run_id: str, timeout: float) -> None:
        """Wait until the run's row is committed: observers see ``run.started`` just before
        the record writes it, and a client reads the run as soon as it has its id."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._store.get_run(run_id)
                return
            except RunNotFound:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run {run_id} not recorded in {timeout:.0f} s") from None
                time.sleep(0.01)

    def _work(self, job: Callable[[], RunResult], slot: _Slot) -> None:
        self._signal.local.slot = slot
        try:
            result = job()
            log.info("run %s finished (failed: %s)", result.run_id, result.failed)
        except BaseException as exc:  # the worker thread must survive any job
            if slot.done.is_set():
                log.error("run %s stopped: %s: %s", slot.run_id, type(exc).__name__, exc)
            slot.failed(exc)
        finally:
            self._signal.local.slot = None
            slot.failed(RuntimeError("the run ended before it was recorded"))
            self._free.release()

    def shutdown(self) -> None:
        """Wait for the runs in progress (no new ones are accepted)."""
        self._pool.shutdown(wait=True)


def change_job(
    engine: Engine, changes: ChangeService, plan: Plan, change_id: str
) -> Callable[[], RunResult]:
    """The run of the approved change ``change_id`` as a job of the pool.

    Claimed first (:class:`~infra_automation.changes.service.ChangeRefused`, raised before
    anything is recorded, if it is no longer approved); implemented or failed after its run.
    A run that could not start because the project is locked leaves the change approved; a
    run that stopped without a result leaves it failed (proposing it again reopens it)."""

    def job() -> RunResult:
        changes.claim(change_id)
        try:
            result = engine.run(plan)
        except RunLocked as exc:
            changes.release(change_id, f"its run could not start: {exc}")
            raise
        except BaseException as exc:
            changes.abandon(change_id, f"its run stopped without a result: {type(exc).__name__}")
            raise
        changes.finish(change_id, result)
        return result

    return job
