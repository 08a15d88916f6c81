"""Verifiers of the VMware department: the project's folder, portgroup and VMs in vCenter.

Read-only through the run's vCenter session (``_vsphere.session``): the folder and the
portgroup exist (the portgroup on the recorded VLAN); each recorded VM exists with the
recorded CPU count, memory, NIC portgroup and power state (``_vmware_ops.read_vm``). A vCenter
that does not answer makes the resources ``unverifiable``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from infra_automation.departments import _vmware_ops, _vsphere
from infra_automation.exceptions import InfraError
from infra_automation.results import error_kind_of
from infra_automation.verify import ResourceCheck, VerifyContext, VerifyResult

MISSING = "(missing)"
VM_FIELDS = ("cpu", "memory_mb", "portgroup", "power_state")


def _guarded(resource: str, target: str, read: Callable[[], ResourceCheck]) -> ResourceCheck:
    try:
        return read()
    except InfraError as exc:
        kind = error_kind_of(exc)
        return ResourceCheck.unverifiable(resource, str(exc), target=target, kind=kind)


class FolderVerifier:
    def verify(self, ctx: VerifyContext) -> VerifyResult:
        path = str(ctx.recorded.get("path") or "")
        resource = f"VM folder {path}"

        def read() -> ResourceCheck:
            found = _vsphere.session(ctx.step).find(path)
            return ResourceCheck.compare(
                resource, "present", "present" if found is not None else MISSING, target="vcenter"
            )

        return VerifyResult.of(_guarded(resource, "vcenter", read))


class PortgroupVerifier:
    def verify(self, ctx: VerifyContext) -> VerifyResult:
        name = str(ctx.recorded.get("name") or "")
        resource = f"portgroup {name}"

        def read() -> ResourceCheck:
            vs = _vsphere.session(ctx.step)
            pg = vs.find(vs.path("network", name))
            expected = f"vlan {ctx.recorded.get('vlan_id')}"
            if pg is None:
                return ResourceCheck.drifted(resource, expected=expected, found=MISSING)
            with _vsphere.vsphere_errors(f"read portgroup {name}"):
                vlan = getattr(pg.config.defaultPortConfig.vlan, "vlanId", None)
            return ResourceCheck.compare(resource, expected, f"vlan {vlan}", target="vcenter")

        return VerifyResult.of(_guarded(resource, "vcenter", read))


class VmsVerifier:
    def verify(self, ctx: VerifyContext) -> VerifyResult:
        vms = [v for v in ctx.recorded.get("vms") or [] if isinstance(v, Mapping)]
        if not vms:
            return VerifyResult.unverifiable("VMs", "the record lists no VM")
        return VerifyResult(tuple(self._one(ctx, vm) for vm in vms))

    def _one(self, ctx: VerifyContext, vm: Mapping[str, Any]) -> ResourceCheck:
        name, path = str(vm.get("name")), str(vm.get("path"))
        resource = f"VM {name}"

        def read() -> ResourceCheck:
            found = _vsphere.session(ctx.step).find(path)
            expected = _facts(vm)
            if found is None:
                return ResourceCheck.drifted(resource, expected=expected, found=MISSING)
            live = _vmware_ops.read_vm(found, path).model_dump()
            return ResourceCheck.compare(
                resource, expected, _facts(live), target="vcenter", reason=_changed(vm, live)
            )

        return _guarded(resource, "vcenter", read)


def _facts(vm: Mapping[str, Any]) -> str:
    return "\n".join(f"{key}: {vm.get(key)}" for key in VM_FIELDS)


def _changed(recorded: Mapping[str, Any], live: Mapping[str, Any]) -> str:
    fields = [k for k in VM_FIELDS if recorded.get(k) != live.get(k)]
    return ", ".join(f"{k} {recorded.get(k)} -> {live.get(k)}" for k in fields)


def folder() -> FolderVerifier:
    return FolderVerifier()


def portgroup() -> PortgroupVerifier:
    return PortgroupVerifier()


def vms() -> VmsVerifier:
    return VmsVerifier()
