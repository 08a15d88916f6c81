"""Progress views of a run: observers that draw on a rich Console the CLI hands them.

:class:`PlainProgress` writes one line per event (CI logs); :class:`LiveProgress` keeps a
table of steps by department up to date (interactive terminals). The library never chooses
a stream: the console is always given by the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from infra_automation.events import Event

STYLES = {
    "success": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "running": "cyan",
    "pending": "dim",
}


def _status(status: str) -> str:
    return f"[{STYLES.get(status, 'white')}]{status}[/]"


def _seconds(value: Any) -> str:
    return f" ({value:.2f}s)" if isinstance(value, int | float) else ""


def event_line(event: Event) -> str | None:
    """One line of rich markup for an event, or None for events not worth a line."""
    data = event.data
    step = escape(event.step_id or "")
    dept = escape(str(data.get("department", "")))
    if event.kind == "run.started":
        mode = " (check mode)" if data.get("check") else ""
        resumed = f", resuming {data['resumed_from']}" if data.get("resumed_from") else ""
        return (
            f"run {event.run_id}: {escape(str(data.get('service')))} for project "
            f"{escape(str(data.get('project')))}, {len(data.get('plan', []))} steps{mode}{resumed}"
        )
    if event.kind == "step.started":
        return f"{escape(f'[{dept}]')} {step} {_status('running')}"
    if event.kind == "step.finished":
        return _finished_line(dept, step, data)
    if event.kind == "step.log":
        details = ", ".join(f"{k}={v}" for k, v in data.items() if k != "kind")
        return f"  {step}: {escape(str(data.get('kind')))} {escape(details)}"
    if event.kind == "run.finished":
        return f"run {event.run_id}: {_status(str(data.get('status')))}"
    if event.kind in ("observer.error", "run.warning"):
        return f"[yellow]warning[/]: {escape(', '.join(f'{k}={v}' for k, v in data.items()))}"
    return None


def _finished_line(dept: str, step: str, data: Mapping[str, Any]) -> str:
    status = str(data.get("status"))
    extra = " reused" if data.get("reused") else ""
    extra += " changed" if data.get("changed") and not data.get("reused") else ""
    error = f": {escape(str(data['error']))}" if data.get("error") else ""
    where = escape(f"[{dept}]")
    return f"{where} {step} {_status(status)}{_seconds(data.get('duration'))}{extra}{error}"


class PlainProgress:
    """One line per event: for logs and CI."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def on_event(self, event: Event) -> None:
        line = event_line(event)
        if line is not None:
            self.console.print(line, highlight=False, soft_wrap=True)


@dataclass
class _Dept:
    total: int = 0
    statuses: dict[str, str] = field(default_factory=dict)
    activity: str = ""  # the latest thing one of its steps reported (host, task, status)


ACTIVITY_WIDTH = 60


def activity(step: str, data: Mapping[str, Any]) -> str:
    """A short summary of a step's log event: ``web: debian1 Install nginx (ok)``."""
    host, task, status = data.get("host"), data.get("task"), data.get("status")
    if host or task:
        text = " ".join(str(x) for x in (host, task) if x) + (f" ({status})" if status else "")
    else:
        text = ", ".join(f"{k}={v}" for k, v in data.items() if k != "kind")
    text = f"{step}: {text}"
    return text if len(text) <= ACTIVITY_WIDTH else text[: ACTIVITY_WIDTH - 1] + "…"


class LiveProgress:
    """A live table, one row per department (plan order): done/total, running, failed and
    skipped steps, and the latest activity (e.g. the Ansible task a host is on)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._depts: dict[str, _Dept] = {}
        self._step_dept: dict[str, str] = {}
        self._title = ""
        self._lock = threading.Lock()
        self._live = Live(self, console=console, refresh_per_second=8, transient=False)

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.refresh()
        self._live.stop()

    def on_event(self, event: Event) -> None:
        with self._lock:
            self._update(event)
        if event.kind in ("step.finished", "observer.error", "run.warning") and (
            event.data.get("status") == "failed" or event.kind != "step.finished"
        ):
            line = event_line(event)
            if line:
                self._live.console.print(line, highlight=False)

    def _update(self, event: Event) -> None:
        data = event.data
        if event.kind == "run.started":
            self._title = event_line(event) or ""
            for step in data.get("plan", []):
                dept = self._depts.setdefault(str(step["department"]), _Dept())
                dept.total += 1
                dept.statuses[step["id"]] = "pending"
                self._step_dept[step["id"]] = str(step["department"])
        elif event.kind == "step.started" and event.step_id:
            self._set(event.step_id, "running")
        elif event.kind == "step.finished" and event.step_id:
            self._set(event.step_id, str(data.get("status")))
        elif event.kind == "step.log" and event.step_id:
            owner = self._step_dept.get(event.step_id)
            if owner is not None:
                self._depts[owner].activity = activity(event.step_id, data)
        elif event.kind == "run.finished":
            self._title += f" -> {data.get('status')}"

    def _set(self, step_id: str, status: str) -> None:
        dept = self._step_dept.get(step_id)
        if dept is not None:
            self._depts[dept].statuses[step_id] = status

    def __rich__(self) -> RenderableType:
        table = Table(title=self._title, title_justify="left", expand=False)
        for column in ("department", "done", "running", "failed", "skipped", "latest"):
            table.add_column(column)
        with self._lock:
            for name, dept in self._depts.items():
                table.add_row(name, *self._cells(dept), f"[dim]{escape(dept.activity)}[/]")
        return table

    @staticmethod
    def _cells(dept: _Dept) -> tuple[str, str, str, str]:
        def named(status: str) -> str:
            ids = [k for k, v in dept.statuses.items() if v == status]
            shown = ", ".join(ids[:4]) + (f" +{len(ids) - 4}" if len(ids) > 4 else "")
            return f"[{STYLES[status]}]{escape(shown)}[/]" if ids else ""

        done = sum(1 for v in dept.statuses.values() if v in ("success", "failed", "skipped"))
        return f"{done}/{dept.total}", named("running"), named("failed"), named("skipped")
