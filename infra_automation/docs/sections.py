"""Section renderers: how one step's current state appears on the project's pages.

One Protocol (:class:`SectionRenderer`) and one registry (:data:`SECTIONS`), keyed by executor
key (``vmware.vms``) or, failing that, by department (``vmware``); anything else falls back to
:class:`GenericSection`, which lays out arbitrary outputs (scalars as facts, lists of mappings
as tables, long lists as blocks). Renderers produce plain data (:class:`Section`); the
templates under ``templates/docs/`` turn it into Markdown and do all the escaping.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from infra_automation.docs.ledger import Resource, TargetRecord
from infra_automation.docs.safety import display, is_url

# Pages a section can go to: file stem -> title (the order is the order of the links).
PAGES: dict[str, str] = {
    "network": "Network",
    "virtual-machines": "Virtual machines",
    "hosts": "Hosts and services",
    "resources": "Other resources",
}


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    link: bool = False


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Block:
    title: str
    text: str
    lang: str = ""


@dataclass(frozen=True)
class Section:
    page: str
    title: str
    facts: tuple[Fact, ...] = ()
    tables: tuple[Table, ...] = ()
    blocks: tuple[Block, ...] = ()
    subsections: tuple[Section, ...] = ()


class SectionRenderer(Protocol):
    """Turns one step's current state into sections of the project's pages."""

    def sections(self, resource: Resource) -> Sequence[Section]: ...


# --------------------------------------------------------------------------- generic layout


@dataclass
class Layout:
    """Accumulates facts, tables and blocks while walking an outputs mapping."""

    facts: list[Fact] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)

    def describe(self, name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            self._mapping(name, value)
        elif isinstance(value, list | tuple):
            self._sequence(name, list(value))
        else:
            self.facts.append(Fact(label(name), display(value), link=is_url(value)))

    def _mapping(self, name: str, value: Mapping[str, Any]) -> None:
        if value and all(isinstance(v, Mapping) for v in value.values()):
            rows = [{"name": k, **v} for k, v in value.items()]
            self.tables.append(dict_table(label(name), rows))
            return
        for key, item in value.items():
            self.describe(f"{name}.{key}" if name else str(key), item)

    def _sequence(self, name: str, value: list[Any]) -> None:
        if value and all(isinstance(v, Mapping) for v in value):
            self.tables.append(dict_table(label(name), value))
        elif _short_list(value):
            self.facts.append(Fact(label(name), display(value)))
        else:
            self.blocks.append(Block(label(name), "\n".join(display(v) for v in value)))

    def section(self, page: str, title: str, *extra: Section) -> Section:
        return Section(
            page=page,
            title=title,
            facts=tuple(self.facts),
            tables=tuple(self.tables),
            blocks=tuple(self.blocks),
            subsections=tuple(extra),
        )


def _short_list(value: list[Any]) -> bool:
    return len(value) <= 8 and all(
        not isinstance(v, Mapping | list) and len(display(v)) <= 40 and " " not in display(v)
        for v in value
    )


WORDS = {
    "cpu": "CPU",
    "ip": "IP",
    "ips": "IPs",
    "vlan": "VLAN",
    "id": "ID",
    "moid": "MoID",
    "url": "URL",
    "bgp": "BGP",
    "os": "OS",
    "mb": "(MB)",
    "gb": "(GB)",
    "vm": "VM",
    "vms": "VMs",
}
LABELS = {"num_cpu": "CPU", "vlan_id": "VLAN", "memory_mb": "Memory (MB)"}


def label(name: str) -> str:
    """``memory_mb`` -> ``Memory (MB)``, ``bgp_prefix_learned`` -> ``BGP prefix learned``."""
    head, _, last = name.rpartition(".")
    if last in LABELS:
        words = LABELS[last]
    else:
        parts = [WORDS.get(w.lower(), w) for w in last.split("_") if w]
        words = " ".join(parts) or "Value"
        words = words[0].upper() + words[1:]
    return f"{head}.{words}" if head else words


def dict_table(title: str, rows: Sequence[Mapping[str, Any]], order: Sequence[str] = ()) -> Table:
    """A table whose columns are ``order`` first, then every other key in order of appearance."""
    keys = [k for k in order if any(k in r for r in rows)]
    for row in rows:
        keys.extend(str(k) for k in row if k not in keys)
    return Table(
        title=title,
        headers=tuple(label(k) for k in keys),
        rows=tuple(tuple(display(r.get(k)) for k in keys) for r in rows),
    )


def targets_table(targets: Sequence[TargetRecord]) -> Table:
    return Table(
        title="Targets",
        headers=("Target", "Status", "Changed", "Error"),
        rows=tuple((t.target, t.status, display(t.changed), t.error or "") for t in targets),
    )


def pick(data: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present in ``data`` (field names differ between executors)."""
    return next((data[n] for n in names if n in data and data[n] not in (None, "")), None)


