"""What the metrics read from the record: runs and their steps, requests, changes, verifications.

:func:`load_history` reads, in a handful of queries and only the columns the figures need,
every run that started at or after ``since`` (check runs included: they are not deployments,
but they are kept apart by :attr:`RunFact.check`), the time each was requested (its
``run.queued`` event, else its start), the change records and approvals (when the change
tables exist) and the verifications (``verify.*`` events of :mod:`infra_automation.verify`).

A **delivery** is one request carried out: an applied run and the resumes that continue it
(``resumed_from``, followed to the first run). Its *request time* is the creation of the
change record the run implements (``infra_changes.run_id``), else the request of its first
run; its *approval* is the newest approval of that change; it is *done* when one of its runs
succeeds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, cached_property
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from infra_automation.events import utcnow
from infra_automation.exceptions import RecordError
from infra_automation.metrics._gc import paused_gc
from infra_automation.record import describe_failure, live_runs
from infra_automation.record import events as events_table
from infra_automation.record import runs as runs_table
from infra_automation.record import steps as steps_table

FAILED_STATES = frozenset({"failed", "interrupted"})
VERIFY_KINDS = ("verify.resource", "verify.finished")


class StepFact(NamedTuple):
    """One step of a run (a named tuple: 60,000 of them are built for 10,000 runs)."""

    run_id: str
    step_id: str
    department: str
    needs: tuple[str, ...]
    status: str
    reused: bool
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None


@dataclass(frozen=True)
class RunFact:
    id: str
    service: str
    project: str
    check: bool
    status: str  # queued | running | success | failed | interrupted
    resumed_from: str | None
    requested_at: datetime
    started_at: datetime
    finished_at: datetime | None
    steps: tuple[StepFact, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATES

    def failing_step(self) -> StepFact | None:
        """The step that failed first (or was running when the run was interrupted)."""
        broken = [s for s in self.steps if s.status in ("failed", "running")]
        return min(broken, key=_finished_or_max, default=None)


@dataclass(frozen=True)
class ChangeFact:
    id: str
    project: str
    service: str
    change_type: str
    state: str
    created_at: datetime
    run_id: str | None
    approvals: tuple[tuple[str, datetime], ...] = ()  # (approver, at) of approvals that count

    @property
    def approved_at(self) -> datetime | None:
        return max((at for _, at in self.approvals), default=None)


@dataclass(frozen=True)
class Delivery:
    """A request carried out: its first applied run and the resumes that continue it."""

    runs: tuple[RunFact, ...]  # oldest first
    requested_at: datetime
    approved_at: datetime | None = None
    change: ChangeFact | None = None

    @property
    def first(self) -> RunFact:
        return self.runs[0]

    @property
    def project(self) -> str:
        return self.first.project

    @property
    def service(self) -> str:
        return self.first.service

    @cached_property
    def done_run(self) -> RunFact | None:
        return next((r for r in self.runs if r.status == "success"), None)

    @cached_property
    def done_at(self) -> datetime | None:
        done = self.done_run
        return done.finished_at if done is not None else None

    @cached_property
    def departments(self) -> frozenset[str]:
        return frozenset(s.department for r in self.runs for s in r.steps)


@dataclass(frozen=True)
class ResourceFact:
    department: str
    state: str  # in-sync | drifted | unverifiable


@dataclass(frozen=True)
class VerificationFact:
    id: str
    project: str
    finished_at: datetime
    resources: tuple[ResourceFact, ...]

    def state_of(self, department: str) -> str | None:
        """drifted if any of the department's resources drifted, in-sync if all are, else
        unverifiable (None: the verification checked nothing of the department)."""
        states = {r.state for r in self.resources if r.department == department}
        if not states:
            return None
        if "drifted" in states:
            return "drifted"
        return "in-sync" if states == {"in-sync"} else "unverifiable"


@dataclass(frozen=True)
class Acknowledgement:
    incident_id: str
    actor: str
    at: datetime
    comment: str | None = None


@dataclass(frozen=True)
class History:
    since: datetime
    until: datetime
    runs: tuple[RunFact, ...]  # oldest first
    changes: tuple[ChangeFact, ...] = ()
    has_changes: bool = False  # the change tables exist
    verifications: tuple[VerificationFact, ...] = ()
    acknowledgements: tuple[Acknowledgement, ...] = ()
    deliveries: tuple[Delivery, ...] = field(default=())

    @cached_property
    def applied(self) -> tuple[RunFact, ...]:
        return tuple(r for r in self.runs if not r.check)


def load_history(
    engine: Engine,
    since: datetime,
    until: datetime | None = None,
    *,
    project: str | None = None,
) -> History:
    """Everything from ``since`` on (``until``: the end of the range, default now)."""
    end = until or utcnow()
    with paused_gc():  # 100,000 objects for 10,000 runs, and no cycle (see _gc.py)
        try:
            with engine.connect() as conn:
                runs = _runs(conn, since, project)
                changes, has_changes = _changes(conn, since, project)
                verifications = _verifications(conn, since, project)
                acks = _acknowledgements(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise RecordError(describe_failure(exc, engine, "read the run record")) from None
        return History(
            since=since,
            until=end,
            runs=runs,
            changes=changes,
            has_changes=has_changes,
            verifications=verifications,
            acknowledgements=acks,
            deliveries=deliveries(runs, changes),
        )


def _runs(conn: Connection, since: datetime, project: str | None) -> tuple[RunFact, ...]:
    r = runs_table.c
    where = [r.started_at >= since] + ([r.project == project] if project else [])
    query = (
        sa.select(
            r.id,
            r.service,
            r.project,
            r.check_mode,
            r.status,
            r.resumed_from,
            sa.type_coerce(r.started_at, sa.Text),
            sa.type_coerce(r.finished_at, sa.Text),
        )
        .where(*where)
        .order_by(r.started_at, r.id)
    )
    ids = sa.select(r.id).where(*where).scalar_subquery()
    by_run = _steps(conn, ids)
    queued = _queued(conn, ids)
    live = live_runs(conn)
    text = conn.dialect.name != "postgresql"  # Timestamp: ISO 8601 text but on PostgreSQL
    iso, no_steps = datetime.fromisoformat, ()
    found = []
    rows = conn.execute(query)
    for run_id, service, of_project, check, status, resumed, started, finished in rows:
        if text:
            started = iso(started)
            finished = iso(finished) if finished else None
        if status == "running" and run_id not in live:
            status = "interrupted"
        fact = RunFact(
            id=run_id,
            service=service,
            project=of_project,
            check=bool(check),
            status=status,
            resumed_from=resumed,
            requested_at=queued.get(run_id) or started,
            started_at=started,
            finished_at=finished,
            steps=by_run.get(run_id, no_steps),
        )
        found.append(fact)
    return tuple(found)


def _steps(conn: Connection, ids: Any) -> dict[str, tuple[StepFact, ...]]:
    """The steps of the runs ``ids`` selects, in plan order, by run id.

    Only the columns the figures use (not the outputs, diffs, targets or artifacts), read
    raw and converted here: the column types' per-value hooks cost more than the read. The
    rows are streamed (ordered by run), never held as a list of rows."""
    s = steps_table.c
    query = (
        sa.select(
            s.run_id,
            s.step_id,
            s.department,
            sa.cast(s.needs, sa.Text),  # JSON text on both: decoded once per distinct value
            s.status,
            s.reused,
            sa.type_coerce(s.started_at, sa.Text),
            sa.type_coerce(s.finished_at, sa.Text),
            s.duration,
        )
        .where(s.run_id.in_(ids))
        .order_by(s.run_id, s.position)
    )
    by_run: dict[str, tuple[StepFact, ...]] = {}
    current: list[StepFact] = []
    current_id: str | None = None
    text = conn.dialect.name != "postgresql"  # Timestamp: ISO 8601 text but on PostgreSQL
    iso, needs_of, new = datetime.fromisoformat, _needs, tuple.__new__
    rows = conn.execute(query)
    for run_id, step_id, department, needs, status, reused, started, finished, took in rows:
        if run_id != current_id:
            if current_id is not None:
                by_run[current_id] = tuple(current)
            current, current_id = [], run_id
        if text:
            started = iso(started) if started else None
            finished = iso(finished) if finished else None
        # StepFact(...) without its Python-level __new__: 60,000 of them for 10,000 runs
        fact = (run_id, step_id, department, needs_of(needs), status, bool(reused), started,
                finished, took)  # fmt: skip
        current.append(new(StepFact, fact))
    if current_id is not None:
        by_run[current_id] = tuple(current)
    return by_run


def _queued(conn: Connection, ids: Any) -> dict[str, datetime]:
    """When each of the runs ``ids`` selects was first queued (runs never queued: absent)."""
    e = events_table.c
    query = (
        sa.select(e.run_id, sa.func.min(e.at))
        .where(e.kind == "run.queued", e.run_id.in_(ids))
        .group_by(e.run_id)
    )
    # SQLite: min() of the column bypasses its type (ISO text); PostgreSQL: a datetime
    return {run_id: _moment(at) for run_id, at in conn.execute(query)}


def _moment(value: Any) -> datetime:
    """A timestamp read raw: ISO 8601 text on SQLite, a datetime on PostgreSQL."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


