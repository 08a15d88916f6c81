"""The network department against the lab's real FRR routers (core, edge), over SSH.

Every assertion about a change reads the router itself (vtysh inside its namespace), not
our executor's report. Each test uses its own project, VLAN and subnet (10.77.x.0/24) and
removes its lines at the end, so the shared lab is left as it was found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from infra_automation.departments.ipam import AllocateExecutor, AllocateParams, IpamConfig, IpamPool
from infra_automation.departments.network import (
    ConfigureExecutor,
    ConfigureParams,
    NornirHandle,
    UnconfigureExecutor,
)
from infra_automation.executors.base import RunResources, StepContext
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab.routers import Routers
from infra_automation.record import open_database
from infra_automation.results import ErrorKind, Status, StepResult

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
BAD_VALUES = [
    "ok\nhostname pwned",
    "ok\r\nend",
    "x\nend\nno router bgp 65001",
    "bang ! comment",
    "{{ 7 * 7 }}",
    "{% raw %}x{% endraw %}",
    "line\x00nul",
]


@pytest.fixture(scope="module")
def inventory(lab: Any) -> Inventory:
    return load_inventory(lab.inventory_path)


@pytest.fixture(scope="module")
def routers(lab: Any) -> Iterator[tuple[Routers, Any]]:
    yield Routers(), lab.context


def running(routers: tuple[Routers, Any], name: str) -> str:
    """The router's running config read directly with vtysh (not through our executor)."""
    component, ctx = routers
    return component.vtysh(ctx, name, "show running-config")


def config_lines(text: str) -> list[str]:
    skip = ("!", "Building configuration", "Current configuration", "frr version")
    return [line for line in text.splitlines() if line.strip() and not line.startswith(skip)]


def bgp_paths(routers: tuple[Routers, Any], name: str, prefix: str) -> list[Any]:
    component, ctx = routers
    data = json.loads(component.vtysh(ctx, name, f"show ip bgp {prefix} json") or "{}")
    return list(data.get("paths", []))


class Project:
    """A test project: its own name, VLAN and subnet, and one run's shared resources."""

    def __init__(self, inventory: Inventory, index: int, db: sa.Engine, root: Path = ROOT) -> None:
        self.name = f"nt{os.getpid() % 100000}x{index}"
        third = (os.getpid() + index * 37) % 250 + 1
        self.params = ConfigureParams(
            vlan_id=3000 + third,
            subnet=f"10.77.{third}.0/24",
            gateway=f"10.77.{third}.1",
            devices=["core", "edge"],
        )
        self.inventory = inventory
        self.root = root
        self.resources = RunResources()
        self.db = db  # device locks are leases in the run record

    def ctx(self, params: BaseModel | None = None, check: bool = False) -> StepContext:
        return StepContext(
            run_id=f"run-{self.name}",
            project=self.name,
            step_id="network",
            department="network",
            params=params or self.params,
            inventory=self.inventory,
            check=check,
            resources=self.resources,
            root=self.root,
            db=self.db,
        )

    def configure(self, **changes: Any) -> StepResult:
        return ConfigureExecutor().apply(self.ctx(self.params.model_copy(update=changes)))

    def unconfigure(self) -> StepResult:
        return UnconfigureExecutor().apply(self.ctx())

    def close(self) -> None:
        UnconfigureExecutor().apply(self.ctx())
        self.resources.close()


@pytest.fixture
def project(
    inventory: Inventory, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Project]:
    db = open_database(f"sqlite:///{tmp_path / 'locks.db'}")
    proj = Project(inventory, abs(hash(request.node.name)) % 1000, db)
    yield proj
    proj.close()


def _device(result: StepResult, name: str) -> dict[str, Any]:
    return next(d for d in result.outputs["devices"] if d["device"] == name)


