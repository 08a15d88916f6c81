"""Reads of the run record the API needs beyond :class:`~infra_automation.record.RunStore`:
a filtered, keyset-paginated run list and the events of a run after a sequence number.

The run list is ordered newest first by ``(started_at, id)``; a cursor is that pair of the
last run of a page, so a page costs the same however deep it is (with an index on
``infra_runs (started_at, id)``, and on ``(project, started_at)`` / ``(requester,
started_at)`` for the filters). Events of one run are written by one recorder in one
connection, so their ``seq`` order is their commit order: reading ``seq > last`` never skips
an event that commits later.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from infra_automation.record import (
    INTERRUPTED,
    QUEUED,
    RUNNING,
    EventRecord,
    events,
    live_runs,
    runs,
)
from infra_automation.secrets import redact

LIST_COLUMNS = (
    runs.c.id,
    runs.c.service,
    runs.c.project,
    runs.c.requester,
    runs.c.check_mode,
    runs.c.status,
    runs.c.resumed_from,
    runs.c.changed,
    runs.c.started_at,
    runs.c.finished_at,
    runs.c.error,
    runs.c.request,
)


class CursorError(ValueError):
    """The cursor of a run list is not one this API handed out."""


@dataclass(frozen=True)
class RunFilter:
    project: str | None = None
    status: str | None = None
    requester: str | None = None
    projects: tuple[str, ...] | None = None  # a tam sees only these


@dataclass(frozen=True)
class RunPage:
    runs: list[dict[str, Any]]
    next_cursor: str | None


def encode_cursor(started_at: datetime, run_id: str) -> str:
    raw = json.dumps([started_at.isoformat(), run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at, run_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return datetime.fromisoformat(at), str(run_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise CursorError("not a cursor of this run list") from exc


def list_runs(
    engine: Engine, where: RunFilter, *, cursor: str | None = None, limit: int = 50
) -> RunPage:
    """One page of runs, newest first (CursorError for a bad cursor)."""
    query = sa.select(*LIST_COLUMNS).order_by(runs.c.started_at.desc(), runs.c.id.desc())
    if cursor:
        at, run_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(runs.c.started_at < at, sa.and_(runs.c.started_at == at, runs.c.id < run_id))
        )
    with engine.connect() as conn:
        live = live_runs(conn)
        query = _filtered(query, where, live)
        rows = [dict(r._mapping) for r in conn.execute(query.limit(limit + 1))]
    page = [_summary(r, live) for r in rows[:limit]]
    more = len(rows) > limit
    last = rows[limit - 1] if more else None
    return RunPage(page, encode_cursor(last["started_at"], last["id"]) if last else None)


def _filtered(query: sa.Select[Any], where: RunFilter, live: frozenset[str]) -> sa.Select[Any]:
    if where.project is not None:
        query = query.where(runs.c.project == where.project)
    if where.requester is not None:
        query = query.where(runs.c.requester == where.requester)
    if where.projects is not None:
        query = query.where(runs.c.project.in_(where.projects))
    if where.status == RUNNING:
        query = query.where(runs.c.status == RUNNING, runs.c.id.in_(live))
    elif where.status == INTERRUPTED:
        query = query.where(runs.c.status == RUNNING, runs.c.id.not_in(live))
    elif where.status is not None:
        query = query.where(runs.c.status == where.status)
    return query


def _summary(row: dict[str, Any], live: frozenset[str]) -> dict[str, Any]:
    status = row["status"]
    if status == RUNNING and row["id"] not in live:
        status = INTERRUPTED
    return {
        "id": row["id"],
        "service": row["service"],
        "project": row["project"],
        "requester": row["requester"],
        "check": bool(row["check_mode"]),
        "status": status,
        "resumed_from": row["resumed_from"],
        "changed": bool(row["changed"]),
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "error": row["error"],
        "request": redact(dict(row["request"] or {}), keys=False),
    }


def run_project(engine: Engine, run_id: str) -> tuple[str, str] | None:
    """(project, recorded status) of a run, or None if there is no such run."""
    query = sa.select(runs.c.project, runs.c.status).where(runs.c.id == run_id)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return (row[0], row[1]) if row is not None else None


def events_after(engine: Engine, run_id: str, after: int, limit: int = 500) -> list[EventRecord]:
    """Events of ``run_id`` with ``seq > after``, in order."""
    query = (
        sa.select(events)
        .where(events.c.run_id == run_id, events.c.seq > after)
        .order_by(events.c.seq)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [_event(r._mapping) for r in conn.execute(query)]


def _event(row: sa.RowMapping) -> EventRecord:
    return EventRecord(
        seq=row["seq"],
        run_id=row["run_id"],
        step_id=row["step_id"],
        kind=row["kind"],
        at=row["at"],
        data=row["data"],
    )


def projects_with_runs(engine: Engine, only: Sequence[str] | None = None) -> list[str]:
    query = sa.select(runs.c.project).distinct()
    if only is not None:
        query = query.where(runs.c.project.in_(only))
    with engine.connect() as conn:
        return sorted(str(p) for p in conn.execute(query).scalars())


def run_is_live(engine: Engine, run_id: str) -> bool:
    """Whether ``run_id`` is queued (it will run), or recorded running and its process
    holds its lease."""
    query = sa.select(runs.c.status).where(runs.c.id == run_id)
    with engine.connect() as conn:
        status = conn.execute(query).scalar()
        return status == QUEUED or (status == RUNNING and run_id in live_runs(conn))
