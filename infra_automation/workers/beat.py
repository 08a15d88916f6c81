"""Scheduled verify: ``infra worker --beat`` verifies every project on a schedule.

::

    # infra.toml
    broker_url = "redis://127.0.0.1:6379/0"
    verify_every = "1h"          # off when not set

    infra worker --queues runs --beat     # a scheduler that also keeps the beat

The Celery beat schedule (``beat_schedule`` of the app, :func:`beat_schedule`) sends
``infra.verify_due`` to the scheduler queue every :func:`tick` (``verify_every``, at most a
minute); it expires after one tick, so a backlog of ticks is never worked off. A worker
serving the scheduler queue takes it, reads from the record which projects are due — every
project with recorded state (an applied run, not decommissioned) whose last verification
(by the schedule or by hand) is older than ``verify_every`` — and sends
``infra.verify_project(project)`` for each to the same queue. The worker that takes one
holds the lease ``verify:<project>`` while it verifies, skips a project a run is changing
right now (its ``project:<name>`` lease is live: it is due again at the next tick), looks
again whether the project is still due, and verifies it as ``infra verify`` does: recorded,
the project's pages updated, drift posted to ``drift_webhook``
(:mod:`infra_automation.verify_webhook`).

The record, not the beat, says when a project is due, so the schedule survives restarts with
no schedule file, and two beats (two workers started with ``--beat``) cost one extra message a
tick and never a second verification. The beat runs in a thread of the worker (not Celery's
forked beat process): stopping or killing the worker by its PID stops the beat too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from infra_automation.events import Observer, utcnow
from infra_automation.exceptions import ConfigurationError, InfraError
from infra_automation.leases import Leases, holder_of
from infra_automation.record import events as events_table

if TYPE_CHECKING:
    from celery import Celery

    from infra_automation.config import Settings
    from infra_automation.engine import Engine
    from infra_automation.verify import VerifyReport

log = logging.getLogger(__name__)
VERIFY_DUE = "infra.verify_due"
VERIFY_PROJECT = "infra.verify_project"
SCHEDULE_ENTRY = "infra-verify"
MAX_TICK = 60.0  # seconds: how late a due project may be verified
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
PART = re.compile(r"([0-9]+)([smhd])")
BATCH = 200  # verify.finished rows fetched at a time


def parse_duration(text: str) -> float:
    """Seconds of ``"90s"``, ``"15m"``, ``"1h30m"``, ``"1d"`` (ConfigurationError otherwise)."""
    parts = PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigurationError(f"verify_every: {text!r} is not a duration like 90s, 15m, 1h, 1d")
    seconds = float(sum(int(n) * UNITS[u] for n, u in parts))
    if seconds <= 0:
        raise ConfigurationError(f"verify_every: {text!r} must be longer than 0 s")
    return seconds


def interval(settings: Settings) -> float | None:
    """``verify_every`` in seconds; None when it is not set (scheduled verify is off)."""
    return parse_duration(settings.verify_every) if settings.verify_every else None


def require_interval(settings: Settings) -> float:
    """``verify_every`` in seconds, for ``--beat`` (ConfigurationError when it is not set)."""
    every = interval(settings)
    if every is None:
        raise ConfigurationError(
            '--beat: nothing to schedule: set verify_every in infra.toml (e.g. verify_every = "1h")'
        )
    return every


def tick(every: float) -> float:
    """How often the beat asks which projects are due."""
    return min(every, MAX_TICK)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The app's ``beat_schedule``: empty unless ``verify_every`` is set."""
    every = interval(settings)
    if every is None:
        return {}
    period = tick(every)
    return {
        SCHEDULE_ENTRY: {
            "task": VERIFY_DUE,
            "schedule": timedelta(seconds=period),
            "options": {"queue": settings.scheduler_queue, "expires": period},
        }
    }


# --------------------------------------------------------------------------- due projects


def last_verified(db: sa.Engine, projects: Iterable[str]) -> dict[str, datetime]:
    """When each of ``projects`` was last verified (projects never verified are absent)."""
    wanted = set(projects)
    found: dict[str, datetime] = {}
    if not wanted:
        return found
    query = (
        sa.select(events_table.c.data, events_table.c.at)
        .where(events_table.c.kind == "verify.finished")
        .order_by(events_table.c.seq.desc())
        .execution_options(yield_per=BATCH)  # streamed: stops once every project is found
    )
    with db.connect() as conn:
        for row in conn.execute(query):
            project = row.data.get("project")
            if project in wanted and project not in found:
                found[project] = row.at
                if len(found) == len(wanted):
                    break
    return found


