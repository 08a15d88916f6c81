"""Capacity without the lab: IPAM pools counted from the allocations table, vCenter demand
from hand-made facts (new VMs, grown VMs, powered-off VMs), the pre-flight through the engine
(refused before anything is recorded, or let through), the policy file, an unreadable vCenter
that refuses nothing, and ``infra stats capacity``."""

from __future__ import annotations

import json
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
import yaml
from typer.testing import CliRunner

from infra_automation.cli import stats as stats_cli
from infra_automation.config import load_settings
from infra_automation.departments.ipam import AllocateParams, Ipam, allocations, ipam_config
from infra_automation.engine import Engine
from infra_automation.exceptions import ConfigurationError
from infra_automation.inventory import Inventory, InventoryFile, load_inventory
from infra_automation.metrics.capacity import (
    CapacityContext,
    CapacityExceeded,
    amount,
    assess,
    load_policy,
    read_headroom,
    vms_demand,
)
from infra_automation.metrics.vcenter_capacity import VCenterFacts, VmFacts
from infra_automation.planner import PlannedStep
from infra_automation.record import open_database

POOLS = {
    "tiny": {"vlan_min": 100, "vlan_max": 103, "supernet": "10.30.0.0/22", "prefix_length": 24}
}
SERVICE = {
    "name": "net-only",
    "description": "An IPAM allocation",
    "owner": "tests",
    "params": {"pool": {"type": "string", "default": "tiny"}},
    "steps": [{"id": "ipam", "department": "network", "executor": "ipam.allocate",
               "params": {"pool": "{{ params.pool }}", "hosts": 2}}],
}  # fmt: skip


def inventory_of(data: dict[str, Any]) -> Inventory:
    return Inventory(InventoryFile.model_validate({"name": "t", **data}))


@pytest.fixture
def db(tmp_path: Path) -> sa.Engine:
    engine = open_database(f"sqlite:///{tmp_path / 'record.db'}")
    yield engine
    engine.dispose()


def allocate(db: sa.Engine, inventory: Inventory, project: str) -> None:
    pool = ipam_config(inventory).pools["tiny"]
    Ipam(db).allocate(project, "tiny", pool, AllocateParams(pool="tiny", hosts=2), "r")


def test_ipam_pools_count_the_allocations_per_project(db: sa.Engine, tmp_path: Path) -> None:
    inventory = inventory_of({"ipam": {"pools": POOLS}})
    allocate(db, inventory, "alpha")
    allocate(db, inventory, "beta")
    with db.begin() as conn:  # a /23 by hand: it blocks two of the pool's /24s
        conn.execute(allocations.insert().values(project="gamma", pool="tiny", vlan_id=900,
                     subnet="10.30.2.0/23", run_id="r", allocated_at="2026-11-01"))  # fmt: skip
    headroom = read_headroom(CapacityContext(inventory, db, tmp_path), ["ipam"])
    vlans, subnets = headroom.pool("ipam:tiny:vlans"), headroom.pool("ipam:tiny:subnets")
    assert vlans is not None and subnets is not None
    assert (vlans.capacity, vlans.used, vlans.free) == (4, 2, 2)  # VLAN 900 is not in 100-103
    assert vlans.by_project == {"alpha": 1, "beta": 1}
    assert (subnets.capacity, subnets.used, subnets.free) == (4, 4, 0)
    assert subnets.by_project == {"alpha": 1, "beta": 1, "gamma": 2}
    assert headroom.for_project("gamma").pools == (subnets,)


def write_root(tmp_path: Path, pools: dict[str, Any], policy: str | None = None) -> Path:
    root = tmp_path / "root"
    (root / "catalog").mkdir(parents=True)
    (root / "catalog" / "net-only.yml").write_text(yaml.safe_dump(SERVICE))
    inventory = root / "inventories" / "lab"
    inventory.mkdir(parents=True)
    (inventory / "inventory.yml").write_text(
        yaml.safe_dump({"name": "t", "ipam": {"pools": pools}})
    )
    if policy is not None:
        (root / "capacity.yml").write_text(policy)
    return root


def engine_of(root: Path) -> Engine:
    return Engine(load_settings(root, env={}), load_observers=False)


