"""The shared inventory: hand-written + generated files, selection, host bindings."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from db_backends import database

from infra_automation.exceptions import ConfigurationError, TargetRejected
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.leases import DatabaseBindingStore
from infra_automation.record import open_database

HAND = """\
name: t
defaults: {username: root}
groups:
  routers: {platform: cisco_ios, data: {department: network}}
  pool: {}
hosts:
  core: {groups: [routers], data: {asn: 65001}}
  h1: {groups: [pool]}
  h2: {groups: [pool]}
host_binding: {kind: pool, group: pool}
"""
GENERATED = """\
hosts:
  core: {hostname: 127.0.0.1, port: 2201}
  h1: {hostname: 127.0.0.1, port: 2301}
  h2: {hostname: 127.0.0.1, port: 2302}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "inventory.yml").write_text(HAND)
    (tmp_path / "generated").mkdir()
    (tmp_path / "generated" / "lab.yml").write_text(GENERATED)
    (tmp_path / "generated" / "secrets.yml").write_text("vcenter_password: not-in-hosts\n")
    return tmp_path


def test_generated_details_merge_over_hand_written_data(folder: Path) -> None:
    inv = load_inventory(folder)
    core = inv.host("core")
    assert (core.hostname, core.port, core.username, core.platform) == (
        "127.0.0.1", 2201, "root", "cisco_ios",
    )  # fmt: skip
    assert core.data == {"department": "network", "asn": 65001}
    assert inv.select(group="pool") == ["h1", "h2"]
    assert inv.secrets.get("vcenter_password") == "not-in-hosts"


def test_unknown_group_or_host_is_a_clear_error(folder: Path) -> None:
    inv = load_inventory(folder)
    with pytest.raises(ConfigurationError, match="no group 'nope'"):
        inv.select(group="nope")
    with pytest.raises(ConfigurationError, match="no host 'ghost'"):
        inv.select(hosts=["ghost"])


STORES = ["file", "sqlite", "postgresql"]


@contextmanager
def _bound(
    folder: Path, store: str, tmp_path: Path
) -> Iterator[tuple[Inventory, Callable[[], dict[str, str]]]]:
    """The pool inventory with its bindings in ``store``, and a reader of what is stored."""
    if store == "file":
        text = HAND.replace("group: pool}", "group: pool, store: file}")
        (folder / "inventory.yml").write_text(text)
        bindings = folder / "generated" / "bindings.json"
        yield (
            load_inventory(folder),
            lambda: json.loads(bindings.read_text() or "{}") if bindings.exists() else {},
        )
        return
    with database(store, tmp_path) as url:
        db = open_database(url)
        inv = load_inventory(folder)
        inv.db = db
        pool = DatabaseBindingStore(db, "t/pool")

        def stored() -> dict[str, str]:
            with pool.transaction(write=False) as table:
                return dict(table)

        try:
            yield inv, stored
        finally:
            db.dispose()


@pytest.mark.parametrize("store", STORES)
def test_pool_binding_is_stable_dry_run_leaves_no_trace_release_frees(
    folder: Path, store: str, tmp_path: Path
) -> None:
    with _bound(folder, store, tmp_path) as (inv, stored):
        preview = inv.bind_host("shop-web-01", "10.20.0.11", dry_run=True)
        assert preview.port == 2301 and stored() == {}
        first = inv.bind_host("shop-web-01", "10.20.0.11")
        assert (first.name, first.port, first.data["bound_to"]) == ("shop-web-01", 2301, "h1")
        assert inv.bind_host("shop-web-01").port == 2301  # the same VM, the same host
        assert inv.bind_host("shop-web-02").port == 2302
        with pytest.raises(TargetRejected, match="no free host"):  # the pool refuses: rejected
            inv.bind_host("shop-web-03")
        inv.release_host("shop-web-01")
        assert stored() == {"shop-web-02": "h2"}


def test_database_bindings_need_a_database(folder: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"in the database, and none is attached"):
        load_inventory(folder).bind_host("shop-web-01")


def test_static_binding_uses_the_vm_address(folder: Path) -> None:
    (folder / "inventory.yml").write_text(HAND.replace("kind: pool, group: pool", "kind: static"))
    inv = load_inventory(folder)
    assert inv.bind_host("vm1", "192.0.2.10").hostname == "192.0.2.10"
    with pytest.raises(ConfigurationError, match="no address"):
        inv.bind_host("vm1", None)


def test_invalid_inventory_names_the_field(folder: Path) -> None:
    (folder / "inventory.yml").write_text("hosts:\n  core: {prot: 22}\n")
    with pytest.raises(ConfigurationError, match=r"hosts\.core\.prot"):
        load_inventory(folder)


def test_a_host_without_connection_details_is_refused_clearly(folder: Path) -> None:
    (folder / "generated" / "lab.yml").unlink()
    inv = load_inventory(folder)
    with pytest.raises(ConfigurationError, match=r"host 'core' has no address .*infra lab up"):
        inv.connectable("core")


def test_redaction_masks_secrets_in_any_value_and_by_key() -> None:
    from infra_automation.secrets import MASK, REDACTOR, redact

    REDACTOR.add("S3cr3tValue")
    data = {"err": ValueError("auth S3cr3tValue"), "path": Path("/x/S3cr3tValue"), "n": 3}
    masked = redact({**data, "api_key": "abcd1234", "tags": {"S3cr3tValue"}})
    assert masked["err"] == f"auth {MASK}" and masked["path"] == f"/x/{MASK}"
    assert masked["n"] == 3 and masked["api_key"] == MASK and masked["tags"] == [MASK]
    assert redact(Path("/plain")) == Path("/plain")  # no secret: the value is kept as is


def test_ansible_sees_the_vms_bound_in_the_database(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra_automation.ansible_plugins.inventory.infra_inventory import _view

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    monkeypatch.setenv("INFRA_ROOT", str(tmp_path))
    monkeypatch.setenv("INFRA_DATABASE_URL", url)
    db = open_database(url)
    with DatabaseBindingStore(db, "t/pool").transaction(write=True) as table:
        table["shop-web-01"] = "h2"
    db.dispose()
    hosts = _view(folder)["all"]["hosts"]
    assert hosts["shop-web-01"]["bound_to"] == "h2"
    assert hosts["shop-web-01"]["ansible_port"] == 2302
