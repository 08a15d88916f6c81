"""Tables and JSON forms of catalogs, plans, results and recorded runs (for the CLI)."""

from __future__ import annotations

import unicodedata
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape as _escape
from rich.table import Column, Table
from rich.text import Text

from infra_automation.catalog import Catalog, Service
from infra_automation.planner import Plan
from infra_automation.progress import STYLES
from infra_automation.record import EventRecord, RunRecord
from infra_automation.results import RunResult

# Characters a terminal acts on or reorders: C0/C1 controls (ESC starts colour and cursor
# sequences), bidi overrides and isolates, line/paragraph separators, zero-width formatting.
_KEPT = frozenset("\n\t")
_SHOWN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _visible_char(char: str) -> str:
    if char in _KEPT or unicodedata.category(char) not in _SHOWN_CATEGORIES:
        return char
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def visible(text: str) -> str:
    """``text`` with every control, bidi or invisible formatting character written as an
    escape (``\\x1b``, ``\\u202e``): user text printed to a terminal can neither colour it,
    move its cursor nor reorder what the reader sees."""
    if text.isprintable():
        return text
    return "".join(_visible_char(c) for c in text)


def escape(text: str) -> str:
    """User text for rich markup: controls made visible, then markup escaped."""
    return _escape(visible(text))


def _styled(status: str) -> Text:
    return Text(status, style=STYLES.get(status, "white"))


def _secs(value: float | None) -> str:
    return f"{value:.2f}s" if value is not None else ""


def service_summary(service: Service) -> dict[str, Any]:
    return {
        "name": service.name,
        "description": service.description,
        "owner": service.owner,
        "params": list(service.params),
        "steps": len(service.steps),
    }


def catalog_table(catalog: Catalog) -> Table:
    table = Table("service", "owner", "steps", "description", title="catalog")
    for name in catalog.names():
        s = catalog.services[name]
        table.add_row(escape(name), escape(s.owner), str(len(s.steps)), escape(s.description))
    return table


def service_view(service: Service) -> RenderableType:
    params = Table("param", "type", "default", "constraints", "description", title="parameters")
    for name, p in service.params.items():
        rules = {
            k: v
            for k, v in p.model_dump(exclude_none=True).items()
            if k not in ("type", "default", "description", "required")
        }
        default = "(required)" if p.is_required else repr(p.default)
        params.add_row(
            escape(name), p.type, escape(default), escape(str(rules or "")), escape(p.description)
        )
    steps = Table("department", "step", "executor", "needs", "when", title="steps")
    for s in service.steps:
        when = "" if s.when is None else str(s.when)
        steps.add_row(
            escape(s.department), s.id, s.executor, escape(", ".join(s.needs)), escape(when)
        )
    header = Text(visible(f"{service.name} (owner {service.owner or '-'}): {service.description}"))
    return Group(header, params, steps)


def plan_table(plan: Plan) -> Table:
    title = f"plan: {plan.service} for project {plan.project}"
    if plan.left_out:
        title += f" (left out: {', '.join(plan.left_out)})"
    table = Table("wave", "department", "step", "executor", "needs", title=escape(title))
    for s in plan.steps:
        cells = (s.department, s.id, s.executor, ", ".join(s.needs))
        table.add_row(str(s.wave), *(escape(c) for c in cells))
    return table


def result_dict(result: RunResult) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "project": result.project,
        "check": result.check,
        "status": "failed" if result.failed else "success",
        "changed": result.changed,
        "failed_steps": list(result.failed_steps),
        "skipped_steps": list(result.skipped_steps),
        "steps": {
            sid: {
                "status": r.status.value,
                "changed": r.changed,
                "error": r.error,
                "error_kind": r.error_kind.value if r.error_kind else None,
                "duration": r.duration,
                "outputs": dict(r.outputs),
                "diff": r.diff,
            }
            for sid, r in result.steps.items()
        },
    }


def result_table(result: RunResult, plan: Plan) -> Table:
    status = "failed" if result.failed else "success"
    mode = " (check)" if result.check else ""
    table = Table(
        "department",
        "step",
        "status",
        "changed",
        "time",
        "error",
        title=f"run {result.run_id}{mode}: {status}",
    )
    for s in plan.steps:
        r = result.steps.get(s.id)
        if r is None:
            table.add_row(escape(s.department), escape(s.id), _styled("pending"), "", "", "")
            continue
        table.add_row(
            escape(s.department),
            escape(s.id),
            _styled(r.status.value),
            "yes" if r.changed else "",
            _secs(r.duration),
            escape(shown_error(r.error, r.error_kind)),
        )
    return table


def shown_error(error: str | None, kind: str | None) -> str:
    """``[kind] message`` as tables, JUnit and docs show a failure."""
    if not error:
        return ""
    return f"[{kind}] {error}" if kind else error


def run_dict(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "service": run.service,
        "project": run.project,
        "requester": run.requester,
        "check": run.check,
        "status": run.status,
        "error": run.error,
        "resumed_from": run.resumed_from,
        "changed": run.changed,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "request": dict(run.request),
        "steps": [
            {
                "id": s.step_id,
                "department": s.department,
                "executor": s.executor,
                "needs": list(s.needs),
                "status": s.status,
                "changed": s.changed,
                "reused": s.reused,
                "error": s.error,
                "error_kind": s.error_kind,
                "diff": s.diff,
                "outputs": dict(s.outputs),
                "targets": [dict(t) for t in s.targets],
                "artifacts": dict(s.artifacts),
                "started_at": s.started_at.isoformat() if s.started_at else None,
                "finished_at": s.finished_at.isoformat() if s.finished_at else None,
                "duration": s.duration,
            }
            for s in run.steps
        ],
    }


def runs_table(runs: list[RunRecord]) -> Table:
    table = Table("project", "service", "status", "started", "resumed from", title="runs")
    table.columns.insert(0, Column("run", no_wrap=True))
    for r in runs:
        mode = " (check)" if r.check else ""
        table.add_row(
            escape(r.id),
            escape(r.project),
            escape(r.service),
            _styled(r.status) + mode,
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            r.resumed_from or "",
        )
    return table


def run_view(run: RunRecord) -> RenderableType:
    header = Text.assemble(
        visible(f"run {run.id}: {run.service} for project {run.project} "),
        _styled(run.status),
        f"{' (check)' if run.check else ''}, started {run.started_at:%Y-%m-%d %H:%M:%S}",
        visible(f", resumed from {run.resumed_from}") if run.resumed_from else "",
    )
    table = Table("department", "step", "status", "changed", "time", "error")
    for s in run.steps:
        status = _styled(s.status) + (" (reused)" if s.reused else "")
        table.add_row(
            escape(s.department),
            escape(s.step_id),
            status,
            "yes" if s.changed else "",
            _secs(s.duration),
            escape(shown_error(s.error, s.error_kind)),
        )
    if run.error:
        return Group(header, Text(visible(f"error: {run.error}"), style="red"), table)
    return Group(header, table)


def event_dict(event: EventRecord) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "kind": event.kind,
        "step_id": event.step_id,
        "data": dict(event.data),
    }


def events_table(events: list[EventRecord]) -> Table:
    table = Table("at", "kind", "step", "data", title="events")
    for e in events:
        brief = {k: v for k, v in e.data.items() if k not in ("plan", "request", "outputs")}
        cells = (e.kind, e.step_id or "", str(brief)[:200])
        table.add_row(f"{e.at:%H:%M:%S.%f}", *(escape(c) for c in cells))
    return table
