"""IPAM and the routers' removals where a project changes while it runs: the addresses that
existing VMs hold (the db VM's) are never handed to a new web VM; a decommission of a project
IPAM holds nothing of (never built, or decommissioned already) has nothing to remove."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from infra_automation.config import load_settings
from infra_automation.departments.ipam import (
    AllocateParams,
    Ipam,
    IpamPool,
    LookupExecutor,
    LookupParams,
    describe,
)
from infra_automation.departments.ipam_addresses import (
    AddressesExecutor,
    AddressesParams,
    project_addresses,
)
from infra_automation.departments.network import UnconfigureExecutor, UnconfigureParams
from infra_automation.departments.security import GatewayAclRemoveExecutor
from infra_automation.engine import Engine
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.record import open_database
from infra_automation.results import Status

ROOT = Path(__file__).resolve().parents[2]
POOL = IpamPool(vlan_min=100, vlan_max=103, supernet="10.20.0.0/22", prefix_length=24)


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return open_database(f"sqlite:///{tmp_path / 'record.db'}")


@pytest.fixture
def inventory() -> Inventory:
    sock = socket.socket()  # a port nothing listens on: no router may be contacted
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    router = {"groups": ["routers"], "hostname": "127.0.0.1", "port": port}
    spec = InventoryFile.model_validate(
        {
            "name": "t",
            "ipam": {"pools": {"default": POOL.model_dump()}},
            "groups": {"routers": {"platform": "cisco_ios"}},
            "hosts": {
                "core": {**router, "data": {"role": "core", "asn": 65001}},
                "edge": {**router, "data": {"role": "edge", "asn": 65002}},
            },
        }
    )
    return Inventory(spec)


def context(
    inventory: Inventory, engine: sa.Engine, params: BaseModel, **extra: object
) -> StepContext:
    return StepContext(
        run_id="run-1",
        project="shop",
        step_id="step",
        department="network",
        params=params,
        inventory=inventory,
        db=engine,
        root=ROOT,
        **extra,  # type: ignore[arg-type]
    )


def vm(name: str, ip: str) -> dict[str, object]:
    """A VM as vmware.tier reports it (the fields ipam.addresses ignores included)."""
    return {"name": name, "moid": "vm-1", "cpu": 1, "memory_mb": 1024, "portgroup": "shop",
            "power_state": "poweredOn", "ip": ip, "path": f"DC0/vm/shop/{name}"}  # fmt: skip


def addresses(inventory: Inventory, engine: sa.Engine, **params: object) -> object:
    ctx = context(inventory, engine, AddressesParams.model_validate(params))
    return AddressesExecutor().apply(ctx)


# --- the db VM's address stays the db VM's ------------------------------------------------------


def test_a_scale_up_never_hands_the_db_vms_address_to_a_new_web_vm(
    inventory: Inventory, engine: sa.Engine
) -> None:
    """project-landscape with a database: web-01, web-02, then db-01 (the address after the
    web VMs'); no address is recorded by the build. Scaled to three web VMs."""
    row, _ = Ipam(engine).allocate("shop", "default", POOL, AllocateParams(hosts=3), "run-0")
    web1, web2, db = describe(row, 3).hosts
    held = [vm("shop-web-01", web1), vm("shop-web-02", web2), vm("shop-db-01", db)]
    names = ["shop-web-01", "shop-web-02", "shop-web-03"]
    result = addresses(inventory, engine, names=names, held=held)
    assert result.status == Status.SUCCESS, result.error
    recorded = project_addresses(engine, "shop")
    assert recorded["shop-db-01"] == db  # adopted with the address it holds
    assert recorded["shop-web-03"] not in (web1, web2, db)
    assert recorded["shop-web-03"] == describe(row, 4).hosts[3]  # the lowest free one
    assert result.outputs["addresses"] == [web1, web2, recorded["shop-web-03"]]
    assert f"+ address {db} shop-db-01" in result.diff


def test_a_scale_down_releases_the_removed_vm_and_keeps_the_db_vm(
    inventory: Inventory, engine: sa.Engine
) -> None:
    row, _ = Ipam(engine).allocate("shop", "default", POOL, AllocateParams(hosts=3), "run-0")
    web1, web2, db = describe(row, 3).hosts
    held = [vm("shop-web-01", web1), vm("shop-web-02", web2), vm("shop-db-01", db)]
    addresses(inventory, engine, names=["shop-web-01", "shop-web-02", "shop-web-03"], held=held)
    third = project_addresses(engine, "shop")["shop-web-03"]
    down = addresses(
        inventory, engine, names=["shop-web-01", "shop-web-02"], held=held[2:], release_others=True
    )
    assert down.changed and down.diff == f"- address {third} shop-web-03\n"
    assert set(project_addresses(engine, "shop")) == {"shop-web-01", "shop-web-02", "shop-db-01"}


def test_an_address_recorded_for_another_vm_is_refused(
    inventory: Inventory, engine: sa.Engine
) -> None:
    """The old code's damage (web-03 recorded with the db VM's address) is named, not kept."""
    row, _ = Ipam(engine).allocate("shop", "default", POOL, AllocateParams(hosts=3), "run-0")
    db = describe(row, 3).hosts[2]
    addresses(inventory, engine, names=["shop-web-01", "shop-web-02", "shop-web-03"])
    assert project_addresses(engine, "shop")["shop-web-03"] == db  # what the old scale did
    result = addresses(inventory, engine, names=["shop-web-01"], held=[vm("shop-db-01", db)])
    assert result.status == Status.FAILED and result.error_kind == "rejected"
    assert f"address {db} is held by VM 'shop-db-01' and recorded for 'shop-web-03'" in (
        result.error or ""
    )


def test_vms_with_no_address_of_the_subnet_are_not_adopted(
    inventory: Inventory, engine: sa.Engine
) -> None:
    Ipam(engine).allocate("shop", "default", POOL, AllocateParams(hosts=1), "run-0")
    held = [vm("shop-web-01", ""), vm("shop-db-01", "192.0.2.7"), vm("shop-app-01", "0.0.0.0")]  # noqa: S104 - a placeholder
    result = addresses(inventory, engine, names=[], held=held)
    assert result.status == Status.SUCCESS and not result.changed
    assert project_addresses(engine, "shop") == {}


def test_a_name_both_kept_and_released_is_refused() -> None:
    with pytest.raises(ValidationError, match="release: names also given an address: a-web-01"):
        AddressesParams(names=["a-web-01"], release=["a-web-01"])


# --- a decommission with nothing left ---------------------------------------------------------


def test_lookup_of_a_project_with_no_allocation(inventory: Inventory, engine: sa.Engine) -> None:
    strict = LookupExecutor().apply(context(inventory, engine, LookupParams()))
    assert strict.status == Status.FAILED and "has no allocation" in (strict.error or "")
    lenient = LookupExecutor().apply(context(inventory, engine, LookupParams(missing_ok=True)))
    assert lenient.status == Status.SUCCESS and not lenient.changed
    assert lenient.outputs["allocated"] is False and lenient.outputs["subnet"] is None
    Ipam(engine).allocate("shop", "default", POOL, AllocateParams(hosts=1), "run-0")
    found = LookupExecutor().apply(context(inventory, engine, LookupParams(missing_ok=True)))
    assert found.outputs["allocated"] is True and found.outputs["vlan_id"] == 100


@pytest.mark.parametrize("executor", [UnconfigureExecutor, GatewayAclRemoveExecutor])
def test_routers_removal_without_an_allocation_touches_no_router(
    inventory: Inventory, engine: sa.Engine, executor: type[UnconfigureExecutor]
) -> None:
    params = UnconfigureParams(vlan_id=None, subnet=None, gateway=None)
    ctx = context(inventory, engine, params, targets=("core", "edge"))
    for result in (executor().preview(ctx), executor().apply(ctx)):
        assert result.status == Status.SUCCESS and not result.changed, result.error
        assert result.diff == "" and result.outputs["devices"] == []


def test_routers_removal_wants_the_whole_allocation_or_none() -> None:
    with pytest.raises(ValidationError, match="all three"):
        UnconfigureParams(vlan_id=120, subnet=None, gateway=None)
    full = UnconfigureParams(vlan_id=120, subnet="10.20.20.0/24", gateway="10.20.20.1")
    network = full.network()
    assert network is not None and str(network.subnet) == "10.20.20.0/24"
    with pytest.raises(ValidationError, match="gateway"):
        UnconfigureParams(vlan_id=120, subnet="10.20.20.0/24", gateway="10.9.9.1").network()


# --- the catalog: the scale reads the build, the decommission tolerates nothing --------------


@pytest.fixture(scope="module")
def planner() -> Engine:
    return Engine(load_settings(ROOT, env={}), load_observers=False)


def test_scale_firewall_follows_the_build_and_opens_the_site_behind_it(planner: Engine) -> None:
    request = planner.validate(
        {"service": "project-scale", "project": "shop", "params": {"web_vms": 3}}
    )
    steps = {s.id: s for s in planner.plan(request).steps}
    assert steps["built"].executor == "core.built"
    assert {"firewall", "db_firewall"} <= set(steps["new_web"].needs)
    assert "firewall_remove" in steps["destroy"].needs
    assert "firewall" in str(steps["firewall"].params["hosts"]) and "built" in str(
        steps["firewall"].params["hosts"]
    )
    assert set(steps["addresses"].needs) == {"tier", "db_tier"}
    assert "db_tier" in str(steps["addresses"].params["held"])


def test_decommission_reads_ipam_leniently(planner: Engine) -> None:
    request = planner.validate({"service": "project-decommission", "project": "shop", "params": {}})
    steps = {s.id: s for s in planner.plan(request).steps}
    assert steps["ipam_lookup"].params["missing_ok"] is True
