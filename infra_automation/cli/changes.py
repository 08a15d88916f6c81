"""``infra changes``: change records, their approvals and their export (issue 14).

::

    infra changes propose requests/shop.yml [--type emergency --allowed] [--as jane]
    infra changes list [--project shop] [--state waiting] [--flagged] [--output json]
    infra changes show ID [--output json]       # the diff by department, approvals, history
    infra changes approve ID [--as carol] [--department network] [--comment TEXT]
    infra changes reject ID [--as carol] [--comment TEXT]
    infra changes export ID --output json       # the document an ITSM tool imports

``ID`` is a change's SHA-256 or a unique prefix of 8+ characters. ``--as`` names the person
(default: the login name); the CLI trusts it like it trusts the shell user, the API takes it
from the authenticated identity.

Exit codes: 0 done (``propose``: the change may run now); 2 invalid input (unknown change,
bad option, bad request or policy); 3 the change waits for approval (``propose``, and
``infra apply`` through :func:`gated_plan`), also after its approvals were voided;
4 refused (self-approval, an approver not allowed, a rejected change, a conflicting open
change, a blackout or change window, a type override not allowed).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console, Group, RenderableType
from rich.markup import escape as _escape
from rich.table import Table

from infra_automation.changes import (
    EXIT_REFUSED,
    ApprovalResult,
    ChangeService,
    ChangeType,
    ChangeView,
    Decision,
    GateOutcome,
    State,
    export_document,
)
from infra_automation.cli.render import visible
from infra_automation.engine import Engine
from infra_automation.exceptions import InfraError, RequestValidationError
from infra_automation.planner import Plan
from infra_automation.request import Request
from infra_automation.results import RunResult

app = typer.Typer(help="Change records: approvals bound to the dry run.", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
EXIT_INVALID = 2
T = TypeVar("T")

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="text or json")]
AsOpt = Annotated[str | None, typer.Option("--as", help="Who acts (default: the login name)")]
CommentOpt = Annotated[str | None, typer.Option("--comment", help="A note kept with it")]
IdArg = Annotated[str, typer.Argument(help="Change id (SHA-256 or a prefix of 8+)")]


def escape(text: str) -> str:
    return _escape(visible(text))


# --- plumbing ---------------------------------------------------------------------------------


def _engine() -> Engine:
    from infra_automation.cli import STATE  # the --root of the main command

    return _guard(lambda: Engine(STATE.settings(), load_observers=False))


def _service() -> ChangeService:
    """The change service of the root; each state change reaches the project's docs."""
    return _guard(lambda: ChangeService(_engine(), docs=True))


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except RequestValidationError as exc:
        lines = [f"  - {e.field}: {e.message}" for e in exc.errors]
        _fail("\n".join([f"invalid {exc.source}:", *lines]))
    except InfraError as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        _fail(f"cannot use {exc.filename or ''}: {exc.strerror or exc}")


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    err.print(f"[bold red]error[/]: {escape(message)}")
    raise typer.Exit(code)


def _check_output(output: str, allowed: tuple[str, ...]) -> None:
    if output not in allowed:
        _fail(f"--output must be one of {', '.join(allowed)}, not {output!r}")


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _who(name: str | None) -> str:
    return (name or getpass.getuser()).strip()


# --- the apply path ---------------------------------------------------------------------------


def report_outcome(outcome: GateOutcome, output: str = "text") -> None:
    """Print a gate's outcome (stderr when the run's JSON goes to stdout)."""
    console = err if output == "json" else out
    style = {"run": "green", "waiting": "yellow", "voided": "yellow"}.get(outcome.decision, "red")
    console.print(f"[bold {style}]{outcome.decision}[/]: {escape(outcome.reason)}")
    if outcome.change is not None:
        console.print(f"change: {outcome.change.id}")


