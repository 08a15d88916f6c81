"""The ``infra`` command line (typer + rich). The only place that prints or exits.

Exit codes: 0 success, 1 a step failed, 2 invalid input or refused (validation, planning,
configuration, unknown run, project locked by another run).

Plugins: modules named in ``INFRA_PLUGINS`` (comma-separated) or ``plugins`` of
``infra.toml`` are imported at start; they register executors with
``infra_automation.executors.register(key, factory)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer
from rich.console import Console

from infra_automation.changes import ChangeType
from infra_automation.cli import changes as changes_cli
from infra_automation.cli import render
from infra_automation.cli.db import app as db_app
from infra_automation.cli.junit import check_report_path, write_junit
from infra_automation.cli.server import serve_command, tokens_app, users_app
from infra_automation.config import Settings, load_plugins, load_settings
from infra_automation.docs.cli import app as docs_app
from infra_automation.engine import Engine
from infra_automation.events import Observer
from infra_automation.exceptions import InfraError, RecordError, RequestValidationError
from infra_automation.gitchanges import changed_requests
from infra_automation.lab.cli import app as lab_app
from infra_automation.planner import Plan
from infra_automation.progress import LiveProgress, PlainProgress
from infra_automation.results import RunResult
from infra_automation.secrets import redact, remember_url_password, safe_url
from infra_automation.summary import service_outputs

app = typer.Typer(
    help="infra: from a service request to a finished, documented landscape.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
catalog_app = typer.Typer(help="Services of the catalog.", no_args_is_help=True)
runs_app = typer.Typer(help="The run record.", no_args_is_help=True)
requests_app = typer.Typer(help="Request files (for CI/CD pipelines).", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(runs_app, name="runs")
app.add_typer(requests_app, name="requests")
app.add_typer(lab_app, name="lab")
app.add_typer(docs_app, name="docs")
app.add_typer(db_app, name="db")
app.add_typer(changes_cli.app, name="changes")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.command("server")(serve_command)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
T = TypeVar("T")

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="text or json")]
ParallelOpt = Annotated[
    int | None, typer.Option("--parallel", "-p", min=1, max=256, help="Steps at once (default 4)")
]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here")]
NoDocsOpt = Annotated[bool, typer.Option("--no-docs", help="Do not run observers (docs writer)")]


@dataclass
class State:
    root: Path | None = None

    def settings(self) -> Settings:
        settings = load_settings(self.root)
        remember_url_password(settings.database_url)  # error messages may quote the URL
        return settings

    def shown(self, message: str) -> str:
        """A message fit to print: no secret, no database password."""
        try:
            url = load_settings(self.root).database_url
        except InfraError:
            return str(redact(message))
        return str(redact(message.replace(url, safe_url(url))))


STATE = State()


@app.callback()
def _main(
    root: Annotated[
        Path | None, typer.Option("--root", help="Project root (default: $INFRA_ROOT or .)")
    ] = None,
) -> None:
    STATE.root = root
    with _errors():
        load_plugins(STATE.settings().plugins)


# Third-party loggers that repeat, as tracebacks, failures our step results already report.
QUIET_LOGGERS = ("nornir", "paramiko", "netmiko", "pyVmomi", "urllib3")


def _setup_logging() -> None:
    """Our warnings go to stderr through rich; third-party noise is kept off the screen."""
    from rich.logging import RichHandler

    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main() -> None:
    """Console script entry point."""
    _setup_logging()
    app()


# --- error handling ---------------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    err.print(f"[bold red]error[/]: {render.escape(STATE.shown(message))}")
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Library errors (and files or folders that cannot be used) become messages on stderr
    and exit code 2."""
    try:
        yield
    except RequestValidationError as exc:
        err.print(f"[bold red]error[/]: invalid {render.escape(exc.source)}:")
        for field_error in exc.errors:
            err.print(
                f"  - [bold]{render.escape(field_error.field)}[/]: "
                f"{render.escape(STATE.shown(field_error.message))}"
            )
        raise typer.Exit(EXIT_INVALID) from None
    except RecordError as exc:  # the record failed (locked, full disk): a run failure, not input
        _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    except InfraError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except OSError as exc:  # e.g. .infra cannot be created: the project root is not writable
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot use{where}: {exc.strerror or exc}")