def step_title(resource: Resource, what: str = "") -> str:
    return f"{what or resource.executor or 'Step'} ({resource.step_id})"


# --------------------------------------------------------------------------- renderers


@dataclass(frozen=True)
class GenericSection:
    """Any executor: outputs as facts/tables/blocks, targets as a table with their details."""

    page: str = "resources"
    title: str = ""

    def sections(self, resource: Resource) -> Sequence[Section]:
        layout = Layout()
        for key, value in resource.outputs.items():
            layout.describe(str(key), value)
        if resource.targets:
            layout.tables.append(targets_table(resource.targets))
        details = tuple(_details_section(self.page, t) for t in resource.targets if t.details)
        return [layout.section(self.page, step_title(resource, self.title), *details)]


def _details_section(page: str, target: TargetRecord) -> Section:
    layout = Layout()
    for key, value in target.details.items():
        layout.describe(str(key), value)
    return layout.section(page, f"{target.target}: read back")


@dataclass(frozen=True)
class SpecSection:
    """Known fields first, with their labels and alternative names; the rest generically."""

    page: str
    title: str
    fields: tuple[tuple[str, tuple[str, ...]], ...]

    def sections(self, resource: Resource) -> Sequence[Section]:
        outputs = dict(resource.outputs)
        layout = Layout()
        for field_label, names in self.fields:
            value = pick(outputs, *names)
            if value is not None:
                layout.facts.append(Fact(field_label, display(value), link=is_url(value)))
            for name in names:
                outputs.pop(name, None)
        for key, value in outputs.items():
            layout.describe(str(key), value)
        if resource.targets:
            layout.tables.append(targets_table(resource.targets))
        details = tuple(_details_section(self.page, t) for t in resource.targets if t.details)
        return [layout.section(self.page, step_title(resource, self.title), *details)]


VM_COLUMNS = ("name", "cpu", "memory_mb", "portgroup", "power_state", "ip", "moid")
VM_ALIASES = {
    "cpu": ("cpu", "num_cpu", "cpus", "numCPU"),
    "memory_mb": ("memory_mb", "memoryMB", "memory"),
    "portgroup": ("portgroup", "network", "networks"),
    "power_state": ("power_state", "powerState", "power"),
    "ip": ("ip", "ip_address", "ips", "address"),
}


@dataclass(frozen=True)
class VmsSection:
    """Virtual machines read back from vCenter, one row each."""

    page: str = "virtual-machines"

    def sections(self, resource: Resource) -> Sequence[Section]:
        outputs = dict(resource.outputs)
        vms = _as_rows(outputs.pop("vms", None) or outputs.pop("machines", None))
        layout = Layout()
        if vms:
            rows = [_vm_row(vm) for vm in vms]
            layout.tables.append(dict_table("Virtual machines", rows, VM_COLUMNS))
        for key, value in outputs.items():
            layout.describe(str(key), value)
        if resource.targets:
            layout.tables.append(targets_table(resource.targets))
        return [layout.section(self.page, step_title(resource, "Virtual machines"))]


def _as_rows(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, Mapping):
        return [
            {"name": k, **v} if isinstance(v, Mapping) else {"name": k, "value": v}
            for k, v in value.items()
        ]
    if isinstance(value, list | tuple):
        return [v if isinstance(v, Mapping) else {"name": v} for v in value]
    return []


def _vm_row(vm: Mapping[str, Any]) -> dict[str, Any]:
    row = dict(vm)
    for column, names in VM_ALIASES.items():
        value = pick(vm, *names)
        for name in names:
            row.pop(name, None)
        row[column] = value
    return row


