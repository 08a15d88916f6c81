"""What the VMware department does in vCenter (pyVmomi): folder, portgroup, VMs, decommission.

Imported by :mod:`infra_automation.departments.vmware` only when a step runs (``run``), so
that planning, and any process that never talks to vCenter, works without the VMware SDK;
the registry has checked by then that pyVmomi is installed (``ExecutorInfo.requires``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import pyVmomi

from infra_automation.departments._vsphere import (
    VSphere,
    map_fault,
    read,
    session,
    vsphere_errors,
)
from infra_automation.departments.vmware import (
    DecommissionOutputs,
    DecommissionParams,
    FolderOutputs,
    FolderParams,
    PortgroupOutputs,
    PortgroupParams,
    VmInfo,
    VmsOutputs,
    VmsParams,
    VmSpec,
    render_specs,
    templates_root,
)
from infra_automation.exceptions import InfraError, TargetRejected
from infra_automation.executors.base import StepContext
from infra_automation.results import ErrorKind, Status, StepResult, TargetResult, error_kind_of

# pyVmomi's stubs leave the data-object constructors unannotated: use the SDK dynamically.
vim: Any = pyVmomi.vim
vmodl: Any = pyVmomi.vmodl

POWERED_ON = "poweredOn"
EXTRA_IP = "guestinfo.infra.ip"
DVPortgroup = vim.dvs.DistributedVirtualPortgroup
EthernetCard = vim.vm.device.VirtualEthernetCard
VmwareDVS = vim.dvs.VmwareDistributedVirtualSwitch


class _Action(Protocol):
    def __call__(self, ctx: StepContext, *, check: bool) -> StepResult: ...


def run(key: str, ctx: StepContext, *, check: bool) -> StepResult:
    """Preview (``check``) or apply the step of executor ``key`` (``vmware.<action>``)."""
    action = ACTIONS[key]
    return _guard(lambda: action(ctx, check=check))


def _guard(action: Callable[[], StepResult]) -> StepResult:
    """Target failures become failed results carrying vCenter's message and their kind."""
    try:
        return action()
    except InfraError as exc:
        return StepResult.failure(str(exc), kind=error_kind_of(exc))
    except vmodl.MethodFault as exc:  # a fault raised outside vsphere_errors()
        mapped = map_fault(exc, "vCenter")
        return StepResult.failure(str(mapped), kind=error_kind_of(mapped))


# --- folder ---------------------------------------------------------------------------------


def _folder(ctx: StepContext, *, check: bool) -> StepResult:
    params = ctx.typed_params(FolderParams)
    vs = session(ctx)
    path = vs.path("vm", params.name)
    found = vs.find(path)
    if isinstance(found, vim.Folder):
        return StepResult.success(outputs=_folder_out(params.name, path, found))
    diff = f"+ folder {path}\n"
    if check:
        if found is not None:
            return _exists_as(path, found, "folder")
        return StepResult.success(
            changed=True,
            diff=diff,
            outputs=FolderOutputs(name=params.name, path=path, moid="").model_dump(),
        )
    parent = vs.require(vs.path("vm"), vim.Folder, "VM folder")
    with vsphere_errors(f"create folder {path}"):
        parent.CreateFolder(params.name)  # vCenter refuses a name taken by any object
    ctx.emit("task", {"host": path, "task": "create folder", "status": "changed"})
    created = vs.require(path, vim.Folder, "folder")
    return StepResult.success(
        changed=True, diff=diff, outputs=_folder_out(params.name, path, created)
    )


def _folder_out(name: str, path: str, folder: Any) -> dict[str, Any]:
    return FolderOutputs(name=name, path=path, moid=folder._moId).model_dump()


def _exists_as(path: str, obj: Any, wanted: str) -> StepResult:
    kind = type(obj).__name__.rsplit(".", 1)[-1]
    return StepResult.failure(
        f"{path} exists but is a {kind}: cannot create a {wanted} there", kind=ErrorKind.REJECTED
    )