def _guard(fn: Callable[[], T]) -> T:
    with _errors():
        return fn()
    raise AssertionError("unreachable")  # pragma: no cover - _errors always raises or returns


def _engine(*, docs: bool = False, observers: list[Observer] | None = None) -> Engine:
    return _guard(lambda: Engine(STATE.settings(), observers=observers or [], load_observers=docs))


def _check_output(output: str, allowed: tuple[str, ...]) -> None:
    if output not in allowed:
        _fail(f"--output must be one of {', '.join(allowed)}, not {output!r}")


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# --- catalog ----------------------------------------------------------------------------------


@catalog_app.command("list")
def catalog_list(output: OutputOpt = "text") -> None:
    """List the services of the catalog."""
    _check_output(output, ("text", "json"))
    catalog = _guard(lambda: _engine().catalog())
    if output == "json":
        _json([render.service_summary(s) for s in catalog.services.values()])
    else:
        out.print(render.catalog_table(catalog))


@catalog_app.command("show")
def catalog_show(name: str, output: OutputOpt = "text") -> None:
    """Show a service: parameters and steps."""
    _check_output(output, ("text", "json"))
    service = _guard(lambda: _engine().catalog().get(name))
    if output == "json":
        _json(service.model_dump(mode="json", exclude_none=True))
    else:
        out.print(render.service_view(service))


# --- plan / apply / resume --------------------------------------------------------------------


@app.command("plan")
def plan_cmd(
    request: Annotated[Path, typer.Argument(help="Request file (requests/*.yml)")],
    output: Annotated[str, typer.Option("--output", "-o", help="text, json or mermaid")] = "text",
) -> None:
    """Validate a request and print its plan: department, step, needs, wave."""
    _check_output(output, ("text", "json", "mermaid"))
    engine = _engine()
    plan = _guard(lambda: engine.plan(engine.load_request(request)))
    if output == "json":
        _json(plan.to_dict())
    elif output == "mermaid":
        typer.echo(plan.to_mermaid(), nl=False)
    else:
        out.print(render.plan_table(plan))


@app.command("apply")
def apply_cmd(
    request: Annotated[Path, typer.Argument(help="Request file (requests/*.yml)")],
    check: Annotated[
        bool, typer.Option("--check", help="Dry run: preview, change nothing")
    ] = False,
    parallel: ParallelOpt = None,
    output: OutputOpt = "text",
    junit: JunitOpt = None,
    no_docs: NoDocsOpt = False,
    change_type: Annotated[
        ChangeType | None,
        typer.Option("--change-type", help="Override the service's change type (if allowed)"),
    ] = None,
    allow_override: Annotated[
        bool, typer.Option("--allow-type-override", help="The requester may override the type")
    ] = False,
    change: Annotated[
        str | None, typer.Option("--change", help="The approved change (id) this apply runs")
    ] = None,
) -> None:
    """Plan and run a request, with a live view of the steps by department. Where a change
    policy governs the service, the request is a change: exit 3 while it waits for
    approval, 4 if refused (infra changes)."""
    gated: dict[str, str] = {}

    def prepare(engine: Engine) -> Plan:
        loaded = engine.load_request(request)
        if check:
            return engine.plan(loaded)
        plan, change_id = changes_cli.gated_plan(
            engine,
            loaded,
            change_type=change_type,
            allowed=allow_override,
            change_id=change,
            output=output,
        )
        if change_id is not None:
            gated["change"] = change_id
        return plan

    def work(engine: Engine, plan: Plan) -> RunResult:
        result = engine.run(plan, check=check, parallel=parallel)
        if "change" in gated:
            changes_cli.finish_change(engine, gated["change"], result)
        return result

    _execute(prepare, work, output, junit, no_docs)


@app.command("resume")
def resume_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id (infra runs list)")],
    parallel: ParallelOpt = None,
    output: OutputOpt = "text",
    junit: JunitOpt = None,
    no_docs: NoDocsOpt = False,
    changed: Annotated[
        str,
        typer.Option(
            "--changed",
            help="Finished steps whose definition changed since: 'rerun' them (and their "
            "dependents), or 'refuse' and list them",
        ),
    ] = "rerun",
) -> None:
    """Re-run the failed, skipped and never-started steps of a run; reuse the others."""
    if changed not in ("rerun", "refuse"):
        _fail(f"--changed must be 'rerun' or 'refuse', not {changed!r}")
    mode: Literal["rerun", "refuse"] = "refuse" if changed == "refuse" else "rerun"
    _execute(
        lambda engine: engine.resume_plan(run_id),
        lambda engine, plan: engine.resume(run_id, parallel=parallel, plan=plan, changed=mode),
        output,
        junit,
        no_docs,
    )


