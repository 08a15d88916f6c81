"""``infra stats`` and ``infra incidents list|ack``: service levels from the record.

``infra stats [--since 30d] [--until WHEN] [--project P] [--department D]
[--output text|json|csv] [--sla FILE]`` prints the figures of
:mod:`infra_automation.metrics` (overall, per project, service and department, DORA, SLA
breaches against ``sla.yml``). ``--since``/``--until``: a span back from now (``90m``,
``12h``, ``30d``) or an ISO 8601 date or time (UTC unless it says otherwise).

``infra stats capacity [--project P] [--request FILE] [--output text|json]`` prints the
headroom of every pool (:mod:`infra_automation.metrics.capacity`): IPAM VLANs and subnets,
the vCenter cluster's vCPUs and memory, the datastore, the guest hosts; with ``--request``
also what that request would take and whether it fits (the dry run's pre-flight).

Exit codes: 0 (also with breaches: they are figures, not failures), 1 the record cannot be
read, 2 invalid input (a bad option, an invalid ``sla.yml``, an unknown incident; for
``capacity --request``, a request that does not fit, as its dry run would be refused):
nothing is written.

The main CLI wires them as::

    from infra_automation.cli import stats as stats_cli
    app.add_typer(stats_cli.stats_app, name="stats")
    app.add_typer(stats_cli.incidents_app, name="incidents")
"""

from __future__ import annotations

import csv
import getpass
import io
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from infra_automation.config import Settings, load_settings
from infra_automation.engine import Engine as InfraEngine
from infra_automation.events import utcnow
from infra_automation.exceptions import InfraError, RecordError
from infra_automation.inventory import load_inventory
from infra_automation.metrics import (
    SLA_FILE,
    Incident,
    StatsReport,
    Targets,
    add_acknowledgement,
    compute_stats,
    derive_incidents,
    load_history,
    load_targets,
)
from infra_automation.metrics._gc import paused_gc
from infra_automation.metrics.capacity import (
    SOURCES,
    CapacityCheck,
    CapacityContext,
    Headroom,
    amount,
    assess,
    read_headroom,
)
from infra_automation.metrics.report import Figures
from infra_automation.metrics.sla import parse_moment
from infra_automation.record import open_database
from infra_automation.secrets import redact

EXIT_ERROR, EXIT_INVALID = 1, 2
T = TypeVar("T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
incidents_app = typer.Typer(help="Incidents: failed runs and drift.", add_completion=False)
stats_app = typer.Typer(
    help="Service levels (infra stats) and capacity (infra stats capacity).",
    add_completion=False,
)

RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Project root (default: infra --root, $INFRA_ROOT or .)."),
]
SinceOpt = Annotated[str, typer.Option("--since", help="90m, 12h, 30d or an ISO date")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="End (default: now)")]
ProjectOpt = Annotated[str | None, typer.Option("--project", "-p", help="Only this project")]
DepartmentOpt = Annotated[
    str | None, typer.Option("--department", "-d", help="Only this department")
]


@stats_app.callback(invoke_without_command=True)
def stats(
    ctx: typer.Context,
    since: SinceOpt = "30d",
    until: UntilOpt = None,
    project: ProjectOpt = None,
    department: DepartmentOpt = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text, json or csv")] = "text",
    sla: Annotated[
        Path | None, typer.Option("--sla", help=f"SLA targets (default: <root>/{SLA_FILE})")
    ] = None,
    root: RootOpt = None,
) -> None:
    """Lead times, OLA waits, step durations, change and incident figures, DORA's five
    metrics and SLA breaches, over a time range (``infra stats capacity``: the pools)."""
    if ctx.invoked_subcommand is not None:
        return
    _check_output(output, ("text", "json", "csv"))
    start, end = _range(since, until)
    settings = _settings(root or _parent_root(ctx))
    try:
        targets = load_targets(sla or settings.root / SLA_FILE)
    except InfraError as exc:
        _fail(f"--sla: {exc}")
    with paused_gc():  # the figures of 10,000 runs: 100,000 objects, no cycle (see _gc.py)
        _show_stats(settings, (start, end), project, department, targets, output)


