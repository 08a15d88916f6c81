"""Structured logs: one JSON object per line, carrying the run, step, project and department.

``infra --log-format json ...`` (or ``INFRA_LOG_FORMAT=json``) makes the CLI, ``infra server``
and ``infra worker`` log JSON lines on stderr, at ``INFO`` (``INFRA_LOG_LEVEL`` to change)::

    {"ts": "2026-11-02T10:21:04.113Z", "level": "INFO", "logger": "infra_automation.run",
     "message": "step.finished vms success", "event": "step.finished", "status": "success",
     "run_id": "20261102T102001-1a2b3c4d", "step_id": "vms", "project": "shop",
     "department": "vmware", "pid": 4242}

Where the ids come from:

- :class:`RunLogObserver`, an engine observer (the CLI and the server add it to their engine):
  logs every run event with its ids, and binds the step's ids to the thread that runs the
  step (``step.started`` .. ``step.finished``), the run's to the thread that runs the run, so
  every other line logged there (an executor's warning, the engine's errors) carries them;
- :func:`for_celery` (``infra worker``): Celery keeps our handler, and each task binds the
  ids of the step (or run) it carries, read once from the record;
- :func:`bind`: a block of code that knows its ids binds them itself.

:class:`ContextFilter` puts the bound ids on every record; :class:`JsonFormatter` writes them.
Text logs (the default) are as before: warnings on stderr, no ids. Run events are already
redacted when observers see them; messages go through the redactor once more.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import logging.config
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

from infra_automation.events import Event
from infra_automation.exceptions import ConfigurationError
from infra_automation.secrets import REDACTOR

FORMAT_VARIABLE = "INFRA_LOG_FORMAT"
LEVEL_VARIABLE = "INFRA_LOG_LEVEL"
FORMATS = ("text", "json")
IDS = ("run_id", "step_id", "project", "department")
RUN_LOGGER = "infra_automation.run"
CHATTY = ("alembic", "httpx", "asyncio")  # INFO lines that tell an operator nothing
# what a run event's data adds to its log line (never the request, the plan or outputs)
EVENT_FIELDS = ("status", "error_kind", "error", "duration", "changed", "check", "worker", "queue")
# attributes every LogRecord has: anything else on a record is an ``extra`` field
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_NO_IDS: Mapping[str, str] = MappingProxyType({})
_bound: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "infra_log_ids", default=_NO_IDS
)
_thread = threading.local()
_state = {"format": "text"}


# --- context ------------------------------------------------------------------------------------


def current_ids() -> dict[str, str]:
    """The ids bound here: the context's (:func:`bind`), then this thread's (the observer)."""
    ids = dict(_bound.get())
    ids.update(getattr(_thread, "ids", None) or {})
    return {k: v for k, v in ids.items() if v}


@contextlib.contextmanager
def bind(**ids: str | None) -> Iterator[None]:
    """Bind ids (``run_id``, ``step_id``, ``project``, ``department``) for the block."""
    token = _bound.set({**_bound.get(), **{k: str(v) for k, v in ids.items() if v}})
    try:
        yield
    finally:
        _bound.reset(token)


def bind_thread(**ids: str | None) -> None:
    """Bind ids to this thread until :func:`unbind_thread` (what an observer can do)."""
    _thread.ids = {k: str(v) for k, v in ids.items() if v}


def unbind_thread(*names: str) -> None:
    """Drop ``names`` (every id when none) from this thread's ids."""
    ids = getattr(_thread, "ids", None) or {}
    _thread.ids = {k: v for k, v in ids.items() if names and k not in names}


class ContextFilter(logging.Filter):
    """Puts the bound ids on every record (``record.run_id``...; an id given by the caller
    as ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in current_ids().items():
            if not getattr(record, key, None):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the ids, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": REDACTOR.text(record.getMessage()),
        }
        for key in IDS:
            value = getattr(record, key, None)
            if value:
                data[key] = str(value)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in data and not key.startswith("_"):
                data[key] = value
        data["pid"] = record.process
        if record.exc_info:
            data["exc"] = REDACTOR.text(self.formatException(record.exc_info))
        return json.dumps(data, default=str, ensure_ascii=False)


# --- setup --------------------------------------------------------------------------------------


def chosen_format(given: str | None = None) -> str:
    """``given``, else ``$INFRA_LOG_FORMAT``, else text (ConfigurationError if unknown)."""
    value = (given or os.environ.get(FORMAT_VARIABLE) or "text").strip().lower()
    if value not in FORMATS:
        raise ConfigurationError(
            f"--log-format (or {FORMAT_VARIABLE}): {value!r} is not one of {', '.join(FORMATS)}"
        )
    return value


def configure(given: str | None = None, *, stream: IO[str] | None = None) -> str:
    """In JSON mode, replace the root logger's handlers by one JSON handler on ``stream``
    (stderr) at INFO (``$INFRA_LOG_LEVEL``); text mode leaves logging as it is. The format."""
    fmt = chosen_format(given)
    _state["format"] = fmt
    if fmt == "json":
        level = os.environ.get(LEVEL_VARIABLE, "INFO").strip().upper() or "INFO"
        if not isinstance(logging.getLevelName(level), int):
            raise ConfigurationError(f"{LEVEL_VARIABLE}: {level!r} is not a log level")
        root = logging.getLogger()
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(json_handler(stream))
        root.setLevel(level)
        for name in CHATTY:
            logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return fmt


def json_handler(stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


def is_json() -> bool:
    return _state["format"] == "json"


def observers() -> list[RunLogObserver]:
    """The engine observers of the chosen format (a :class:`RunLogObserver` in JSON mode)."""
    return [RunLogObserver()] if is_json() else []


def uvicorn_config() -> dict[str, Any]:
    """A ``logging.config`` dict for uvicorn's loggers writing JSON lines on stderr."""
    handler = {"()": json_handler}
    quiet = {"handlers": ["json"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"json": handler},
        "loggers": {"uvicorn": quiet, "uvicorn.error": quiet, "uvicorn.access": quiet},
    }


