"""The VMware department against the lab's vCenter (vcsim), checked through pyVmomi directly.

Every assertion about what changed reads vCenter itself (a separate pyVmomi session), not our
step outputs. Each test module run uses fresh project names, so sessions sharing the lab
do not collide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from infra_automation.departments import vmware
from infra_automation.departments._vsphere import READ_RETRY_DELAYS, VSphere, read
from infra_automation.departments.vmware import vcenter_config
from infra_automation.exceptions import TargetUnreachable
from infra_automation.executors.base import Executor, RunResources, StepContext
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab
from infra_automation.results import StepResult

ROOT = Path(__file__).resolve().parents[2]
VLAN = 123
ADDRESSES = ["10.20.5.10", "10.20.5.11", "10.20.5.12"]


def _project(tag: str) -> str:
    return f"t{uuid.uuid4().hex[:6]}-{tag}"


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


@pytest.fixture(scope="module")
def si(inventory: Inventory) -> Iterator[Any]:
    """Our own look into vCenter, independent of the department's code."""
    vc = vcenter_config(inventory)
    conn = SmartConnect(
        host=vc.host,
        port=vc.port,
        user=vc.username,
        pwd=inventory.secrets.get(vc.password_secret),
        protocol=vc.protocol,
    )
    yield conn
    Disconnect(conn)


def run_step(
    executor: Executor,
    inventory: Inventory,
    params: dict[str, Any],
    *,
    check: bool = False,
    resources: RunResources | None = None,
) -> StepResult:
    """One step as the scheduler runs it: validated params, resources closed at 'run' end."""
    model: type[BaseModel] = executor.info.params
    own = resources is None
    res = resources or RunResources()
    ctx = StepContext(
        run_id="test",
        project=str(params["project"]),
        step_id=executor.info.key,
        department="vmware",
        params=model.model_validate(params),
        inventory=inventory,
        check=check,
        secrets=inventory.secrets,  # as the scheduler hands them: the one seam for secrets
        resources=res,
        root=ROOT,
    )
    try:
        return executor.preview(ctx) if check else executor.apply(ctx)
    finally:
        if own:
            assert res.close() == []


def find(si: Any, path: str) -> Any:
    return si.content.searchIndex.FindByInventoryPath(path)


def nic_portgroup_key(vm: Any) -> str | None:
    nics = [
        d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard)
    ]
    assert len(nics) == 1
    return nics[0].backing.port.portgroupKey  # type: ignore[no-any-return]


def clone_by_hand(si: Any, inventory: Inventory, name: str) -> Any:
    """A VM made outside our tool, in the datacenter's root VM folder."""
    vc = vcenter_config(inventory)
    template = find(si, f"{vc.datacenter}/vm/{vc.template}")
    pool = find(si, f"{vc.datacenter}/host/{vc.cluster}/Resources")
    spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(pool=pool), powerOn=False)
    dc = find(si, vc.datacenter)
    task = template.Clone(folder=dc.vmFolder, name=name, spec=spec)
    VSphere(si=si, vc=vc).wait(task, f"clone {name}")
    return find(si, f"{vc.datacenter}/vm/{name}")


def destroy_by_hand(si: Any, inventory: Inventory, vm: Any) -> None:
    VSphere(si=si, vc=vcenter_config(inventory)).wait(vm.Destroy_Task(), "destroy")


def vms_params(project: str, **over: Any) -> dict[str, Any]:
    return {
        "project": project,
        "portgroup": project,
        "role": "web",
        "count": 2,
        "size": "medium",
        "addresses": ADDRESSES[:2],
        "description": "Shop frontend",
    } | over


def apply_all(inventory: Inventory, project: str) -> list[StepResult]:
    """folder, portgroup, vms in one 'run' (one shared session)."""
    res = RunResources()
    try:
        return [
            run_step(vmware.FolderExecutor(), inventory, {"project": project}, resources=res),
            run_step(
                vmware.PortgroupExecutor(),
                inventory,
                {"project": project, "vlan_id": VLAN},
                resources=res,
            ),
            run_step(vmware.VmsExecutor(), inventory, vms_params(project), resources=res),
        ]
    finally:
        assert res.close() == []


