"""Leases: locks kept in the database, so that they hold across checkouts and machines.

A lease is a row of ``infra_leases`` (key, holder, run_id, acquired_at, expires_at,
heartbeat). Taking one is one statement, atomic on SQLite and PostgreSQL alike: insert the
row, or take it over if it has expired (``INSERT .. ON CONFLICT DO UPDATE .. WHERE
expires_at < now``). A heartbeat thread renews what a :class:`Leases` holds every third of
its TTL; a holder that dies loses its leases once they expire. Keys in use:

- ``project:<name>``: one active run per project (:class:`infra_automation.scheduler.ProjectLock`);
  a run recorded ``running`` whose lease expired reads as ``interrupted``.
- ``device:<name>``: one run at a time changes a device (:meth:`Leases.acquire_all`, which
  takes several keys in sorted order and waits up to a timeout).

Expiry compares the holders' clocks (UTC): machines sharing a database keep them in sync
(NTP). :class:`DatabaseBindingStore` keeps which VM stands on which pre-provisioned host.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from infra_automation.events import utcnow
from infra_automation.exceptions import ConfigurationError, RecordError, RunLocked
from infra_automation.record import describe_failure, host_bindings, leases

DEFAULT_TTL = 30.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as recorded; ``holder`` is ``host:pid:token``."""

    key: str
    holder: str
    run_id: str | None
    acquired_at: datetime
    expires_at: datetime
    heartbeat: datetime

    @property
    def host(self) -> str:
        return self.holder.split(":")[0]

    @property
    def pid(self) -> str:
        parts = self.holder.split(":")
        return parts[1] if len(parts) > 1 else "?"

    def describe(self) -> str:
        left = max(0.0, (self.expires_at - utcnow()).total_seconds())
        return (
            f"run {self.run_id or 'none'}, pid {self.pid} on {self.host}, "
            f"lease expires in {left:.0f} s unless renewed"
        )


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_of(db: Engine, key: str) -> LeaseInfo | None:
    """The live lease on ``key``, if any."""
    with db.connect() as conn:
        return _live(conn, key)


def _live(conn: Connection, key: str) -> LeaseInfo | None:
    query = sa.select(leases).where(leases.c.key == key, leases.c.expires_at > utcnow())
    row = conn.execute(query).first()
    return LeaseInfo(**row._mapping) if row is not None else None


class Leases:
    """The leases of one holder (a run of this process), renewed while held.

    ::

        with Leases(db, run_id=run_id, ttl=30) as held:
            held.acquire("project:shop")                       # RunLocked if taken
            held.acquire_all(["device:edge", "device:core"], timeout=60)
    """

    def __init__(
        self,
        db: Engine,
        *,
        run_id: str | None = None,
        ttl: float = DEFAULT_TTL,
        holder: str | None = None,
    ) -> None:
        if ttl <= 0:
            raise ConfigurationError(f"lease_ttl: must be > 0 seconds, got {ttl}")
        self.db = db
        self.run_id = run_id
        self.ttl = ttl
        self.holder = holder or new_holder()
        self.lost: set[str] = set()
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    def try_acquire(self, key: str) -> LeaseInfo | None:
        """Take ``key`` if it is free or expired: None when taken, else the live holder."""
        now = utcnow()
        values = {
            "key": key,
            "holder": self.holder,
            "run_id": self.run_id,
            "acquired_at": now,
            "expires_at": now + timedelta(seconds=self.ttl),
            "heartbeat": now,
        }
        try:
            with self.db.begin() as conn:
                taken = conn.execute(
                    _take(conn, values, now), execution_options={"preserve_rowcount": True}
                )
                if taken.rowcount == 1:
                    self._hold(key)
                    return None
                current = _live(conn, key)
        except sa.exc.SQLAlchemyError as exc:
            raise RecordError(describe_failure(exc, self.db, f"take the lease {key!r}")) from None
        if current is None:  # released between the two statements: try again
            return self.try_acquire(key)
        return current

    def acquire(self, key: str, *, timeout: float = 0.0, poll: float = 0.2) -> None:
        """Take ``key``, waiting up to ``timeout`` seconds; RunLocked names the holder."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.try_acquire(key)
            if current is None:
                return
            if time.monotonic() >= deadline:
                raise RunLocked(f"{key!r} is held by another run ({current.describe()})")
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def acquire_all(self, keys: Iterable[str], *, timeout: float = 0.0) -> None:
        """Take every key, in sorted order (no deadlock between two runs), within ``timeout``
        seconds in all; on failure the keys taken here are released again."""
        deadline = time.monotonic() + timeout
        taken: list[str] = []
        try:
            for key in sorted(set(keys)):
                if key in self.held:
                    continue
                self.acquire(key, timeout=max(0.0, deadline - time.monotonic()))
                taken.append(key)
        except BaseException:
            self.release(*taken)
            raise

    def release(self, *keys: str) -> None:
        """Give up ``keys`` (all held keys when none are named)."""
        with self._lock:
            chosen = set(keys) & self._held if keys else set(self._held)
            self._held -= chosen
        if not chosen:
            return
        try:
            with self.db.begin() as conn:
                conn.execute(
                    leases.delete().where(
                        leases.c.key.in_(sorted(chosen)), leases.c.holder == self.holder
                    )
                )
        except sa.exc.SQLAlchemyError as exc:  # they expire by themselves
            log.warning("leases %s not released: %s", sorted(chosen), exc)

    def renew(self) -> None:
        """Extend every held lease by the TTL; those taken over meanwhile go to ``lost``."""
        keys = self.held
        if not keys:
            return
        now = utcnow()
        with self.db.begin() as conn:
            conn.execute(
                leases.update()
                .where(leases.c.key.in_(sorted(keys)), leases.c.holder == self.holder)
                .values(expires_at=now + timedelta(seconds=self.ttl), heartbeat=now)
            )
            query = sa.select(leases.c.key).where(
                leases.c.key.in_(sorted(keys)), leases.c.holder == self.holder
            )
            kept = set(conn.execute(query).scalars())
        gone = keys - kept
        if gone:
            log.error("leases %s were lost (expired and taken by another run)", sorted(gone))
            with self._lock:
                self._held -= gone
                self.lost |= gone

    def close(self) -> None:
        """Stop the heartbeat and release everything."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        self.release()

    def __enter__(self) -> Leases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _hold(self, key: str) -> None:
        with self._lock:
            self._held.add(key)
            if self._heartbeat is None:
                self._heartbeat = threading.Thread(
                    target=self._beat, name="infra-lease-heartbeat", daemon=True
                )
                self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except sa.exc.SQLAlchemyError as exc:  # try again at the next beat
                log.warning("%s", describe_failure(exc, self.db, "renew the leases, retrying"))