# --- portgroup ------------------------------------------------------------------------------


def _portgroup(ctx: StepContext, *, check: bool) -> StepResult:
    params = ctx.typed_params(PortgroupParams)
    vs = session(ctx)
    name = params.portgroup
    path = vs.path("network", name)
    dvs = vs.require(
        vs.path("network", vs.vc.dvswitch), vim.DistributedVirtualSwitch, "distributed switch"
    )
    found = vs.find(path)
    if found is not None and not isinstance(found, DVPortgroup):
        return _exists_as(path, found, "distributed portgroup")
    if found is None:
        diff = f"+ portgroup {name} on {vs.vc.dvswitch} vlan {params.vlan_id}\n"
        if not check:
            spec = _pg_spec(name, params.vlan_id, params.num_ports)
            vs.wait(dvs.AddDVPortgroup_Task([spec]), f"create portgroup {name}")
    else:
        config = found.config
        if config.distributedVirtualSwitch._moId != dvs._moId:
            return StepResult.failure(
                f"portgroup {name!r} exists on another distributed switch, not {vs.vc.dvswitch}",
                kind=ErrorKind.REJECTED,
            )
        vlan = _vlan_of(config)
        if vlan == params.vlan_id:
            return StepResult.success(outputs=_pg_out(vs, path))
        diff = f"~ portgroup {name}: vlan {vlan} -> {params.vlan_id}\n"
        if not check:
            spec = _pg_spec(name, params.vlan_id, config.numPorts or params.num_ports)
            spec.configVersion = config.configVersion
            vs.wait(found.ReconfigureDVPortgroup_Task(spec), f"set vlan of portgroup {name}")
    if check:
        planned = PortgroupOutputs(
            name=name,
            moid=getattr(found, "_moId", ""),
            key=getattr(found, "_moId", ""),
            vlan_id=params.vlan_id,
            dvswitch=vs.vc.dvswitch,
        )
        return StepResult.success(changed=True, diff=diff, outputs=planned.model_dump())
    ctx.emit("task", {"host": path, "task": "portgroup", "status": "changed"})
    outputs = _pg_out(vs, path)
    if outputs["vlan_id"] != params.vlan_id:
        return StepResult.failure(
            f"portgroup {name}: vCenter reports vlan {outputs['vlan_id']} after the change, "
            f"expected {params.vlan_id}",
            kind=ErrorKind.REJECTED,
            changed=True,
            diff=diff,
            outputs=outputs,
        )
    return StepResult.success(changed=True, diff=diff, outputs=outputs)


def _pg_spec(name: str, vlan_id: int, num_ports: int) -> Any:
    vlan = VmwareDVS.VlanIdSpec(vlanId=vlan_id, inherited=False)
    return DVPortgroup.ConfigSpec(
        name=name,
        type="earlyBinding",
        numPorts=num_ports,
        defaultPortConfig=VmwareDVS.VmwarePortConfigPolicy(vlan=vlan),
    )


def _vlan_of(config: Any) -> int | None:
    vlan = getattr(config.defaultPortConfig, "vlan", None)
    if isinstance(vlan, VmwareDVS.VlanIdSpec):
        return int(vlan.vlanId)
    return None


def _pg_out(vs: VSphere, path: str) -> dict[str, Any]:
    pg = vs.require(path, DVPortgroup, "portgroup")
    config, key = read(f"read portgroup {path}", lambda: (pg.config, pg.key))
    return PortgroupOutputs(
        name=config.name,
        moid=pg._moId,
        key=key,
        vlan_id=_vlan_of(config),
        dvswitch=vs.vc.dvswitch,
    ).model_dump()


# --- VMs ------------------------------------------------------------------------------------


