"""The run record: runs, steps and events in a SQL database (SQLAlchemy 2.0 Core).

SQLite by default (``<root>/.infra/runs.db``, WAL, ``synchronous=NORMAL``), any SQLAlchemy URL
by configuration. :class:`RunRecorder` is the observer that writes every event as it happens,
one transaction per event, so a crash at any moment leaves a readable record.
:class:`RunStore` is the read API (frozen dataclasses). A run recorded as ``running`` whose
process is gone reads as ``interrupted``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection

from infra_automation.events import Event
from infra_automation.exceptions import ConfigurationError, RunNotFound

INTERRUPTED = "interrupted"
RUNNING = "running"

metadata = sa.MetaData()

runs = sa.Table(
    "infra_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("service", sa.String(100), nullable=False),
    sa.Column("project", sa.String(100), nullable=False, index=True),
    sa.Column("requester", sa.String(200)),
    sa.Column("check_mode", sa.Boolean, nullable=False, default=False),
    sa.Column("parallel", sa.Integer, nullable=False, default=1),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("resumed_from", sa.String(64)),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.String(255)),
    sa.Column("changed", sa.Boolean, nullable=False, default=False),
    sa.Column("started_at", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("request", sa.Text, nullable=False),
    sa.Column("plan", sa.Text, nullable=False),
)

steps = sa.Table(
    "infra_steps",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("infra_runs.id"), primary_key=True),
    sa.Column("step_id", sa.String(100), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("department", sa.String(100), nullable=False),
    sa.Column("executor", sa.String(100), nullable=False),
    sa.Column("needs", sa.Text, nullable=False, default="[]"),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("changed", sa.Boolean, nullable=False, default=False),
    sa.Column("reused", sa.Boolean, nullable=False, default=False),
    sa.Column("error", sa.Text),
    sa.Column("error_kind", sa.String(20)),
    sa.Column("diff", sa.Text, nullable=False, default=""),
    sa.Column("outputs", sa.Text, nullable=False, default="{}"),
    sa.Column("targets", sa.Text, nullable=False, default="[]"),
    sa.Column("artifacts", sa.Text, nullable=False, default="{}"),
    sa.Column("started_at", sa.String(40)),
    sa.Column("finished_at", sa.String(40)),
    sa.Column("duration", sa.Float),
)

events = sa.Table(
    "infra_events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("step_id", sa.String(100)),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
)


FINISHED_COLUMNS = (
    "status",
    "changed",
    "reused",
    "error",
    "error_kind",
    "diff",
    "outputs",
    "targets",
    "artifacts",
    "started_at",
    "finished_at",
    "duration",
)


def _prepared() -> dict[str, sa.Executable]:
    """Statements built once: building them per event costs more than the write itself."""
    where = (steps.c.run_id == sa.bindparam("b_run"), steps.c.step_id == sa.bindparam("b_step"))
    return {
        "event": events.insert(),
        "step.started": steps.update()
        .where(*where)
        .values(status=sa.bindparam("status"), started_at=sa.bindparam("started_at")),
        "step.finished": steps.update()
        .where(*where)
        .values({c: sa.bindparam(c) for c in FINISHED_COLUMNS}),
    }


STATEMENTS = _prepared()


def open_database(url: str) -> Engine:
    """An engine for the record at ``url`` with its tables created (SQLite: WAL mode)."""
    try:
        engine = sa.create_engine(url, **_engine_args(url))
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise ConfigurationError(f"invalid database_url {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        _create_tables(engine)
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigurationError(f"cannot open the run record {url!r}: {exc}") from exc
    return engine


def _create_tables(engine: Engine, attempts: int = 5) -> None:
    """create_all, tolerating another process or thread creating the same tables meanwhile."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except sa.exc.OperationalError as exc:
            if "already exists" not in str(exc) or attempt == attempts - 1:
                raise


