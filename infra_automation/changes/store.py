"""Change records, their approvals and their state history in the database (SQLAlchemy Core).

The tables live on their own :data:`metadata` (not the run record's) until they become an
Alembic revision; :func:`create_change_tables` creates them where missing. A change record's
``content`` is written once and never updated; only its state columns move, each move in a
transaction conditional on the state it leaves (so two processes cannot both move it), and
each move is a row of ``infra_change_events`` (who, when, from, to, why).

States: ``waiting`` (for approvals) -> ``approved`` -> ``implementing`` (claimed by its run:
it can no longer be rejected or voided) -> ``implemented`` | ``failed``; ``rejected`` (final:
never runs); ``voided`` (a newer dry run differs: superseded); ``refused`` (a conflict or a
window refused it; proposing it again reopens it).

Admission (:meth:`ChangeStore.admit`) checks for overlapping active changes and writes the
change in one transaction that holds the change lock (``pg_advisory_xact_lock`` on
PostgreSQL, SQLite's write lock on SQLite): of two proposals sharing a configuration item,
made at the same time from any processes sharing the database, exactly one is admitted and
the other is refused naming it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from infra_automation.changes.model import ChangeRecord
from infra_automation.changes.policy import ChangeType
from infra_automation.events import utcnow
from infra_automation.exceptions import ChangeError, RecordError
from infra_automation.record import SEQ, Document, Timestamp, describe_failure

HASH = sa.String(64)


class State(enum.StrEnum):
    WAITING = "waiting"
    APPROVED = "approved"
    REJECTED = "rejected"
    VOIDED = "voided"
    REFUSED = "refused"
    IMPLEMENTING = "implementing"
    IMPLEMENTED = "implemented"
    FAILED = "failed"


OPEN = frozenset({State.WAITING, State.APPROVED})
ACTIVE = OPEN | {State.IMPLEMENTING}  # changes that hold their configuration items
REOPENABLE = frozenset({State.VOIDED, State.REFUSED, State.IMPLEMENTED, State.FAILED})
CHANGE_LOCK = 7_210_014  # pg_advisory_xact_lock key of change admission

metadata = sa.MetaData()

changes = sa.Table(
    "infra_changes",
    metadata,
    sa.Column("id", HASH, primary_key=True),
    sa.Column("service", sa.String(100), nullable=False),
    sa.Column("project", sa.String(100), nullable=False, index=True),
    sa.Column("requester", sa.String(200), nullable=False),
    sa.Column("change_type", sa.String(20), nullable=False),
    sa.Column("risk", sa.String(20), nullable=False),
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("reason", sa.Text),
    sa.Column("request_digest", HASH, nullable=False, index=True),
    sa.Column("items", Document, nullable=False),
    sa.Column("content", Document, nullable=False),
    sa.Column("dry_run", sa.String(64)),
    sa.Column("git", Document),
    sa.Column("supersedes", HASH),
    sa.Column("superseded_by", HASH),
    sa.Column("run_id", sa.String(64)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Column("retrospective_due", Timestamp),
    sa.Column("retrospective_by", sa.String(200)),
    sa.Column("retrospective_at", Timestamp),
)

approvals = sa.Table(
    "infra_change_approvals",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("change_id", HASH, nullable=False, index=True),
    sa.Column("change_hash", HASH, nullable=False),  # what was approved (== the id)
    sa.Column("approver", sa.String(200), nullable=False),
    sa.Column("department", sa.String(100)),  # the department approved for (None: CAB)
    sa.Column("decision", sa.String(20), nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("expires_at", Timestamp),
    sa.Column("voided_at", Timestamp),
    sa.Column("void_reason", sa.Text),
)

change_events = sa.Table(
    "infra_change_events",
    metadata,
    sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
    sa.Column("change_id", HASH, nullable=False, index=True),
    sa.Column("previous", sa.String(20)),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(200)),
    sa.Column("reason", sa.Text),
    sa.Column("at", Timestamp, nullable=False),
)


def create_change_tables(engine: Engine) -> None:
    """Create the change tables where missing (the Alembic revision will replace this)."""
    metadata.create_all(engine, checkfirst=True)


@dataclass(frozen=True)
class Approval:
    change_id: str
    change_hash: str
    approver: str
    department: str | None
    decision: str  # approved | rejected | retrospective
    at: datetime
    expires_at: datetime | None = None
    comment: str | None = None
    voided_at: datetime | None = None
    void_reason: str | None = None

    def counts(self, now: datetime) -> bool:
        """An approval of this very hash, not voided and not expired."""
        live = self.expires_at is None or self.expires_at > now
        return (
            self.decision == "approved"
            and self.voided_at is None
            and live
            and self.change_hash == self.change_id
        )


@dataclass(frozen=True)
class StateChange:
    change_id: str
    previous: str | None
    state: str
    actor: str | None
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class ChangeView:
    """A change record with its current state, approvals and history."""

    record: ChangeRecord
    state: State
    reason: str | None
    updated_at: datetime
    supersedes: str | None = None
    superseded_by: str | None = None
    run_id: str | None = None
    retrospective_due: datetime | None = None
    retrospective_by: str | None = None
    retrospective_at: datetime | None = None
    approvals: tuple[Approval, ...] = ()
    history: tuple[StateChange, ...] = field(default=())

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def flagged(self) -> bool:
        """An emergency change that ran and still waits for its retrospective approval."""
        return (
            self.record.change_type is ChangeType.EMERGENCY
            and self.retrospective_due is not None
            and self.retrospective_at is None
        )

    def overdue(self, now: datetime) -> bool:
        return self.flagged and self.retrospective_due is not None and now > self.retrospective_due


@dataclass(frozen=True)
class Admission:
    """What :meth:`ChangeStore.admit` stored: the change, and the active change it overlaps
    (then it was stored ``refused``) with the items they share."""

    change: ChangeView
    conflict: ChangeView | None = None
    shared: tuple[str, ...] = ()
    created: bool = False


@dataclass(frozen=True)
class ChangeFilter:
    """What a change listing is limited to (``projects``: a tam's own, None: all)."""

    project: str | None = None
    states: tuple[State, ...] = ()
    flagged: bool | None = None
    projects: tuple[str, ...] | None = None


Notify = Callable[[ChangeView, StateChange], None]


def _no_notify(view: ChangeView, change: StateChange) -> None:
    return None


class ChangeStore:
    """Reads and writes change records; ``notify`` sees every state change after commit."""

    def __init__(self, engine: Engine, *, notify: Notify = _no_notify) -> None:
        self.engine = engine
        self.notify = notify
        create_change_tables(engine)

    # --- reading ------------------------------------------------------------------------

    def get(self, change_id: str) -> ChangeView:
        """The change of id ``change_id`` or of a unique prefix of it (8+ characters)."""
        with self._connection() as conn:
            return _view(conn, _resolve(conn, change_id))

    def find(self, change_id: str) -> ChangeView | None:
        with self._connection() as conn:
            row = conn.execute(sa.select(changes).where(changes.c.id == change_id)).first()
            return None if row is None else _view(conn, row._mapping)

    def changes(
        self, *, project: str | None = None, states: Sequence[State] = (), limit: int = 100
    ) -> list[ChangeView]:
        query = sa.select(changes).order_by(changes.c.created_at.desc()).limit(limit)
        if project is not None:
            query = query.where(changes.c.project == project)
        if states:
            query = query.where(changes.c.state.in_([s.value for s in states]))
        with self._connection() as conn:
            return [_view(conn, r._mapping) for r in conn.execute(query)]

    def open_changes(self) -> list[ChangeView]:
        """Changes that may still run (waiting or approved), oldest first."""
        return sorted(self.changes(states=tuple(OPEN), limit=10_000), key=_created)

    def active_changes(self) -> list[ChangeView]:
        """Changes that hold their configuration items (open or implementing), oldest first."""
        return sorted(self.changes(states=tuple(ACTIVE), limit=10_000), key=_created)

    def page(
        self,
        where: ChangeFilter,
        *,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> tuple[list[ChangeView], tuple[datetime, str] | None]:
        """One page of changes, newest first by ``(created_at, id)``, and the key of the
        next page (None: this is the last). ``before`` is the key a previous page gave."""
        order = (changes.c.created_at.desc(), changes.c.id.desc())
        query = _filtered(sa.select(changes).order_by(*order), where)
        if before is not None:
            at, change_id = before
            query = query.where(
                sa.or_(
                    changes.c.created_at < at,
                    sa.and_(changes.c.created_at == at, changes.c.id < change_id),
                )
            )
        with self._connection() as conn:
            rows = [r._mapping for r in conn.execute(query.limit(limit + 1))]
            views = [_view(conn, r) for r in rows[:limit]]
        last = views[-1] if len(rows) > limit else None
        return views, (_created(last), last.id) if last is not None else None

    # --- writing ------------------------------------------------------------------------

    def insert(
        self, record: ChangeRecord, state: State, *, actor: str, reason: str, supersedes: str = ""
    ) -> ChangeView:
        with self._transaction() as conn:
            event = _insert(conn, record, state, reason, supersedes, actor=actor)
        return self._notified(record.id, event)

    def admit(
        self,
        record: ChangeRecord,
        state: State,
        *,
        reason: str,
        supersedes: str = "",
        ignore: frozenset[str] = frozenset(),
    ) -> Admission:
        """Store ``record`` in ``state`` unless an active change (other than ``ignore``)
        shares a configuration item with it: then store it ``refused``, naming the oldest
        such change. The check and the write are one transaction under the change lock.

        A new record is inserted; one stored voided, refused, implemented or failed is
        proposed again (its approvals voided); one that is open, implementing or rejected
        is returned as it is. ``record.type_reason`` is added to the reason written."""
        note = f" ({record.type_reason})" if record.type_reason else ""
        with self._transaction() as conn:
            _lock_admission(conn)
            row = conn.execute(sa.select(changes).where(changes.c.id == record.id)).first()
            existing = State(row._mapping["state"]) if row is not None else None
            if row is not None and existing not in REOPENABLE:
                return Admission(_view(conn, row._mapping))
            conflict, shared = _overlap(conn, record, ignore | {record.id})
            if conflict is not None:
                state = State.REFUSED
                reason = f"overlaps the {conflict.state} change {conflict.id[:12]}"
                reason += f" on {', '.join(shared)}"
            if existing is None:
                event = _insert(conn, record, state, reason + note, supersedes)
            else:
                if conflict is None:
                    _void_approvals(conn, record.id, f"reopened from {existing}")
                    reason = f"proposed again: {reason}"
                event = _update(conn, record.id, existing, state, "infra", reason + note)
        view = self._notified(record.id, event)
        return Admission(view, conflict, shared, created=existing is None)

    def move(
        self,
        change_id: str,
        state: State,
        *,
        actor: str,
        reason: str,
        expect: frozenset[State] | None = None,
        **columns: object,
    ) -> ChangeView | None:
        """Move a change to ``state`` if it is in one of ``expect``; None if it was not."""
        now = utcnow()
        query = changes.update().where(changes.c.id == change_id)
        if expect is not None:
            query = query.where(changes.c.state.in_([s.value for s in expect]))
        values = {"state": state.value, "reason": reason, "updated_at": now, **columns}
        with self._transaction() as conn:
            previous = conn.execute(
                sa.select(changes.c.state).where(changes.c.id == change_id)
            ).scalar_one_or_none()
            if conn.execute(query.values(values)).rowcount != 1:
                return None
            event = _log(conn, change_id, previous, state, actor, reason, now)
        return self._notified(change_id, event)

    def annotate(self, change_id: str, *, actor: str, reason: str, **columns: object) -> None:
        """Update columns that are not the state (e.g. the retrospective approval)."""
        now = utcnow()
        with self._transaction() as conn:
            state = conn.execute(
                sa.select(changes.c.state).where(changes.c.id == change_id)
            ).scalar_one()
            conn.execute(
                changes.update().where(changes.c.id == change_id).values(updated_at=now, **columns)
            )
            event = _log(conn, change_id, state, State(state), actor, reason, now)
        self._notified(change_id, event)

    def add_approval(self, approval: Approval) -> None:
        row = {
            "change_id": approval.change_id,
            "change_hash": approval.change_hash,
            "approver": approval.approver,
            "department": approval.department,
            "decision": approval.decision,
            "comment": approval.comment,
            "at": approval.at,
            "expires_at": approval.expires_at,
        }
        with self._transaction() as conn:
            conn.execute(approvals.insert(), row)

    def void_approvals(self, change_id: str, reason: str) -> int:
        with self._transaction() as conn:
            return _void_approvals(conn, change_id, reason)

    # --- plumbing -----------------------------------------------------------------------

    def _notified(self, change_id: str, event: StateChange) -> ChangeView:
        view = self.get(change_id)
        self.notify(view, event)
        return view

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise RecordError(
                describe_failure(exc, self.engine).replace("write to", "read")
            ) from None

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise RecordError(describe_failure(exc, self.engine)) from None


def _created(view: ChangeView) -> datetime:
    return view.record.created_at or view.updated_at


def _filtered(query: sa.Select[Any], where: ChangeFilter) -> sa.Select[Any]:
    if where.project is not None:
        query = query.where(changes.c.project == where.project)
    if where.projects is not None:
        query = query.where(changes.c.project.in_(where.projects))
    if where.states:
        query = query.where(changes.c.state.in_([s.value for s in where.states]))
    if where.flagged is not None:
        flagged = sa.and_(
            changes.c.change_type == ChangeType.EMERGENCY.value,
            changes.c.retrospective_due.is_not(None),
            changes.c.retrospective_at.is_(None),
        )
        query = query.where(flagged if where.flagged else sa.not_(flagged))
    return query


def _lock_admission(conn: Connection) -> None:
    """Hold the change lock until the transaction ends."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CHANGE_LOCK)))
    else:  # the first write of the transaction takes SQLite's write lock (busy_timeout)
        conn.execute(changes.update().where(sa.false()).values(state=State.WAITING.value))


def _overlap(
    conn: Connection, record: ChangeRecord, ignore: frozenset[str]
) -> tuple[ChangeView | None, tuple[str, ...]]:
    """The oldest active change, not in ``ignore``, sharing an item with ``record``."""
    mine = {str(i) for i in record.items}
    query = (
        sa.select(changes)
        .where(changes.c.state.in_([s.value for s in ACTIVE]), changes.c.id.not_in(ignore))
        .order_by(changes.c.created_at, changes.c.id)
    )
    for row in conn.execute(query).all():
        shared = tuple(sorted(mine & {str(i) for i in row._mapping["items"]}))
        if shared:
            return _view(conn, row._mapping), shared
    return None, ()


def _insert(
    conn: Connection,
    record: ChangeRecord,
    state: State,
    reason: str,
    supersedes: str,
    *,
    actor: str | None = None,
) -> StateChange:
    now = utcnow()
    row = {
        "id": record.id,
        "service": record.service,
        "project": record.project,
        "requester": record.requester,
        "change_type": record.change_type.value,
        "risk": record.risk.value,
        "state": state.value,
        "reason": reason,
        "request_digest": record.request_digest,
        "items": [str(i) for i in record.items],
        "content": dict(record.content),
        "dry_run": record.dry_run,
        "git": dict(record.git) if record.git is not None else None,
        "supersedes": supersedes or None,
        "created_at": now,
        "updated_at": now,
    }
    conn.execute(changes.insert(), row)
    return _log(conn, record.id, None, state, actor or record.requester, reason, now)


def _update(
    conn: Connection, change_id: str, previous: State, state: State, actor: str, reason: str
) -> StateChange:
    now = utcnow()
    values = {"state": state.value, "reason": reason, "updated_at": now}
    conn.execute(changes.update().where(changes.c.id == change_id).values(values))
    return _log(conn, change_id, previous.value, state, actor, reason, now)


def _void_approvals(conn: Connection, change_id: str, reason: str) -> int:
    query = (
        approvals.update()
        .where(approvals.c.change_id == change_id, approvals.c.voided_at.is_(None))
        .values(voided_at=utcnow(), void_reason=reason)
    )
    return int(conn.execute(query).rowcount)


def _log(
    conn: Connection,
    change_id: str,
    previous: str | None,
    state: State,
    actor: str,
    reason: str,
    at: datetime,
) -> StateChange:
    row = {
        "change_id": change_id,
        "previous": previous,
        "state": state.value,
        "actor": actor,
        "reason": reason,
        "at": at,
    }
    conn.execute(change_events.insert(), row)
    return StateChange(change_id, previous, state.value, actor, reason, at)


def _resolve(conn: Connection, change_id: str) -> sa.RowMapping:
    if len(change_id) < 8:
        raise ChangeError(f"change id {change_id!r}: give at least 8 characters")
    query = sa.select(changes).where(changes.c.id.startswith(change_id, autoescape=True))
    rows = conn.execute(query.limit(2)).all()
    if not rows:
        raise ChangeError(f"no change {change_id!r} in the record")
    if len(rows) > 1:
        raise ChangeError(f"change id {change_id!r} is ambiguous: give more characters")
    return rows[0]._mapping


def _view(conn: Connection, row: sa.RowMapping) -> ChangeView:
    record = ChangeRecord(
        id=row["id"],
        content=row["content"],
        dry_run=row["dry_run"] or "",
        git=row["git"],
        created_at=row["created_at"],
    )
    approval_rows = conn.execute(
        sa.select(approvals).where(approvals.c.change_id == row["id"]).order_by(approvals.c.seq)
    )
    event_rows = conn.execute(
        sa.select(change_events)
        .where(change_events.c.change_id == row["id"])
        .order_by(change_events.c.seq)
    )
    return ChangeView(
        record=record,
        state=State(row["state"]),
        reason=row["reason"],
        updated_at=row["updated_at"],
        supersedes=row["supersedes"],
        superseded_by=row["superseded_by"],
        run_id=row["run_id"],
        retrospective_due=row["retrospective_due"],
        retrospective_by=row["retrospective_by"],
        retrospective_at=row["retrospective_at"],
        approvals=tuple(_approval(r._mapping) for r in approval_rows),
        history=tuple(_state_change(r._mapping) for r in event_rows),
    )


def _approval(row: sa.RowMapping) -> Approval:
    return Approval(
        change_id=row["change_id"],
        change_hash=row["change_hash"],
        approver=row["approver"],
        department=row["department"],
        decision=row["decision"],
        at=row["at"],
        expires_at=row["expires_at"],
        comment=row["comment"],
        voided_at=row["voided_at"],
        void_reason=row["void_reason"],
    )


def _state_change(row: sa.RowMapping) -> StateChange:
    return StateChange(
        change_id=row["change_id"],
        previous=row["previous"],
        state=row["state"],
        actor=row["actor"],
        reason=row["reason"],
        at=row["at"],
    )