class _Place:
    """Where the VMs go and what they are made from (looked up once per step)."""

    def __init__(self, vs: VSphere, params: VmsParams, *, check: bool) -> None:
        vc = vs.vc
        self.folder_name = params.folder or params.project
        self.folder_path = vs.path("vm", self.folder_name)
        self.template_name = params.template or vc.template
        self.template = vs.require(
            f"{vc.datacenter}/vm/{self.template_name}", vim.VirtualMachine, "template"
        )
        is_template = read(
            f"read {self.template_name}", lambda: bool(self.template.config.template)
        )
        if not is_template:
            raise TargetRejected(
                f"{self.template_name!r} is a VM, not a template: only templates are cloned"
            )
        self.folder = vs.find_typed(self.folder_path, vim.Folder, "folder")
        pg_path = vs.path("network", params.portgroup)
        self.portgroup = vs.find_typed(pg_path, DVPortgroup, "portgroup")
        if not check and self.folder is None:
            raise TargetRejected(f"folder {self.folder_path!r} does not exist (vmware.folder)")
        if not check and self.portgroup is None:
            raise TargetRejected(f"portgroup {pg_path!r} does not exist (vmware.portgroup)")
        pool_path = f"{vc.datacenter}/host/{vc.cluster}/Resources"
        if vc.resource_pool:
            pool_path += f"/{vc.resource_pool}"
        self.pool = vs.require(pool_path, vim.ResourcePool, "resource pool")
        self.datastore = vs.require(
            f"{vc.datacenter}/datastore/{vc.datastore}", vim.Datastore, "datastore"
        )
        self.taken = vs.vm_names()


def _vms(ctx: StepContext, *, check: bool) -> StepResult:
    params = ctx.typed_params(VmsParams)
    specs = render_specs(templates_root(ctx), params)
    vs = session(ctx)
    place = _Place(vs, params, check=check)
    # Look every VM up first, one after another: vcsim panics when an inventory path is
    # searched while a clone into the same folder is under way. Then clone, reconfigure and
    # power on up to `parallel` VMs at once (each is a chain of vCenter tasks).
    found = {spec.name: _lookup(vs, place, spec) for spec in specs}
    workers = max(1, min(params.parallel, len(specs)))
    with ThreadPoolExecutor(workers, thread_name_prefix="vmware-vm") as pool:
        done = list(
            pool.map(
                lambda spec: _one_vm(ctx, vs, place, spec, params, found[spec.name], check=check),
                specs,
            )
        )
    targets = [target for target, _ in done]  # in spec order, whatever order they finished in
    infos = [info for _, info in done if info is not None]
    outputs = VmsOutputs(
        vms=infos,
        names=[i.name for i in infos],
        folder=place.folder_path,
        portgroup=params.portgroup,
    )
    return StepResult.from_targets(tuple(targets), outputs=outputs.model_dump())


def _lookup(vs: VSphere, place: _Place, spec: VmSpec) -> Any | InfraError | None:
    """The VM of ``spec`` if it exists (None if not); a lookup error is kept for its VM."""
    if place.folder is None:
        return None
    try:
        return vs.find_typed(f"{place.folder_path}/{spec.name}", vim.VirtualMachine, "VM")
    except InfraError as exc:
        return exc


