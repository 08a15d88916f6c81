"""What the vCenter holds, read read-only through pyVmomi (imported here, inside functions).

:func:`read_vcenter` logs in once (the inventory's ``vcenter`` section and its password
secret), reads with the property collector (vcsim drops the connection when an unset
property is read through pyVmomi's lazy accessors; a read whose connection drops is tried
again on the same session, as every read of the VMware department) and logs out:

- the cluster: its hosts' logical CPUs (``summary.hardware.numCpuThreads``) and memory
  (``summary.hardware.memorySize``);
- every VM and template of the datacenter: name, project (``guestinfo.infra.project`` of its
  extra config, else its folder), vCPUs, memory, power state, host, committed storage;
- the datastore's capacity and free space, and the disk size of each template (what a clone
  of it takes on the datastore).

Any failure (unreachable, refused login, a fault) raises :class:`VCenterUnreadable` with the
reason: the capacity of vCenter is then unknown, never zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from infra_automation.exceptions import InfraError

if TYPE_CHECKING:
    from infra_automation.departments.vmware import VCenter

CONNECT_TIMEOUT = 10  # seconds: a pre-flight never waits long on a vCenter that hangs
PROJECT_KEY = "guestinfo.infra.project"
VM_PROPERTIES = (
    "name",
    "parent",
    "config.template",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.extraConfig",
    "runtime.powerState",
    "runtime.host",
    "summary.storage.committed",
)
MIB = 1024 * 1024


class VCenterUnreadable(InfraError):
    """The vCenter's capacity could not be read (the reason is the message)."""


@dataclass(frozen=True)
class VmFacts:
    name: str
    project: str
    cpu: int
    memory_mb: int
    powered_on: bool
    template: bool
    host: str  # the host's MoID ("" when none)
    committed: int  # bytes on datastores


@dataclass(frozen=True)
class VCenterFacts:
    cluster: str
    cluster_threads: int
    cluster_memory_mb: float
    cluster_hosts: frozenset[str]  # MoIDs
    datastore: str
    datastore_capacity: int  # bytes
    datastore_free: int  # bytes
    vms: tuple[VmFacts, ...] = ()
    template_disks: dict[str, int] = field(default_factory=dict)  # template name -> bytes

    def in_cluster(self) -> list[VmFacts]:
        """The VMs (not templates) that run on the cluster's hosts."""
        return [v for v in self.vms if not v.template and v.host in self.cluster_hosts]

    def vm(self, name: str) -> VmFacts | None:
        return next((v for v in self.vms if v.name == name and not v.template), None)


def read_vcenter(vc: VCenter, password: str) -> VCenterFacts:
    """Everything the capacity pools need from ``vc`` (VCenterUnreadable on any failure)."""
    import pyVmomi

    from infra_automation.departments._vsphere import VSphere, read

    where = f"vCenter {vc.host}:{vc.port}"
    try:
        vs = VSphere.connect(vc, password, timeout=CONNECT_TIMEOUT)
        try:
            # read-only: tried again on the same session when the connection drops under it
            return read("read the capacity", lambda: _read(vs.si, vc, pyVmomi.vim, pyVmomi.vmodl))
        finally:
            vs.close()
    except VCenterUnreadable:
        raise
    except Exception as exc:  # any SDK, socket or HTTP failure: the capacity is unknown
        raise VCenterUnreadable(f"{where}: {type(exc).__name__}: {exc}") from exc


def _read(si: Any, vc: VCenter, vim: Any, vmodl: Any) -> VCenterFacts:
    search = si.content.searchIndex
    cluster = search.FindByInventoryPath(f"{vc.datacenter}/host/{vc.cluster}")
    if not isinstance(cluster, vim.ClusterComputeResource):
        raise VCenterUnreadable(f"cluster {vc.datacenter}/host/{vc.cluster} not found")
    datastore = search.FindByInventoryPath(f"{vc.datacenter}/datastore/{vc.datastore}")
    if not isinstance(datastore, vim.Datastore):
        raise VCenterUnreadable(f"datastore {vc.datacenter}/datastore/{vc.datastore} not found")
    datacenter = search.FindByInventoryPath(vc.datacenter)
    hosts = _collect(si, vim, vmodl, cluster, vim.HostSystem, ("summary.hardware",))
    threads = sum(int(p["summary.hardware"].numCpuThreads or 0) for _, p in hosts)
    memory = sum(int(p["summary.hardware"].memorySize or 0) for _, p in hosts)
    found = _collect(si, vim, vmodl, datacenter.vmFolder, vim.VirtualMachine, VM_PROPERTIES)
    vms = tuple(_vm(props) for _, props in found)
    templates = [obj for obj, props in found if props.get("config.template")]
    summary = datastore.summary
    return VCenterFacts(
        cluster=vc.cluster,
        cluster_threads=threads,
        cluster_memory_mb=memory / MIB,
        cluster_hosts=frozenset(obj._moId for obj, _ in hosts),
        datastore=vc.datastore,
        datastore_capacity=int(summary.capacity or 0),
        datastore_free=int(summary.freeSpace or 0),
        vms=vms,
        template_disks=_disks(si, vim, vmodl, templates),
    )


def _collect(
    si: Any,
    vim: Any,
    vmodl: Any,
    root: Any,
    kind: Any,
    paths: Sequence[str],
) -> list[tuple[Any, dict[str, Any]]]:
    """(object, {property: value}) of every ``kind`` under ``root`` (a container view)."""
    pc = vmodl.query.PropertyCollector
    view = si.content.viewManager.CreateContainerView(root, [kind], True)
    try:
        view_type = vim.view.ContainerView
        traverse = pc.TraversalSpec(name="view", path="view", skip=False, type=view_type)
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
            propSet=[pc.PropertySpec(type=kind, pathSet=list(paths))],
        )
        found = si.content.propertyCollector.RetrieveContents([spec]) or []
    finally:
        view.Destroy()
    return [(item.obj, {p.name: p.val for p in item.propSet}) for item in found]


def _vm(props: dict[str, Any]) -> VmFacts:
    extra = {o.key: str(o.value) for o in (props.get("config.extraConfig") or [])}
    parent = props.get("parent")
    folder = str(getattr(parent, "name", "") or "")
    host = props.get("runtime.host")
    return VmFacts(
        name=str(props.get("name", "")),
        project=extra.get(PROJECT_KEY) or folder,
        cpu=int(props.get("config.hardware.numCPU") or 0),
        memory_mb=int(props.get("config.hardware.memoryMB") or 0),
        powered_on=str(props.get("runtime.powerState", "")) == "poweredOn",
        template=bool(props.get("config.template")),
        host=str(getattr(host, "_moId", "") or ""),
        committed=int(props.get("summary.storage.committed") or 0),
    )


def _disks(si: Any, vim: Any, vmodl: Any, templates: Sequence[Any]) -> dict[str, int]:
    """Template name -> the capacity of its virtual disks (bytes)."""
    if not templates:
        return {}
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=t, skip=False) for t in templates],
        propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["name", "config.hardware"])],
    )
    out: dict[str, int] = {}
    for item in si.content.propertyCollector.RetrieveContents([spec]) or []:
        props = {p.name: p.val for p in item.propSet}
        devices = getattr(props.get("config.hardware"), "device", None) or []
        disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
        size = sum(int(d.capacityInBytes or 0) or int(d.capacityInKB or 0) * 1024 for d in disks)
        out[str(props.get("name", ""))] = size
    return out
