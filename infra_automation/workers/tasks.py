"""The worker's side: the two tasks, bound to the Celery app of ``infra worker``."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infra_automation.exceptions import InfraError
from infra_automation.leases import Leases
from infra_automation.workers.app import RUN_STEP, SCHEDULE_RUN, Celery
from infra_automation.workers.dispatch import WAITING, step_key

if TYPE_CHECKING:
    from infra_automation.engine import Engine
    from infra_automation.workers.service import SchedulerService

log = logging.getLogger(__name__)


def worker_name() -> str:
    """How the record names this worker process: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkerContext:
    """What the tasks of this worker process use."""

    engine: Engine  # runs steps here
    service: SchedulerService | None = None  # schedules runs here (serving the runs queue)


def bind_tasks(app: Celery, context: WorkerContext) -> None:
    """Register ``infra.run_step`` and ``infra.schedule_run`` on ``app`` for this worker."""

    @app.task(name=RUN_STEP, ignore_result=True)  # type: ignore[untyped-decorator]
    def run_step(run_id: str, step_id: str, queue: str) -> None:
        execute_step(context.engine, run_id, step_id, queue)

    @app.task(name=SCHEDULE_RUN, ignore_result=True)  # type: ignore[untyped-decorator]
    def schedule_run(run_id: str) -> None:
        if context.service is None:
            log.error("run %s came to a worker that does not schedule runs", run_id)
            return
        context.service.adopt(run_id)


def execute_step(engine: Engine, run_id: str, step_id: str, queue: str) -> bool:
    """Run the step under its lease unless it runs or ran elsewhere; whether it ran here."""
    held = Leases(engine.db, run_id=run_id, ttl=engine.settings.lease_ttl)
    try:
        if held.try_acquire(step_key(run_id, step_id)) is not None:
            return False  # another worker runs it (a repeated message)
        where = {"worker": worker_name(), "queue": queue}
        # Under the lease, only a step that has not run: a step recorded success never runs twice.
        return engine.run_step(run_id, step_id, where, only_if=WAITING) is not None
    except InfraError as exc:  # the record cannot be read: the scheduler sends it again
        log.error("step %s of run %s not run: %s", step_id, run_id, exc)
        return False
    finally:
        held.close()