def _one_vm(
    ctx: StepContext,
    vs: VSphere,
    place: _Place,
    spec: VmSpec,
    params: VmsParams,
    existing: Any | InfraError | None,
    *,
    check: bool,
) -> tuple[TargetResult, VmInfo | None]:
    path = f"{place.folder_path}/{spec.name}"
    try:
        if isinstance(existing, InfraError):
            raise existing
        vm, diff = _ensure_clone(vs, place, spec, path, existing, check=check)
        if vm is None:  # check mode, not cloned yet
            diff += _planned_lines(spec, params.power_on)
            info = _planned(spec, path, "", params.power_on, "poweredOff")
            return _target(spec.name, diff, info), info
        config, state = read(f"read {path}", lambda: (vm.config, str(vm.runtime.powerState)))
        if config.template:
            raise TargetRejected(f"{path} is a template, not a VM")
        change, lines = _reconfig_spec(config, spec, place.portgroup)
        diff += lines
        power = params.power_on and state != POWERED_ON
        if power:
            diff += f"~ power: {state} -> {POWERED_ON}\n"
        if check:
            info = _planned(spec, path, vm._moId, params.power_on, state)
            return _target(spec.name, diff, info), info
        if change is not None:
            vs.wait(vm.ReconfigVM_Task(change), f"reconfigure {path}")
        if power:
            vs.wait(vm.PowerOnVM_Task(), f"power on {path}")
        info = read_vm(vm, path)
        _verify(info, spec, params.power_on)
        if diff:
            ctx.emit("task", {"host": spec.name, "task": "vm", "status": "changed"})
        return _target(spec.name, diff, info), info
    except InfraError as exc:
        failed = TargetResult(
            target=spec.name, status=Status.FAILED, error=str(exc), error_kind=error_kind_of(exc)
        )
        return failed, None


def _ensure_clone(
    vs: VSphere, place: _Place, spec: VmSpec, path: str, vm: Any | None, *, check: bool
) -> tuple[Any | None, str]:
    """``vm`` (found at ``path``), or a clone of the template when missing (not in check mode)."""
    if vm is not None:
        return vm, ""
    elsewhere = place.taken.get(spec.name)
    if elsewhere:
        raise TargetRejected(
            f"VM name {spec.name!r} is already used in folder {', '.join(elsewhere)}; "
            "VM names are also host names and must be unique in the datacenter"
        )
    diff = f"+ clone {place.template_name} -> {path}\n"
    if check:
        return None, diff
    clone = vim.vm.CloneSpec(
        location=vim.vm.RelocateSpec(pool=place.pool, datastore=place.datastore),
        powerOn=False,
        template=False,
    )
    with vsphere_errors(f"clone {place.template_name} to {path}"):
        task = place.template.Clone(folder=place.folder, name=spec.name, spec=clone)
    vm = vs.wait(task, f"clone {place.template_name} to {path}")
    place.taken.setdefault(spec.name, []).append(place.folder_name)
    return vm, diff


def _reconfig_spec(config: Any, spec: VmSpec, portgroup: Any | None) -> tuple[Any | None, str]:
    """A ConfigSpec with only what differs from ``spec`` (None if nothing), and its diff."""
    change = vim.vm.ConfigSpec()
    lines: list[str] = []
    hardware = config.hardware
    if hardware.numCPU != spec.cpu:
        change.numCPUs = spec.cpu
        lines.append(f"~ cpu: {hardware.numCPU} -> {spec.cpu}")
    if hardware.memoryMB != spec.memory_mb:
        change.memoryMB = spec.memory_mb
        lines.append(f"~ memory_mb: {hardware.memoryMB} -> {spec.memory_mb}")
    if (config.annotation or "") != spec.annotation:
        change.annotation = spec.annotation
        lines.append("~ annotation")
    current = extra_config(config)
    extra = {k: v for k, v in spec.extra_config.items() if current.get(k) != v}
    if extra:
        change.extraConfig = [vim.option.OptionValue(key=k, value=v) for k, v in extra.items()]
        lines += [f"~ {k}: {current.get(k)} -> {v}" for k, v in extra.items()]
    nic_change, nic_line = _nic_change(hardware.device, spec.network.portgroup, portgroup)
    if nic_line:
        lines.append(nic_line)
    if nic_change is not None:
        change.deviceChange = [nic_change]
    diff = "".join(line + "\n" for line in lines)
    return (change if lines and portgroup is not None else None), diff


