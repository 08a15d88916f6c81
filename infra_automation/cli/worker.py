"""``infra worker`` and what ``infra apply`` / ``infra resume`` do when a broker is configured.

Wired into the main CLI (:mod:`infra_automation.cli`)::

    app.command("worker")(worker_cmd)
    # apply:  work = apply_work(check=..., parallel=..., detach=..., docs=..., output=...)
    # resume: work = resume_work(run_id, parallel=..., changed=..., detach=..., docs=..., ...)

With no broker, the work runs in this process as before (``--detach`` is refused: there is
nobody to hand the run to); with one, the run is queued, sent to the schedulers and followed
from the record (same progress view, same result and exit code), or with ``--detach`` its id
is printed at once (``infra runs show <id>`` follows it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Literal

import typer

from infra_automation import logs
from infra_automation.engine import Engine
from infra_automation.exceptions import ConfigurationError
from infra_automation.planner import Plan
from infra_automation.results import RunResult

Work = Callable[[Engine, Plan], RunResult]
NO_BROKER = (
    "--detach: no broker configured (INFRA_BROKER_URL or broker_url in infra.toml), "
    "so the run would run here; drop --detach"
)


def worker_cmd(
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            "-Q",
            help="Comma-separated queues to serve (default: 'runs' and every department "
            "queue whose SDK is installed); 'runs' makes this worker a scheduler",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=256, help="Steps at once")
    ] = 4,
    events: Annotated[
        bool, typer.Option("--events", "-E", help="Send Celery task events (for flower)")
    ] = False,
    beat: Annotated[
        bool,
        typer.Option(
            "--beat",
            "-B",
            help="Also run the beat: verify every project each verify_every (infra.toml); "
            "several beats verify a project once",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Also serve Prometheus /metrics (the record's, as the server's "
            "/api/v1/metrics) on 127.0.0.1:PORT (default: off)",
        ),
    ] = None,
) -> None:
    """Start a worker: run the steps of the given queues (and schedule runs for 'runs')."""
    from infra_automation.cli import STATE, _guard
    from infra_automation.workers.worker import serve

    settings = _guard(STATE.settings)
    logs.for_celery(settings.database_url)  # --log-format json: tasks log their run and step
    chosen = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    _guard(
        lambda: serve(
            settings,
            chosen,
            concurrency=concurrency,
            events=events,
            beat=beat,
            metrics_port=metrics_port,
        )
    )


def apply_work(*, check: bool, parallel: int | None, detach: bool, docs: bool, output: str) -> Work:
    """The ``work`` of ``infra apply``: here, or through the workers."""

    def work(engine: Engine, plan: Plan) -> RunResult:
        if not engine.settings.broker_url:
            if detach:
                raise ConfigurationError(NO_BROKER)
            return engine.run(plan, check=check, parallel=parallel)
        from infra_automation.workers import client

        run_id = client.submit(engine, plan, check=check, parallel=parallel, docs=docs)
        return _follow_or_detach(engine, run_id, detach, output)

    return work


def resume_work(
    run_id: str,
    *,
    parallel: int | None,
    changed: Literal["rerun", "refuse"],
    detach: bool,
    docs: bool,
    output: str,
) -> Work:
    """The ``work`` of ``infra resume``: here, or through the workers."""

    def work(engine: Engine, plan: Plan) -> RunResult:
        if not engine.settings.broker_url:
            if detach:
                raise ConfigurationError(NO_BROKER)
            return engine.resume(run_id, parallel=parallel, plan=plan, changed=changed)
        from infra_automation.workers import client

        new = client.submit_resume(
            engine, run_id, parallel=parallel, plan=plan, changed=changed, docs=docs
        )
        return _follow_or_detach(engine, new, detach, output)

    return work


def _follow_or_detach(engine: Engine, run_id: str, detach: bool, output: str) -> RunResult:
    if detach:
        typer.echo(json.dumps({"run_id": run_id}) if output == "json" else run_id)
        raise typer.Exit(0)
    from infra_automation.workers import client

    return client.follow(engine, run_id)