def is_due(last: datetime | None, every: float, now: datetime) -> bool:
    """Due when never verified, or verified at least ``every`` ago (less half a tick: the
    beat looks once a tick, so a project is verified every ``every``, not every
    ``every + tick``)."""
    if last is None:
        return True
    return (now - last).total_seconds() >= every - tick(every) / 2


def due_projects(engine: Engine, every: float, now: datetime | None = None) -> list[str]:
    """The projects with recorded state whose verification is due, in name order."""
    from infra_automation.verify import has_recorded_state, recorded_projects

    now = now or utcnow()
    projects = recorded_projects(engine)
    last = last_verified(engine.db, projects)
    due = [p for p in projects if is_due(last.get(p), every, now)]
    return [p for p in due if has_recorded_state(engine, p)]


# --------------------------------------------------------------------------- the tasks


@dataclass
class ScheduledVerify:
    """What the verify tasks of one worker process share."""

    engine: Engine
    observers: Sequence[Observer] = field(default_factory=list)  # the docs writer

    def every(self) -> float | None:
        return interval(self.engine.settings)

    def fan_out(self, send: Callable[[str], None]) -> list[str]:
        """Send ``infra.verify_project`` for each due project; the projects."""
        every = self.every()
        if every is None:
            log.warning("%s: verify_every is not set on this worker: nothing verified", VERIFY_DUE)
            return []
        due = due_projects(self.engine, every)
        for project in due:
            send(project)
        return due

    def verify(self, project: str) -> VerifyReport | None:
        """Verify ``project`` if it is still due and nobody verifies or changes it now."""
        every = self.every()
        if every is None:
            return None
        held = Leases(self.engine.db, run_id=None, ttl=self.engine.settings.lease_ttl)
        try:
            if held.try_acquire(f"verify:{project}") is not None:
                return None  # another worker verifies it (two beats, a repeated message)
            if holder_of(self.engine.db, f"project:{project}") is not None:
                log.info("verify of %s postponed: a run is changing it", project)
                return None
            last = last_verified(self.engine.db, [project]).get(project)
            if not is_due(last, every, utcnow()):
                return None
            return self._run(project)
        finally:
            held.close()

    def _run(self, project: str) -> VerifyReport:
        from infra_automation.verify import Verification

        report = Verification(self.engine, observers=self.observers).run(project)
        counts = ", ".join(f"{n} {s}" for s, n in report.counts().items() if n)
        level = logging.INFO if report.state.value == "in-sync" else logging.WARNING
        log.log(level, "verified %s: %s (%s; %s)", project, report.state, counts, report.verify_id)
        return report


def bind_verify_tasks(app: Celery, engine: Engine, observers: Sequence[Observer]) -> None:
    """Register ``infra.verify_due`` and ``infra.verify_project`` on ``app``."""
    scheduled = ScheduledVerify(engine, observers)
    queue = engine.settings.scheduler_queue

    def send(project: str) -> None:
        app.send_task(VERIFY_PROJECT, args=(project,), queue=queue)

    @app.task(name=VERIFY_DUE, ignore_result=True)  # type: ignore[untyped-decorator]
    def verify_due() -> None:
        try:
            scheduled.fan_out(send)
        except (InfraError, sa.exc.SQLAlchemyError) as exc:  # the next tick tries again
            log.warning("%s: %s", VERIFY_DUE, exc)

    @app.task(name=VERIFY_PROJECT, ignore_result=True)  # type: ignore[untyped-decorator]
    def verify_project(project: str) -> None:
        try:
            scheduled.verify(project)
        except (InfraError, sa.exc.SQLAlchemyError) as exc:  # due again at the next tick
            log.warning("%s %s: %s", VERIFY_PROJECT, project, exc)


def enable_beat(app: Celery) -> None:
    """Run Celery's beat service in a thread of the worker of ``app`` (``--beat``): a
    bootstep, so it starts once the worker is set up (its logging too) and stops with it."""
    from celery import bootsteps
    from celery.beat import EmbeddedService, Scheduler

    class BeatThread(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
        label = "infra beat"

        def __init__(self, worker: Any, **kwargs: Any) -> None:
            super().__init__(worker, **kwargs)
            self.service: Any = None

        def start(self, worker: Any) -> None:
            # In memory (no schedule file): the record says when a project is due.
            self.service = EmbeddedService(worker.app, thread=True, scheduler_cls=Scheduler)
            self.service.start()

        def stop(self, worker: Any) -> None:
            if self.service is not None:
                self.service.stop()

    app.steps["worker"].add(BeatThread)