def _take(conn: Connection, values: Mapping[str, object], now: datetime) -> sa.Insert:
    """INSERT the lease, or take the row over if it expired (or is already ours)."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(leases).values(**values)
    takeover = (leases.c.expires_at < now) | (leases.c.holder == values["holder"])
    update = {c: statement.excluded[c] for c in ("holder", "run_id", "acquired_at")}
    update |= {c: statement.excluded[c] for c in ("expires_at", "heartbeat")}
    return statement.on_conflict_do_update(
        index_elements=[leases.c.key], set_=update, where=takeover
    )


# --- host bindings ---------------------------------------------------------------------------


class DatabaseBindingStore:
    """The ``pool`` host binding's table (:class:`~infra_automation.inventory.BindingStore`)
    in the database: rows of ``infra_host_bindings`` (vm, host, pool in ``group``, bound_at).

    A transaction holds the pool exclusively until it ends: a transaction-level advisory lock
    on PostgreSQL, SQLite's write lock (taken by a first, empty write) on SQLite; the unique
    (pool, host) constraint stands behind both. Processes and machines sharing the database
    therefore never bind two VMs to one host.
    """

    def __init__(self, db: Engine, pool: str) -> None:
        self.db = db
        self.pool = pool

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[dict[str, str]]:
        try:
            with self.db.begin() as conn:
                self._lock(conn)
                table = self._read(conn)
                before = dict(table)
                yield table
                if write:
                    self._store(conn, before, table)
        except sa.exc.SQLAlchemyError as exc:
            raise RecordError(describe_failure(exc, self.db, "bind a host")) from None

    def _lock(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(self.pool))))
        else:  # the first write of the transaction takes SQLite's write lock (busy_timeout)
            conn.execute(host_bindings.update().where(sa.false()).values(group=self.pool))

    def _read(self, conn: Connection) -> dict[str, str]:
        query = sa.select(host_bindings.c.vm, host_bindings.c.host).where(
            host_bindings.c.group == self.pool
        )
        return {str(vm): str(host) for vm, host in conn.execute(query)}

    def _store(self, conn: Connection, before: Mapping[str, str], after: Mapping[str, str]) -> None:
        gone = [vm for vm in before if after.get(vm) != before[vm]]
        if gone:
            conn.execute(
                host_bindings.delete().where(
                    host_bindings.c.group == self.pool, host_bindings.c.vm.in_(gone)
                )
            )
        now = utcnow()
        new = [
            {"vm": vm, "host": host, "group": self.pool, "bound_at": now}
            for vm, host in after.items()
            if before.get(vm) != host
        ]
        if new:
            conn.execute(host_bindings.insert(), new)