def test_apply_configures_core_and_edge_learns_the_prefix(
    project: Project, routers: tuple[Routers, Any]
):
    subnet, vlan = str(project.params.subnet), project.params.vlan_id
    result = project.configure()
    assert result.status is Status.SUCCESS, result.error
    assert result.changed

    core = running(routers, "core")
    assert f"interface vlan{vlan}\n description project {project.name}\n" in core
    assert f" ip address {project.params.gateway}/24\n" in core
    assert f"ip route {subnet} Null0" in core
    assert f"  network {subnet}\n" in core
    edge = running(routers, "edge")
    assert f"ip prefix-list PROJECT-{project.name} seq 5 permit {subnet}" in edge
    paths = bgp_paths(routers, "edge", subnet)
    assert paths and paths[0]["valid"] and paths[0]["aspath"]["string"] == "65001"

    assert _device(result, "core")["lines_present"] is True
    assert _device(result, "edge")["bgp_prefix_learned"] is True
    assert "+ ip route" in result.diff

    again = project.configure()
    assert again.status is Status.SUCCESS and again.changed is False
    assert all(not t.changed for t in again.targets)
    assert running(routers, "core") == core


def test_check_mode_shows_the_diff_and_changes_nothing(
    project: Project, routers: tuple[Routers, Any]
):
    before = {n: running(routers, n) for n in ("core", "edge")}
    result = ConfigureExecutor().preview(project.ctx(check=True))
    assert result.status is Status.SUCCESS, result.error
    assert result.changed
    assert f"+ ip route {project.params.subnet} Null0" in result.diff
    assert f"+ ip prefix-list PROJECT-{project.name}" in result.diff
    assert _device(result, "core")["lines_present"] is False
    assert {n: running(routers, n) for n in ("core", "edge")} == before
    assert bgp_paths(routers, "edge", str(project.params.subnet)) == []


def test_unconfigure_removes_the_project_lines(project: Project, routers: tuple[Routers, Any]):
    before = config_lines(running(routers, "core"))
    assert project.configure().status is Status.SUCCESS
    removed = project.unconfigure()
    assert removed.status is Status.SUCCESS, removed.error
    assert removed.changed and f"- ip route {project.params.subnet}" in removed.diff
    assert config_lines(running(routers, "core")) == before
    assert f"PROJECT-{project.name}" not in running(routers, "edge")
    assert project.unconfigure().changed is False


def test_connections_are_opened_once_per_run(project: Project):
    assert project.configure().status is Status.SUCCESS
    handles = [v for v in project.resources._items.values() if isinstance(v, NornirHandle)]
    assert len(handles) == 1
    handle = handles[0]
    conn = handle.nornir.inventory.hosts["core"].connections["netmiko"].connection
    assert project.configure().changed is False
    assert handle.nornir.inventory.hosts["core"].connections["netmiko"].connection is conn


def test_a_rejected_line_fails_and_restores_the_running_config(
    project: Project, routers: tuple[Routers, Any], tmp_path: Path
):
    # A copy of our content whose core template ends with a line FRR rejects, after
    # lines it accepts: the push fails half-way and the executor must roll back.
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    (tmp_path / "tasks").symlink_to(ROOT / "tasks")
    core_template = tmp_path / "templates" / "network" / "cisco_ios" / "core.j2"
    core_template.write_text(core_template.read_text() + "frobnicate {{ vlan_id }}\n")
    project.root = tmp_path
    before = running(routers, "core")

    result = project.configure(devices=["core"])
    assert result.status is Status.FAILED
    (target,) = result.targets
    assert target.failed and "push failed" in (target.error or "")
    assert "frobnicate" in (target.error or "")
    assert target.error_kind is ErrorKind.REJECTED and result.error_kind is ErrorKind.REJECTED
    assert _device(result, "core")["rolled_back"] is True
    assert config_lines(running(routers, "core")) == config_lines(before)


def test_a_failed_save_fails_the_step_and_restores_the_running_config(
    project: Project, routers: tuple[Routers, Any]
):
    component, ctx = routers
    saved = component.paths(ctx, "core").etc / "frr.conf"
    before = running(routers, "core")
    saved_text = saved.read_text()
    subprocess.run(["chattr", "+i", str(saved)], check=True)  # write memory cannot replace it
    try:
        result = project.configure(devices=["core"])
    finally:
        subprocess.run(["chattr", "-i", str(saved)], check=True)
    assert result.status is Status.FAILED
    error = result.targets[0].error or ""
    assert error.startswith("save failed") and "Operation not permitted" in error
    assert result.targets[0].error_kind is ErrorKind.REJECTED
    assert _device(result, "core")["rolled_back"] is True
    assert config_lines(running(routers, "core")) == config_lines(before)
    assert saved.read_text() == saved_text