@pytest.fixture(scope="module")
def applied(inventory: Inventory) -> Iterator[tuple[str, list[StepResult]]]:
    project = _project("shop")
    results = apply_all(inventory, project)
    yield project, results
    run_step(vmware.DecommissionExecutor(), inventory, {"project": project})


# --- apply -----------------------------------------------------------------------------------


def test_apply_creates_folder_portgroup_and_vms(
    applied: tuple[str, list[StepResult]], inventory: Inventory, si: Any
) -> None:
    project, results = applied
    for result in results:
        assert not result.failed, result.error
        assert result.changed
    dc = vcenter_config(inventory).datacenter

    folder = find(si, f"{dc}/vm/{project}")
    assert isinstance(folder, vim.Folder)
    pg = find(si, f"{dc}/network/{project}")
    assert isinstance(pg, vim.dvs.DistributedVirtualPortgroup)
    assert pg.config.defaultPortConfig.vlan.vlanId == VLAN
    assert pg.config.distributedVirtualSwitch.name == vcenter_config(inventory).dvswitch

    names = [f"{project}-web-01", f"{project}-web-02"]
    assert sorted(child.name for child in folder.childEntity) == names
    for name, address in zip(names, ADDRESSES, strict=False):
        vm = find(si, f"{dc}/vm/{project}/{name}")
        assert isinstance(vm, vim.VirtualMachine)
        config = vm.config
        assert config.hardware.numCPU == 2  # size medium
        assert config.hardware.memoryMB == 4096
        assert nic_portgroup_key(vm) == pg.key
        assert vm.runtime.powerState == "poweredOn"
        assert f"ip: {address}" in config.annotation
        assert "description: Shop frontend" in config.annotation
        extra = {o.key: o.value for o in config.extraConfig}
        assert extra["guestinfo.infra.ip"] == address
        assert extra["guestinfo.infra.project"] == project


def test_outputs_are_what_vcenter_reports(
    applied: tuple[str, list[StepResult]], inventory: Inventory, si: Any
) -> None:
    project, (folder_r, pg_r, vms_r) = applied
    dc = vcenter_config(inventory).datacenter
    assert folder_r.outputs["moid"] == find(si, f"{dc}/vm/{project}")._moId
    pg = find(si, f"{dc}/network/{project}")
    assert pg_r.outputs["vlan_id"] == VLAN
    assert pg_r.outputs["key"] == pg.key
    vms = vms_r.outputs["vms"]
    assert [v["name"] for v in vms] == vms_r.outputs["names"]
    for out, address in zip(vms, ADDRESSES, strict=False):
        vm = find(si, f"{dc}/vm/{project}/{out['name']}")
        assert out["moid"] == vm._moId
        assert (out["cpu"], out["memory_mb"]) == (vm.config.hardware.numCPU, 4096)
        assert out["portgroup"] == project
        assert out["power_state"] == "poweredOn"
        assert out["ip"] == address
    assert [t.target for t in vms_r.targets] == vms_r.outputs["names"]
    assert "+ clone" in vms_r.diff


def test_second_apply_changes_nothing(
    applied: tuple[str, list[StepResult]], inventory: Inventory
) -> None:
    project, first = applied
    again = apply_all(inventory, project)
    for before, after in zip(first, again, strict=True):
        assert not after.failed, after.error
        assert after.changed is False
        assert after.diff == ""
        assert after.outputs == before.outputs


def test_preview_of_applied_project_is_unchanged(
    applied: tuple[str, list[StepResult]], inventory: Inventory
) -> None:
    project, _ = applied
    result = run_step(vmware.VmsExecutor(), inventory, vms_params(project), check=True)
    assert not result.failed, result.error
    assert result.changed is False