def route_uvicorn() -> None:
    """In JSON mode, make ``uvicorn.run`` (whose default ``log_config`` is the module-level
    ``uvicorn.config.LOGGING_CONFIG``, read when the server starts) log JSON lines too."""
    if not is_json():
        return
    from uvicorn import config

    config.LOGGING_CONFIG.clear()
    config.LOGGING_CONFIG.update(uvicorn_config())


def for_server(app: Any) -> None:
    """In JSON mode: the server's engine logs its runs' events, uvicorn logs JSON lines."""
    if not is_json():
        return
    app.state.infra.engine.observers.extend(observers())
    route_uvicorn()


# --- the engine observer ------------------------------------------------------------------------


class RunLogObserver:
    """Logs every run event with its ids and binds them to the thread that emits them."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger(RUN_LOGGER)
        self._projects: dict[str, str] = {}
        self._departments: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        data = event.data
        ids = self._ids(event)
        if event.kind in ("run.started", "run.queued"):
            bind_thread(run_id=event.run_id, project=ids.get("project"))
        elif event.kind == "step.started":
            bind_thread(**ids)
        fields = {k: data[k] for k in EVENT_FIELDS if k in data and data[k] is not None}
        level = logging.WARNING if data.get("status") == "failed" else logging.INFO
        what = " ".join(str(p) for p in (event.kind, event.step_id, data.get("status")) if p)
        self.log.log(level, "%s", what, extra={**ids, "event": event.kind, **fields})
        if event.kind == "step.finished":
            unbind_thread("step_id", "department")
        elif event.kind == "run.finished":
            unbind_thread()
            with self._lock:
                self._projects.pop(event.run_id, None)
                for key in [k for k in self._departments if k[0] == event.run_id]:
                    del self._departments[key]

    def _ids(self, event: Event) -> dict[str, str]:
        data = event.data
        with self._lock:
            if data.get("project"):
                self._projects[event.run_id] = str(data["project"])
            key = (event.run_id, event.step_id or "")
            if event.step_id and data.get("department"):
                self._departments[key] = str(data["department"])
            ids = {"run_id": event.run_id, "project": self._projects.get(event.run_id, "")}
            if event.step_id:
                ids["step_id"] = event.step_id
                ids["department"] = self._departments.get(key, "")
        return {k: v for k, v in ids.items() if v}


# --- Celery (infra worker) ----------------------------------------------------------------------


def for_celery(database_url: str | None = None) -> None:
    """In JSON mode: Celery keeps our handler (a ``setup_logging`` receiver stops it from
    configuring logging), and each task of ``infra.run_step`` / ``infra.schedule_run`` binds
    its run and step (with the project and department read from the record at
    ``database_url``) for the task's log lines."""
    if not is_json():
        return
    from celery import signals

    lookup = _RecordLookup(database_url)

    def keep_ours(**_: Any) -> None:
        return None

    def prerun(task_id: str = "", task: Any = None, args: Any = (), **_: Any) -> None:
        values = [str(a) for a in (args or ())]
        run_id = values[0] if values else ""
        is_step = str(getattr(task, "name", "")).endswith("run_step") and len(values) > 1
        step_id = values[1] if is_step else ""
        project, department = lookup.ids(run_id, step_id)
        bind_thread(run_id=run_id, step_id=step_id, project=project, department=department)

    def postrun(**_: Any) -> None:
        unbind_thread()

    signals.setup_logging.connect(keep_ours, weak=False)
    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)


class _RecordLookup:
    """The project of a run and the department of a step, read from the record (cached)."""

    def __init__(self, database_url: str | None) -> None:
        self.url = database_url
        self._engine: Any = None
        self._cache: dict[tuple[str, str], tuple[str, str]] = {}
        self._lock = threading.Lock()

    def ids(self, run_id: str, step_id: str) -> tuple[str, str]:
        if not run_id or not self.url:
            return "", ""
        key = (run_id, step_id)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        try:
            found = self._read(run_id, step_id)
        except Exception:  # a log line never fails a task: the ids stay unknown
            return "", ""
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = found
        return found

    def _read(self, run_id: str, step_id: str) -> tuple[str, str]:
        import sqlalchemy as sa

        from infra_automation.record import open_database, runs, steps

        if self._engine is None:
            assert self.url is not None
            self._engine = open_database(self.url)
        with self._engine.connect() as conn:
            project = conn.execute(sa.select(runs.c.project).where(runs.c.id == run_id)).scalar()
            department = None
            if step_id:
                query = sa.select(steps.c.department).where(
                    steps.c.run_id == run_id, steps.c.step_id == step_id
                )
                department = conn.execute(query).scalar()
        return str(project or ""), str(department or "")
