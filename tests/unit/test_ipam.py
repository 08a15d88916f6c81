"""IPAM against a real SQLite database (the run record's kind), no lab needed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from infra_automation.departments.ipam import (
    AllocateExecutor,
    AllocateParams,
    Allocation,
    Ipam,
    IpamPool,
    LookupExecutor,
    ReleaseExecutor,
    ReleaseParams,
)
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.record import open_database
from infra_automation.results import Status

POOL = IpamPool(vlan_min=100, vlan_max=103, supernet="10.20.0.0/22", prefix_length=24)


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    return open_database(f"sqlite:///{tmp_path / 'record.db'}")


@pytest.fixture
def inventory() -> Inventory:
    spec = InventoryFile.model_validate(
        {
            "name": "t",
            "ipam": {
                "pools": {
                    "default": POOL.model_dump(),
                    "small": {
                        "vlan_min": 200,
                        "vlan_max": 299,
                        "supernet": "10.20.0.0/16",
                        "prefix_length": 28,
                    },
                }
            },
        }
    )
    return Inventory(spec)


def ctx(
    inventory: Inventory, engine: sa.Engine, project: str = "shop", **params: object
) -> StepContext:
    return StepContext(
        run_id="run-1",
        project=project,
        step_id="ipam",
        department="network",
        params=AllocateParams.model_validate(params),
        inventory=inventory,
        db=engine,
    )


def allocate(inventory: Inventory, engine: sa.Engine, project: str = "shop", **params: object):
    return AllocateExecutor().apply(ctx(inventory, engine, project, **params))


def test_allocation_outputs_are_typed_and_consistent(inventory, engine):
    result = allocate(inventory, engine, hosts=3)
    assert result.status is Status.SUCCESS and result.changed
    out = Allocation.model_validate(result.outputs)
    assert out.vlan_id == 100
    assert out.subnet == "10.20.0.0/24"
    assert (out.prefix_length, out.netmask, out.gateway) == (24, "255.255.255.0", "10.20.0.1")
    assert out.hosts == ["10.20.0.2", "10.20.0.3", "10.20.0.4"]
    assert out.pool == "default" and out.project == "shop"


def test_same_project_gets_the_same_allocation(inventory, engine):
    first = allocate(inventory, engine)
    second = allocate(inventory, engine)
    assert second.status is Status.SUCCESS and second.changed is False
    assert second.outputs == first.outputs
    assert allocate(inventory, engine, "blog").outputs["vlan_id"] == 101


def test_preview_plans_without_persisting(inventory, engine):
    planned = AllocateExecutor().preview(ctx(inventory, engine))
    assert planned.status is Status.SUCCESS and planned.changed
    assert planned.outputs["subnet"] == "10.20.0.0/24"
    assert Ipam(engine).find("shop") is None
    made = allocate(inventory, engine)
    assert made.outputs == planned.outputs
    existing = AllocateExecutor().preview(ctx(inventory, engine))
    assert existing.changed is False and existing.outputs == made.outputs


def test_exhaustion_is_refused_clearly(inventory, engine):
    for i in range(4):
        assert allocate(inventory, engine, f"p{i}x").status is Status.SUCCESS
    result = allocate(inventory, engine, "late")
    assert result.status is Status.FAILED
    assert "pool 'default' is exhausted" in (result.error or "")
    assert Ipam(engine).find("late") is None


def test_overlaps_are_refused(inventory, engine):
    assert allocate(inventory, engine, "shop").outputs["subnet"] == "10.20.0.0/24"
    # the /28 pool covers the same space: it must skip the /24 already given out
    small = allocate(inventory, engine, "tiny", pool="small", hosts=2)
    assert small.outputs["subnet"] == "10.20.1.0/28"
    clash = allocate(inventory, engine, "other", pool="small", subnet="10.20.0.16/28")
    assert clash.status is Status.FAILED
    assert "overlaps 10.20.0.0/24 of project 'shop'" in (clash.error or "")


def test_requested_vlan_and_subnet(inventory, engine):
    result = allocate(inventory, engine, vlan_id=102, subnet="10.20.3.0/24")
    assert (result.outputs["vlan_id"], result.outputs["subnet"]) == (102, "10.20.3.0/24")
    taken = allocate(inventory, engine, "blog", vlan_id=102)
    assert "VLAN 102 is already allocated" in (taken.error or "")
    outside = allocate(inventory, engine, "wiki", vlan_id=150)
    assert "outside pool 'default'" in (outside.error or "")
    other = allocate(inventory, engine, "shop", vlan_id=101)
    assert "already has VLAN 102" in (other.error or "")


def test_hosts_must_fit(inventory, engine):
    result = allocate(inventory, engine, "tiny", pool="small", hosts=14)
    assert result.status is Status.FAILED and "do not fit" in (result.error or "")


def test_unknown_pool_and_missing_database(inventory, engine):
    assert "no pool 'nope'" in (allocate(inventory, engine, pool="nope").error or "")
    no_db = StepContext(
        run_id="r",
        project="shop",
        step_id="s",
        department="network",
        params=AllocateParams(),
        inventory=inventory,
    )
    assert "no database" in (AllocateExecutor().apply(no_db).error or "")


def test_parallel_runs_never_share_a_vlan_or_subnet(inventory, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'record.db'}"
    projects = [f"proj{i}" for i in range(4)]
    results: dict[str, object] = {}
    barrier = threading.Barrier(len(projects))

    # one engine each, as separate runs have (opened one after the other: creating the
    # run record's tables is not what this test is about)
    engines = {p: open_database(url) for p in projects}

    def worker(name: str) -> None:
        barrier.wait(timeout=30)
        results[name] = allocate(inventory, engines[name], name)

    threads = [threading.Thread(target=worker, args=(p,)) for p in projects]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outs = [results[p].outputs for p in projects]  # type: ignore[attr-defined]
    assert all(results[p].status is Status.SUCCESS for p in projects)  # type: ignore[attr-defined]
    assert len({o["vlan_id"] for o in outs}) == 4
    assert len({o["subnet"] for o in outs}) == 4


def test_the_database_refuses_duplicates_even_without_the_allocator(engine):
    from infra_automation.departments.ipam import allocations

    Ipam(engine)  # creates the tables
    row = {"pool": "default", "run_id": "", "allocated_at": "now"}
    with engine.begin() as conn:
        conn.execute(
            allocations.insert().values(project="a1", vlan_id=100, subnet="10.20.0.0/24", **row)
        )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            allocations.insert().values(project="b1", vlan_id=100, subnet="10.20.1.0/24", **row)
        )


def test_release_frees_the_allocation(inventory, engine):
    first = allocate(inventory, engine, "shop")
    release_ctx = StepContext(
        run_id="r",
        project="shop",
        step_id="s",
        department="network",
        params=ReleaseParams(),
        inventory=inventory,
        db=engine,
    )
    preview = ReleaseExecutor().preview(release_ctx)
    assert preview.changed and Ipam(engine).find("shop") is not None
    released = ReleaseExecutor().apply(release_ctx)
    assert released.changed and released.outputs["vlan_id"] == first.outputs["vlan_id"]
    assert Ipam(engine).find("shop") is None
    assert ReleaseExecutor().apply(release_ctx).changed is False
    assert allocate(inventory, engine, "blog").outputs["vlan_id"] == 100  # reused


def test_release_refuses_another_pool(inventory, engine):
    allocate(inventory, engine, "shop")
    release_ctx = StepContext(
        run_id="r",
        project="shop",
        step_id="s",
        department="network",
        params=ReleaseParams(pool="small"),
        inventory=inventory,
        db=engine,
    )
    for result in (ReleaseExecutor().preview(release_ctx), ReleaseExecutor().apply(release_ctx)):
        assert result.status is Status.FAILED
        assert "in pool 'default', not 'small'" in (result.error or "")
    assert Ipam(engine).find("shop") is not None


@pytest.mark.parametrize(
    "bad", ["x\ny", "end\n", "a!b", "{{ 1 }}", "{% x %}", "Default", "pool name"]
)
def test_pool_name_is_validated(bad: str):
    with pytest.raises(ValidationError) as err:
        AllocateParams(pool=bad)
    assert err.value.errors()[0]["loc"] == ("pool",)


def test_bad_pool_definition_is_a_clear_error(engine):
    bad = IpamPool(vlan_min=100, vlan_max=110, supernet="10.20.0.0/24", prefix_length=16)
    with pytest.raises(ConfigurationError, match="larger than the supernet"):
        Ipam(engine).plan("shop", "bad", bad, AllocateParams())


def test_lookup_reads_the_allocation_and_never_allocates(inventory, engine):
    lookup_ctx = StepContext(
        run_id="r",
        project="shop",
        step_id="s",
        department="network",
        params=ReleaseParams(),
        inventory=inventory,
        db=engine,
    )
    missing = LookupExecutor().apply(lookup_ctx)
    assert missing.failed and "no allocation" in (missing.error or "")
    assert Ipam(engine).find("shop") is None  # nothing was allocated by looking
    first = allocate(inventory, engine, "shop", hosts=2)
    found = LookupExecutor().apply(lookup_ctx)
    assert not found.changed
    for key in ("vlan_id", "subnet", "gateway", "prefix_length"):
        assert found.outputs[key] == first.outputs[key]


def test_a_project_that_outgrows_its_subnet_gets_a_clear_error(inventory, engine):
    assert not allocate(inventory, engine, "shop", hosts=2).failed
    grown = allocate(inventory, engine, "shop", hosts=500)
    assert grown.failed and "do not fit" in (grown.error or "")