def _nic_change(devices: Any, pg_name: str, portgroup: Any | None) -> tuple[Any | None, str]:
    nics = [d for d in devices if isinstance(d, EthernetCard)]
    if portgroup is None:  # check mode: the portgroup is created by an upstream step
        return None, f"~ nic -> {pg_name}"
    if nics and _nic_portgroup_key(nics[0]) == portgroup.key:
        return None, ""
    backing = EthernetCard.DistributedVirtualPortBackingInfo(
        port=vim.dvs.PortConnection(
            portgroupKey=portgroup.key,
            switchUuid=portgroup.config.distributedVirtualSwitch.uuid,
        )
    )
    operations = vim.vm.device.VirtualDeviceSpec.Operation
    if nics:
        nic, operation = nics[0], operations.edit
    else:
        nic, operation = vim.vm.device.VirtualVmxnet3(), operations.add
    nic.backing = backing
    nic.connectable = vim.vm.device.VirtualDevice.ConnectInfo(
        startConnected=True, allowGuestControl=True, connected=True
    )
    return vim.vm.device.VirtualDeviceSpec(operation=operation, device=nic), f"~ nic -> {pg_name}"


def _nic_portgroup_key(nic: Any) -> str | None:
    port = getattr(nic.backing, "port", None)
    return getattr(port, "portgroupKey", None)


def extra_config(config: Any) -> dict[str, str]:
    """extraConfig as a dict; the last value wins (vcsim appends on reconfigure)."""
    return {o.key: str(o.value) for o in (config.extraConfig or [])}


def is_template(vm: Any, path: str) -> bool:
    return read(f"read {path}", lambda: bool(vm.config.template))


def read_vm(vm: Any, path: str) -> VmInfo:
    """A VM as vCenter reports it now."""
    return read(f"read {path}", lambda: _vm_info(vm, path))


def _vm_info(vm: Any, path: str) -> VmInfo:
    config = vm.config
    state = str(vm.runtime.powerState)
    nics = [d for d in config.hardware.device if isinstance(d, EthernetCard)]
    key = _nic_portgroup_key(nics[0]) if nics else None
    names = {n.key: n.name for n in vm.network if isinstance(n, DVPortgroup)}
    return VmInfo(
        name=config.name,
        moid=vm._moId,
        cpu=config.hardware.numCPU,
        memory_mb=config.hardware.memoryMB,
        portgroup=names.get(key) if key else None,
        power_state=state,
        ip=extra_config(config).get(EXTRA_IP, ""),
        path=path,
    )


def _verify(info: VmInfo, spec: VmSpec, power_on: bool) -> None:
    wrong = []
    for field, want in (
        ("cpu", spec.cpu),
        ("memory_mb", spec.memory_mb),
        ("portgroup", spec.network.portgroup),
        ("ip", spec.ip),
    ):
        if getattr(info, field) != want:
            wrong.append(f"{field}={getattr(info, field)} (expected {want})")
    if power_on and info.power_state != POWERED_ON:
        wrong.append(f"power_state={info.power_state}")
    if wrong:
        raise TargetRejected(f"{info.path}: vCenter reports {', '.join(wrong)} after the change")


def _planned(spec: VmSpec, path: str, moid: str, power_on: bool, state: str) -> VmInfo:
    return VmInfo(
        name=spec.name,
        moid=moid,
        cpu=spec.cpu,
        memory_mb=spec.memory_mb,
        portgroup=spec.network.portgroup,
        power_state=POWERED_ON if power_on else state,
        ip=spec.ip,
        path=path,
    )


def _planned_lines(spec: VmSpec, power_on: bool) -> str:
    lines = (
        f"~ cpu -> {spec.cpu}\n~ memory_mb -> {spec.memory_mb}\n"
        f"~ nic -> {spec.network.portgroup}\n~ {EXTRA_IP} -> {spec.ip}\n"
    )
    return lines + (f"~ power -> {POWERED_ON}\n" if power_on else "")


