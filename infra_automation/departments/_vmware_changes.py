"""What the VMware department's operational changes do in vCenter (pyVmomi).

Imported by :mod:`infra_automation.departments.vmware_changes` only when a step runs; the
session, task waiting, fault mapping and VM read-back are those of the build executors
(:mod:`._vsphere`, :mod:`._vmware_ops`).
"""

from __future__ import annotations

from typing import Any, Protocol

import yaml
from pydantic import ValidationError

from infra_automation.departments._vmware_ops import (
    POWERED_ON,
    destroy_vm,
    is_template,
    read_vm,
    vim,
    vmodl,
)
from infra_automation.departments._vsphere import VSphere, map_fault, read, session
from infra_automation.departments.vmware import (
    VM_TEMPLATE,
    VmInfo,
    VmSpec,
    templates_root,
)
from infra_automation.departments.vmware_changes import (
    DestroyOutputs,
    DestroyParams,
    ResizeOutputs,
    ResizeParams,
    TierOutputs,
    TierParams,
    needs_power_cycle,
    plan_tier,
    tier_diff,
    vm_number,
)
from infra_automation.exceptions import InfraError, RenderError, TargetRejected
from infra_automation.executors.base import StepContext
from infra_automation.render import render_template
from infra_automation.results import ErrorKind, Status, StepResult, TargetResult, error_kind_of


class _Action(Protocol):
    def __call__(self, ctx: StepContext, *, check: bool) -> StepResult: ...


def run(key: str, ctx: StepContext, *, check: bool) -> StepResult:
    """Preview (``check``) or apply the step of executor ``key``."""
    try:
        return ACTIONS[key](ctx, check=check)
    except InfraError as exc:
        return StepResult.failure(str(exc), kind=error_kind_of(exc))
    except vmodl.MethodFault as exc:  # a fault raised outside vsphere_errors()
        mapped = map_fault(exc, "vCenter")
        return StepResult.failure(str(mapped), kind=error_kind_of(mapped))


# --- reading a folder -----------------------------------------------------------------------


def folder_vms(
    vs: VSphere, folder_path: str, project: str, role: str | None
) -> list[tuple[str, Any]]:
    """(name, VM) of the folder's VMs named ``<project>-<role>-NN`` (any VM without a role),
    by number; templates and other objects are left out."""
    folder = vs.find_typed(folder_path, vim.Folder, "folder")
    if folder is None:
        return []

    def listing() -> list[tuple[str, Any]]:
        children = [c for c in folder.childEntity if isinstance(c, vim.VirtualMachine)]
        named = [(str(c.name), c) for c in children]
        return [
            (n, vm)
            for n, vm in named
            if (role is None or vm_number(n, project, role) is not None) and not vm.config.template
        ]

    ours = read(f"list {folder_path}", listing)
    return sorted(ours, key=lambda item: (vm_number(item[0], project, role) or 0, item[0]))


# --- tier -----------------------------------------------------------------------------------


def _tier(ctx: StepContext, *, check: bool) -> StepResult:
    params = ctx.typed_params(TierParams)
    vs = session(ctx)
    folder_path = vs.path("vm", params.folder_name)
    found = folder_vms(vs, folder_path, params.project, params.role)
    current = [read_vm(vm, f"{folder_path}/{name}") for name, vm in found]
    if params.count is not None and not current:
        return StepResult.failure(
            f"project {params.project!r} has no {params.role} VMs in {folder_path}: "
            "nothing to scale (build it with project-landscape first)",
            kind=ErrorKind.INVALID,
        )
    names, keep, added, remove = plan_tier(params.project, params.role, params.count, current)
    first = current[0] if current else None
    outputs = TierOutputs(
        folder=params.folder_name,
        portgroup=(first.portgroup or "") if first else "",
        current=current,
        names=names,
        keep=keep,
        added=added,
        remove=remove,
        removed=[vm.name for vm in remove],
        cpu=first.cpu if first else 0,
        memory_mb=first.memory_mb if first else 0,
    )
    # read-only: the diff says what the tier's next steps will do; nothing changed here
    return StepResult.success(diff=tier_diff(added, remove), outputs=outputs.model_dump())


# --- destroy --------------------------------------------------------------------------------


def _destroy(ctx: StepContext, *, check: bool) -> StepResult:
    params = ctx.typed_params(DestroyParams)
    vs = session(ctx)
    folder_path = vs.path("vm", params.folder or params.project)
    found = [
        (name, vs.find_typed(f"{folder_path}/{name}", vim.VirtualMachine, "VM"))
        for name in params.names
    ]
    present = [(name, vm) for name, vm in found if vm is not None]
    diff = "".join(f"- vm {folder_path}/{name}\n" for name, _ in present)
    if check:
        outputs = DestroyOutputs(destroyed=[n for n, _ in present], released=[])
        return StepResult.success(changed=bool(present), diff=diff, outputs=outputs.model_dump())
    for name, vm in present:
        if is_template(vm, f"{folder_path}/{name}"):
            raise TargetRejected(f"{folder_path}/{name} is a template, not a VM")
        destroy_vm(vs, vm, f"{folder_path}/{name}")
        ctx.emit("task", {"host": name, "task": "destroy vm", "status": "changed"})
    for name in params.names:  # also when a resumed run finds the VM already gone
        ctx.inventory.release_host(name)
    left = [n for n in params.names if vs.find(f"{folder_path}/{n}") is not None]
    if left:
        return StepResult.failure(
            f"still present in vCenter after removal: {', '.join(left)}", kind=ErrorKind.REJECTED
        )
    outputs = DestroyOutputs(destroyed=[n for n, _ in present], released=list(params.names))
    return StepResult.success(changed=bool(present), diff=diff, outputs=outputs.model_dump())