def gated_plan(
    engine: Engine,
    request: Request,
    *,
    requester: str | None = None,
    change_type: ChangeType | None = None,
    allowed: bool = False,
    change_id: str | None = None,
    output: str = "text",
) -> tuple[Plan, str | None]:
    """The gate of ``infra apply``: the plan to run and its change id, or exit 3 (waiting)
    or 4 (refused) after printing why. A service no change policy governs (no ``change:``
    block in it or its inventory) runs at once, with no change record (change id None)."""
    service = ChangeService(engine)
    explicit = change_type is not None or change_id is not None
    if not explicit and not _guard(lambda: service.managed(request.service, request.inventory)):
        return _guard(lambda: engine.plan(request)), None
    outcome = _guard(
        lambda: service.gate(
            request,
            requester=requester or request.requester or getpass.getuser(),
            change_type=change_type,
            allowed=allowed,
            change_id=change_id,
        )
    )
    report_outcome(outcome, output)
    if outcome.decision is not Decision.RUN or outcome.plan is None or outcome.change is None:
        raise typer.Exit(outcome.exit_code)
    return outcome.plan, outcome.change.id


def finish_change(engine: Engine, change_id: str, result: RunResult) -> None:
    """After ``infra apply`` ran a gated plan: the change is implemented, or failed."""
    _guard(lambda: ChangeService(engine).finish(change_id, result))


# --- commands ---------------------------------------------------------------------------------


@app.command("propose")
def propose_cmd(
    request: Annotated[Path, typer.Argument(help="Request file (requests/*.yml)")],
    change_type: Annotated[
        ChangeType | None, typer.Option("--type", help="Override the service's change type")
    ] = None,
    allowed: Annotated[
        bool, typer.Option("--allowed", help="The requester may override the type")
    ] = False,
    who: AsOpt = None,
    output: OutputOpt = "text",
) -> None:
    """Dry-run a request and record its change; exit 0 if it may run now, 3 if it waits
    for approval, 4 if refused. Nothing is applied."""
    _check_output(output, ("text", "json"))
    engine = _engine()
    loaded = _guard(lambda: engine.load_request(request))
    requester = who or loaded.requester or getpass.getuser()
    service = _guard(lambda: ChangeService(engine, docs=True))
    outcome = _guard(
        lambda: service.gate(loaded, requester=requester, change_type=change_type, allowed=allowed)
    )
    if output == "json":
        _json(_outcome_dict(outcome))
    else:
        report_outcome(outcome)
    raise typer.Exit(outcome.exit_code)