def test_a_stopped_router_fails_its_part_while_the_other_completes(
    lab: Any, project: Project, routers: tuple[Routers, Any]
):
    lab.stop_router("edge")
    try:
        result = project.configure()
    finally:
        lab.start_router("edge")
    assert result.status is Status.FAILED
    by_target = {t.target: t for t in result.targets}
    assert by_target["edge"].failed
    assert "unreachable" in (by_target["edge"].error or "")
    assert "127.0.0.1:" in (by_target["edge"].error or "")
    assert by_target["edge"].error_kind is ErrorKind.UNREACHABLE
    assert result.error_kind is ErrorKind.UNREACHABLE
    assert by_target["core"].status is Status.SUCCESS and by_target["core"].changed
    assert f"ip route {project.params.subnet} Null0" in running(routers, "core")
    # the restarted router is reachable again through the same run's connections
    routers[0].wait_bgp(routers[1], "edge")
    again = project.configure()
    assert again.status is Status.SUCCESS, again.error
    assert {t.target: t.changed for t in again.targets} == {"core": False, "edge": True}


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_injection_is_refused_before_anything_reaches_a_device(
    project: Project, routers: tuple[Routers, Any], bad: str
):
    before = {n: running(routers, n) for n in ("core", "edge")}
    base = project.params.model_dump()
    for field, value in (("description", bad), ("group", bad), ("devices", ["core", bad])):
        with pytest.raises(ValidationError) as err:
            ConfigureParams.model_validate({**base, field: value})
        assert err.value.errors()[0]["loc"][0] == field
        # the executor validates again: a params object built without validation is refused
        smuggled = ConfigureParams.model_construct(**{**base, field: value})
        for executor in (ConfigureExecutor(), UnconfigureExecutor()):
            result = executor.apply(project.ctx(smuggled))
            assert result.status is Status.FAILED
            assert (result.error or "").startswith(field)
    with pytest.raises(ValidationError) as err:
        AllocateParams.model_validate({"pool": bad})
    assert err.value.errors()[0]["loc"] == ("pool",)
    bad_project = StepContext(
        run_id="r",
        project=bad,
        step_id="s",
        department="network",
        params=project.params,
        inventory=project.inventory,
        resources=project.resources,
        root=ROOT,
        db=project.db,
    )
    result = ConfigureExecutor().apply(bad_project)
    assert result.status is Status.FAILED and "project" in (result.error or "")
    assert {n: running(routers, n) for n in ("core", "edge")} == before


def test_ipam_outputs_drive_the_network_change(
    project: Project, routers: tuple[Routers, Any], tmp_path: Path
):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'record.db'}")
    # a pool of our own: the shared lab's "default" pool is used by other tests' projects
    pool = IpamPool(vlan_min=3300, vlan_max=3399, supernet="10.78.0.0/16", prefix_length=24)
    spec = project.inventory.spec.model_copy(update={"ipam": IpamConfig(pools={"nettest": pool})})
    project.inventory = Inventory(spec, project.inventory.path)
    ipam_ctx = StepContext(
        run_id="r",
        project=project.name,
        step_id="ipam",
        department="network",
        params=AllocateParams(pool="nettest", hosts=2),
        inventory=project.inventory,
        db=engine,
        root=ROOT,
    )
    allocation = AllocateExecutor().apply(ipam_ctx)
    assert allocation.status is Status.SUCCESS, allocation.error
    out = allocation.outputs
    project.params = ConfigureParams(
        vlan_id=out["vlan_id"], subnet=out["subnet"], gateway=out["gateway"], devices=["core"]
    )
    result = project.configure()
    assert result.status is Status.SUCCESS, result.error
    assert f"interface vlan{out['vlan_id']}" in running(routers, "core")
    assert f"ip route {out['subnet']} Null0" in running(routers, "core")