# --- resize ---------------------------------------------------------------------------------


def _resize(ctx: StepContext, *, check: bool) -> StepResult:
    params = ctx.typed_params(ResizeParams)
    vs = session(ctx)
    folder_path = vs.path("vm", params.folder or params.project)
    found = folder_vms(vs, folder_path, params.project, params.role)
    if not found:
        return StepResult.failure(
            f"project {params.project!r} has no {params.role} VMs in {folder_path} to resize",
            kind=ErrorKind.INVALID,
        )
    done = [
        _resize_one(ctx, vs, params, name, vm, f"{folder_path}/{name}", check=check)
        for name, vm in found
    ]
    infos = [info for _, info, _ in done if info is not None]
    outputs = ResizeOutputs(
        vms=infos,
        names=[i.name for i in infos],
        addresses=[i.ip for i in infos],
        folder=params.folder or params.project,
        portgroup=next((i.portgroup for i in infos if i.portgroup), ""),
        power_cycled=[i.name for i, (_, _, cycled) in zip(infos, done, strict=False) if cycled],
    )
    return StepResult.from_targets(tuple(t for t, _, _ in done), outputs=outputs.model_dump())


def _resize_one(
    ctx: StepContext,
    vs: VSphere,
    params: ResizeParams,
    name: str,
    vm: Any,
    path: str,
    *,
    check: bool,
) -> tuple[TargetResult, VmInfo | None, bool]:
    try:
        info = read_vm(vm, path)
        cpu, memory = preset(ctx, params, info)
        config = read(f"read {path}", lambda: vm.config)
        change, diff = _size_change(info, cpu, memory)
        if change is None:
            return _ok(name, "", info), info, False
        cycle = info.power_state == POWERED_ON and _must_cycle(config, info, cpu, memory)
        if cycle and not params.power_cycle:
            raise TargetRejected(
                f"{path}: vCenter cannot hot-add this change and power_cycle is false"
            )
        diff += f"~ power: {POWERED_ON} -> poweredOff -> {POWERED_ON}\n" if cycle else ""
        if check:
            planned = info.model_copy(update={"cpu": cpu, "memory_mb": memory})
            return _ok(name, diff, planned), planned, cycle
        after = _reconfigure(vs, vm, path, change, cycle=cycle)
        _verify_size(after, cpu, memory, info.power_state)
        ctx.emit("task", {"host": name, "task": "resize", "status": "changed"})
        return _ok(name, diff, after), after, cycle
    except InfraError as exc:
        failed = TargetResult(name, Status.FAILED, error=str(exc), error_kind=error_kind_of(exc))
        return failed, None, False


def preset(ctx: StepContext, params: ResizeParams, info: VmInfo) -> tuple[int, int]:
    """(cpu, memory_mb) of the size preset as ``vm.yml.j2`` renders it for this VM."""
    variables = {
        "name": info.name,
        "project": params.project,
        "role": params.role,
        "index": vm_number(info.name, params.project, params.role) or 1,
        "size": params.size,
        "cpu": params.cpu,
        "memory_mb": params.memory_mb,
        "portgroup": info.portgroup or params.project,
        "ip": info.ip or "0.0.0.0",  # noqa: S104 - a placeholder address, not a bind
        "description": "",
    }
    text = render_template(templates_root(ctx), VM_TEMPLATE, variables)
    try:
        spec = VmSpec.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise RenderError(VM_TEMPLATE, None, f"invalid spec for {info.name}: {exc}") from exc
    return spec.cpu, spec.memory_mb


def _size_change(info: VmInfo, cpu: int, memory: int) -> tuple[Any | None, str]:
    change = vim.vm.ConfigSpec()
    lines = []
    if info.cpu != cpu:
        change.numCPUs = cpu
        lines.append(f"~ cpu: {info.cpu} -> {cpu}\n")
    if info.memory_mb != memory:
        change.memoryMB = memory
        lines.append(f"~ memory_mb: {info.memory_mb} -> {memory}\n")
    return (change if lines else None), "".join(lines)


def _must_cycle(config: Any, info: VmInfo, cpu: int, memory: int) -> bool:
    return needs_power_cycle(
        (info.cpu, info.memory_mb),
        (cpu, memory),
        cpu_hot_add=bool(config.cpuHotAddEnabled),
        cpu_hot_remove=bool(config.cpuHotRemoveEnabled),
        memory_hot_add=bool(config.memoryHotAddEnabled),
    )


def _reconfigure(vs: VSphere, vm: Any, path: str, change: Any, *, cycle: bool) -> VmInfo:
    if cycle:
        vs.wait(vm.PowerOffVM_Task(), f"power off {path}")
    vs.wait(vm.ReconfigVM_Task(change), f"resize {path}")
    if cycle:
        vs.wait(vm.PowerOnVM_Task(), f"power on {path}")
    return read_vm(vm, path)


def _verify_size(after: VmInfo, cpu: int, memory: int, power_state: str) -> None:
    wrong = [
        f"{field}={got} (expected {want})"
        for field, got, want in (
            ("cpu", after.cpu, cpu),
            ("memory_mb", after.memory_mb, memory),
            ("power_state", after.power_state, power_state),
        )
        if got != want
    ]
    if wrong:
        raise TargetRejected(f"{after.path}: vCenter reports {', '.join(wrong)} after the resize")


def _ok(name: str, diff: str, info: VmInfo) -> TargetResult:
    return TargetResult(
        target=name, status=Status.SUCCESS, changed=bool(diff), diff=diff, details=info.model_dump()
    )


ACTIONS: dict[str, _Action] = {
    "vmware.tier": _tier,
    "vmware.destroy_vms": _destroy,
    "vmware.resize": _resize,
}
