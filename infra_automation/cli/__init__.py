"""The ``infra`` command line (typer + rich). The only place that prints or exits.

Exit codes: 0 success, 1 a step failed, 2 invalid input or refused (validation, planning,
configuration, unknown run, project locked by another run; with ``--server`` also a server
that cannot be reached or refuses the token), 3 / 4 a change waits for approval / is refused.

``infra --server URL`` (or ``INFRA_SERVER``) makes ``plan``, ``apply [--check]
[--parallel]``, ``resume`` and ``runs list|show`` calls to that ``infra server``, with the
same output, progress view (fed by the run's event stream) and exit codes; the token comes
from ``INFRA_TOKEN`` or the file of ``--token-file``, never from the command line. Nothing is
read or written locally but the request file (and the ``--junit`` report). Without a server
every command runs locally.

Plugins: modules named in ``INFRA_PLUGINS`` (comma-separated) or ``plugins`` of
``infra.toml`` are imported at start; they register executors with
``infra_automation.executors.register(key, factory)``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar
from urllib.parse import urlsplit

import typer
from rich.console import Console

from infra_automation import logs
from infra_automation.changes import ChangeType
from infra_automation.cli import changes as changes_cli
from infra_automation.cli import render
from infra_automation.cli import stats as stats_cli
from infra_automation.cli.db import app as db_app
from infra_automation.cli.junit import check_report_path, write_junit
from infra_automation.cli.server import serve_command, tokens_app, users_app
from infra_automation.cli.verify import verify as verify_cmd
from infra_automation.cli.worker import apply_work, resume_work, worker_cmd
from infra_automation.config import Settings, load_plugins, load_settings
from infra_automation.docs.cli import app as docs_app
from infra_automation.engine import Engine
from infra_automation.events import Observer
from infra_automation.exceptions import (
    InfraError,
    RecordError,
    RequestValidationError,
    ServiceError,
)
from infra_automation.gitchanges import changed_requests
from infra_automation.lab.cli import app as lab_app
from infra_automation.planner import Plan
from infra_automation.progress import LiveProgress, PlainProgress
from infra_automation.record import EventRecord, RunRecord
from infra_automation.request import read_request
from infra_automation.results import RunResult
from infra_automation.secrets import redact, remember, remember_url_password, safe_url
from infra_automation.summary import service_outputs

if TYPE_CHECKING:  # httpx (the `server` extra) is needed only with --server
    from infra_automation.client import InfraClient

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
app.command("worker")(worker_cmd)
app.add_typer(stats_cli.stats_app, name="stats")
app.add_typer(stats_cli.incidents_app, name="incidents")
app.command(
    "verify",
    help="Compare the live landscape with the record "
    "(exit 0 in sync, 3 drifted, 1 unverifiable, 2 invalid).",
)(verify_cmd)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
T = TypeVar("T")
REMOTE_COMMANDS = frozenset({"plan", "apply", "resume", "runs"})  # what --server sends
TOKEN_VARIABLE = "INFRA_TOKEN"  # noqa: S105 - the name of the variable, not a token
# the error codes a server answers when a change gates the run (infra_automation.changes)
CHANGE_EXITS = {"waiting": 3, "voided": 3, "refused": 4}

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="text or json")]
ParallelOpt = Annotated[
    int | None, typer.Option("--parallel", "-p", min=1, max=256, help="Steps at once (default 4)")
]
JunitOpt = Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here")]
DetachOpt = Annotated[
    bool, typer.Option("--detach", help="With a broker: print the run id and return at once")
]
NoDocsOpt = Annotated[bool, typer.Option("--no-docs", help="Do not run observers (docs writer)")]


@dataclass
class State:
    root: Path | None = None
    server: str | None = None  # --server / INFRA_SERVER: plan, apply, resume, runs go there
    token_file: Path | None = None

    def settings(self) -> Settings:
        settings = load_settings(self.root)
        remember_url_password(settings.database_url)  # error messages may quote the URL
        return settings

    def shown(self, message: str) -> str:
        """A message fit to print: no secret, no database password, no token."""
        if self.server:  # a client of the server: no local settings are read
            return str(redact(message))
        try:
            url = load_settings(self.root).database_url
        except InfraError:
            return str(redact(message))
        return str(redact(message.replace(url, safe_url(url))))


STATE = State()


@app.callback()
def _main(
    ctx: typer.Context,
    root: Annotated[
        Path | None, typer.Option("--root", help="Project root (default: $INFRA_ROOT or .)")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="INFRA_SERVER",
            show_envvar=True,
            help="URL of an infra server: plan, apply, resume and runs go there "
            "(token from $INFRA_TOKEN or --token-file)",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="INFRA_TOKEN_FILE",
            show_envvar=True,
            help="File holding the API token for --server (instead of $INFRA_TOKEN)",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", envvar=logs.FORMAT_VARIABLE, help="Logs: text or json"),
    ] = None,
) -> None:
    _guard(lambda: logs.configure(log_format))  # json: run, step, project, department ids
    STATE.root, STATE.token_file = root, token_file
    STATE.server = _server_url(server) if server else None
    if STATE.server and ctx.invoked_subcommand in REMOTE_COMMANDS:
        return  # a client of the server: no local settings, plugins, record or secrets
    with _errors():
        load_plugins(STATE.settings().plugins)


def _server_url(url: str) -> str:
    """``--server`` checked: an http(s) URL with a host and no credentials in it."""
    where = "--server (or INFRA_SERVER)"
    try:
        parts = urlsplit(url.strip())
        has_host = bool(parts.hostname)
    except ValueError:
        _fail(f"{where}: not a URL")
    if parts.scheme not in ("http", "https") or not has_host:
        _fail(f"{where}: must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        _fail(f"{where}: must not hold credentials (the token comes from {TOKEN_VARIABLE})")
    if parts.query or parts.fragment:
        _fail(f"{where}: must not have a query or fragment")
    return url.strip().rstrip("/")


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
    except ServiceError as exc:
        _fail(_service_message(exc), CHANGE_EXITS.get(exc.error, EXIT_INVALID))
    except InfraError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except OSError as exc:  # e.g. .infra cannot be created: the project root is not writable
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot use{where}: {exc.strerror or exc}")


def _service_message(exc: ServiceError) -> str:
    """What a refused or failed call to the server means, in words (never the token)."""
    detail = str(exc).removeprefix(f"server answered {exc.status} ({exc.error}): ")
    if exc.status == 0 and exc.error == "unreachable":
        return f"cannot reach the infra server: {detail}"
    if exc.status == 0:
        return f"the infra server's answer is not the API's: {detail}"
    if exc.status == 401:
        return (
            f"the infra server refused the credentials (401): {detail}; give a valid API "
            f"token in {TOKEN_VARIABLE} or a --token-file (infra tokens create NAME)"
        )
    if exc.status == 403:
        return f"not allowed by the infra server (403): {detail}"
    if exc.error in CHANGE_EXITS:
        return f"change {exc.error}: {detail}"
    return f"the infra server answered {exc.status} ({exc.error}): {detail}"


def _guard(fn: Callable[[], T]) -> T:
    with _errors():
        return fn()
    raise AssertionError("unreachable")  # pragma: no cover - _errors always raises or returns


def _engine(*, docs: bool = False, observers: list[Observer] | None = None) -> Engine:
    watching = [*(observers or []), *logs.observers()]  # the JSON log of the run's events
    return _guard(lambda: Engine(STATE.settings(), observers=watching, load_observers=docs))


def _check_output(output: str, allowed: tuple[str, ...]) -> None:
    if output not in allowed:
        _fail(f"--output must be one of {', '.join(allowed)}, not {output!r}")


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# --- the server as the back end (--server) ----------------------------------------------------


def _token() -> str:
    """The API token: the one line of ``--token-file``, else ``$INFRA_TOKEN`` (masked from
    every message from now on)."""
    path = STATE.token_file
    if path is not None:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            _fail(f"--token-file: cannot read {path}: {reason or exc}")
        if not token or any(c.isspace() for c in token):
            _fail(f"--token-file: {path} must hold one token, on one line")
    else:
        token = os.environ.get(TOKEN_VARIABLE, "").strip()
        if not token:
            _fail(f"--server needs an API token: set {TOKEN_VARIABLE} or give --token-file FILE")
    remember(token)
    return token


def _client() -> InfraClient:
    """The API client of ``--server``, as the token's user."""
    try:
        from infra_automation.client import InfraClient
    except ImportError as exc:  # httpx is not installed
        _fail(f"--server needs {exc.name}: pip install 'infra-automation[server]'")
    assert STATE.server is not None
    return InfraClient(STATE.server, _token())


