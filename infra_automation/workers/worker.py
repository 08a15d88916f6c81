"""``infra worker``: which queues a worker may serve, and the worker itself."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

from infra_automation.catalog import load_catalog
from infra_automation.config import Settings
from infra_automation.engine import Engine, load_entry_point_observers
from infra_automation.events import Observer
from infra_automation.exceptions import ConfigurationError, InfraError
from infra_automation.executors.registry import EXTRAS, REGISTRY, ExecutorRegistry
from infra_automation.metrics.prometheus import serve_metrics
from infra_automation.secrets import remember_url_password
from infra_automation.workers.app import make_app
from infra_automation.workers.beat import bind_verify_tasks, enable_beat, require_interval
from infra_automation.workers.queues import require_catalog_mapped
from infra_automation.workers.service import SchedulerService
from infra_automation.workers.tasks import WorkerContext, bind_tasks


def departments(registry: ExecutorRegistry) -> dict[str, list[str]]:
    """Department -> its executor keys (what the registry declares; nothing imported)."""
    out: dict[str, list[str]] = {}
    for key in registry.keys():  # noqa: SIM118 - the registry is not iterable
        try:
            dept = registry.info(key).department
        except InfraError:  # its module cannot even be imported: named by missing()
            dept = key.partition(".")[0]
        out.setdefault(dept, []).append(key)
    return out


def missing(registry: ExecutorRegistry, key: str) -> str | None:
    """Why executor ``key`` cannot run here (its SDK and the pip extra), or None."""
    try:
        info = registry.info(key)
    except InfraError as exc:
        return str(exc)
    absent = [m for m in info.requires if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    extra = info.extra or EXTRAS.get(absent[0], "all")
    return f"executor {key!r} needs {', '.join(absent)}: pip install 'infra-automation[{extra}]'"


def queue_problems(settings: Settings, registry: ExecutorRegistry, queue: str) -> list[str]:
    """Why this worker cannot serve ``queue`` (empty: it can)."""
    if queue == settings.scheduler_queue:
        return []
    served = {d: keys for d, keys in departments(registry).items() if settings.queue_of(d) == queue}
    if not served:
        known = sorted({settings.queue_of(d) for d in departments(registry)})
        return [f"no department's steps go to it (queues: {', '.join(known)})"]
    return [why for keys in served.values() for k in keys if (why := missing(registry, k))]


def choose_queues(
    settings: Settings, registry: ExecutorRegistry, given: Sequence[str] | None
) -> list[str]:
    """The queues to serve: those given (each must be servable, ConfigurationError naming
    the queue and the pip extra otherwise), or the scheduler's and every servable one."""
    if given:
        for queue in given:
            problems = queue_problems(settings, registry, queue)
            if problems:
                raise ConfigurationError(f"--queues: cannot serve {queue!r}: {problems[0]}")
        return list(dict.fromkeys(given))
    every = sorted({settings.queue_of(d) for d in departments(registry)})
    usable = [q for q in every if not queue_problems(settings, registry, q)]
    return [settings.scheduler_queue, *usable]


def serve(
    settings: Settings,
    queues: Sequence[str] | None,
    *,
    concurrency: int = 4,
    events: bool = False,
    beat: bool = False,
    metrics_port: int | None = None,
    registry: ExecutorRegistry | None = None,
) -> None:
    """Run a worker in this process until it is stopped (SIGTERM: warm shutdown); with
    ``beat``, also the beat schedule of ``verify_every`` (:mod:`~.beat`); with
    ``metrics_port``, Prometheus ``/metrics`` of the record on ``127.0.0.1:metrics_port``."""
    registry = registry or REGISTRY
    remember_url_password(settings.broker_url or "")
    chosen = choose_queues(settings, registry, queues)
    if settings.queues:  # every department of the catalog has a queue (exit 2 otherwise)
        require_catalog_mapped(settings, load_catalog(settings.catalog_dir))
    if beat:
        require_interval(settings)  # ConfigurationError: nothing to schedule
    app = make_app(settings)
    context = WorkerContext(engine=Engine(settings, registry=registry, load_observers=False))
    context.engine.db  # noqa: B018 - open (and check) the database before taking work
    if metrics_port is not None:
        serve_metrics(context.engine.db, metrics_port)
    if settings.scheduler_queue in chosen:
        context.service = SchedulerService(settings, app, registry)
        context.service.start()
    bind_tasks(app, context)
    bind_verify_tasks(app, context.engine, _docs_observers(context.engine))
    argv = ["worker", "-Q", ",".join(chosen), "-c", str(concurrency), "-P", "threads"]
    argv += ["-n", f"infra-{os.getpid()}@%h", "--without-gossip", "--without-mingle"]
    argv += ["--loglevel", "INFO", *(["-E"] if events else [])]
    if beat:
        enable_beat(app)
    app.worker_main(argv)


def _docs_observers(engine: Engine) -> list[Observer]:
    """The entry-point observers (the docs writer) for scheduled verifications."""
    return [
        obs
        for _, obs, _ in load_entry_point_observers(engine.settings.root, engine.db)
        if obs is not None
    ]