def test_drift_is_put_back(
    applied: tuple[str, list[StepResult]], inventory: Inventory, si: Any
) -> None:
    project, _ = applied
    dc = vcenter_config(inventory).datacenter
    vm = find(si, f"{dc}/vm/{project}/{project}-web-02")
    vs = VSphere(si=si, vc=vcenter_config(inventory))
    vs.wait(vm.PowerOffVM_Task(), "power off")
    vs.wait(vm.ReconfigVM_Task(vim.vm.ConfigSpec(numCPUs=1, memoryMB=512)), "shrink")

    preview = run_step(vmware.VmsExecutor(), inventory, vms_params(project), check=True)
    assert preview.changed
    assert "~ cpu: 1 -> 2" in preview.diff
    assert vm.config.hardware.numCPU == 1  # check mode changed nothing

    result = run_step(vmware.VmsExecutor(), inventory, vms_params(project))
    assert not result.failed, result.error
    assert result.changed
    assert [t.changed for t in result.targets] == [False, True]
    assert vm.config.hardware.numCPU == 2
    assert vm.config.hardware.memoryMB == 4096
    assert vm.runtime.powerState == "poweredOn"


def test_vlan_change_is_applied_and_read_back(
    applied: tuple[str, list[StepResult]], inventory: Inventory, si: Any
) -> None:
    project, _ = applied
    pg = find(si, f"{vcenter_config(inventory).datacenter}/network/{project}")
    try:
        result = run_step(
            vmware.PortgroupExecutor(), inventory, {"project": project, "vlan_id": 124}
        )
        assert not result.failed, result.error
        assert result.changed and result.outputs["vlan_id"] == 124
        assert pg.config.defaultPortConfig.vlan.vlanId == 124
        assert pg.name == project
    finally:
        back = run_step(
            vmware.PortgroupExecutor(), inventory, {"project": project, "vlan_id": VLAN}
        )
    assert back.changed and pg.config.defaultPortConfig.vlan.vlanId == VLAN


# --- check mode ------------------------------------------------------------------------------


def test_check_mode_creates_nothing(inventory: Inventory, si: Any) -> None:
    project = _project("dry")
    dc = vcenter_config(inventory).datacenter
    res = RunResources()
    folder = run_step(vmware.FolderExecutor(), inventory, {"project": project}, check=True)
    pg = run_step(
        vmware.PortgroupExecutor(),
        inventory,
        {"project": project, "vlan_id": VLAN},
        check=True,
        resources=res,
    )
    vms = run_step(vmware.VmsExecutor(), inventory, vms_params(project), check=True, resources=res)
    assert res.close() == []
    for result in (folder, pg, vms):
        assert not result.failed, result.error
        assert result.changed
    assert folder.outputs["path"] == f"{dc}/vm/{project}"
    assert pg.outputs["vlan_id"] == VLAN
    assert [v["name"] for v in vms.outputs["vms"]] == [f"{project}-web-01", f"{project}-web-02"]
    assert vms.outputs["vms"][0]["cpu"] == 2
    assert find(si, f"{dc}/vm/{project}") is None
    assert find(si, f"{dc}/network/{project}") is None
    everything = si.content.viewManager.CreateContainerView(
        si.content.rootFolder, [vim.VirtualMachine], True
    )
    assert not [vm for vm in everything.view if vm.name.startswith(project)]
    everything.Destroy()


# --- failures --------------------------------------------------------------------------------


@pytest.fixture
def bare_project(inventory: Inventory) -> Iterator[str]:
    """A project with folder and portgroup but no VMs; removed afterwards."""
    project = _project("bad")
    run_step(vmware.FolderExecutor(), inventory, {"project": project})
    run_step(vmware.PortgroupExecutor(), inventory, {"project": project, "vlan_id": 150})
    yield project
    run_step(vmware.DecommissionExecutor(), inventory, {"project": project})


def test_missing_template_fails_the_step(bare_project: str, inventory: Inventory, si: Any) -> None:
    params = vms_params(bare_project, template="no-such-template", count=1)
    for check in (True, False):
        result = run_step(vmware.VmsExecutor(), inventory, params, check=check)
        assert result.failed
        assert "no-such-template" in (result.error or "")
        assert "not found" in (result.error or "")
    folder = find(si, f"{vcenter_config(inventory).datacenter}/vm/{bare_project}")
    assert list(folder.childEntity) == []


