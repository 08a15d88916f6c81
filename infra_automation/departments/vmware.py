"""The VMware department (pyVmomi): project folder, distributed portgroup, VMs, decommission.

Every action is idempotent and has a check-mode preview that changes nothing. Outputs are
read back from vCenter after the change. VM specs (CPU, memory, annotation, network, extra
config) are rendered from ``templates/vmware/vm.yml.j2`` and validated by :class:`VmSpec`.

This module declares the executors (params and outputs models, :class:`ExecutorInfo`) and
renders the VM specs; it imports no SDK, so planning works without pyVmomi. What talks to
vCenter is in :mod:`infra_automation.departments._vmware_ops`, imported when a step runs.

The connection is one session per run and vCenter (``vmware:<host>:<port>`` in the run's
resources), logged out when the run ends. The password is the inventory secret named by
``vcenter.password_secret`` (or ``INFRA_SECRET_VCENTER_PASSWORD``), never a parameter.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyInterface,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from infra_automation.exceptions import RenderError
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.render import package_templates, render_template
from infra_automation.results import StepResult
from infra_automation.sections import Section
from infra_automation.validation import HostLabel, Name, Role, SafeText

if TYPE_CHECKING:
    from infra_automation.inventory import Inventory

VM_TEMPLATE = "vmware/vm.yml.j2"
Size = Literal["small", "medium", "large"]
_HOST_LABEL = TypeAdapter(HostLabel)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Outputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- the department's inventory section ------------------------------------------------------


class VCenter(BaseModel):
    """The inventory's ``vcenter`` section: where vCenter is and the objects projects use."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=443, ge=1, le=65535)
    protocol: Literal["http", "https"] = "https"
    username: str = "administrator@vsphere.local"
    password_secret: str = "vcenter_password"  # noqa: S105 - the secret's name, not a value
    verify_tls: bool = True
    datacenter: str = "DC0"
    cluster: str = "DC0_C0"
    resource_pool: str | None = None
    datastore: str = "LocalDS_0"
    dvswitch: str = "DVS0"
    template: str = "DC0_C0_RP0_VM0"
    vm_root_folder: str = ""


VCENTER_SECTION = Section("vcenter", VCenter)  # the entry point of infra_automation.sections


def vcenter_config(inventory: Inventory) -> VCenter:
    """The inventory's ``vcenter`` section (ConfigurationError if it has none)."""
    return inventory.section(VCENTER_SECTION.name, VCenter)


# --- models ---------------------------------------------------------------------------------


class FolderParams(_Params):
    project: Name
    folder: Name | None = None  # default: the project name

    @property
    def name(self) -> str:
        return self.folder or self.project


class FolderOutputs(_Outputs):
    name: str
    path: str  # vCenter inventory path, e.g. DC0/vm/shop
    moid: str  # "" in check mode when the folder does not exist yet


class PortgroupParams(_Params):
    project: Name
    vlan_id: int = Field(ge=1, le=4094)  # from IPAM
    name: Name | None = None  # default: the project name
    num_ports: int = Field(default=8, ge=1, le=8192)

    @property
    def portgroup(self) -> str:
        return self.name or self.project


class PortgroupOutputs(_Outputs):
    name: str
    moid: str
    key: str
    vlan_id: int | None  # read back from vCenter (planned value in check mode)
    dvswitch: str


TemplateName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")]


class VmsParams(_Params):
    project: Name
    portgroup: Name
    addresses: list[IPvAnyInterface] = Field(min_length=1, max_length=50)  # IPAM's hosts
    count: int = Field(ge=1, le=50)
    role: Role = "app"  # short enough that any project gives valid VM names
    size: Size = "small"
    cpu: int | None = Field(default=None, ge=1, le=128)
    memory_mb: int | None = Field(default=None, ge=128, le=4 * 1024 * 1024)
    folder: Name | None = None  # default: the project name
    # a template directly in the datacenter's VM folder (no path: never another project's VM)
    template: TemplateName | None = None  # default: the inventory's vcenter.template
    description: SafeText = ""
    power_on: bool = True
    parallel: int = Field(default=4, ge=1, le=32)  # VMs cloned/reconfigured at once

    @field_validator("addresses", mode="before")
    @classmethod
    def _address_items(cls, value: Any) -> Any:
        """Accept IPAM host entries given as mappings with an ``address``."""
        if isinstance(value, list):
            return [v.get("address", v) if isinstance(v, dict) else v for v in value]
        return value

    @model_validator(mode="after")
    def _names_and_addresses(self) -> VmsParams:
        if len(self.addresses) < self.count:
            raise ValueError(f"addresses: {len(self.addresses)} given for count={self.count}")
        for name in self.vm_names():  # valid by construction (Name, Role): kept as a guard
            try:
                _HOST_LABEL.validate_python(name)
            except ValidationError:
                raise ValueError(
                    f"VM name {name!r} (<project>-<role>-NN) is not a valid host name "
                    "(2-63 characters a-z 0-9 -)"
                ) from None
        return self

    def vm_names(self) -> list[str]:
        return [f"{self.project}-{self.role}-{i:02d}" for i in range(1, self.count + 1)]