def test_a_dry_run_over_a_pool_is_refused_before_anything_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INFRA_CAPACITY_CHECK", raising=False)
    one = {"tiny": {**POOLS["tiny"], "vlan_max": 100}}  # a single VLAN
    engine = engine_of(write_root(tmp_path, one))
    try:
        taken = engine.validate({"service": "net-only", "project": "first", "requester": "t"})
        assert not engine.apply(taken).failed  # takes the only VLAN
        late = engine.validate({"service": "net-only", "project": "late", "requester": "t"})
        before = len(engine.store.list_runs())
        with pytest.raises(CapacityExceeded) as refused:
            engine.apply(late, check=True)
        assert "ipam:tiny:vlans" in str(refused.value) and "short by 1 VLAN" in str(refused.value)
        assert [s.pool.id for s in refused.value.check.refused] == ["ipam:tiny:vlans"]
        assert len(engine.store.list_runs()) == before  # nothing recorded
        again = engine.apply(taken, check=True)  # the project holding it needs nothing more
        assert not again.failed
        monkeypatch.setenv("INFRA_CAPACITY_CHECK", "0")  # off: the allocator itself refuses
        result = engine.apply(late, check=True)
        assert result.failed and "exhausted" in (result.steps["ipam"].error or "")
    finally:
        engine.close()


def test_the_policy_file_sets_ratios_and_refuses_bad_fields(tmp_path: Path) -> None:
    root = write_root(tmp_path, POOLS, "cpu_overcommit: 2\nmemory_overcommit: 1.5\n")
    policy = load_policy(root)
    assert (policy.cpu_overcommit, policy.memory_overcommit, policy.check) == (2, 1.5, True)
    (root / "capacity.yml").write_text("datastore_reserve: 1.5\nunknown: 1\n")
    with pytest.raises(ConfigurationError) as bad:
        load_policy(root)
    assert "datastore_reserve" in str(bad.value) and "unknown" in str(bad.value)


def facts(*vms: VmFacts) -> VCenterFacts:
    return VCenterFacts(
        cluster="C1", cluster_threads=4, cluster_memory_mb=16384.0,
        cluster_hosts=frozenset({"host-1"}), datastore="DS1", datastore_capacity=100 * 2**30,
        datastore_free=60 * 2**30, vms=vms, template_disks={"tpl": 10 * 2**30},
    )  # fmt: skip


def vm(name: str, cpu: int, memory: int, *, on: bool = True, project: str = "p") -> VmFacts:
    return VmFacts(name, project, cpu, memory, on, False, "host-1", 0)


def vms_step(**params: Any) -> PlannedStep:
    return PlannedStep("vms", "vmware", "vmware.vms", (), 0, params)


VARIABLES = {"project": "p", "service": "s", "requester": "t", "params": {"n": 3}}
VCENTER = {"vcenter": {"host": "127.0.0.1", "port": 1, "template": "tpl"}}


def context_with(tmp_path: Path, found: VCenterFacts) -> CapacityContext:
    ctx = CapacityContext(inventory_of(VCENTER), None, tmp_path)
    ctx.once("vcenter", lambda: found)
    return ctx


def test_vm_demand_counts_new_vms_the_growth_of_others_and_powered_off_ones(
    tmp_path: Path,
) -> None:
    ctx = context_with(tmp_path, facts(vm("p-web-01", 1, 1024), vm("p-web-02", 2, 4096, on=False),
                                       vm("other-web-01", 4, 8192, project="other")))  # fmt: skip
    step = vms_step(project="{{ project }}", role="web", count="{{ params.n }}", size="medium")
    demand = {d.pool: d.amount for d in vms_demand(step, VARIABLES, ctx)}
    # medium is 2 vCPUs / 4096 MiB (vm.yml.j2): 03 is new, 01 grows by 1 / 3072, 02 powers on
    assert demand == {"vcenter:C1:cpu": 2 + 1 + 2, "vcenter:C1:memory": 4096 + 3072 + 4096,
                      "vcenter:DS1:space": 10.0}  # fmt: skip
    headroom = read_headroom(ctx, ["vcenter"])
    memory = headroom.pool("vcenter:C1:memory")
    assert memory is not None and memory.used == 1024 + 8192  # powered-on VMs only
    assert memory.by_project == {"p": 1024, "other": 8192}
    cpu = headroom.pool("vcenter:C1:cpu")
    assert cpu is not None and cpu.capacity == 4 * 4.0  # the default overcommit


