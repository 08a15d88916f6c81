"""The database: runs, steps, events, leases and host bindings (SQLAlchemy 2.0 Core).

SQLite by default (``<root>/.infra/runs.db``, WAL, ``synchronous=NORMAL``), PostgreSQL (or
any SQLAlchemy URL) by configuration. The schema is managed by Alembic
(:mod:`infra_automation.migrations`): :func:`open_database` upgrades a SQLite database by
itself and refuses any other database that is not at the newest revision (``infra db
upgrade``). Timestamps are ``timestamptz`` and documents ``jsonb`` on PostgreSQL.

:class:`RunRecorder` is the observer that writes the events of a run in batches, one
transaction per batch: ``run.*``, ``step.started`` and ``step.finished`` are written at once
(with whatever waits before them), other events at the latest 100 ms later. A crash therefore
leaves every step boundary readable, as before; only the step logs of the last 100 ms can be
lost. A write that fails is sticky: it raises :class:`RecordError` on the next step boundary,
and :meth:`RunRecorder.salvage` writes the final state of the run in a fresh connection.

:class:`RunStore` is the read API (frozen dataclasses). A run recorded as ``running`` whose
project lease (:mod:`infra_automation.leases`) has expired reads as ``interrupted``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect

from infra_automation.events import Event, utcnow
from infra_automation.exceptions import ConfigurationError, RecordError, RunNotFound
from infra_automation.results import ErrorKind, Status, StepResult, TargetResult

INTERRUPTED = "interrupted"
RUNNING = "running"
QUEUED = "queued"  # submitted to the workers, not started yet (infra_automation.workers)
DEFAULT_TIMEOUT = 30.0  # seconds a write waits for a lock (SQLite busy_timeout)
FLUSH_INTERVAL = 0.1  # seconds an event may wait in the batch
MAX_BATCH = 500
IMMEDIATE = frozenset(
    {"run.queued", "run.started", "run.finished", "step.started", "step.finished"}
)
MIGRATIONS = "infra_automation:migrations"


class Timestamp(sa.types.TypeDecorator[datetime]):
    """An aware UTC datetime: ``timestamptz`` on PostgreSQL, ISO 8601 text elsewhere."""

    impl = sa.String(40)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.String(40))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if dialect.name == "postgresql":
            return moment
        return moment.astimezone(UTC).isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.fromisoformat(str(value))


class Document(sa.types.TypeDecorator[Any]):
    """A JSON document: ``jsonb`` on PostgreSQL, JSON text elsewhere."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(sa.Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return value  # serialized by the engine's json_serializer (_dumps)
        return _dumps(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if dialect.name == "postgresql" or value is None:
            return value
        return json.loads(value)


metadata = sa.MetaData()
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

runs = sa.Table(
    "infra_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("service", sa.String(100), nullable=False),
    sa.Column("project", sa.String(100), nullable=False, index=True),
    sa.Column("requester", sa.String(200)),
    sa.Column("check_mode", sa.Boolean, nullable=False),
    sa.Column("parallel", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("resumed_from", sa.String(64)),
    sa.Column("pid", sa.Integer),
    sa.Column("host", sa.String(255)),
    sa.Column("changed", sa.Boolean, nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    sa.Column("request", Document, nullable=False),
    sa.Column("plan", Document, nullable=False),
    sa.Column("error", sa.Text),
    sa.Index("ix_infra_runs_started", "started_at", "id"),  # newest first, keyset pages
    sa.Index("ix_infra_runs_project_started", "project", "started_at"),
    sa.Index("ix_infra_runs_requester_started", "requester", "started_at"),
    sa.Index("ix_infra_runs_status_started", "status", "started_at", "id"),  # the queue sweep
)

steps = sa.Table(
    "infra_steps",
    metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("infra_runs.id"), primary_key=True),
    sa.Column("step_id", sa.String(100), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("department", sa.String(100), nullable=False),
    sa.Column("executor", sa.String(100), nullable=False),
    sa.Column("needs", Document, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("changed", sa.Boolean, nullable=False),
    sa.Column("reused", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("error_kind", sa.String(20)),
    sa.Column("diff", sa.Text, nullable=False),
    sa.Column("outputs", Document, nullable=False),
    sa.Column("targets", Document, nullable=False),
    sa.Column("artifacts", Document, nullable=False),
    sa.Column("started_at", Timestamp),
    sa.Column("finished_at", Timestamp),
    sa.Column("duration", sa.Float),
    sa.Column("worker", sa.String(255)),  # host:pid of the `infra worker` that ran it
    sa.Column("queue", sa.String(100)),  # the Celery queue it came from
)

events = sa.Table(
    "infra_events",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("step_id", sa.String(100)),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("data", Document, nullable=False),
    sa.Index("ix_infra_events_run_seq", "run_id", "seq"),  # a run's events after a seq
)

leases = sa.Table(
    "infra_leases",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("acquired_at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp, nullable=False, index=True),
    sa.Column("heartbeat", Timestamp, nullable=False),
)

host_bindings = sa.Table(
    "infra_host_bindings",
    metadata,
    sa.Column("vm", sa.String(100), primary_key=True),
    sa.Column("host", sa.String(100), nullable=False),
    sa.Column("group", sa.String(100), nullable=False),
    sa.Column("bound_at", Timestamp, nullable=False),
    sa.UniqueConstraint("group", "host", name="uq_host_binding_host"),
)


# The as-built state of each project (its docs ledger: infra_automation.docs.ledger), the
# document the docs pages, the API and the portal are rendered from.
project_states = sa.Table(
    "infra_project_state",
    metadata,
    sa.Column("project", sa.String(100), primary_key=True),
    sa.Column("ledger", Document, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
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
        .values(
            status=sa.bindparam("status"),
            started_at=sa.bindparam("started_at"),
            worker=sa.bindparam("worker"),
            queue=sa.bindparam("queue"),
        ),
        "step.finished": steps.update()
        .where(*where)
        .values({c: sa.bindparam(c) for c in FINISHED_COLUMNS}),
    }


STATEMENTS = _prepared()


# --- opening and migrating --------------------------------------------------------------------


def safe_url(url: str | sa.URL) -> str:
    """``url`` with its password hidden, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def _scrub(message: str, url: sa.URL) -> str:
    return message.replace(url.password, "***") if url.password else message


def open_database(url: str, *, timeout: float = DEFAULT_TIMEOUT, upgrade: bool = False) -> Engine:
    """An engine for the database at ``url`` with its schema at the newest revision.

    SQLite (and ``upgrade=True``) is migrated here; another database that is behind raises
    :class:`ConfigurationError` asking for ``infra db upgrade``. ``timeout``: seconds a
    statement waits for a lock before it fails.
    """
    engine = create_engine(url, timeout=timeout)
    try:
        # SQLite: looked at under the migration lock, so that a process opening the file
        # while another creates it (WAL switch, first migration) waits instead of failing.
        with _migration_lock(engine):
            current = current_revision(engine)
            if current != head_revision():
                if engine.dialect.name != "sqlite" and not upgrade:
                    engine.dispose()
                    raise ConfigurationError(
                        f"the database {safe_url(engine.url)} is at revision "
                        f"{current or 'none'}, this version needs {head_revision()}: "
                        "run `infra db upgrade`"
                    )
                _upgrade(engine)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        message = describe_failure(exc, engine, "open the database")
        raise ConfigurationError(message) from None
    return engine


def create_engine(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> Engine:
    """The SQLAlchemy engine for ``url`` (no schema check): SQLite in WAL mode with
    ``busy_timeout``; PostgreSQL with ``lock_timeout``; both time out after ``timeout`` s."""
    try:
        parsed = sa.engine.make_url(url)
        engine = sa.create_engine(parsed, **_engine_args(parsed, timeout))
    except (sa.exc.ArgumentError, ImportError, ValueError) as exc:
        message = str(exc).replace(url, safe_url(url))
        raise ConfigurationError(f"invalid database_url {safe_url(url)!r}: {message}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(timeout))
    return engine


def _engine_args(url: sa.URL, timeout: float) -> dict[str, Any]:
    backend = url.get_backend_name()
    if backend == "postgresql":
        lock_ms = max(1, int(timeout * 1000))
        given = url.query.get("options") or ()  # e.g. -csearch_path=..., kept
        given = (given,) if isinstance(given, str) else given
        ours = f"-c lock_timeout={lock_ms} -c idle_in_transaction_session_timeout=600000"
        options = " ".join([*given, ours])
        # A scheduler keeps one connection per run it schedules (its recorder): room for many.
        return {
            "json_serializer": _dumps,
            "connect_args": {"options": options},
            "max_overflow": 60,
        }
    if backend != "sqlite":
        return {}
    if url.database and url.database != ":memory:":
        folder = Path(url.database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create {folder}, the folder of the database: {exc.strerror}"
            ) from None
    return {"connect_args": {"check_same_thread": False, "timeout": timeout}}


def _sqlite_pragmas(timeout: float) -> Any:
    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={max(0, int(timeout * 1000))}")
        cursor.close()

    return pragmas


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """The newest revision of the migrations shipped with this package."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: not managed by Alembic yet)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextmanager
def scratch_schema(base_url: str, prefix: str = "t", *, migrated: bool = True) -> Iterator[str]:
    """The URL of a PostgreSQL schema of its own in the database at ``base_url`` (tests and
    benchmarks): created (and ``migrated``) here, dropped with everything in it afterwards."""
    from sqlalchemy.pool import NullPool

    base = sa.engine.make_url(base_url)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    text = url.render_as_string(hide_password=False)
    try:
        if migrated:
            open_database(text, upgrade=True).dispose()
        yield text
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def upgrade_database(engine: Engine) -> tuple[str | None, str]:
    """Migrate the database to the newest revision; returns (from, to)."""
    with _migration_lock(engine):
        return _upgrade(engine)


def _upgrade(engine: Engine) -> tuple[str | None, str]:
    """:func:`upgrade_database` under the migration lock, which the caller holds."""
    from alembic import command

    before = current_revision(engine)
    if before != head_revision():
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "head")
    return before, head_revision()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """SQLite: a file lock beside the database, so that processes starting at once migrate
    it one after the other (PostgreSQL takes an advisory lock in the migration itself)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    try:
        handle = open(f"{database}.migrate-lock", "a")  # noqa: SIM115 - held while yielding
    except OSError:  # a folder we may not write in: reading needs no lock, writing fails later
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=False)


def describe_failure(
    exc: BaseException, engine: Engine, doing: str = "write to the run record"
) -> str:
    """What went wrong with the database, in one line, without a password."""
    detail = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig else exc
    text = " ".join(str(detail).split())
    return _scrub(f"cannot {doing} ({safe_url(engine.url)}): {text}", engine.url)


# --- writing ----------------------------------------------------------------------------------


class RunRecorder:
    """Observer writing the events of runs to the record in batches (see the module doc).

    Group commit: :meth:`submit` queues an event in order and returns its number;
    :meth:`wait_written` returns once that event is committed. The first waiter writes
    everything queued in one transaction, so step boundaries of parallel steps that arrive
    together share a commit; each waiter still returns only once its own event is durable.
    """

    def __init__(self, engine: Engine, *, flush_interval: float = FLUSH_INTERVAL) -> None:
        self.engine = engine
        self.flush_interval = flush_interval
        self.error: str | None = None
        self._conn: Connection | None = None
        self._pending: list[Event] = []
        self._queued = 0  # number of the last event queued
        self._written = 0  # number of the last event committed
        self._lock = threading.Lock()  # the queue
        self._write_lock = threading.Lock()  # one writer (and its connection) at a time
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def on_event(self, ev: Event) -> None:
        """Queue ``ev``; step boundaries and runs are written before this returns."""
        number = self.submit(ev)
        if ev.kind in IMMEDIATE:
            self.wait_written(number)

    def submit(self, ev: Event) -> int:
        """Queue ``ev`` (in order); its number, for :meth:`wait_written`."""
        with self._lock:
            self._pending.append(ev)
            self._queued += 1
            number = self._queued
            full = len(self._pending) >= MAX_BATCH
            if self._flusher is None:
                self._start_flusher()
        if full:
            self.wait_written(number)
        return number

    def wait_written(self, number: int) -> None:
        """Return once event ``number`` is committed (RecordError if it cannot be)."""
        with self._write_lock:
            if self.error is not None:
                raise RecordError(self.error)
            if self._written >= number:
                return
            with self._lock:
                batch, self._pending = self._pending, []
                last = self._queued
            self._write(batch)
            self._written = last

    def flush(self) -> None:
        """Write what is queued (RecordError if it cannot be written)."""
        with self._lock:
            number = self._queued
        self.wait_written(number)

    def close(self) -> None:
        """Write what is queued (best effort) and stop the background flusher."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        if self.error is None:
            with suppress(RecordError):
                self.flush()
        with self._write_lock:
            self._drop_connection()

    def _start_flusher(self) -> None:
        self._flusher = threading.Thread(
            target=self._flush_periodically, name="infra-record-flush", daemon=True
        )
        self._flusher.start()

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self.flush_interval):
            if self._pending and self.error is None:
                with suppress(RecordError):  # sticky: the next step boundary reports it
                    self.flush()

    def _write(self, batch: Sequence[Event]) -> None:
        if not batch:
            return
        try:
            conn = self._connection()
            with conn.begin():
                _write_batch(conn, batch)
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            self.error = describe_failure(exc, self.engine)
            self._drop_connection()
            raise RecordError(self.error) from exc

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self.engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sa.exc.SQLAlchemyError:
                self._conn.invalidate()
            self._conn = None

    def salvage(
        self,
        run_id: str,
        finished: Mapping[str, Mapping[str, Any]],
        outcome: Mapping[str, Any],
        *,
        patience: float,
    ) -> bool:
        """The last resort after a failed write: in a fresh connection, retrying for up to
        ``patience`` seconds, write the final row of every step in ``finished`` (step id ->
        ``step.finished`` payload), fail any step still ``running`` and finish the run with
        ``outcome`` (``run.finished`` payload plus ``error``). Events still queued are dropped:
        their effect is in these rows. Returns whether it was written."""
        with self._write_lock, self._lock:
            self._pending = []
            self._drop_connection()
        deadline = time.monotonic() + patience
        while True:
            try:
                with self.engine.begin() as conn:
                    _write_final(conn, run_id, finished, outcome)
                return True
            except (sa.exc.SQLAlchemyError, OSError):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.1)


def _write_batch(conn: Connection, batch: Sequence[Event]) -> None:
    conn.execute(
        STATEMENTS["event"],
        [
            {
                "run_id": ev.run_id,
                "step_id": ev.step_id,
                "kind": ev.kind,
                "at": ev.at,
                "data": ev.data,
            }
            for ev in batch
        ],
    )
    for ev in batch:
        _apply(conn, ev)


def _apply(conn: Connection, ev: Event) -> None:
    """What an event changes in the runs and steps tables."""
    data = ev.data
    if ev.kind in ("run.started", "run.queued"):
        _run_started(conn, ev)
    elif ev.kind == "step.started" and ev.step_id:
        values = {
            "status": RUNNING,
            "started_at": ev.at,
            "worker": data.get("worker"),
            "queue": data.get("queue"),
        }
        conn.execute(STATEMENTS[ev.kind], {"b_run": ev.run_id, "b_step": ev.step_id, **values})
    elif ev.kind == "step.finished" and ev.step_id:
        values = _finished_columns(data)
        conn.execute(STATEMENTS[ev.kind], {"b_run": ev.run_id, "b_step": ev.step_id, **values})
    elif ev.kind == "run.finished":
        conn.execute(runs.update().where(runs.c.id == ev.run_id).values(_run_finished_columns(ev)))


def _run_finished_columns(ev: Event) -> dict[str, Any]:
    data = ev.data
    return {
        "status": data.get("status", "failed"),
        "finished_at": data.get("finished_at") or ev.at,
        "changed": bool(data.get("changed", False)),
        "error": data.get("error"),
    }


def _write_final(
    conn: Connection,
    run_id: str,
    finished: Mapping[str, Mapping[str, Any]],
    outcome: Mapping[str, Any],
) -> None:
    statement = STATEMENTS["step.finished"]
    for sid, payload in finished.items():
        conn.execute(statement, {"b_run": run_id, "b_step": sid, **_finished_columns(payload)})
    error = outcome.get("error") or "the run record failed"
    conn.execute(
        steps.update()
        .where(steps.c.run_id == run_id, steps.c.status == RUNNING)
        .values(status="failed", error=error, error_kind="internal")
    )
    done = Event(run_id, "run.finished", data={**outcome, "status": "failed"})
    conn.execute(runs.update().where(runs.c.id == run_id).values(_run_finished_columns(done)))


def _run_started(conn: Connection, ev: Event) -> None:
    """``run.queued`` records a submitted run; ``run.started`` records a run that starts, or
    starts the submitted one (the scheduler that took it is its pid and host)."""
    data = ev.data
    plan: Sequence[Mapping[str, Any]] = data.get("plan", [])
    row = {
        "id": ev.run_id,
        "service": data.get("service", ""),
        "project": data.get("project", ""),
        "requester": data.get("requester"),
        "check_mode": bool(data.get("check", False)),
        "parallel": int(data.get("parallel", 1)),
        "status": QUEUED if ev.kind == "run.queued" else RUNNING,
        "resumed_from": data.get("resumed_from"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "changed": False,
        "started_at": ev.at,
        "request": dict(data.get("request", {})),
        "plan": list(plan),
    }
    if ev.kind == "run.started":
        started = runs.update().where(runs.c.id == ev.run_id, runs.c.status == QUEUED)
        keep = ("status", "pid", "host", "started_at", "parallel")
        if conn.execute(started.values({k: row[k] for k in keep})).rowcount:
            return
    conn.execute(runs.insert(), row)
    rows = [_step_row(ev.run_id, i, s) for i, s in enumerate(plan)]
    if rows:
        conn.execute(steps.insert(), rows)


def _step_row(run_id: str, position: int, step: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "step_id": step["id"],
        "position": position,
        "department": step.get("department", ""),
        "executor": step.get("executor", ""),
        "needs": list(step.get("needs", [])),
        "status": "pending",
        "changed": False,
        "reused": False,
        "diff": "",
        "outputs": {},
        "targets": [],
        "artifacts": {},
    }


def _finished_columns(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "status": data.get("status", "failed"),
        "changed": bool(data.get("changed", False)),
        "reused": bool(data.get("reused", False)),
        "error": data.get("error"),
        "error_kind": data.get("error_kind"),
        "diff": data.get("diff") or "",
        "outputs": data.get("outputs") or {},
        "targets": data.get("targets") or [],
        "artifacts": data.get("artifacts") or {},
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
    worker: str | None = None  # host:pid of the worker that ran it (None: in-process)
    queue: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One recorded run; ``steps`` is empty in listings (``RunStore.list_runs``).

    ``error``: why the run failed as a whole (the run record could not be written)."""

    id: str
    service: str
    project: str
    requester: str | None
    check: bool
    parallel: int
    status: str  # queued | running | success | failed | interrupted
    resumed_from: str | None
    pid: int | None
    host: str | None
    changed: bool
    started_at: datetime
    finished_at: datetime | None
    request: Mapping[str, Any]
    plan: tuple[Mapping[str, Any], ...]
    steps: tuple[StepRecord, ...] = ()
    error: str | None = None

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
    """Read API of the run record (RecordError when the database cannot be read)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def list_runs(self, project: str | None = None, limit: int = 50) -> list[RunRecord]:
        query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
        if project is not None:
            query = query.where(runs.c.project == project)
        with self._reading() as conn:
            live = live_runs(conn)
            return [_run(row._mapping, (), live) for row in conn.execute(query)]

    def get_run(self, run_id: str) -> RunRecord:
        with self._reading() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in the record")
            step_rows = conn.execute(
                sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.position)
            )
            records = tuple(_step(r._mapping) for r in step_rows)
            return _run(row._mapping, records, live_runs(conn))

    def steps_of(self, run_id: str) -> tuple[StepRecord, ...]:
        """The steps of ``run_id`` in plan order (one query: no run row, no liveness)."""
        query = sa.select(steps).where(steps.c.run_id == run_id).order_by(steps.c.position)
        with self._reading() as conn:
            return tuple(_step(r._mapping) for r in conn.execute(query))

    def get_step(self, run_id: str, step_id: str) -> StepRecord:
        query = sa.select(steps).where(steps.c.run_id == run_id, steps.c.step_id == step_id)
        with self._reading() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise RunNotFound(f"no step {step_id!r} of run {run_id!r} in the record")
        return _step(row._mapping)

    def events(
        self,
        run_id: str,
        kind: str | None = None,
        *,
        step_id: str | None = None,
        after: int = 0,
    ) -> list[EventRecord]:
        """The run's events in order (of one kind, of one step, after a seq)."""
        query = sa.select(events).where(events.c.run_id == run_id).order_by(events.c.seq)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        if step_id is not None:
            query = query.where(events.c.step_id == step_id)
        if after:
            query = query.where(events.c.seq > after)
        with self._reading() as conn:
            return [_event(r._mapping) for r in conn.execute(query)]

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            message = describe_failure(exc, self.engine, "read the run record")
            raise RecordError(message) from None


def live_runs(conn: Connection) -> frozenset[str]:
    """Ids of the runs that hold an unexpired lease (their process is alive)."""
    query = sa.select(leases.c.run_id).where(
        leases.c.expires_at > utcnow(), leases.c.run_id.is_not(None)
    )
    return frozenset(str(r) for r in conn.execute(query).scalars())


def _run(
    row: sa.RowMapping, step_records: tuple[StepRecord, ...], live: frozenset[str]
) -> RunRecord:
    status = row["status"]
    if status == RUNNING and row["id"] not in live:
        status = INTERRUPTED
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
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        request=row["request"],
        plan=tuple(row["plan"]),
        steps=step_records,
        error=row["error"],
    )


def _step(row: sa.RowMapping) -> StepRecord:
    return StepRecord(
        step_id=row["step_id"],
        position=row["position"],
        department=row["department"],
        executor=row["executor"],
        needs=tuple(row["needs"]),
        status=row["status"],
        changed=bool(row["changed"]),
        reused=bool(row["reused"]),
        error=row["error"],
        error_kind=row["error_kind"],
        diff=row["diff"] or "",
        outputs=row["outputs"],
        targets=tuple(row["targets"]),
        artifacts=row["artifacts"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        duration=row["duration"],
        worker=row["worker"],
        queue=row["queue"],
    )


def recorded_result(step: StepRecord) -> StepResult:
    """The :class:`StepResult` a finished step recorded (``interrupted`` reads as failed)."""
    status = Status(step.status) if step.status in Status.__members__.values() else Status.FAILED
    return StepResult(
        status=status,
        changed=step.changed,
        diff=step.diff,
        outputs=dict(step.outputs),
        error=step.error,
        targets=tuple(_target_result(t) for t in step.targets),
        artifacts=dict(step.artifacts),
        started_at=step.started_at,
        finished_at=step.finished_at,
        error_kind=ErrorKind(step.error_kind) if step.error_kind else None,
    )


def _target_result(row: Mapping[str, Any]) -> TargetResult:
    kind = row.get("error_kind")
    return TargetResult(
        target=str(row.get("target", "")),
        status=Status(row.get("status", "success")),
        changed=bool(row.get("changed", False)),
        diff=str(row.get("diff") or ""),
        error=row.get("error"),
        details=dict(row.get("details") or {}),
        error_kind=ErrorKind(kind) if kind else None,
    )


def _event(row: sa.RowMapping) -> EventRecord:
    return EventRecord(
        seq=row["seq"],
        run_id=row["run_id"],
        step_id=row["step_id"],
        kind=row["kind"],
        at=row["at"],
        data=row["data"],
    )