@dataclass(frozen=True)
class DevicesSection:
    """Network devices: per device what was read back and the configuration applied.

    Per-device data comes from ``outputs.devices`` (a list with ``device``/``name`` or a
    mapping by device name) or else from the targets' details; the configuration applied is
    the target's diff of the run that last changed it.
    """

    page: str = "network"

    def sections(self, resource: Resource) -> Sequence[Section]:
        outputs = dict(resource.outputs)
        devices = _devices(outputs.pop("devices", None))
        if not devices:
            devices = {t.target: dict(t.details) for t in resource.targets if t.details}
        layout = Layout()
        for key, value in outputs.items():
            layout.describe(str(key), value)
        if resource.targets:
            layout.tables.append(targets_table(resource.targets))
        diffs = {t.target: t for t in resource.targets if t.diff}
        names = list(devices) + [n for n in diffs if n not in devices]
        per_device = [
            _device_section(self.page, name, devices.get(name, {}), diffs.get(name))
            for name in names
        ]
        title = step_title(resource, "Device configuration")
        return [layout.section(self.page, title, *per_device)]


def _devices(value: Any) -> dict[str, Mapping[str, Any]]:
    if isinstance(value, Mapping):
        return {str(k): v if isinstance(v, Mapping) else {"value": v} for k, v in value.items()}
    if isinstance(value, list):
        return {
            str(d.get("device", d.get("name", i))): d
            for i, d in enumerate(value)
            if isinstance(d, Mapping)
        }
    return {}


def _device_section(
    page: str, name: str, data: Mapping[str, Any], target: TargetRecord | None
) -> Section:
    layout = Layout()
    for key, value in data.items():
        if key not in ("device", "name"):
            layout.describe(str(key), value)
    if target is not None:
        when = f" (run {target.diff_run})" if target.diff_run else ""
        layout.blocks.append(Block(f"Configuration applied{when}", target.diff, "diff"))
    return layout.section(page, f"Device {name}")


@dataclass(frozen=True)
class NoSection:
    """Steps that have nothing to show on the resource pages (e.g. the docs step itself)."""

    def sections(self, resource: Resource) -> Sequence[Section]:
        return []


# --------------------------------------------------------------------------- registry


class SectionRegistry:
    """Section renderers by executor key or department, with a generic fallback."""

    def __init__(self, fallback: Callable[[str], SectionRenderer]) -> None:
        self._renderers: dict[str, SectionRenderer] = {}
        self._fallback = fallback
        self._lock = threading.Lock()

    def register(self, key: str, renderer: SectionRenderer, *, replace: bool = False) -> None:
        with self._lock:
            if key in self._renderers and not replace:
                raise ValueError(f"a docs section renderer for {key!r} is already registered")
            self._renderers[key] = renderer

    def unregister(self, key: str) -> None:
        with self._lock:
            self._renderers.pop(key, None)

    def for_step(self, executor: str, department: str) -> SectionRenderer:
        found = self._renderers.get(executor) or self._renderers.get(department)
        return found if found is not None else self._fallback(department)

    def render(self, resource: Resource) -> list[Section]:
        renderer = self.for_step(resource.executor, resource.department)
        return list(renderer.sections(resource))


def _generic(department: str) -> SectionRenderer:
    return GenericSection(page="resources", title=f"{department or 'other'}")


SECTIONS = SectionRegistry(_generic)
SECTIONS.register(
    "ipam.allocate",
    SpecSection(
        page="network",
        title="IP allocation",
        fields=(
            ("VLAN", ("vlan_id", "vlan")),
            ("Subnet", ("subnet", "cidr", "network")),
            ("Prefix length", ("prefix_length", "prefixlen")),
            ("Netmask", ("netmask",)),
            ("Gateway", ("gateway",)),
            ("Pool", ("pool",)),
        ),
    ),
)
SECTIONS.register("network.configure", DevicesSection())
SECTIONS.register("network", DevicesSection())
SECTIONS.register("ipam", GenericSection(page="network", title="IPAM"))
SECTIONS.register("vmware.vms", VmsSection())
SECTIONS.register(
    "vmware.portgroup",
    SpecSection(
        page="virtual-machines",
        title="Port group",
        fields=(("Port group", ("portgroup", "name")), ("VLAN", ("vlan_id", "vlan"))),
    ),
)
SECTIONS.register(
    "vmware.folder",
    SpecSection(page="virtual-machines", title="VM folder", fields=(("Folder", ("folder",)),)),
)
SECTIONS.register("vmware", GenericSection(page="virtual-machines"))
SECTIONS.register(
    "os.playbook",
    SpecSection(page="hosts", title="Playbook", fields=(("Site URL", ("site_url", "url")),)),
)
SECTIONS.register("os", GenericSection(page="hosts"))
SECTIONS.register("web", GenericSection(page="hosts"))
SECTIONS.register("docs", NoSection())