def _show_stats(
    settings: Settings,
    span: tuple[datetime, datetime],
    project: str | None,
    department: str | None,
    targets: Targets,
    output: str,
) -> None:
    """Read, compute and print (the history and the report are freed on return, before the
    garbage collector runs again)."""
    with _database(settings) as engine:
        history = _read(lambda: load_history(engine, *span, project=project))
    report = compute_stats(history, targets, department=department)
    if output == "json":
        typer.echo(json.dumps(redact(report.to_dict()), indent=2, default=str))
    elif output == "csv":
        typer.echo(to_csv(report), nl=False)
    else:
        _print_report(report)


@stats_app.command("capacity")
def capacity(
    ctx: typer.Context,
    project: ProjectOpt = None,
    request: Annotated[
        Path | None, typer.Option("--request", "-r", help="What this request would take")
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    root: RootOpt = None,
) -> None:
    """Headroom of every pool the catalog draws on (IPAM, vCenter cluster and datastore,
    guest hosts): used, per project and free; with --request, whether it fits."""
    _check_output(output, ("text", "json"))
    settings = _settings(root or _parent_root(ctx))
    engine = InfraEngine(settings, load_observers=False)
    try:
        found = _capacity(engine, settings, request)
    except InfraError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    finally:
        engine.close()
    headroom = found.headroom.for_project(project) if project else found.headroom
    if output == "json":
        data = found.to_dict() if request is not None else {}
        typer.echo(json.dumps(redact({**data, **headroom.to_dict()}), indent=2))
    else:
        _print_capacity(headroom, found if request is not None else None, project)
    if request is not None and not found.fits:
        raise typer.Exit(EXIT_INVALID)


def _capacity(engine: InfraEngine, settings: Settings, request: Path | None) -> CapacityCheck:
    """The headroom of every pool and, for ``request``, its demand (nothing is refused)."""
    if request is None:
        inventory = load_inventory(settings.inventory)
        inventory.db = engine.db  # the host bindings may be kept in the record
        return CapacityCheck(read_headroom(CapacityContext(inventory, engine.db, settings.root)))
    plan = engine.plan(engine.load_request(request))
    ctx = CapacityContext(engine.inventory(plan.request), engine.db, settings.root)
    found = assess(plan, ctx)
    read = {p.source for p in found.headroom.pools} | {u.source for u in found.headroom.unreadable}
    rest = read_headroom(ctx, [s for s in SOURCES if s not in read])
    pools = found.headroom.pools + rest.pools
    return replace(found, headroom=Headroom(pools, found.headroom.unreadable + rest.unreadable))


@incidents_app.command("list")
def incidents_list(
    ctx: typer.Context,
    since: SinceOpt = "30d",
    project: ProjectOpt = None,
    department: DepartmentOpt = None,
    only_open: Annotated[bool, typer.Option("--open", help="Only unresolved ones")] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    root: RootOpt = None,
) -> None:
    """Incidents opened in the range, oldest first."""
    _check_output(output, ("text", "json"))
    start, end = _range(since, None)
    settings = _settings(root or _parent_root(ctx))
    with _database(settings) as engine:
        history = _read(lambda: load_history(engine, start, end, project=project))
    found = [
        i
        for i in derive_incidents(history)
        if i.opened_at >= start
        and (department is None or i.department == department)
        and (i.open or not only_open)
    ]
    if output == "json":
        typer.echo(json.dumps([i.to_dict() for i in found], indent=2))
        return
    _print_incidents(found)


@incidents_app.command("ack")
def incidents_ack(
    ctx: typer.Context,
    incident_id: Annotated[str, typer.Argument(help="Incident id (infra incidents list)")],
    by: Annotated[str | None, typer.Option("--by", help="Who (default: $USER)")] = None,
    comment: Annotated[str | None, typer.Option("--comment", help="A note")] = None,
    root: RootOpt = None,
) -> None:
    """Acknowledge an incident: it counts as responded to from now on."""
    who = (by or getpass.getuser()).strip()
    if not who:
        _fail("--by: give a name")
    settings = _settings(root or _parent_root(ctx))
    with _database(settings) as engine:
        history = _read(lambda: load_history(engine, EPOCH))
        known = {i.id: i for i in derive_incidents(history)}
        if incident_id not in known:
            _fail(f"incident_id: no incident {incident_id!r} in the record")
        ack = _read(lambda: add_acknowledgement(engine, incident_id, who, comment=comment))
    out.print(f"{escape(incident_id)} acknowledged by {escape(who)} at {ack.at.isoformat()}")


# --- parsing ----------------------------------------------------------------------------------


def _moment(value: str, option: str, now: datetime) -> datetime:
    try:
        return parse_moment(value, now)
    except ValueError as exc:
        _fail(f"{option}: {exc}")


def _range(since: str, until: str | None) -> tuple[datetime, datetime]:
    now = utcnow()
    end = _moment(until, "--until", now) if until else now
    start = _moment(since, "--since", end)
    if start >= end:
        _fail(f"--since: {start.isoformat()} is not before the end {end.isoformat()}")
    return start, end


# --- output -----------------------------------------------------------------------------------


def to_csv(report: StatsReport) -> str:
    """One row per figure: scope, name, metric (dotted), value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scope", "name", "metric", "value"])
    data = report.to_dict()
    writer.writerows(("total", "", k, v) for k, v in _flat(data["totals"]))
    for scope in ("projects", "services", "departments"):
        for name, figures in data[scope].items():
            writer.writerows((scope[:-1], name, k, v) for k, v in _flat(figures))
    for breach in data["breaches"]:
        name = breach["incident_id"] or breach["run_id"] or ""
        writer.writerows(("breach", name, k, v) for k, v in breach.items())
    return buffer.getvalue()


def _flat(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", "" if value is None else value


def human(seconds: float | None) -> str:
    """``1h 39m``, ``57m``, ``42s``; ``-`` when there is no value."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    shown = " ".join(p for p in parts if p)
    return shown if whole >= 60 else f"{secs}s"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _print_report(report: StatsReport) -> None:
    scope = " ".join(
        f"{k} {v}" for k, v in (("project", report.project), ("department", report.department)) if v
    )
    out.print(
        f"[bold]Service levels[/] {report.since:%Y-%m-%d %H:%M} - {report.until:%Y-%m-%d %H:%M}"
        f" UTC {escape(scope)}"
    )
    out.print(_scopes_table(report))
    out.print(_dora_table(report))
    out.print(_departments_table(report))
    if report.breaches:
        out.print(_breaches_table(report))
    else:
        out.print("No SLA breaches.")


def _scope_rows(report: StatsReport) -> list[tuple[str, Figures]]:
    rows = [("total", report.totals)]
    rows += [(f"project {k}", v) for k, v in report.projects.items()]
    return rows + [(f"service {k}", v) for k, v in report.services.items()]


def _scopes_table(report: StatsReport) -> Table:
    table = Table(title="Deliveries and incidents (p50 / p95)", title_justify="left")
    for column in ("scope", "done", "lead time", "change success", "emergency",
                   "incident response", "incident resolution", "breaches"):  # fmt: skip
        table.add_column(column)
    for name, f in _scope_rows(report):
        table.add_row(
            escape(name),
            f"{f.done}/{f.deliveries}",
            _pair(f.lead_time.p50, f.lead_time.p95),
            _percent(f.change_success_rate),
            _percent(f.emergency_share),
            _pair(f.incident_response.p50, f.incident_response.p95),
            _pair(f.incident_resolution.p50, f.incident_resolution.p95),
            str(f.breaches),
        )
    return table


def _dora_table(report: StatsReport) -> Table:
    table = Table(title="DORA (p50 / p95)", title_justify="left")
    for column in ("scope", "deployments", "per day", "change lead time", "change fail rate",
                   "recovery time", "rework rate"):  # fmt: skip
        table.add_column(column)
    for name, f in _scope_rows(report):
        d = f.dora
        recovery = d.failed_deployment_recovery_time
        table.add_row(
            escape(name),
            str(d.deployments),
            f"{d.per_day:.2f}",
            _pair(d.change_lead_time.p50, d.change_lead_time.p95),
            _percent(d.change_fail_rate),
            _pair(recovery.p50, recovery.p95),
            _percent(d.rework_rate),
        )
    return table


def _departments_table(report: StatsReport) -> Table:
    table = Table(title="Departments (p50 / p95)", title_justify="left")
    for column in ("department", "steps", "failed", "step duration", "waiting (OLA)",
                   "incidents", "open", "response", "resolution", "breaches"):  # fmt: skip
        table.add_column(column)
    for name, f in report.departments.items():
        table.add_row(
            escape(name),
            str(f.steps),
            str(f.failed_steps),
            _pair(f.step_duration.p50, f.step_duration.p95),
            _pair(f.waiting.p50, f.waiting.p95),
            str(f.incidents),
            str(f.incidents_open),
            _pair(f.incident_response.p50, f.incident_response.p95),
            _pair(f.incident_resolution.p50, f.incident_resolution.p95),
            str(f.breaches),
        )
    return table


def _breaches_table(report: StatsReport) -> Table:
    table = Table(title="SLA breaches", title_justify="left")
    for column in ("kind", "project", "department", "target", "actual", "caused by"):
        table.add_column(column)
    for b in report.breaches:
        cause = b.incident_id or f"run {b.run_id}" + (f" step {b.step_id}" if b.step_id else "")
        actual = human(b.actual) + (" (ongoing)" if b.ongoing else "")
        table.add_row(
            b.kind, escape(b.project), escape(b.department or "-"), human(b.target), actual,
            escape(cause),
        )  # fmt: skip
    return table


def _print_capacity(headroom: Headroom, check: CapacityCheck | None, project: str | None) -> None:
    title = "Capacity" + (f" used by project {project}" if project else "")
    table = Table(title=title, title_justify="left")
    for column in ("pool", "capacity", "used", "free", "used %", "", "top projects"):
        table.add_column(column)
    for pool in headroom.pools:
        share = pool.used_share
        top = sorted(pool.by_project.items(), key=lambda item: -item[1])[:3]
        table.add_row(
            escape(pool.id) + ("" if pool.enforced else " (advisory)"),
            amount(pool.capacity, pool.unit),
            amount(pool.used, pool.unit),
            amount(pool.free, pool.unit),
            _percent(share),
            _bar(share),
            escape(", ".join(f"{name} {amount(n, pool.unit)}" for name, n in top) or "-"),
        )
    out.print(table)
    for source in headroom.unreadable:
        out.print(f"[bold yellow]unknown[/] {escape(source.source)}: {escape(source.reason)}")
    if check is None:
        return
    for pool_id, needed in sorted(check.needed.items()):
        known = headroom.pool(pool_id)
        unit = known.unit if known else ""
        out.print(f"the request needs {escape(amount(needed, unit))} of {escape(pool_id)}")
    for reason in check.unknown:
        out.print(f"[yellow]not counted[/]: {escape(reason)}")
    for shortfall in check.shortfalls:
        verdict = "refused" if shortfall.pool.enforced else "advisory"
        out.print(f"[bold red]{verdict}[/]: {escape(shortfall.message())}")
    out.print("[bold green]fits[/]" if check.fits else "[bold red]does not fit[/]")


def _bar(share: float | None, width: int = 20) -> str:
    if share is None:
        return ""
    filled = min(width, round(share * width))
    return "#" * filled + "." * (width - filled)


def _print_incidents(found: list[Incident]) -> None:
    if not found:
        out.print("No incidents.")
        return
    table = Table()
    for column in ("id", "project", "department", "opened", "response", "resolution", "by"):
        table.add_column(column)
    for i in found:
        resolution = human(i.resolution_time) if i.resolved_at else "open"
        table.add_row(
            escape(i.id), escape(i.project), escape(i.department or "-"),
            f"{i.opened_at:%Y-%m-%d %H:%M}", human(i.response_time), resolution,
            escape(i.responded_by or "-"),
        )  # fmt: skip
    out.print(table)


def _pair(p50: float | None, p95: float | None) -> str:
    return "-" if p50 is None else f"{human(p50)} / {human(p95)}"


# --- plumbing ---------------------------------------------------------------------------------


def _parent_root(ctx: typer.Context) -> Path | None:
    value = ctx.find_root().params.get("root")
    return value if isinstance(value, Path) else None


def _settings(root: Path | None) -> Settings:
    try:
        return load_settings(root)
    except InfraError as exc:
        _fail(str(exc))


@contextmanager
def _database(settings: Settings) -> Iterator[Engine]:
    """The record's database, opened for one command and disposed after it."""
    try:
        engine = open_database(settings.database_url, timeout=settings.database_timeout)
    except InfraError as exc:
        _fail(str(exc), EXIT_ERROR)
    try:
        yield engine
    finally:
        engine.dispose()


def _read(read: Callable[[], T]) -> T:
    try:
        return read()
    except RecordError as exc:
        _fail(str(exc), EXIT_ERROR)


def _check_output(output: str, allowed: tuple[str, ...]) -> None:
    if output not in allowed:
        _fail(f"--output must be one of {', '.join(allowed)}, not {output!r}")


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    err.print(f"[bold red]error[/]: {escape(message)}")
    raise typer.Exit(code)