def _engine_args(url: str) -> dict[str, Any]:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return {}
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return {"connect_args": {"check_same_thread": False, "timeout": 30}}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=False)


# --- writing ----------------------------------------------------------------------------------


class RunRecorder:
    """Observer writing each event to the record as it happens (one transaction per event)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def on_event(self, ev: Event) -> None:
        with self._lock:
            conn = self._connection()
            with conn.begin():
                self._write(conn, ev)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _write(self, conn: Connection, ev: Event) -> None:
        data = ev.data
        conn.execute(
            STATEMENTS["event"],
            {
                "run_id": ev.run_id,
                "step_id": ev.step_id,
                "kind": ev.kind,
                "at": ev.at.isoformat(),
                "data": _dumps(data),
            },
        )
        if ev.kind == "run.started":
            self._run_started(conn, ev)
        elif ev.kind == "step.started" and ev.step_id:
            values = {"status": RUNNING, "started_at": ev.at.isoformat()}
            self._update_step(conn, ev, values)
        elif ev.kind == "step.finished" and ev.step_id:
            self._update_step(conn, ev, _finished_columns(data))
        elif ev.kind == "run.finished":
            conn.execute(
                runs.update()
                .where(runs.c.id == ev.run_id)
                .values(
                    status=data.get("status", "failed"),
                    finished_at=data.get("finished_at") or ev.at.isoformat(),
                    changed=bool(data.get("changed", False)),
                )
            )

    def _run_started(self, conn: Connection, ev: Event) -> None:
        data = ev.data
        plan: Sequence[Mapping[str, Any]] = data.get("plan", [])
        request: Mapping[str, Any] = data.get("request", {})
        conn.execute(
            runs.insert(),
            {
                "id": ev.run_id,
                "service": data.get("service", ""),
                "project": data.get("project", ""),
                "requester": data.get("requester"),
                "check_mode": bool(data.get("check", False)),
                "parallel": int(data.get("parallel", 1)),
                "status": RUNNING,
                "resumed_from": data.get("resumed_from"),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "changed": False,
                "started_at": ev.at.isoformat(),
                "request": _dumps(request),
                "plan": _dumps(list(plan)),
            },
        )
        rows = [_step_row(ev.run_id, i, s) for i, s in enumerate(plan)]
        if rows:
            conn.execute(steps.insert(), rows)

    def _update_step(self, conn: Connection, ev: Event, values: Mapping[str, Any]) -> None:
        statement = STATEMENTS[ev.kind]
        conn.execute(statement, {"b_run": ev.run_id, "b_step": ev.step_id, **values})


def _step_row(run_id: str, position: int, step: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "step_id": step["id"],
        "position": position,
        "department": step.get("department", ""),
        "executor": step.get("executor", ""),
        "needs": _dumps(list(step.get("needs", []))),
        "status": "pending",
        "changed": False,
        "reused": False,
        "diff": "",
        "outputs": "{}",
        "targets": "[]",
        "artifacts": "{}",
    }


def _finished_columns(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "status": data.get("status", "failed"),
        "changed": bool(data.get("changed", False)),
        "reused": bool(data.get("reused", False)),
        "error": data.get("error"),
        "error_kind": data.get("error_kind"),
        "diff": data.get("diff") or "",
        "outputs": _dumps(data.get("outputs") or {}),
        "targets": _dumps(data.get("targets") or []),
        "artifacts": _dumps(data.get("artifacts") or {}),
        "started_at": data.get("started_at"),
        "finished_at": data.get("finished_at"),
        "duration": data.get("duration"),
    }


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRecord:
    """One step of a recorded run."""

    step_id: str
    position: int
    department: str
    executor: str
    needs: tuple[str, ...]
    status: str
    changed: bool
    reused: bool
    error: str | None
    error_kind: str | None
    diff: str
    outputs: Mapping[str, Any]
    targets: tuple[Mapping[str, Any], ...]
    artifacts: Mapping[str, str]
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None


@dataclass(frozen=True)
class RunRecord:
    """One recorded run; ``steps`` is empty in listings (``RunStore.list_runs``)."""

    id: str
    service: str
    project: str
    requester: str | None
    check: bool
    parallel: int
    status: str  # running | success | failed | interrupted
    resumed_from: str | None
    pid: int | None
    host: str | None
    changed: bool
    started_at: datetime
    finished_at: datetime | None
    request: Mapping[str, Any]
    plan: tuple[Mapping[str, Any], ...]
    steps: tuple[StepRecord, ...] = ()

    def step(self, step_id: str) -> StepRecord:
        for s in self.steps:
            if s.step_id == step_id:
                return s
        raise KeyError(step_id)

    def steps_with(self, *statuses: str) -> tuple[str, ...]:
        return tuple(s.step_id for s in self.steps if s.status in statuses)


@dataclass(frozen=True)
class EventRecord:
    seq: int
    run_id: str
    step_id: str | None
    kind: str
    at: datetime
    data: Mapping[str, Any]


class RunStore:
    """Read API of the run record."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def list_runs(self, project: str | None = None, limit: int = 50) -> list[RunRecord]:
        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
        if project is not None:
            query = query.where(runs.c.project == project)
        with self.engine.connect() as conn:
            return [_run(row._mapping, ()) for row in conn.execute(query)]

    def get_run(self, run_id: str) -> RunRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in the record")
            step_rows = conn.execute(
                sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.position)
            )
            return _run(row._mapping, tuple(_step(r._mapping) for r in step_rows))

    def events(self, run_id: str, kind: str | None = None) -> list[EventRecord]:
        query = sa.select(events).where(events.c.run_id == run_id).order_by(events.c.seq)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        with self.engine.connect() as conn:
            return [_event(r._mapping) for r in conn.execute(query)]


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _run(row: sa.RowMapping, step_records: tuple[StepRecord, ...]) -> RunRecord:
    status = row["status"]
    if status == RUNNING and not process_alive(row["pid"], row["host"]):
        status = INTERRUPTED
    started = _time(row["started_at"])
    assert started is not None
    return RunRecord(
        id=row["id"],
        service=row["service"],
        project=row["project"],
        requester=row["requester"],
        check=bool(row["check_mode"]),
        parallel=row["parallel"],
        status=status,
        resumed_from=row["resumed_from"],
        pid=row["pid"],
        host=row["host"],
        changed=bool(row["changed"]),
        started_at=started,
        finished_at=_time(row["finished_at"]),
        request=json.loads(row["request"]),
        plan=tuple(json.loads(row["plan"])),
        steps=step_records,
    )


def _step(row: sa.RowMapping) -> StepRecord:
    return StepRecord(
        step_id=row["step_id"],
        position=row["position"],
        department=row["department"],
        executor=row["executor"],
        needs=tuple(json.loads(row["needs"])),
        status=row["status"],
        changed=bool(row["changed"]),
        reused=bool(row["reused"]),
        error=row["error"],
        error_kind=row["error_kind"],
        diff=row["diff"] or "",
        outputs=json.loads(row["outputs"]),
        targets=tuple(json.loads(row["targets"])),
        artifacts=json.loads(row["artifacts"]),
        started_at=_time(row["started_at"]),
        finished_at=_time(row["finished_at"]),
        duration=row["duration"],
    )


def _event(row: sa.RowMapping) -> EventRecord:
    at = _time(row["at"])
    assert at is not None
    return EventRecord(
        seq=row["seq"],
        run_id=row["run_id"],
        step_id=row["step_id"],
        kind=row["kind"],
        at=at,
        data=json.loads(row["data"]),
    )


def process_alive(pid: int | None, host: str | None) -> bool:
    """Whether the process that recorded a run still runs (unknowable on another host)."""
    if pid is None or (host is not None and host != socket.gethostname()):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