def _target(name: str, diff: str, info: VmInfo) -> TargetResult:
    return TargetResult(
        target=name,
        status=Status.SUCCESS,
        changed=bool(diff),
        diff=diff,
        details=info.model_dump(),
    )


# --- decommission ---------------------------------------------------------------------------


def _decommission(ctx: StepContext, *, check: bool) -> StepResult:
    params = ctx.typed_params(DecommissionParams)
    vs = session(ctx)
    folder_path = vs.path("vm", params.folder or params.project)
    pg_name = params.portgroup or params.project
    pg_path = vs.path("network", pg_name)
    folder = vs.find_typed(folder_path, vim.Folder, "folder")
    portgroup = None
    if params.remove_portgroup:
        portgroup = vs.find_typed(pg_path, DVPortgroup, "portgroup")
    vms = _folder_vms(folder, folder_path)
    _check_portgroup_unused(portgroup, pg_path, {name for name, _ in vms})
    lines: list[str] = []
    for name, vm in vms:
        lines.append(f"- vm {folder_path}/{name}")
        if not check:
            destroy_vm(vs, vm, f"{folder_path}/{name}")
            ctx.inventory.release_host(name)
            ctx.emit("task", {"host": name, "task": "destroy vm", "status": "changed"})
    if portgroup is not None:
        lines.append(f"- portgroup {pg_name}")
        if not check:
            vs.wait(portgroup.Destroy_Task(), f"remove portgroup {pg_name}")
    if folder is not None:
        lines.append(f"- folder {folder_path}")
        if not check:
            vs.wait(folder.Destroy_Task(), f"remove folder {folder_path}")
    outputs = DecommissionOutputs(
        vms=[name for name, _ in vms],
        portgroup=pg_name if portgroup is not None else None,
        folder=folder_path if folder is not None else None,
    )
    if not check:
        removed = [p for p, obj in ((folder_path, folder), (pg_path, portgroup)) if obj is not None]
        left = [p for p in removed if vs.find(p) is not None]
        if left:
            return StepResult.failure(
                f"still present in vCenter after removal: {', '.join(left)}",
                kind=ErrorKind.REJECTED,
            )
    diff = "".join(line + "\n" for line in lines)
    return StepResult.success(changed=bool(lines), diff=diff, outputs=outputs.model_dump())


def _folder_vms(folder: Any | None, folder_path: str) -> list[tuple[str, Any]]:
    if folder is None:
        return []

    def listing() -> list[tuple[str, Any]]:
        children = list(folder.childEntity)
        others = [c.name for c in children if not isinstance(c, vim.VirtualMachine)]
        if others:
            raise TargetRejected(
                f"folder {folder_path} holds objects that are not VMs ({', '.join(others)}); "
                "refusing to remove it"
            )
        return sorted(((vm.name, vm) for vm in children), key=lambda pair: str(pair[0]))

    return read(f"list {folder_path}", listing)


def _check_portgroup_unused(portgroup: Any | None, pg_path: str, ours: set[str]) -> None:
    if portgroup is None:
        return
    users = read(f"read {pg_path}", lambda: sorted(vm.name for vm in portgroup.vm))
    foreign = [name for name in users if name not in ours]
    if foreign:
        raise TargetRejected(
            f"portgroup {pg_path} is still used by VMs outside the project folder: "
            f"{', '.join(foreign)}"
        )


def destroy_vm(vs: VSphere, vm: Any, path: str) -> None:
    """Power ``vm`` off if it is on, then destroy it."""
    state = read(f"read {path}", lambda: str(vm.runtime.powerState))
    if state == POWERED_ON:
        vs.wait(vm.PowerOffVM_Task(), f"power off {path}")
    vs.wait(vm.Destroy_Task(), f"destroy {path}")


ACTIONS: dict[str, _Action] = {
    "vmware.folder": _folder,
    "vmware.portgroup": _portgroup,
    "vmware.vms": _vms,
    "vmware.decommission": _decommission,
}
