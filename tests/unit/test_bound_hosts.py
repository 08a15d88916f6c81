"""Every binder lists the VMs it has bound now (``HostBinder.bound()``), and what looks for
VM -> host bindings reads them through it whatever the binder: the Ansible inventory view
(``ansible-inventory -i inventories/lab --list``) and security's firewall removal
(``bound_vms``). The lab test (tests/integration/test_guests_lab.py) does it on real guests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra_automation.departments.ansible import inventory_view
from infra_automation.departments.security import bound_vms
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import StepContext
from infra_automation.inventory import BINDERS, Host, Inventory, load_inventory

POOL = """\
name: t
defaults: {username: root}
groups:
  pool: {data: {tier: pool}}
hosts:
  h1: {groups: [pool], hostname: 127.0.0.1, port: 2301}
  h2: {groups: [pool], hostname: 127.0.0.1, port: 2302}
  shop-web-02: {hostname: 192.0.2.7}
host_binding: {kind: pool, group: pool, store: file}
"""
HAND_WRITTEN = Path(__file__).resolve().parents[2] / "inventories" / "lab" / "inventory.yml"


@pytest.fixture
def pool(tmp_path: Path) -> Inventory:
    (tmp_path / "inventory.yml").write_text(POOL)
    return load_inventory(tmp_path)


def ctx(inventory: Inventory, project: str) -> StepContext:
    return StepContext(
        run_id="r",
        project=project,
        step_id="firewall_remove",
        department="security",
        params={},  # type: ignore[arg-type]
        inventory=inventory,
        root=Path("."),
    )


def test_a_pool_lists_its_stored_bindings_not_the_dry_runs_promises(pool: Inventory) -> None:
    pool.bind_host("shop-web-01")
    pool.bind_host("shop-db-01", dry_run=True)  # promised h2, stored nowhere
    bound = pool.bound_hosts()
    assert list(bound) == ["shop-web-01"]
    host = bound["shop-web-01"]
    assert (host.name, host.port, host.data["bound_to"], host.data["tier"]) == (
        "shop-web-01",
        2301,
        "h1",
        "pool",
    )
    assert host == pool.bind_host("shop-web-01", dry_run=True)  # as bind answers for it
    pool.release_host("shop-web-01")
    assert pool.bound_hosts() == {}


def test_static_keeps_no_table(tmp_path: Path) -> None:
    (tmp_path / "inventory.yml").write_text(POOL.replace("kind: pool, group: pool", "kind: static"))
    inventory = load_inventory(tmp_path)
    inventory.bind_host("shop-web-01", "192.0.2.10")
    assert inventory.bound_hosts() == {}


class OldBinder:
    """A third-party binder written before ``bound()`` joined the Protocol."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def bind(self, vm_name: str, address: str | None, *, dry_run: bool = False) -> Host:
        return Host(name=vm_name, hostname=address)

    def release(self, vm_name: str) -> None:
        return None


class TableBinder(OldBinder):
    """A binder of another kind with a table of its own (as ``lab-guests`` has)."""

    def bound(self) -> dict[str, Host]:
        return {
            vm: Host(
                name=vm, hostname="127.0.0.1", port=port, groups=["pool"], data={"bound_to": c}
            )
            for vm, port, c in [
                ("shop-web-01", 4022, "guest-shop-web-01"),
                ("shop-web-02", 4023, "guest-shop-web-02"),
                ("shop-db-01", 4024, "guest-shop-db-01"),
                ("other-web-01", 4025, "guest-other-web-01"),
            ]
        }


def other_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binder: type) -> Inventory:
    monkeypatch.setitem(BINDERS, "table", binder)
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "inventory.yml").write_text(POOL.replace("kind: pool, group: pool", "kind: table"))
    return load_inventory(tmp_path)


def test_a_binder_without_bound_is_named_never_read_as_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = other_kind(tmp_path, monkeypatch, OldBinder)
    with pytest.raises(ConfigurationError, match=r"kind 'table': its binder OldBinder has no bou"):
        inventory.bound_hosts()
    with pytest.raises(ConfigurationError, match=r"has no bound\(\)"):
        bound_vms(ctx(inventory, "shop"))


def test_the_ansible_view_lists_any_binders_vms_a_declared_host_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = inventory_view(other_kind(tmp_path, monkeypatch, TableBinder))["all"]
    assert hosts["hosts"]["shop-web-01"]["ansible_port"] == 4022
    assert hosts["hosts"]["shop-web-01"]["bound_to"] == "guest-shop-web-01"
    assert hosts["hosts"]["shop-web-02"] == {"ansible_host": "192.0.2.7", "ansible_user": "root"}
    assert {"shop-web-01", "shop-db-01", "h1"} <= set(hosts["children"]["pool"]["hosts"])


def test_security_finds_the_projects_vms_whatever_the_binder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: Inventory
) -> None:
    inventory = other_kind(tmp_path / "table", monkeypatch, TableBinder)
    assert bound_vms(ctx(inventory, "shop")) == ["shop-db-01", "shop-web-01", "shop-web-02"]
    assert bound_vms(ctx(inventory, "sho")) == []  # the project's own names only
    pool.bind_host("shop-web-01")
    pool.bind_host("other-web-01")
    assert bound_vms(ctx(pool, "shop")) == ["shop-web-01"]


def test_security_and_ansible_see_the_lab_guests(tmp_path: Path) -> None:
    """The lab's ``lab-guests`` through the same seam (its store written as the binder does)."""
    folder = tmp_path / "inventory"
    (folder / "generated").mkdir(parents=True)
    (folder / "inventory.yml").write_text(HAND_WRITTEN.read_text())
    section: dict[str, Any] = {"instance": "ut", "root": str(tmp_path), "image": "localhost/x:1"}
    generated = {"host_binding": {"kind": "lab-guests"}, "lab_guests": section}
    (folder / "generated" / "lab.yml").write_text(yaml.safe_dump(generated))
    table = {
        "shop-web-01": {"container": "ut-guest-shop-web-01", "ssh": 4022, "http": 4080},
        "shop-web-02": {"container": "ut-guest-shop-web-02"},  # being made: no host yet
    }
    store = tmp_path / ".lab" / "ut" / "guests" / "guests.json"
    store.parent.mkdir(parents=True)
    store.write_text(json.dumps(table))
    inventory = load_inventory(folder)
    assert bound_vms(ctx(inventory, "shop")) == ["shop-web-01"]
    hosts = inventory_view(inventory)["all"]["hosts"]
    assert hosts["shop-web-01"]["ansible_port"] == 4022 and "shop-web-02" not in hosts
