"""The lab-guests host binding without podman: registry, section, dry-run promises, capacity.

Making and removing guest containers is driven against the real lab by
tests/integration/test_guests_lab.py; here every path that must not touch podman is
checked with podman's helpers replaced by a tripwire.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from infra_automation.exceptions import ConfigurationError, TargetRejected
from infra_automation.inventory import BINDERS, Inventory, load_inventory
from infra_automation.lab import guests
from infra_automation.lab.guests import (
    GuestBinder,
    GuestPlanned,
    GuestStore,
    default_max_guests,
    store_file,
)

HAND_WRITTEN = Path(__file__).resolve().parents[2] / "inventories" / "lab" / "inventory.yml"


def make_inventory(tmp_path: Path, **section: Any) -> Path:
    folder = tmp_path / "inventory"
    (folder / "generated").mkdir(parents=True)
    (folder / "inventory.yml").write_text(HAND_WRITTEN.read_text())
    generated = {
        "host_binding": {"kind": "lab-guests"},
        "lab_guests": {
            "instance": "ut",
            "root": str(tmp_path),
            "image": "localhost/infra-lab-debian:abc",
            "default_max_guests": 10,
            **section,
        },
    }
    (folder / "generated" / "lab.yml").write_text(yaml.safe_dump(generated))
    return folder


@pytest.fixture
def no_podman(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every podman call fails the test (and is recorded)."""
    calls: list[str] = []

    def tripwire(*args: Any, **kwargs: Any) -> Any:
        calls.append(repr(args))
        raise AssertionError(f"podman must not be called here: {args!r}")

    for name in ("podman", "run_container", "inspect", "read_ports", "ensure_network"):
        monkeypatch.setattr(guests, name, tripwire)
    return calls


def store(tmp_path: Path, table: dict[str, Any]) -> None:
    path = tmp_path / ".lab" / "ut" / "guests" / "guests.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table))


def stored(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / ".lab" / "ut" / "guests" / "guests.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def binder_of(inventory: Inventory) -> GuestBinder:
    binder = inventory.binder()
    assert isinstance(binder, GuestBinder)
    return binder


# --- registry and section -------------------------------------------------------------------


def test_kind_comes_from_the_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(BINDERS, "lab-guests", raising=False)
    inventory = load_inventory(make_inventory(tmp_path))
    binder = binder_of(inventory)
    assert binder.max_guests == 10
    assert BINDERS["static"].__name__ == "StaticBinder" and BINDERS["pool"].__name__ == "PoolBinder"
    assert store_file(binder.ctx) == tmp_path / ".lab" / "ut" / "guests" / "guests.json"


def test_unknown_kind_names_the_entry_point_kinds(tmp_path: Path) -> None:
    folder = make_inventory(tmp_path)
    (folder / "generated" / "zz-kind.yml").write_text("host_binding: {kind: lab-guestz}\n")
    with pytest.raises(ConfigurationError, match=r"'lab-guestz' \(known: lab-guests, pool, static"):
        load_inventory(folder).binder()


def test_missing_section_says_what_writes_it(tmp_path: Path) -> None:
    folder = make_inventory(tmp_path)
    (folder / "generated" / "lab.yml").write_text("host_binding: {kind: lab-guests}\n")
    message = r"needs the 'lab_guests' section.*`infra lab up` \(guests are its default"
    with pytest.raises(ConfigurationError, match=message):
        load_inventory(folder).binder()


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_guests", -1), ("max_guests", 100000), ("image", "x\nRUN evil"), ("instance", "Bad")],
)
def test_bad_section_values_are_refused_naming_the_field(
    tmp_path: Path, field: str, value: Any
) -> None:
    with pytest.raises(ConfigurationError, match=rf"lab_guests\.{field}"):
        load_inventory(make_inventory(tmp_path, **{field: value}))


def test_max_guests_set_in_the_inventory_wins_over_the_memory_default(tmp_path: Path) -> None:
    inventory = load_inventory(make_inventory(tmp_path, max_guests=3))
    assert binder_of(inventory).max_guests == 3