@cache
def _needs(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _changes(
    conn: Connection, since: datetime, project: str | None
) -> tuple[tuple[ChangeFact, ...], bool]:
    from infra_automation.changes.store import approvals, changes

    if not sa.inspect(conn).has_table(changes.name):
        return (), False
    c = changes.c
    where = [c.created_at >= since] + ([c.project == project] if project else [])
    columns = (c.id, c.project, c.service, c.change_type, c.state, c.created_at, c.run_id)
    rows = conn.execute(sa.select(*columns).where(*where).order_by(c.created_at)).all()
    a = approvals.c
    approved: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    query = (
        sa.select(a.change_id, a.approver, a.at)
        .where(a.decision == "approved", a.voided_at.is_(None), a.change_hash == a.change_id)
        .where(a.change_id.in_(sa.select(c.id).where(*where).scalar_subquery()))
        .order_by(a.seq)
    )
    for change_id, approver, at in conn.execute(query):
        approved[change_id].append((approver, at))
    facts = tuple(ChangeFact(*row, approvals=tuple(approved[row[0]])) for row in rows)
    return facts, True


def _verifications(
    conn: Connection, since: datetime, project: str | None
) -> tuple[VerificationFact, ...]:
    e = events_table.c
    query = (
        sa.select(e.run_id, e.kind, e.at, e.data)
        .where(e.kind.in_(VERIFY_KINDS), e.at >= since)
        .order_by(e.seq)
    )
    resources: dict[str, list[ResourceFact]] = defaultdict(list)
    found: list[VerificationFact] = []
    for verify_id, kind, at, data in conn.execute(query):
        if kind == "verify.resource":
            resources[verify_id].append(ResourceFact(str(data["department"]), str(data["state"])))
        elif project is None or data.get("project") == project:
            checked = tuple(resources.pop(verify_id, ()))
            found.append(VerificationFact(verify_id, str(data.get("project")), at, checked))
    return tuple(found)


def _acknowledgements(conn: Connection) -> tuple[Acknowledgement, ...]:
    from infra_automation.metrics.store import acknowledgements

    if not sa.inspect(conn).has_table(acknowledgements.name):
        return ()
    c = acknowledgements.c
    rows = conn.execute(sa.select(c.incident_id, c.actor, c.at, c.comment).order_by(c.seq))
    return tuple(Acknowledgement(*row) for row in rows)


def deliveries(runs: Sequence[RunFact], changes: Iterable[ChangeFact]) -> tuple[Delivery, ...]:
    """The applied runs grouped into deliveries (see the module doc), oldest first."""
    by_id = {r.id: r for r in runs}
    chains: dict[str, list[RunFact]] = defaultdict(list)
    for run in runs:
        if not run.check:
            chains[_first_of(run, by_id)].append(run)
    change_of = {c.run_id: c for c in changes if c.run_id}
    found = []
    for chain in chains.values():
        change = next((change_of[r.id] for r in chain if r.id in change_of), None)
        requested = change.created_at if change is not None else chain[0].requested_at
        approved = change.approved_at if change is not None else None
        found.append(Delivery(tuple(chain), requested, approved, change))
    return tuple(sorted(found, key=lambda d: d.first.started_at))


def _first_of(run: RunFact, by_id: Mapping[str, RunFact]) -> str:
    seen = {run.id}
    while run.resumed_from and run.resumed_from in by_id and run.resumed_from not in seen:
        run = by_id[run.resumed_from]
        seen.add(run.id)
    return run.id


def _finished_or_max(step: StepFact) -> datetime:
    return step.finished_at or datetime.max.replace(tzinfo=UTC)