def test_explicit_cpu_and_memory_win_over_the_size_and_fit_or_not(tmp_path: Path) -> None:
    ctx = context_with(tmp_path, facts())
    step = vms_step(project="p", count=2, cpu=3, memory_mb=9000)
    demand = {d.pool: d.amount for d in vms_demand(step, VARIABLES, ctx)}
    assert (demand["vcenter:C1:cpu"], demand["vcenter:C1:memory"]) == (6, 18000)


def test_a_count_known_only_at_run_time_is_not_counted(tmp_path: Path) -> None:
    from infra_automation.metrics.capacity import UnknownDemand

    ctx = context_with(tmp_path, facts())
    with pytest.raises(UnknownDemand, match="count is known only when it runs"):
        vms_demand(vms_step(project="p", count="{{ steps.x.outputs.n }}"), VARIABLES, ctx)


def test_an_unreachable_vcenter_is_unknown_and_refuses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFRA_SECRET_VCENTER_PASSWORD", "not-used-here")
    inventory = inventory_of(VCENTER)  # port 1: refused at once
    ctx = CapacityContext(inventory, None, tmp_path)
    headroom = read_headroom(ctx, ["vcenter"])
    assert headroom.pools == () and [u.source for u in headroom.unreadable] == ["vcenter"]
    assert "127.0.0.1:1" in headroom.unreadable[0].reason


def test_amounts_read_as_a_person_writes_them() -> None:
    assert amount(1, "VLANs") == "1 VLAN"
    assert amount(3, "hosts") == "3 hosts"
    assert amount(12286.46, "MiB") == "12286.46 MiB"
    assert amount(1, "MiB") == "1 MiB"


def test_stats_capacity_prints_the_pools_and_what_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_root(tmp_path, POOLS)
    monkeypatch.setenv("INFRA_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    app = typer.Typer()
    app.add_typer(stats_cli.stats_app, name="stats")  # as the main CLI wires it
    db = open_database(f"sqlite:///{tmp_path / 'cli.db'}")
    allocate(db, load_inventory(root / "inventories" / "lab"), "alpha")
    db.dispose()
    wide = {"COLUMNS": "200"}
    text = CliRunner().invoke(app, ["stats", "capacity", "--root", str(root)], env=wide)
    assert text.exit_code == 0, text.output
    assert "ipam:tiny:vlans" in text.output and "alpha 1 VLAN" in text.output
    assert "unknown vcenter" in text.output  # the inventory has no vcenter section
    shown = CliRunner().invoke(app, ["stats", "capacity", "-o", "json", "--root", str(root)])
    data = json.loads(shown.output)
    vlans = next(p for p in data["pools"] if p["id"] == "ipam:tiny:vlans")
    assert (vlans["used"], vlans["free"], vlans["by_project"]) == (1, 3, {"alpha": 1})
    bad = CliRunner().invoke(app, ["stats", "capacity", "-o", "csv", "--root", str(root)])
    assert bad.exit_code == 2


def test_a_pool_overlap_counts_once(tmp_path: Path) -> None:
    from infra_automation.metrics.capacity import _blocked_subnets

    rows = [("a", "x", 1, IPv4Network("10.0.0.0/23")), ("b", "x", 2, IPv4Network("10.0.1.0/24"))]
    blocked, by_project = _blocked_subnets(IPv4Network("10.0.0.0/22"), 24, rows)
    assert blocked == 2 and by_project == {"a": 2, "b": 0}


def test_assess_lists_what_it_could_not_count(tmp_path: Path) -> None:
    engine = engine_of(write_root(tmp_path, POOLS))
    try:
        request = engine.validate({"service": "net-only", "project": "pp", "requester": "t"})
        plan = engine.plan(request)
        ctx = CapacityContext(engine.inventory(request), engine.db, tmp_path)
        found = assess(plan, ctx)
        assert found.fits and found.needed == {"ipam:tiny:vlans": 1, "ipam:tiny:subnets": 1}
        assert found.unknown == ()
    finally:
        engine.close()
