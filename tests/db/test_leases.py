"""Leases and host bindings in one process, on SQLite and PostgreSQL: refusal names the
holder, blocking acquire with a timeout, several keys in sorted order, heartbeat renewal,
takeover after expiry (the old holder learns it lost the lease), release on exit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from infra_automation.exceptions import RunLocked
from infra_automation.leases import DatabaseBindingStore, Leases, holder_of
from infra_automation.record import open_database


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = open_database(database_url)
    yield engine
    engine.dispose()


def test_a_taken_key_is_refused_naming_the_run(db: Engine) -> None:
    with Leases(db, run_id="run-a") as a, Leases(db, run_id="run-b") as b:
        a.acquire("device:core")
        with pytest.raises(RunLocked, match=r"'device:core' is held by another run \(run run-a"):
            b.acquire("device:core")
        info = holder_of(db, "device:core")
        assert info is not None and info.run_id == "run-a" and info.holder == a.holder
    assert holder_of(db, "device:core") is None  # released on exit


def test_blocking_acquire_waits_for_the_release(db: Engine) -> None:
    with Leases(db, run_id="run-a") as a, Leases(db, run_id="run-b") as b:
        a.acquire("device:edge")
        threading.Timer(0.3, a.release, args=("device:edge",)).start()
        t0 = time.monotonic()
        b.acquire("device:edge", timeout=5, poll=0.05)
        assert 0.25 < time.monotonic() - t0 < 3
        assert b.held == {"device:edge"}


def test_several_keys_in_sorted_order_all_or_none(db: Engine) -> None:
    with Leases(db, run_id="run-a") as a, Leases(db, run_id="run-b") as b:
        a.acquire("device:r2")
        t0 = time.monotonic()
        with pytest.raises(RunLocked, match="device:r2"):
            b.acquire_all(["device:r3", "device:r2", "device:r1"], timeout=0.3)
        assert time.monotonic() - t0 >= 0.3
        assert b.held == frozenset()  # r1, taken first, was given back
        assert holder_of(db, "device:r1") is None
        a.release()
        b.acquire_all(["device:r3", "device:r2", "device:r1"], timeout=1)
        assert b.held == {"device:r1", "device:r2", "device:r3"}


def test_the_heartbeat_keeps_a_lease_past_its_ttl(db: Engine) -> None:
    with Leases(db, run_id="run-a", ttl=0.4) as a, Leases(db, run_id="run-b") as b:
        a.acquire("project:shop")
        time.sleep(1.0)  # 2.5 TTLs: renewed every third of it
        assert b.try_acquire("project:shop") is not None
        info = holder_of(db, "project:shop")
        assert info is not None and info.heartbeat > info.acquired_at


def test_an_expired_lease_is_taken_over_and_the_old_holder_knows(db: Engine) -> None:
    dead = Leases(db, run_id="dead", ttl=0.3)
    dead.acquire("project:shop")
    dead._stop.set()  # no more heartbeats, as if its process had died
    with Leases(db, run_id="alive") as alive:
        with pytest.raises(RunLocked):
            alive.acquire("project:shop")
        time.sleep(0.4)
        alive.acquire("project:shop")
        info = holder_of(db, "project:shop")
        assert info is not None and info.run_id == "alive"
        dead.renew()
        assert dead.lost == {"project:shop"} and dead.held == frozenset()
        dead.close()  # releases nothing of the new holder's
        assert holder_of(db, "project:shop") is not None


def test_bad_ttl_is_refused(db: Engine) -> None:
    from infra_automation.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="lease_ttl"):
        Leases(db, ttl=0)


def test_host_bindings_are_kept_per_pool(db: Engine) -> None:
    lab, other = DatabaseBindingStore(db, "lab/pool"), DatabaseBindingStore(db, "dc2/pool")
    with lab.transaction(write=True) as table:
        table.update({"web1": "debian1", "web2": "debian2"})
    with other.transaction(write=True) as table:
        assert table == {}
        table["db1"] = "debian1"  # another pool's host of the same name
    with lab.transaction(write=True) as table:
        assert table == {"web1": "debian1", "web2": "debian2"}
        del table["web1"]
        table["web2"] = "debian3"  # moved
    with lab.transaction(write=False) as table:
        assert table == {"web2": "debian3"}
        table["web9"] = "debian9"  # not stored: a read-only transaction
    with lab.transaction(write=False) as table:
        assert table == {"web2": "debian3"}
    with pytest.raises(ValueError), lab.transaction(write=True) as table:
        table["web4"] = "debian4"
        raise ValueError("the block failed: nothing is stored")
    with other.transaction(write=False) as table:
        assert table == {"db1": "debian1"}
    with lab.transaction(write=False) as table:
        assert table == {"web2": "debian3"}
