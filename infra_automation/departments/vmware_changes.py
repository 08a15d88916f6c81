"""Operational changes of the VMware department: read a project's tier, destroy VMs, resize.

A built project's current state is read from vCenter itself (its folder's VMs), not from the
docs ledger: vCenter is what exists now, whatever a failed run, a resumed one or a hand change
left, and a dry run reads the same state the apply will act on. ``vmware.tier`` reads the
folder and, for a wanted VM count, says which VMs stay, which are cloned (the next numbers)
and which go (the highest-numbered first); downstream steps take its outputs.

- ``vmware.tier``: read-only; the VMs of the project folder (of one role, or all).
- ``vmware.destroy_vms``: power off and destroy the named VMs of the folder, release their
  pool host bindings (scale-down).
- ``vmware.resize``: CPU/memory of the role's VMs to a size preset (``vm.yml.j2``) through
  ``ReconfigVM_Task``; a powered-on VM is power-cycled only when vCenter cannot hot-add
  what changes (CPU or memory hot-add off, or a decrease), then read back.

Like :mod:`~infra_automation.departments.vmware`, this module imports no SDK; what talks to
vCenter is in :mod:`infra_automation.departments._vmware_changes`.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from infra_automation.departments.vmware import Size, VmInfo, _info, _VCenterExecutor
from infra_automation.executors.base import ExecutorInfo
from infra_automation.validation import HostLabel, Name, Role


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierParams(_Model):
    project: Name
    role: Role | None = None  # None: every VM of the folder (decommission)
    count: int | None = Field(default=None, ge=1, le=50)  # wanted count; None: as it is
    folder: Name | None = None  # default: the project name

    @property
    def folder_name(self) -> str:
        return self.folder or self.project

    @model_validator(mode="after")
    def _count_needs_role(self) -> TierParams:
        if self.count is not None and self.role is None:
            raise ValueError("count: a wanted count needs a role (the VMs <project>-<role>-NN)")
        return self


class TierOutputs(_Model):
    folder: str  # the folder's name
    portgroup: str  # the portgroup of the tier's first VM ("" without VMs)
    current: list[VmInfo]  # the VMs as vCenter reports them now, by number
    names: list[str]  # the tier's VM names once at `count` (current names without a count)
    keep: list[VmInfo]
    added: list[str]  # names to clone (the next numbers)
    remove: list[VmInfo]  # the VMs to remove (highest numbers)
    removed: list[str]
    cpu: int  # of the first VM (0 without VMs): new VMs get the tier's current size
    memory_mb: int


class DestroyParams(_Model):
    project: Name
    names: list[HostLabel] = Field(default_factory=list, max_length=50)
    folder: Name | None = None

    @field_validator("names")
    @classmethod
    def _project_vms(cls, names: list[str], info: ValidationInfo) -> list[str]:
        project = info.data.get("project")
        foreign = [n for n in names if project and not n.startswith(f"{project}-")]
        if foreign:
            raise ValueError(f"not VMs of project {project!r}: {', '.join(foreign)}")
        return names


class DestroyOutputs(_Model):
    destroyed: list[str]  # names destroyed (or that would be, in check mode)
    released: list[str]  # names whose pool host binding was released


class ResizeParams(_Model):
    project: Name
    role: Role = "web"
    size: Size
    cpu: int | None = Field(default=None, ge=1, le=128)
    memory_mb: int | None = Field(default=None, ge=128, le=4 * 1024 * 1024)
    folder: Name | None = None
    power_cycle: bool = True  # allowed when vCenter cannot hot-add the change


class ResizeOutputs(_Model):
    vms: list[VmInfo]  # read back after the change
    names: list[str]
    addresses: list[str]  # each VM's address (guestinfo), in name order
    folder: str
    portgroup: str
    power_cycled: list[str]


def vm_number(name: str, project: str, role: str | None) -> int | None:
    """NN of ``<project>-<role>-NN`` (any role when ``role`` is None); None otherwise."""
    pattern = re.escape(project) + "-" + (re.escape(role) if role else "[a-z0-9-]+") + r"-(\d+)"
    found = re.fullmatch(pattern, name)
    return int(found.group(1)) if found else None


def plan_tier(
    project: str, role: str | None, count: int | None, current: list[VmInfo]
) -> tuple[list[str], list[VmInfo], list[str], list[VmInfo]]:
    """(names at ``count``, kept, added names, removed): keep 1..count, add up to it."""
    ordered = sorted(current, key=lambda vm: (vm_number(vm.name, project, role) or 0, vm.name))
    if count is None or role is None:
        return [vm.name for vm in ordered], ordered, [], []
    names = [f"{project}-{role}-{i:02d}" for i in range(1, count + 1)]
    keep = [vm for vm in ordered if vm.name in names]
    remove = [vm for vm in reversed(ordered) if vm.name not in names]
    have = {vm.name for vm in ordered}
    return names, keep, [n for n in names if n not in have], remove


def needs_power_cycle(
    now: tuple[int, int],
    wanted: tuple[int, int],
    *,
    cpu_hot_add: bool,
    cpu_hot_remove: bool,
    memory_hot_add: bool,
) -> bool:
    """Whether a powered-on VM must be powered off to go from ``now`` to ``wanted``
    ((cpu, memory_mb)): vSphere hot-adds CPU and memory only where enabled, hot-removes CPU
    only where enabled, and never hot-removes memory."""
    (cpu_now, memory_now), (cpu, memory) = now, wanted
    return (
        (cpu > cpu_now and not cpu_hot_add)
        or (cpu < cpu_now and not cpu_hot_remove)
        or (memory > memory_now and not memory_hot_add)
        or memory < memory_now
    )


def tier_diff(added: list[str], remove: list[VmInfo]) -> str:
    lines = [f"+ vm {name} (scale up)" for name in added]
    lines += [f"- vm {vm.name} (scale down)" for vm in remove]
    return "".join(line + "\n" for line in lines)


# --- executors ------------------------------------------------------------------------------


class _Changes(_VCenterExecutor):
    ops = "infra_automation.departments._vmware_changes"


class TierExecutor(_Changes):
    info = ExecutorInfo(
        key="vmware.tier",
        department="vmware",
        description="Read the project's VMs from its folder; for a count: kept, added, removed.",
        params=TierParams,
        outputs=TierOutputs,
        requires=("pyVmomi",),
        extra="vmware",
        rerun_safe=True,
    )


class DestroyVmsExecutor(_Changes):
    info = _info(
        "vmware.destroy_vms",
        "Power off and destroy the named VMs of the project folder; release their host bindings.",
        DestroyParams,
        DestroyOutputs,
    )


class ResizeExecutor(_Changes):
    info = _info(
        "vmware.resize",
        "Reconfigure the role's VMs to a size preset (power-cycled only if needed), read back.",
        ResizeParams,
        ResizeOutputs,
    )