class VmInfo(_Outputs):
    name: str
    moid: str  # "" in check mode for a VM not yet cloned
    cpu: int
    memory_mb: int
    portgroup: str | None
    power_state: str
    ip: str
    path: str


class VmsOutputs(_Outputs):
    vms: list[VmInfo]
    names: list[str]
    folder: str
    portgroup: str


class DecommissionParams(_Params):
    project: Name
    folder: Name | None = None  # default: the project name
    portgroup: Name | None = None  # default: the project name
    remove_portgroup: bool = True


class DecommissionOutputs(_Outputs):
    vms: list[str]  # names of the VMs destroyed (or that would be)
    portgroup: str | None  # name of the portgroup removed, None if there was none
    folder: str | None  # path of the folder removed, None if there was none


class NetworkSpec(_Outputs):
    portgroup: Name
    ip: IPvAnyInterface


class VmSpec(_Outputs):
    """What ``templates/vmware/vm.yml.j2`` renders for one VM."""

    name: HostLabel
    cpu: int = Field(ge=1, le=128)
    memory_mb: int = Field(ge=128, le=4 * 1024 * 1024)
    annotation: str = Field(max_length=4096)
    network: NetworkSpec
    extra_config: dict[str, str] = Field(default_factory=dict)

    @property
    def ip(self) -> str:
        return str(self.network.ip.ip)


# --- executors ------------------------------------------------------------------------------


def _info(key: str, description: str, params: type[BaseModel], outputs: type[BaseModel]) -> Any:
    return ExecutorInfo(
        key=key,
        department="vmware",
        description=description,
        params=params,
        outputs=outputs,
        requires=("pyVmomi",),
        extra="vmware",
    )


class _VCenterExecutor:
    """Preview and apply through the module ``ops`` names (its ``run(key, ctx, check=)``),
    imported only when a step runs: pyVmomi only to talk to vCenter."""

    info: ExecutorInfo
    ops = "infra_automation.departments._vmware_ops"

    def preview(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=True)

    def apply(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=False)

    def _run(self, ctx: StepContext, *, check: bool) -> StepResult:
        run: Any = importlib.import_module(self.ops).run
        result: StepResult = run(self.info.key, ctx, check=check)
        return result


class FolderExecutor(_VCenterExecutor):
    info = _info("vmware.folder", "Ensure the project's VM folder.", FolderParams, FolderOutputs)


class PortgroupExecutor(_VCenterExecutor):
    info = _info(
        "vmware.portgroup",
        "Ensure a distributed portgroup carrying the project VLAN.",
        PortgroupParams,
        PortgroupOutputs,
    )


class VmsExecutor(_VCenterExecutor):
    info = _info(
        "vmware.vms",
        "Clone N VMs from the template, size them, put their NIC on the portgroup, power on.",
        VmsParams,
        VmsOutputs,
    )


class DecommissionExecutor(_VCenterExecutor):
    info = _info(
        "vmware.decommission",
        "Power off and destroy the project's VMs, then its portgroup and folder.",
        DecommissionParams,
        DecommissionOutputs,
    )


# --- VM specs -------------------------------------------------------------------------------


def render_specs(root: Path, params: VmsParams) -> list[VmSpec]:
    """Render ``vm.yml.j2`` once per VM and validate each result."""
    specs = []
    for index, (name, address) in enumerate(
        zip(params.vm_names(), params.addresses, strict=False), start=1
    ):
        variables = {
            "name": name,
            "project": params.project,
            "role": params.role,
            "index": index,
            "size": params.size,
            "cpu": params.cpu,
            "memory_mb": params.memory_mb,
            "portgroup": params.portgroup,
            "ip": str(address.ip),
            "description": params.description,
        }
        text = render_template(root, VM_TEMPLATE, variables)
        try:
            specs.append(VmSpec.model_validate(yaml.safe_load(text)))
        except (yaml.YAMLError, ValidationError) as exc:
            raise RenderError(VM_TEMPLATE, None, f"invalid spec for {name}: {exc}") from exc
    return specs


def templates_root(ctx: StepContext) -> Path:
    """``<project root>/templates``; the package's when the project has no VM template."""
    own = ctx.root / "templates"
    if (own / VM_TEMPLATE).is_file():
        return own
    return package_templates()