def test_a_vm_that_is_not_a_template_is_never_cloned(
    bare_project: str, inventory: Inventory, si: Any
) -> None:
    params = vms_params(bare_project, template="DC0_H0_VM0", count=1)  # an ordinary VM
    result = run_step(vmware.VmsExecutor(), inventory, params)
    assert result.failed and "is a VM, not a template" in (result.error or "")
    folder = find(si, f"{vcenter_config(inventory).datacenter}/vm/{bare_project}")
    assert list(folder.childEntity) == []


def test_vm_name_taken_elsewhere_fails_that_vm(
    bare_project: str, inventory: Inventory, si: Any
) -> None:
    intruder = clone_by_hand(si, inventory, f"{bare_project}-web-01")
    try:
        result = run_step(vmware.VmsExecutor(), inventory, vms_params(bare_project))
        assert result.failed
        [bad, good] = result.targets
        assert bad.failed and "already used" in (bad.error or "")
        assert not good.failed
        folder = find(si, f"{vcenter_config(inventory).datacenter}/vm/{bare_project}")
        assert [c.name for c in folder.childEntity] == [f"{bare_project}-web-02"]
        assert intruder.config.hardware.numCPU == 1  # the foreign VM was not touched
    finally:
        destroy_by_hand(si, inventory, intruder)


def test_folder_name_taken_by_a_vm_fails_with_the_vcenter_fault(
    inventory: Inventory, si: Any
) -> None:
    project = _project("clash")
    intruder = clone_by_hand(si, inventory, project)
    try:
        preview = run_step(vmware.FolderExecutor(), inventory, {"project": project}, check=True)
        assert preview.failed and "VirtualMachine" in (preview.error or "")
        result = run_step(vmware.FolderExecutor(), inventory, {"project": project})
        assert result.failed
        assert "vCenter fault DuplicateName" in (result.error or "")
        assert f"name={project}" in (result.error or "")
        assert isinstance(
            find(si, f"{vcenter_config(inventory).datacenter}/vm/{project}"), vim.VirtualMachine
        )
    finally:
        destroy_by_hand(si, inventory, intruder)