def _unsupported(**given: object) -> None:
    """Options the server does not take are refused (exit 2), never silently ignored."""
    for name, value in given.items():
        if value not in (None, False):
            option = "--" + name.replace("_", "-")
            _fail(f"{option}: not supported with --server (the server runs with its settings)")


def _request_data(path: Path) -> dict[str, Any]:
    """The request file's mapping (the server validates it against its catalog)."""
    return _guard(lambda: read_request(path))


def _remote_execute(
    start: Callable[[InfraClient], Mapping[str, Any]], output: str, junit: Path | None
) -> NoReturn:
    """Start a run on the server, show its events as they come (the same progress view as a
    local run), then report it like a local run (and exit)."""
    from infra_automation.client import event_from_api, plan_of_run, result_from_api, run_from_api

    _check_output(output, ("text", "json"))
    if junit is not None:
        _guard(lambda: check_report_path(junit))
    with _client() as client:
        accepted = _guard(lambda: start(client))
        if accepted.get("run_id") is None:  # a change that waits for approval (exit 3)
            reason = (accepted.get("change") or {}).get("reason") or "the change waits"
            _fail(f"{accepted.get('status')}: {reason}", CHANGE_EXITS["waiting"])
        run_id = str(accepted["run_id"])
        with _progress(output) as observers:
            try:
                for body in client.stream(run_id):
                    event = event_from_api(body)
                    for observer in observers:
                        observer.on_event(event)
            except ServiceError as exc:  # the run goes on on the server: say which it is
                _fail(f"run {run_id} started, but its events stopped: {_service_message(exc)}")
            except InfraError as exc:
                _fail(f"run {run_id} started, but its events cannot be read: {exc}")
        body = _guard(lambda: client.run(run_id))
        run = _guard(lambda: run_from_api(body))
    outputs = dict(body.get("outputs") or {})  # the service's outputs, when the server sends them
    _report(result_from_api(run), plan_of_run(run), output, junit, outputs)


