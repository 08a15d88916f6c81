"""The schedulers: workers serving the scheduler queue run the DAG of queued runs.

A run is scheduled where its ``infra.schedule_run`` message lands, in a thread of its own
(not in a slot of the worker's pool: steps need those). :meth:`Engine.run_submitted` takes
the project lease of the run first, so a repeated message, or two schedulers, cannot run it
twice. A sweep, every third of the lease TTL, looks at the record for what the broker may
have lost or what died:

- a run still ``queued`` (its message was lost: broker restart) is scheduled here;
- a run ``interrupted`` (its scheduler died) with no failed step and whose interrupted steps
  are all safe to re-run (:func:`~infra_automation.workers.dispatch.rerun_safe`) is resumed:
  a new queued run that reuses every step recorded ``success``.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from infra_automation.config import Settings
from infra_automation.engine import Engine
from infra_automation.events import utcnow
from infra_automation.exceptions import InfraError, RunLocked
from infra_automation.executors.registry import ExecutorRegistry
from infra_automation.leases import Leases
from infra_automation.record import QUEUED, RUNNING, RunRecorder, live_runs, runs
from infra_automation.workers.app import SCHEDULE_RUN, Celery
from infra_automation.workers.dispatch import CeleryDispatcher, rerun_safe

log = logging.getLogger(__name__)
STARTED = ("running", "interrupted")


class SchedulerService:
    """Schedules queued runs in this process; sweeps the record for lost or dead runs."""

    def __init__(self, settings: Settings, app: Celery, registry: ExecutorRegistry) -> None:
        self.app = app
        self.engine = Engine(settings, registry=registry, load_observers=False)
        dispatcher = CeleryDispatcher(app, settings, registry, self.engine.db)
        self.engine.dispatcher = dispatcher
        self.docs_engine = Engine(settings, registry=registry, dispatcher=dispatcher)
        self.docs_engine._db = self.engine.db  # one connection pool for both
        self.interval = max(0.5, settings.lease_ttl / 3)
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def start(self) -> None:
        self._sweeper = threading.Thread(target=self._sweep_loop, name="infra-sweep", daemon=True)
        self._sweeper.start()

    def stop(self) -> None:
        self._stop.set()

    def adopt(self, run_id: str) -> None:
        """Schedule the queued run ``run_id`` here, in a thread (no-op if it is already)."""
        with self._lock:
            if run_id in self._active:
                return
            self._active.add(run_id)
        thread = threading.Thread(
            target=self._schedule, args=(run_id,), name=f"infra-run-{run_id}", daemon=True
        )
        thread.start()

    def _schedule(self, run_id: str) -> None:
        try:
            docs = self.engine.submission(run_id).docs
            engine = self.docs_engine if docs else self.engine
            engine.run_submitted(run_id)
        except RunLocked as exc:  # its project is busy, or another scheduler has it
            log.info("run %s not scheduled here: %s", run_id, exc)
        except InfraError as exc:  # e.g. its request no longer plans: the run fails
            log.error("run %s failed before it started: %s", run_id, exc)
            self._fail(run_id, f"{type(exc).__name__}: {exc}")
        except Exception:  # a scheduler thread never takes the worker down
            log.exception("run %s: scheduling failed", run_id)
        finally:
            with self._lock:
                self._active.discard(run_id)

    def _fail(self, run_id: str, error: str) -> None:
        outcome = {"error": error, "finished_at": utcnow().isoformat()}
        RunRecorder(self.engine.db).salvage(run_id, {}, outcome, patience=2.0)

    # --- the sweep --------------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except (InfraError, sa.exc.SQLAlchemyError) as exc:
                log.warning("sweep failed, trying again: %s", exc)

    def sweep(self) -> None:
        """Schedule the queued runs; resume the interrupted ones that are safe to resume."""
        queued, dead = self._waiting_runs()
        for run_id in queued:
            self.adopt(run_id)
        for run_id in dead:
            self._maybe_resume(run_id)

    def _waiting_runs(self) -> tuple[list[str], list[str]]:
        query = sa.select(runs.c.id, runs.c.status).where(runs.c.status.in_((QUEUED, RUNNING)))
        with self.engine.db.connect() as conn:
            rows = list(conn.execute(query))
            live = live_runs(conn)
        queued = [r for r, status in rows if status == QUEUED]
        dead = [r for r, status in rows if status == RUNNING and r not in live]
        return queued, dead

    def _maybe_resume(self, run_id: str) -> None:
        held = Leases(self.engine.db, run_id=None, ttl=self.engine.settings.lease_ttl)
        try:
            if held.try_acquire(f"resume:{run_id}") is not None:
                return  # another scheduler decides
            if self._resumed(run_id) or not self._resumable(run_id):
                return
            sub = self.engine.submission(run_id)
            engine = self.docs_engine if sub.docs else self.engine
            new = engine.submit_resume(run_id, parallel=sub.run.parallel, docs=sub.docs)
            log.warning("run %s was interrupted: resumed as run %s", run_id, new)
            self.adopt(new)
        except InfraError as exc:
            log.warning("run %s not resumed: %s", run_id, exc)
        finally:
            held.close()

    def _resumed(self, run_id: str) -> bool:
        query = sa.select(runs.c.id).where(runs.c.resumed_from == run_id).limit(1)
        with self.engine.db.connect() as conn:
            return conn.execute(query).first() is not None

    def _resumable(self, run_id: str) -> bool:
        """No step failed, and every step that started and did not finish is safe to re-run."""
        record = self.engine.store.get_run(run_id)
        if record.status != "interrupted" or record.steps_with("failed"):
            return False
        started = [s for s in record.steps if s.status in STARTED]
        return all(self._safe(s.executor) for s in started)

    def _safe(self, executor: str) -> bool:
        try:
            return rerun_safe(self.engine.registry.info(executor))
        except InfraError:
            return False

    def send(self, run_id: str) -> None:
        self.app.send_task(SCHEDULE_RUN, args=(run_id,), queue=self.engine.settings.scheduler_queue)
