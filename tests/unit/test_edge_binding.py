"""The ``pool`` host binding in check mode: one run's dry run promises each free host once.

Two VMs of one run must never both be promised the same host: the dry run would succeed and
the apply fail after creating the VMs. A pool too small for the run fails the dry run as it
fails the apply. What the dry run promises is never stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra_automation.exceptions import TargetRejected
from infra_automation.inventory import BINDERS, Inventory, PoolBinder, load_inventory
from infra_automation.results import ErrorKind, error_kind_of

HAND = """\
name: t
defaults: {username: root}
groups:
  pool: {}
hosts:
  h1: {groups: [pool], hostname: 127.0.0.1, port: 2301}
  h2: {groups: [pool], hostname: 127.0.0.1, port: 2302}
host_binding: {kind: pool, group: pool, store: file}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "inventory.yml").write_text(HAND)
    return tmp_path


def bindings(folder: Path) -> Path:
    return folder / "generated" / "bindings.json"


def test_a_dry_run_promises_each_free_host_once(folder: Path) -> None:
    inv = load_inventory(folder)
    one = inv.bind_host("shop-web-01", "10.0.0.2", dry_run=True)
    two = inv.bind_host("shop-web-02", "10.0.0.3", dry_run=True)
    assert {one.data["bound_to"], two.data["bound_to"]} == {"h1", "h2"}
    # the same VM keeps its promise in the later steps of the run (os, web, backup...)
    again = inv.bind_host("shop-web-01", "10.0.0.2", dry_run=True)
    assert again.data["bound_to"] == one.data["bound_to"]
    assert not bindings(folder).exists()  # nothing stored


def test_a_pool_too_small_fails_the_dry_run_as_it_fails_the_apply(folder: Path) -> None:
    dry = load_inventory(folder)
    dry.bind_host("shop-web-01", dry_run=True)
    dry.bind_host("shop-web-02", dry_run=True)
    with pytest.raises(TargetRejected, match="no free host in group 'pool'") as dry_error:
        dry.bind_host("shop-web-03", dry_run=True)
    real = load_inventory(folder)
    real.bind_host("shop-web-01")
    real.bind_host("shop-web-02")
    with pytest.raises(TargetRejected, match="no free host in group 'pool'") as real_error:
        real.bind_host("shop-web-03")
    assert error_kind_of(dry_error.value) is error_kind_of(real_error.value) is ErrorKind.REJECTED


def test_a_dry_run_counts_hosts_bound_by_earlier_runs(folder: Path) -> None:
    load_inventory(folder).bind_host("old-web-01")
    stored = json.loads(bindings(folder).read_text())
    dry = load_inventory(folder)
    assert dry.bind_host("shop-web-01", dry_run=True).data["bound_to"] == "h2"
    with pytest.raises(TargetRejected):
        dry.bind_host("shop-web-02", dry_run=True)
    assert json.loads(bindings(folder).read_text()) == stored


def test_promises_belong_to_one_run(folder: Path) -> None:
    first, second = load_inventory(folder), load_inventory(folder)  # one inventory per run
    first.bind_host("a-web-01", dry_run=True)
    first.bind_host("a-web-02", dry_run=True)
    assert second.bind_host("b-web-01", dry_run=True).data["bound_to"] == "h1"


def test_parallel_steps_of_one_run_share_the_promises(folder: Path) -> None:
    inv = load_inventory(folder)
    names = ["shop-web-01", "shop-web-02"] * 8  # os, web, backup, monitoring in parallel
    with ThreadPoolExecutor(8) as pool:
        bound = list(
            pool.map(lambda n: (n, inv.bind_host(n, dry_run=True).data["bound_to"]), names)
        )
    assert len(set(bound)) == 2 and len({host for _, host in set(bound)}) == 2


class MemoryStore:
    """A binding store of our own: the seam that the database store will use."""

    def __init__(self) -> None:
        self.table: dict[str, str] = {}
        self.writes = 0

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[dict[str, str]]:
        table = dict(self.table)
        yield table
        if write:
            self.table = table
            self.writes += 1


def test_the_storage_is_behind_a_seam(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    monkeypatch.setitem(BINDERS, "pool", lambda inv: PoolBinder(inv, store=store))
    inv = load_inventory(folder)
    assert inv.bind_host("shop-web-01", dry_run=True).data["bound_to"] == "h1"
    assert (store.table, store.writes) == ({}, 0)
    assert inv.bind_host("shop-web-01").data["bound_to"] == "h1"
    assert store.table == {"shop-web-01": "h1"}
    inv.release_host("shop-web-01")
    assert store.table == {} and not bindings(folder).exists()
    assert isinstance(inv, Inventory)