def _execute(
    prepare: Callable[[Engine], Plan],
    work: Callable[[Engine, Plan], RunResult],
    output: str,
    junit: Path | None,
    no_docs: bool,
) -> None:
    """Plan, check that the report can be written, run ``work`` with the progress view and
    observers, then report (and exit). A bad ``--junit`` path is refused before anything runs."""
    _check_output(output, ("text", "json"))
    with _progress(output) as observers:
        engine = _engine(docs=not no_docs, observers=observers)
        plan = _guard(lambda: prepare(engine))
        if junit is not None:
            _guard(lambda: check_report_path(junit))
        result = _guard(lambda: work(engine, plan))
    _report(result, plan, output, junit, engine)


@contextmanager
def _progress(output: str) -> Iterator[list[Observer]]:
    console = err if output == "json" else out
    if console.is_terminal:
        with LiveProgress(console) as live:
            yield [live]
    else:
        yield [PlainProgress(console)]


def _report(result: RunResult, plan: Plan, output: str, junit: Path | None, engine: Engine) -> None:
    """The result on stdout first, then the JUnit file: a report that cannot be written (the
    path was checked before the run) is an error on stderr; the exit code stays the run's."""
    result = result.redacted()  # what is printed or written for CI never holds a secret
    outputs = service_outputs(engine.catalog().get(plan.service), plan, result)
    if output == "json":
        _json({**render.result_dict(result), "outputs": outputs})
    else:
        out.print(render.result_table(result, plan))
        for name, value in outputs.items():
            shown = ", ".join(map(str, value)) if isinstance(value, list) else value
            out.print(f"[bold]{render.escape(name)}[/]: {render.escape(str(shown))}")
    code = EXIT_FAILED if result.failed else EXIT_OK
    if junit is not None:
        try:
            write_junit(junit, result, plan)
        except OSError as exc:
            status = "failed" if result.failed else "succeeded"
            err.print(
                f"[bold red]error[/]: run {render.escape(result.run_id)} {status}, but its "
                f"JUnit report could not be written to {render.escape(str(junit))}: "
                f"{render.escape(exc.strerror or str(exc))}"
            )
    raise typer.Exit(code)


# --- runs -------------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    project: Annotated[str | None, typer.Option("--project", help="Only this project")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    output: OutputOpt = "text",
) -> None:
    """Recorded runs, newest first."""
    _check_output(output, ("text", "json"))
    runs = _guard(lambda: _engine().store.list_runs(project=project, limit=limit))
    if output == "json":
        _json([render.run_dict(r) for r in runs])
    else:
        out.print(render.runs_table(runs))


@runs_app.command("show")
def runs_show(
    run_id: str,
    output: OutputOpt = "text",
    events: Annotated[bool, typer.Option("--events", help="Also list the events")] = False,
) -> None:
    """One run: its steps, statuses, timings, errors (and events)."""
    _check_output(output, ("text", "json"))
    engine = _engine()
    run = _guard(lambda: engine.store.get_run(run_id))
    event_list = engine.store.events(run_id) if events else []
    if output == "json":
        data = render.run_dict(run)
        if events:
            data["events"] = [render.event_dict(e) for e in event_list]
        _json(data)
        return
    out.print(render.run_view(run))
    if events:
        out.print(render.events_table(event_list))


if __name__ == "__main__":  # pragma: no cover
    main()


# --- requests (CI/CD) -------------------------------------------------------------------------


@requests_app.command("changed")
def requests_changed(
    since: Annotated[str, typer.Option("--since", help="Git revision, e.g. origin/main")],
    output: OutputOpt = "text",
) -> None:
    """Request files added or modified since a git revision (one path per line)."""
    _check_output(output, ("text", "json"))
    settings = _guard(STATE.settings)
    folder = str(settings.requests_dir.relative_to(settings.root))
    paths = _guard(lambda: changed_requests(settings.root, since, folder))
    shown = [str(p.relative_to(settings.root)) for p in paths]
    if output == "json":
        _json(shown)
    else:
        for path in shown:
            typer.echo(render.visible(path))