def test_wrong_credentials_give_an_authentication_error(
    inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFRA_SECRET_VCENTER_PASSWORD", "not-the-password")
    wrong = load_inventory(inventory.path or ROOT)
    result = run_step(vmware.FolderExecutor(), wrong, {"project": _project("auth")})
    assert result.failed
    assert "login as 'user' refused" in (result.error or "")
    assert "InvalidLogin" in (result.error or "")
    assert "not-the-password" not in (result.error or "")


def test_session_is_shared_and_logged_out_at_run_end(inventory: Inventory) -> None:
    res = RunResources()
    run_step(
        vmware.FolderExecutor(), inventory, {"project": _project("x")}, check=True, resources=res
    )
    vc = vcenter_config(inventory)
    session = res.get(f"vmware:{vc.host}:{vc.port}", lambda: None)
    assert isinstance(session, VSphere)
    assert session.si.content.sessionManager.currentSession is not None
    assert res.close() == []
    with pytest.raises(vim.fault.NotAuthenticated):
        session.si.content.rootFolder.childEntity  # noqa: B018 - the call is the test


@pytest.fixture
def session(inventory: Inventory) -> Iterator[VSphere]:
    vc = vcenter_config(inventory)
    vs = VSphere.connect(vc, inventory.secrets.get(vc.password_secret))
    yield vs
    vs.close()


def test_a_read_whose_connection_drops_is_tried_again_on_the_same_session(
    session: VSphere,
) -> None:
    """vcsim drops the connection when a request panics in it (here: an unset property read
    through pyVmomi's lazy accessor; in a landscape: a lookup while another step clones into
    the same folder). The read is tried again, on the same logged-in session."""
    template = session.require(session.path("vm", session.vc.template), vim.VirtualMachine, "t")
    tries: list[int] = []

    def lookup() -> Any:
        tries.append(1)
        if len(tries) == 1:
            return template.resourcePool  # vcsim panics: the connection closes, no answer
        return session.find(session.path("vm", session.vc.template))

    assert read("look up the template", lookup) == template
    assert len(tries) == 2
    assert session.si.content.sessionManager.currentSession is not None


def test_a_read_that_keeps_dropping_is_unreachable_after_its_tries(session: VSphere) -> None:
    template = session.require(session.path("vm", session.vc.template), vim.VirtualMachine, "t")
    tries: list[int] = []

    def pool() -> Any:
        tries.append(1)
        return template.resourcePool

    with pytest.raises(TargetUnreachable, match="read the pool: vCenter unreachable: Remote end"):
        read("read the pool", pool)
    assert len(tries) == len(READ_RETRY_DELAYS) + 1


# --- decommission ----------------------------------------------------------------------------


def test_decommission_removes_what_apply_created(inventory: Inventory, si: Any) -> None:
    project = _project("gone")
    for result in apply_all(inventory, project):
        assert not result.failed, result.error
    dc = vcenter_config(inventory).datacenter
    names = [f"{project}-web-01", f"{project}-web-02"]
    inventory.bind_host(names[0], ADDRESSES[0])  # as its OS steps would: a pool host, a guest
    kept = names[0] in inventory.bound_hosts()
    assert kept or inventory.spec.host_binding.kind == "static"  # static keeps no binding

    preview = run_step(vmware.DecommissionExecutor(), inventory, {"project": project}, check=True)
    assert not preview.failed, preview.error
    assert preview.changed and preview.outputs["vms"] == names
    assert find(si, f"{dc}/vm/{project}/{names[0]}") is not None  # check mode removed nothing

    result = run_step(vmware.DecommissionExecutor(), inventory, {"project": project})
    assert not result.failed, result.error
    assert result.changed
    assert result.outputs == {"vms": names, "portgroup": project, "folder": f"{dc}/vm/{project}"}
    assert find(si, f"{dc}/vm/{project}") is None
    assert find(si, f"{dc}/network/{project}") is None
    view = si.content.viewManager.CreateContainerView(
        si.content.rootFolder, [vim.VirtualMachine], True
    )
    assert not [vm for vm in view.view if vm.name in names]
    view.Destroy()
    assert names[0] not in inventory.bound_hosts()  # its binding released with the VM

    again = run_step(vmware.DecommissionExecutor(), inventory, {"project": project})
    assert not again.failed and again.changed is False


def test_many_vms_are_cloned_in_parallel_and_reported_in_order(
    inventory: Inventory, si: Any
) -> None:
    project = _project("many")
    addresses = [f"10.20.6.{10 + i}" for i in range(6)]
    res = RunResources()
    try:
        run_step(vmware.FolderExecutor(), inventory, {"project": project}, resources=res)
        run_step(
            vmware.PortgroupExecutor(), inventory, {"project": project, "vlan_id": 124},
            resources=res,
        )  # fmt: skip
        params = vms_params(project, count=6, addresses=addresses, parallel=6)
        result = run_step(vmware.VmsExecutor(), inventory, params, resources=res)
        again = run_step(vmware.VmsExecutor(), inventory, params, resources=res)
    finally:
        assert res.close() == []
    try:
        assert not result.failed, result.error
        names = [f"{project}-web-{i:02d}" for i in range(1, 7)]
        assert result.outputs["names"] == names
        assert [v["ip"] for v in result.outputs["vms"]] == addresses
        assert not again.failed and not again.changed
        dc = vcenter_config(inventory).datacenter
        for name, address in zip(names, addresses, strict=True):
            vm = find(si, f"{dc}/vm/{project}/{name}")
            assert vm.runtime.powerState == "poweredOn"
            extra = {o.key: o.value for o in vm.config.extraConfig}
            assert extra["guestinfo.infra.ip"] == address
    finally:
        run_step(vmware.DecommissionExecutor(), inventory, {"project": project})
    assert find(si, f"{vcenter_config(inventory).datacenter}/vm/{project}") is None