@app.command("list")
def list_cmd(
    project: Annotated[str | None, typer.Option("--project", help="Only this project")] = None,
    state: Annotated[State | None, typer.Option("--state", help="Only this state")] = None,
    flagged: Annotated[
        bool, typer.Option("--flagged", help="Only emergency changes awaiting approval")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    output: OutputOpt = "text",
) -> None:
    """Change records, newest first."""
    _check_output(output, ("text", "json"))
    service = _service()
    states = (state,) if state is not None else ()
    views = _guard(lambda: service.store.changes(project=project, states=states, limit=limit))
    if flagged:
        views = [v for v in views if v.flagged]
    if output == "json":
        _json([_summary(v, service) for v in views])
        return
    table = Table("change", "state", "type", "service", "project", "requester", "created")
    for v in views:
        state_text = v.state.value + (" (flagged)" if v.flagged else "")
        created = v.record.created_at.isoformat(timespec="seconds") if v.record.created_at else ""
        cells = (v.id[:12], state_text, v.record.change_type.value, v.record.service)
        table.add_row(*map(escape, (*cells, v.record.project, v.record.requester, created)))
    out.print(table)


@app.command("show")
def show_cmd(change_id: IdArg, output: OutputOpt = "text") -> None:
    """One change: type, state, configuration items, the diff by department, approvals."""
    _check_output(output, ("text", "json"))
    service = _service()
    view = _guard(lambda: service.store.get(change_id))
    if output == "json":
        _json(export_document(view))
        return
    out.print(_view(view, service))


@app.command("approve")
def approve_cmd(
    change_id: IdArg,
    who: AsOpt = None,
    department: Annotated[
        str | None, typer.Option("--department", help="Approve for this department only")
    ] = None,
    comment: CommentOpt = None,
    output: OutputOpt = "text",
) -> None:
    """Approve a change (for every department you approve for), or give an emergency
    change its retrospective approval. Exit 4 if refused."""
    _check_output(output, ("text", "json"))
    service = _service()
    result = _guard(
        lambda: service.approve(change_id, _who(who), department=department, comment=comment)
    )
    _decided(result, output)


@app.command("reject")
def reject_cmd(
    change_id: IdArg, who: AsOpt = None, comment: CommentOpt = None, output: OutputOpt = "text"
) -> None:
    """Reject an open change: it can never run. Exit 4 if refused."""
    _check_output(output, ("text", "json"))
    service = _service()
    result = _guard(lambda: service.reject(change_id, _who(who), comment=comment))
    _decided(result, output)


@app.command("export")
def export_cmd(change_id: IdArg, output: OutputOpt = "json") -> None:
    """The change as a JSON document for an ITSM tool."""
    _check_output(output, ("json",))
    service = _service()
    _json(export_document(_guard(lambda: service.store.get(change_id))))


# --- rendering --------------------------------------------------------------------------------


def _decided(result: ApprovalResult, output: str) -> None:
    data = {
        "accepted": result.accepted,
        "reason": result.reason,
        "change": result.change.id,
        "state": result.change.state.value,
        "flagged": result.change.flagged,
        "missing": list(result.missing),
    }
    if output == "json":
        _json(data)
    else:
        style = "green" if result.accepted else "red"
        word = "accepted" if result.accepted else "refused"
        out.print(f"[bold {style}]{word}[/]: {escape(result.reason)}")
        out.print(f"change {result.change.id[:12]} is {result.change.state.value}")
        if result.missing:
            out.print(f"still needs: {escape(', '.join(result.missing))}")
    raise typer.Exit(0 if result.accepted else EXIT_REFUSED)


def _outcome_dict(outcome: GateOutcome) -> dict[str, Any]:
    return {
        "decision": outcome.decision.value,
        "reason": outcome.reason,
        "change": outcome.change.id if outcome.change else None,
        "state": outcome.change.state.value if outcome.change else None,
        "voided": outcome.voided,
        "conflict": outcome.conflict,
        "missing": list(outcome.missing),
        "dry_run": outcome.dry_run.run_id if outcome.dry_run else None,
        "exit_code": outcome.exit_code,
    }


def _summary(view: ChangeView, service: ChangeService) -> dict[str, Any]:
    record = view.record
    return {
        "id": view.id,
        "state": view.state.value,
        "type": record.change_type.value,
        "type_reason": record.type_reason or None,
        "risk": record.risk.value,
        "service": record.service,
        "project": record.project,
        "requester": record.requester,
        "flagged": view.flagged,
        "overdue": view.overdue(service.clock()),
        "created_at": record.created_at,
        "items": [str(i) for i in record.items],
    }


def _view(view: ChangeView, service: ChangeService) -> RenderableType:
    record = view.record
    flag = ""
    if view.flagged and view.retrospective_due is not None:
        late = " OVERDUE" if view.overdue(service.clock()) else ""
        flag = f"\nflagged{late}: retrospective approval due by {view.retrospective_due}"
    head = (
        f"[bold]change {record.id}[/]\n{escape(record.service)} for {escape(record.project)}, "
        f"requested by {escape(record.requester)}\ntype {record.change_type} "
        f"({escape(record.type_reason or 'as declared')}), risk {record.risk}, "
        f"state {view.state} ({escape(view.reason or '')}){flag}\n"
        f"items: {escape(', '.join(map(str, record.items)))}"
    )
    parts: list[RenderableType] = [head]
    steps = record.content["steps"]
    for dept in record.departments:
        parts.append(f"\n[bold]{escape(dept)}[/]")
        for step in (s for s in record.content["plan"] if s["department"] == dept):
            diff = steps.get(step["id"], {}).get("diff") or "(no diff)"
            parts.append(f"  {escape(step['id'])} ({escape(step['executor'])})")
            parts.append(escape(diff.rstrip("\n")))
    table = Table("approver", "decision", "department", "at", "void")
    for a in view.approvals:
        at = a.at.isoformat(timespec="seconds")
        table.add_row(
            *map(escape, (a.approver, a.decision, a.department or "", at)),
            escape(a.void_reason or ""),
        )
    parts += ["\n[bold]approvals[/]", table]
    return Group(*parts)