def _remote_runs(project: str | None, limit: int, full: bool) -> list[RunRecord]:
    """The newest runs; ``full`` adds each one's request (what ``--output json`` prints)."""
    from infra_automation.client import run_from_api

    def listed(client: InfraClient) -> list[RunRecord]:
        bodies = client.latest_runs(project=project, limit=limit)
        if full:  # a run list carries no request: read it from each run
            bodies = [b if "request" in b else client.run(str(b["id"])) for b in bodies]
        return [replace(run_from_api(b), steps=()) for b in bodies]

    with _client() as client:
        return _guard(lambda: listed(client))


def _remote_run(run_id: str, events: bool) -> tuple[RunRecord, list[EventRecord]]:
    from infra_automation.client import event_record_from_api, run_from_api

    def shown(client: InfraClient) -> tuple[RunRecord, list[EventRecord]]:
        run = run_from_api(client.run(run_id))
        found = client.events(run_id) if events else []
        return run, [event_record_from_api(e) for e in found]

    with _client() as client:
        return _guard(lambda: shown(client))


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
    if STATE.server:
        _remote_plan(request, output)
        return
    engine = _engine()
    plan = _guard(lambda: engine.plan(engine.load_request(request)))
    _print_plan(plan, plan.to_dict(), output)


def _remote_plan(request: Path, output: str) -> None:
    from infra_automation.client import plan_from_api

    data = _request_data(request)
    with _client() as client:
        body = _guard(lambda: client.plan(data))
    _print_plan(_guard(lambda: plan_from_api(body)), body, output)


def _print_plan(plan: Plan, data: dict[str, Any], output: str) -> None:
    if output == "json":
        _json(data)
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
    detach: DetachOpt = False,
) -> None:
    """Plan and run a request, with a live view of the steps by department. Where a change
    policy governs the service, the request is a change: exit 3 while it waits for
    approval, 4 if refused (infra changes)."""
    if STATE.server:
        _unsupported(
            no_docs=no_docs,
            change_type=change_type,
            allow_type_override=allow_override,
            change=change,
            detach=detach,
        )
        data = _request_data(request)
        start: Callable[[InfraClient], Mapping[str, Any]] = (
            (lambda c: c.check(data, parallel=parallel))
            if check
            else (lambda c: c.submit(data, parallel=parallel))
        )
        _remote_execute(start, output, junit)
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

    run = apply_work(check=check, parallel=parallel, detach=detach, docs=not no_docs, output=output)

    def work(engine: Engine, plan: Plan) -> RunResult:
        result = run(engine, plan)
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
    detach: DetachOpt = False,
) -> None:
    """Re-run the failed, skipped and never-started steps of a run; reuse the others."""
    if changed not in ("rerun", "refuse"):
        _fail(f"--changed must be 'rerun' or 'refuse', not {changed!r}")
    mode: Literal["rerun", "refuse"] = "refuse" if changed == "refuse" else "rerun"
    if STATE.server:
        _unsupported(parallel=parallel, no_docs=no_docs, changed=mode == "refuse", detach=detach)
        _remote_execute(lambda client: client.resume(run_id), output, junit)
    _execute(
        lambda engine: engine.resume_plan(run_id),
        resume_work(
            run_id, parallel=parallel, changed=mode, detach=detach, docs=not no_docs, output=output
        ),
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
    shown = result.redacted()
    outputs = _guard(lambda: service_outputs(engine.catalog().get(plan.service), plan, shown))
    _report(shown, plan, output, junit, outputs)


@contextmanager
def _progress(output: str) -> Iterator[list[Observer]]:
    console = err if output == "json" else out
    if console.is_terminal:
        with LiveProgress(console) as live:
            yield [live]
    else:
        yield [PlainProgress(console)]


def _report(
    result: RunResult, plan: Plan, output: str, junit: Path | None, outputs: dict[str, Any]
) -> NoReturn:
    """The result on stdout first, then the JUnit file: a report that cannot be written (the
    path was checked before the run) is an error on stderr; the exit code stays the run's."""
    result = result.redacted()  # what is printed or written for CI never holds a secret
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
    if STATE.server:
        runs = _remote_runs(project, limit, full=output == "json")
    else:
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
    if STATE.server:
        run, event_list = _remote_run(run_id, events)
    else:
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