def test_default_max_guests_from_available_memory(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemAvailable:  2097152 kB\n")
    assert default_max_guests(256, meminfo) == 8
    assert default_max_guests(4096, meminfo) == 1  # never 0: one guest always fits
    assert default_max_guests(256, tmp_path / "absent") == 1


# --- dry run: promises, never a container ---------------------------------------------------


def test_dry_run_promises_and_stores_nothing(tmp_path: Path, no_podman: list[str]) -> None:
    binder = binder_of(load_inventory(make_inventory(tmp_path)))
    with pytest.raises(GuestPlanned, match="'shop-web-01' has no lab guest yet"):
        binder.bind("shop-web-01", None, dry_run=True)
    assert isinstance(GuestPlanned("x"), ConfigurationError)  # ansible's "not bound yet"
    assert stored(tmp_path) == {} and no_podman == []


def test_dry_run_counts_each_promise_once_and_refuses_beyond_the_limit(
    tmp_path: Path, no_podman: list[str]
) -> None:
    store(tmp_path, {"old-web-01": {"container": "ut-guest-old-web-01", "ssh": 1, "http": 2}})
    binder = binder_of(load_inventory(make_inventory(tmp_path, max_guests=3)))
    for vm in ("shop-web-01", "shop-web-02", "shop-web-01", "shop-web-02"):
        with pytest.raises(GuestPlanned):
            binder.bind(vm, None, dry_run=True)
    with pytest.raises(TargetRejected, match=r"'shop-web-03'.*lab_guests.max_guests is 3 and 3"):
        binder.bind("shop-web-03", None, dry_run=True)
    assert no_podman == [] and set(stored(tmp_path)) == {"old-web-01"}


def test_apply_refuses_beyond_the_limit_as_the_dry_run_does(
    tmp_path: Path, no_podman: list[str]
) -> None:
    full = {
        f"p-web-0{i}": {"container": f"ut-guest-p-web-0{i}", "ssh": i, "http": i} for i in (1, 2)
    }
    store(tmp_path, full)
    folder = make_inventory(tmp_path, max_guests=2)
    with pytest.raises(TargetRejected) as dry:
        binder_of(load_inventory(folder)).bind("q-web-01", None, dry_run=True)
    with pytest.raises(TargetRejected) as applied:
        binder_of(load_inventory(folder)).bind("q-web-01", None)
    assert str(dry.value) == str(applied.value)
    assert no_podman == [] and stored(tmp_path) == full  # refused before any change


def test_a_guest_that_exists_is_bound_in_dry_run_with_its_groups(
    tmp_path: Path, no_podman: list[str]
) -> None:
    store(
        tmp_path, {"shop-web-01": {"container": "ut-guest-shop-web-01", "ssh": 4022, "http": 4080}}
    )
    inventory = load_inventory(make_inventory(tmp_path))
    host = inventory.bind_host("shop-web-01", "10.20.0.10", dry_run=True)
    assert (host.name, host.hostname, host.port, host.username) == (
        "shop-web-01",
        "127.0.0.1",
        4022,
        "root",
    )
    assert host.platform == "linux" and host.groups == ["debian", "vm-pool"]
    assert host.data["http_port"] == 4080 and host.data["bound_to"] == "ut-guest-shop-web-01"
    assert host.data["ansible_python_interpreter"] == "/usr/bin/python3"  # the debian group's
    assert host.ssh_key_file == str(tmp_path / ".lab" / "ut" / "keys" / "id_ed25519")


@pytest.mark.parametrize("name", ["shop-web-01\nhostname x", "shop;rm", "-x", "Shop", ""])
def test_vm_names_that_cannot_name_a_container_are_refused(
    tmp_path: Path, no_podman: list[str], name: str
) -> None:
    binder = binder_of(load_inventory(make_inventory(tmp_path)))
    with pytest.raises(ConfigurationError, match="cannot name a lab guest"):
        binder.bind(name, None)
    assert stored(tmp_path) == {}


def test_release_of_an_unknown_vm_touches_nothing(tmp_path: Path, no_podman: list[str]) -> None:
    binder = binder_of(load_inventory(make_inventory(tmp_path)))
    binder.release("never-web-01")
    assert no_podman == []


def test_release_removes_the_container_then_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store(tmp_path, {"a-web-01": {"container": "ut-guest-a-web-01", "ssh": 1, "http": 2}})
    removed: list[list[str]] = []
    monkeypatch.setattr(guests, "remove_containers", lambda ctx, names: removed.append(names))
    binder_of(load_inventory(make_inventory(tmp_path))).release("a-web-01")
    assert removed == [["ut-guest-a-web-01"]] and stored(tmp_path) == {}


def test_store_keeps_reservations_apart_from_ready_guests(tmp_path: Path) -> None:
    store(
        tmp_path,
        {"a-web-01": {"container": "c1"}, "b-web-01": {"container": "c2", "ssh": 5, "http": 6}},
    )
    binder = binder_of(load_inventory(make_inventory(tmp_path)))
    assert list(binder.bound()) == ["b-web-01"]  # a reservation is not a host yet
    with GuestStore(store_file(binder.ctx)).transaction(write=False) as table:
        assert set(table) == {"a-web-01", "b-web-01"}


# --- the Ansible inventory plugin and the CLI -----------------------------------------------


def test_ansible_plugin_lists_bound_guests(tmp_path: Path) -> None:
    pytest.importorskip("ansible")
    from infra_automation.ansible_plugins.inventory.infra_inventory import _view

    store(
        tmp_path, {"shop-web-01": {"container": "ut-guest-shop-web-01", "ssh": 4022, "http": 4080}}
    )
    view = _view(make_inventory(tmp_path))
    hostvars = view["all"]["hosts"]["shop-web-01"]
    assert (hostvars["ansible_host"], hostvars["ansible_port"]) == ("127.0.0.1", 4022)
    assert hostvars["bound_to"] == "ut-guest-shop-web-01"
    assert "shop-web-01" in view["all"]["children"]["vm_pool"]["hosts"]
    assert "core" in view["all"]["hosts"]  # the declared hosts are still there


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-guests", "--max-guests", "3"], "only with guests"),
        (["--no-vcenter", "--max-guests", "3"], "only with guests"),  # no VMs: no guests
        (["--guests", "--max-guests", "-1"], "0..500"),
    ],
)
def test_cli_refuses_bad_max_guests_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    from infra_automation.lab.cli import app

    result = CliRunner().invoke(app, ["up", "--root", str(tmp_path), "-n", "ut", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "--max-guests" in result.output
    assert not (tmp_path / ".lab").exists()  # refused before anything


# --- failures while making or reaching a guest (podman's helpers replaced) ------------------


@pytest.fixture
def fake_podman(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """podman's helpers as recorders: a container 'runs' once run_container was called; SSH
    never answers (wait_ssh times out)."""
    from infra_automation.exceptions import LabError
    from infra_automation.lab.hosts import HostPorts

    calls: dict[str, list[Any]] = {"run": [], "removed": []}
    running: set[str] = set()

    def run_container(ctx: Any, cname: str, *args: Any) -> None:
        calls["run"].append(cname)
        running.add(cname)

    def wait_ssh(host: str, port: int) -> None:
        raise LabError(f"timed out after 30s waiting for sshd of {host} on 127.0.0.1:{port}")

    monkeypatch.setattr(
        guests, "inspect", lambda ctx, c: {"State": {"Running": True}} if c in running else None
    )
    monkeypatch.setattr(guests, "run_container", run_container)
    monkeypatch.setattr(guests, "read_ports", lambda ctx, c: HostPorts(ssh=1, http=2))
    monkeypatch.setattr(guests, "wait_ssh", wait_ssh)
    monkeypatch.setattr(guests, "ensure_network", lambda ctx: "net")
    monkeypatch.setattr(guests, "ensure_ssh_key", lambda key: key)
    monkeypatch.setattr(guests, "ssh_banner", lambda port: False)
    monkeypatch.setattr(
        guests, "remove_containers", lambda ctx, names: calls["removed"].append(names)
    )
    return calls


def test_a_new_guest_that_does_not_start_is_removed_with_its_reservation(
    tmp_path: Path, fake_podman: dict[str, list[Any]]
) -> None:
    binder = binder_of(load_inventory(make_inventory(tmp_path)))
    with pytest.raises(
        TargetRejected, match="ut-guest-new-web-01 of VM 'new-web-01' did not start"
    ):
        binder.bind("new-web-01", None)
    assert fake_podman["run"] == ["ut-guest-new-web-01"]
    assert fake_podman["removed"] == [["ut-guest-new-web-01"]] and stored(tmp_path) == {}


def test_a_guest_that_ran_is_never_removed_for_being_slow(
    tmp_path: Path, fake_podman: dict[str, list[Any]]
) -> None:
    from infra_automation.exceptions import TargetUnreachable

    record = {"container": "ut-guest-old-web-01", "ssh": 4022, "http": 4080}
    store(tmp_path, {"old-web-01": record})
    binder = binder_of(load_inventory(make_inventory(tmp_path)))
    with pytest.raises(TargetUnreachable, match="ut-guest-old-web-01 of VM 'old-web-01'"):
        binder.bind("old-web-01", None)
    assert fake_podman["removed"] == [] and stored(tmp_path) == {"old-web-01": record}
    assert fake_podman["run"] == ["ut-guest-old-web-01"]  # gone from podman: made again
