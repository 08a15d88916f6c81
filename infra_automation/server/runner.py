"""The server's runs: accepted into the record as ``queued`` at once, run by the server's own
worker threads, or by the workers' schedulers when a broker is configured.

::

    runs = RunQueue(engine, workers=4, limit=1000)
    runs.start()                                  # the threads, and a first sweep
    run_id = runs.submit(plan, check=False)       # None: `limit` runs wait already (429)
    runs.shutdown()                               # runs in progress end; queued ones stay

Accepting a run is one insert (:meth:`Engine.submit`, a ``queued`` run; a project with an
active run refuses it, RunLocked), so the answer never waits for a worker. The threads take
queued runs in order with :meth:`Engine.run_submitted`: its project lease and the ``queued``
status read under it are the claim, as for the workers' schedulers, so a queued run runs once
whatever the number of servers (or schedulers) on the database. A run whose project is busy
stays queued and is tried again after the next sweep. Intake comes first: while runs are
being submitted (one within :data:`INTAKE_QUIET` seconds), at most a quarter of the workers
(at least one) start runs, so that answering stays fast under a burst; the queue is run down
at full width once it is quiet. The sweep, every ``sweep`` seconds, adds the record's queued
runs this server does not hold yet: those of before a restart, of a server that stopped,
those that waited for their project. A run submitted with the approved
change it implements claims the change when it starts (see :class:`~infra_automation.engine.
Engine`): one rejected or voided meanwhile never runs, its run is recorded failed.

:func:`change_job` is the same claim for a plan run here and now (a library caller).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from infra_automation.changes import ChangeService
from infra_automation.engine import Engine
from infra_automation.exceptions import ChangeError, InfraError, RunLocked, RunNotFound
from infra_automation.planner import Plan
from infra_automation.record import QUEUED, runs
from infra_automation.results import RunResult
from infra_automation.workers.queues import require_plan_mapped

log = logging.getLogger(__name__)
DEFAULT_LIMIT = 1000  # runs waiting for a thread of this server before it answers 429
SWEEP_INTERVAL = 1.0  # seconds between two looks at the record's queued runs
TAKE_TIMEOUT = 0.2  # seconds a thread waits for a run before it checks whether to stop
INTAKE_QUIET = 0.25  # seconds without a submission after which every worker takes runs


class RunQueue:
    """Queued runs of ``engine``'s record, run by ``workers`` threads of this process."""

    def __init__(
        self,
        engine: Engine,
        workers: int = 4,
        *,
        limit: int = DEFAULT_LIMIT,
        sweep: float = SWEEP_INTERVAL,
    ) -> None:
        self.engine = engine
        self.workers = workers
        self.limit = limit
        self.sweep_interval = sweep
        self.broker = bool(engine.settings.broker_url)
        self._plain = _without_docs(engine)
        self._waiting: queue.Queue[str] = queue.Queue()
        self._held: set[str] = set()  # waiting here or running here
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._celery: Any = None
        self._running = 0  # runs this server's threads are running
        self._intake_until = 0.0  # monotonic time until which submissions come first
        self._paced = max(1, workers // 4)  # runs at once while submissions come

    # --- accepting ------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Runs accepted here that no thread has taken yet."""
        return self._waiting.qsize()

    @property
    def retry_after(self) -> int:
        """Seconds a client refused for a full queue should wait (``Retry-After``)."""
        return max(1, math.ceil(self.sweep_interval))

    def full(self) -> bool:
        return not self.broker and self.waiting >= self.limit

    def submit(
        self,
        plan: Plan,
        *,
        check: bool = False,
        parallel: int | None = None,
        change: str | None = None,
    ) -> str | None:
        """Queue ``plan``'s run; its id, or None when ``limit`` runs wait already. With a
        broker, ConfigurationError if a department of the plan has no queue."""
        if self.full():
            return None
        if self.broker:
            require_plan_mapped(self.engine.settings, plan)
        self._intake()
        docs = self.engine.load_observers
        run_id = self.engine.submit(plan, check=check, parallel=parallel, docs=docs, change=change)
        self._hand(run_id)
        return run_id

    def resume(self, run_id: str, plan: Plan | None = None) -> str | None:
        """Queue a resume of ``run_id``; the new run's id, or None when the queue is full
        (refused as :meth:`submit` is)."""
        if self.full():
            return None
        if self.broker:
            plan = plan or self.engine.resume_plan(run_id)
            require_plan_mapped(self.engine.settings, plan)
        self._intake()
        docs = self.engine.load_observers
        new = self.engine.submit_resume(run_id, plan=plan, docs=docs)
        self._hand(new)
        return new

    def _intake(self) -> None:
        self._intake_until = time.monotonic() + INTAKE_QUIET

    def _hand(self, run_id: str) -> None:
        if self.broker:
            self._send(run_id)
        else:
            self.start()
            self._hold(run_id)

    def _hold(self, run_id: str) -> bool:
        with self._lock:
            if run_id in self._held:
                return False
            self._held.add(run_id)
        self._waiting.put(run_id)
        return True

    def _send(self, run_id: str) -> None:
        """To the workers' schedulers; a lost message is found by their sweep."""
        from infra_automation.workers.app import SCHEDULE_RUN, describe, make_app

        settings = self.engine.settings
        try:
            if self._celery is None:
                self._celery = make_app(settings)
            self._celery.send_task(SCHEDULE_RUN, args=(run_id,), queue=settings.scheduler_queue)
        except Exception as exc:  # kombu raises OperationalError and friends
            log.warning(
                "run %s is queued, but the broker %s cannot be reached (%s); a scheduler's "
                "sweep takes it once it is back",
                run_id,
                describe(settings),
                type(exc).__name__,
            )

    # --- running --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads and the sweep (once; none with a broker)."""
        with self._lock:
            if self.broker or self._threads or self._stop.is_set():
                return
            self._threads = [
                threading.Thread(target=self._work, name=f"infra-run-{i}", daemon=True)
                for i in range(self.workers)
            ]
            self._threads.append(
                threading.Thread(target=self._sweep_loop, name="infra-run-sweep", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            if not self._reserve():
                time.sleep(TAKE_TIMEOUT / 10)
                continue
            try:
                run_id = self._waiting.get(timeout=TAKE_TIMEOUT)
            except queue.Empty:
                self._release(None)
                continue
            try:
                self.run(run_id)
            finally:
                self._release(run_id)

    def _reserve(self) -> bool:
        """Count this thread as running if it may start a run now (intake first)."""
        with self._lock:
            if self._running < self._paced or time.monotonic() >= self._intake_until:
                self._running += 1
                return True
            return False

    def _release(self, run_id: str | None) -> None:
        with self._lock:
            self._running -= 1
            if run_id is not None:
                self._held.discard(run_id)

    def run(self, run_id: str) -> RunResult | None:
        """Run the queued run ``run_id`` here; None if it did not run (taken elsewhere,
        its project busy: it stays queued, refused, or failed before it started)."""
        try:
            docs = self.engine.submission(run_id).docs
            result = (self.engine if docs else self._plain).run_submitted(run_id)
        except (RunLocked, RunNotFound) as exc:  # busy project, or another runner has it
            log.debug("run %s not started here: %s", run_id, exc)
        except ChangeError as exc:  # its change may no longer run: recorded failed
            log.warning("run %s refused: %s", run_id, exc)
        except InfraError as exc:  # e.g. its request no longer plans: the run fails
            log.error("run %s failed before it started: %s", run_id, exc)
            self._fail(run_id, f"{type(exc).__name__}: {exc}")
        except Exception:  # a worker thread survives any run
            log.exception("run %s: running it failed", run_id)
        else:
            log.info("run %s finished (failed: %s)", run_id, result.failed)
            return result
        return None

    def _fail(self, run_id: str, error: str) -> None:
        try:
            if self.engine.store.get_run(run_id).status == QUEUED:
                self.engine.fail_submitted(run_id, error)
        except InfraError as exc:
            log.error("run %s could not be recorded failed: %s", run_id, exc)

    def _sweep_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except (InfraError, sa.exc.SQLAlchemyError) as exc:
                log.warning("looking for queued runs failed, trying again: %s", exc)
            self._stop.wait(self.sweep_interval)

    def sweep(self) -> int:
        """Hold the record's queued runs (oldest first) not held here yet; how many."""
        with self.engine.db.connect() as conn:
            found = [str(r) for r in conn.execute(queued_runs(self.limit)).scalars()]
        return sum(self._hold(run_id) for run_id in found)

    def shutdown(self) -> None:
        """Let the runs in progress end; queued runs stay queued in the record."""
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _without_docs(engine: Engine) -> Engine:
    """The engine for runs submitted without docs: the same record, no entry-point observers."""
    if not engine.load_observers:
        return engine
    plain = Engine(
        engine.settings,
        registry=engine.registry,
        observers=engine.observers,
        load_observers=False,
        dispatcher=engine.dispatcher,
    )
    plain._db = engine.db  # one connection pool for both
    return plain


def change_job(
    engine: Engine, changes: ChangeService, plan: Plan, change_id: str
) -> Callable[[], RunResult]:
    """The run of the approved change ``change_id``, here and now, as a function.

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


def queued_runs(limit: int) -> sa.Select[tuple[str]]:
    """The ids of the oldest ``limit`` queued runs (the sweep's query; it reads the index
    ``ix_infra_runs_status_started``)."""
    query = sa.select(runs.c.id).where(runs.c.status == QUEUED)
    return query.order_by(runs.c.started_at, runs.c.id).limit(limit)
