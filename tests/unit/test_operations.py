"""Planning of the operational changes (scale up/down, resize), no lab needed.

What the tier executor decides from the VMs vCenter reports (kept, added, removed), the
power-cycle rule of a resize, IPAM's address records (adoption, release, the next VM taking
the lowest free address), the empty-host case of ``os.playbook_hosts``, and the shipped
catalog services planned with the real executors.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from infra_automation.config import load_settings
from infra_automation.departments.ansible import PlaybookParams
from infra_automation.departments.ansible_hosts import HostsPlaybookExecutor
from infra_automation.departments.ipam import AllocateParams, Ipam, IpamPool, describe
from infra_automation.departments.ipam_addresses import (
    AddressesExecutor,
    AddressesParams,
    assign,
    project_addresses,
)
from infra_automation.departments.vmware import VmInfo
from infra_automation.departments.vmware_changes import (
    DestroyParams,
    TierParams,
    needs_power_cycle,
    plan_tier,
    tier_diff,
    vm_number,
)
from infra_automation.engine import Engine
from infra_automation.exceptions import TargetRejected
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.record import open_database
from infra_automation.results import Status

ROOT = Path(__file__).resolve().parents[2]
POOL = IpamPool(vlan_min=100, vlan_max=103, supernet="10.20.0.0/22", prefix_length=24)


def vm(name: str, cpu: int = 1) -> VmInfo:
    return VmInfo(
        name=name, moid=f"vm-{name}", cpu=cpu, memory_mb=1024, portgroup="shop",
        power_state="poweredOn", ip="", path=f"DC0/vm/shop/{name}",
    )  # fmt: skip


def web(*numbers: int) -> list[VmInfo]:
    return [vm(f"shop-web-{n:02d}") for n in numbers]


# --- the tier -------------------------------------------------------------------------------


def test_scale_up_keeps_the_vms_and_adds_the_next_number() -> None:
    names, keep, added, remove = plan_tier("shop", "web", 3, web(2, 1))
    assert names == ["shop-web-01", "shop-web-02", "shop-web-03"]
    assert [v.name for v in keep] == ["shop-web-01", "shop-web-02"]  # by number
    assert added == ["shop-web-03"] and remove == []
    assert tier_diff(added, remove) == "+ vm shop-web-03 (scale up)\n"


def test_scale_down_removes_the_highest_numbers_first() -> None:
    names, keep, added, remove = plan_tier("shop", "web", 2, web(1, 2, 3, 4))
    assert names == ["shop-web-01", "shop-web-02"] and added == []
    assert [v.name for v in keep] == ["shop-web-01", "shop-web-02"]
    assert [v.name for v in remove] == ["shop-web-04", "shop-web-03"]
    assert tier_diff(added, remove).splitlines() == [
        "- vm shop-web-04 (scale down)",
        "- vm shop-web-03 (scale down)",
    ]


def test_same_count_changes_nothing_and_a_gap_is_filled() -> None:
    assert plan_tier("shop", "web", 2, web(1, 2))[2:] == ([], [])
    _, _, added, remove = plan_tier("shop", "web", 3, web(1, 3))
    assert added == ["shop-web-02"] and remove == []


def test_other_roles_and_projects_are_not_the_tier() -> None:
    assert vm_number("shop-web-07", "shop", "web") == 7
    assert vm_number("shop-db-01", "shop", "web") is None
    assert vm_number("shopx-web-01", "shop", "web") is None
    assert vm_number("shop-db-01", "shop", None) == 1
    # without a count (decommission, resize): every VM as it is, none added or removed
    names, _, added, remove = plan_tier("shop", None, None, [vm("shop-db-01"), *web(1)])
    assert names == ["shop-db-01", "shop-web-01"] and (added, remove) == ([], [])


def test_tier_and_destroy_params_refuse_what_is_not_the_project() -> None:
    with pytest.raises(ValidationError, match="count: a wanted count needs a role"):
        TierParams(project="shop", count=2)
    with pytest.raises(ValidationError, match="not VMs of project 'shop': other-web-01"):
        DestroyParams(project="shop", names=["shop-web-03", "other-web-01"])
    with pytest.raises(ValidationError):
        DestroyParams(project="shop", names=["shop-web-03\nend"])


# --- resize ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "wanted", "flags", "cycle"),
    [
        ((1, 1024), (2, 4096), (False, False, False), True),  # no hot-add: power off
        ((1, 1024), (2, 4096), (True, False, True), False),  # both hot-added
        ((1, 1024), (2, 4096), (True, False, False), True),  # memory cannot be
        ((2, 4096), (1, 4096), (True, False, True), True),  # CPU hot-remove off
        ((2, 4096), (1, 4096), (True, True, True), False),
        ((2, 4096), (2, 1024), (True, True, True), True),  # memory never hot-removed
        ((2, 4096), (2, 4096), (False, False, False), False),
    ],
)
def test_power_cycle_only_when_vcenter_cannot_hot_add(
    now: tuple[int, int], wanted: tuple[int, int], flags: tuple[bool, bool, bool], cycle: bool
) -> None:
    add, remove, memory = flags
    got = needs_power_cycle(
        now, wanted, cpu_hot_add=add, cpu_hot_remove=remove, memory_hot_add=memory
    )
    assert got is cycle


# --- IPAM addresses -------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return open_database(f"sqlite:///{tmp_path / 'record.db'}")


@pytest.fixture
def inventory() -> Inventory:
    spec = InventoryFile.model_validate({"name": "t", "ipam": {"pools": {"default": POOL}}})
    return Inventory(spec)


def address_ctx(
    inventory: Inventory, engine: sa.Engine, names: list[str], *, release: bool = False
) -> StepContext:
    return StepContext(
        run_id="run-1",
        project="shop",
        step_id="addresses",
        department="network",
        params=AddressesParams(names=names, release_others=release),
        inventory=inventory,
        db=engine,
    )


def test_addresses_adopt_the_build_then_release_and_reuse(
    inventory: Inventory, engine: sa.Engine
) -> None:
    row, _ = Ipam(engine).allocate("shop", "default", POOL, AllocateParams(hosts=2), "run-0")
    built = describe(row, 2).hosts  # what project-landscape gave web-01 and web-02
    names = ["shop-web-01", "shop-web-02", "shop-web-03"]
    preview = AddressesExecutor().preview(address_ctx(inventory, engine, names))
    assert preview.status == Status.SUCCESS and project_addresses(engine, "shop") == {}
    up = AddressesExecutor().apply(address_ctx(inventory, engine, names))
    assert up.status == Status.SUCCESS, up.error
    recorded = project_addresses(engine, "shop")
    assert [recorded[n] for n in names[:2]] == built
    third = recorded["shop-web-03"]
    assert third == describe(row, 3).hosts[2] and f"+ address {third} shop-web-03" in up.diff
    # scale down: without release_others nothing goes; with it the third address is free
    again = AddressesExecutor().apply(address_ctx(inventory, engine, names[:2]))
    assert not again.changed and "shop-web-03" in project_addresses(engine, "shop")
    down = AddressesExecutor().apply(address_ctx(inventory, engine, names[:2], release=True))
    assert down.changed and f"- address {third} shop-web-03" in down.diff
    assert set(project_addresses(engine, "shop")) == set(names[:2])
    # the next VM takes the lowest free address: the released one
    other = AddressesExecutor().apply(address_ctx(inventory, engine, [*names[:2], "shop-web-04"]))
    assert project_addresses(engine, "shop")["shop-web-04"] == third, other.error
    # decommission: no names, release the rest, even after the allocation itself is released
    Ipam(engine).release("shop")
    gone = AddressesExecutor().apply(address_ctx(inventory, engine, [], release=True))
    assert gone.status == Status.SUCCESS and project_addresses(engine, "shop") == {}


def test_addresses_of_a_project_never_built_are_refused(
    inventory: Inventory, engine: sa.Engine
) -> None:
    result = AddressesExecutor().apply(address_ctx(inventory, engine, ["shop-web-01"]))
    assert result.status == Status.FAILED and result.error_kind == "invalid"
    assert "names: project 'shop' has no allocation" in (result.error or "")


def test_a_full_subnet_refuses_the_next_address() -> None:
    import ipaddress

    subnet = ipaddress.IPv4Network("10.0.0.0/29")  # gateway .1, hosts .2-.6
    held = assign(subnet, [f"h{i}" for i in range(5)], {})
    assert list(held.values()) == [f"10.0.0.{i}" for i in range(2, 7)]
    with pytest.raises(TargetRejected, match="no free host address left for 'h5'"):
        assign(subnet, [f"h{i}" for i in range(6)], {})


# --- os.playbook_hosts ----------------------------------------------------------------------


def test_playbook_hosts_with_no_hosts_does_nothing(inventory: Inventory, tmp_path: Path) -> None:
    ctx = StepContext(
        run_id="run-1",
        project="shop",
        step_id="monitoring_remove",
        department="monitoring",
        params=PlaybookParams(playbook="monitoring-remove.yml", hosts=[]),
        inventory=inventory,
        root=tmp_path,  # no playbooks here: nothing may be run or even looked up
    )
    for result in (HostsPlaybookExecutor().preview(ctx), HostsPlaybookExecutor().apply(ctx)):
        assert result.status == Status.SUCCESS and not result.changed
        assert result.outputs["hosts"] == {}


# --- the catalog services -------------------------------------------------------------------


@pytest.fixture(scope="module")
def planner() -> Engine:
    return Engine(load_settings(ROOT, env={}), load_observers=False)


def plan_of(planner: Engine, service: str, params: dict[str, object]) -> dict[str, list[str]]:
    request = planner.validate({"service": service, "project": "shop", "params": params})
    return {s.id: list(s.needs) for s in planner.plan(request).steps}


def test_scale_removes_registrations_before_the_vm_and_its_address_after(
    planner: Engine,
) -> None:
    needs = plan_of(planner, "project-scale", {"web_vms": 3})
    assert needs["tier"] == []
    removals = {"monitoring_remove", "backup_remove", "firewall_remove", "app_remove"}
    assert set(needs["destroy"]) == removals | {"vms"}
    assert set(needs["app"]) == {"new_web", "built"} and "app" in needs["docs"]
    assert needs["release_addresses"] == ["destroy"]
    assert needs["vms"] == ["addresses"] and needs["new_baseline"] == ["vms"]
    lean = plan_of(planner, "project-scale", {"web_vms": 3, "backup": False})
    assert "new_backup" not in lean and "backup_remove" in lean  # removal never left out


def test_decommission_unregisters_before_destroying(planner: Engine) -> None:
    needs = plan_of(planner, "project-decommission", {})
    assert needs["monitoring_remove"] == ["project_vms"]
    assert set(needs["vmware"]) >= {"monitoring_remove", "backup_remove"}
    assert "ipam_addresses" in needs["docs"]


def test_resize_reads_the_tier_back_with_the_build_executor(planner: Engine) -> None:
    needs = plan_of(planner, "project-resize", {"vm_size": "medium"})
    assert needs == {"resize": [], "vms": ["resize"], "docs": ["vms"]}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ("{web_vms: 0}", "web_vms"),
        ("{}", "web_vms"),
        ("{web_vms: 3, site_title: 'a\\nend'}", "site_title"),
    ],
)
def test_bad_scale_request_exits_2_naming_the_field(
    tmp_path: Path, params: str, field: str
) -> None:
    request = tmp_path / "scale.yml"
    request.write_text(f"service: project-scale\nproject: shop\nparams: {params}\n")
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(ROOT), "plan", str(request)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2, run.stdout + run.stderr
    assert field in run.stderr
