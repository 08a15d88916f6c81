"""The project's summary page, organised by what the client has (not by step or tool).

:func:`handover` reads the ledger's current state by the *shape* of the outputs, so any
executor producing the same fields shows up in the same place:

- IP plan: a step whose outputs have ``subnet`` and ``gateway`` (``ipam.allocate``);
- routers: outputs ``devices``, a list of ``{device, role, ...}`` (``network.configure``);
- VMs: outputs ``vms``, a list of ``{name, cpu, memory_mb, ip, power_state, ...}``; the
  portgroup and folder from steps with ``vlan_id``+``name`` / ``path``;
- hosts: outputs ``hosts``, a mapping host -> ``{bound_to, url, services, packages, facts}``
  (``os.playbook``): the site URLs, the services per host with their package versions, and,
  by the step's department, backup (``backup``) and monitoring (``monitoring``) facts;
- databases: outputs with ``database``, ``owner`` and ``port`` (``dba.postgresql``).

Tool internals (Ansible stats, MoIDs, SSH addresses) are left to the appendix page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra_automation.docs.ledger import ProjectLedger, Resource, VerificationRecord
from infra_automation.docs.pictures import PlanBox, VmBox, plan_picture, topology_picture
from infra_automation.docs.safety import display

SIZES = {"small": "small", "medium": "medium", "large": "large"}  # the request's vm_size


NETWORK_KEYS = (
    "vlan", "subnet", "gateway", "netmask", "pool", "interface", "prefix_list", "portgroup",
    "dvswitch", "folder",
)  # fmt: skip


@dataclass(frozen=True)
class HostView:
    name: str
    department: str
    data: Mapping[str, Any]


def handover(ledger: ProjectLedger) -> dict[str, Any]:
    """Everything the summary page shows, as plain rows for the template."""
    resources = list(ledger.state.values())
    hosts = _hosts(resources)
    vms = _vms(resources, hosts, SIZES.get(str(ledger.params.get("vm_size", "")), ""))
    network = _network(resources)
    routers = _routers(resources)
    return {
        "access": _access(resources, hosts),
        "network": network,
        "addresses": [(vm["name"], vm["address"]) for vm in vms if vm["address"]],
        "routers": routers,
        "vms": vms,
        "services": _services(hosts),
        "backup": _department_facts(hosts, "backup"),
        "monitoring": _department_facts(hosts, "monitoring"),
        "databases": _databases(resources),
        "owners": _owners(ledger),
        "verification": _verification(ledger),
        "plan_svg": plan_picture(_plan_boxes(ledger)) if ledger.plan else "",
        "topology_svg": _topology(routers, network, vms, hosts) if (vms or routers) else "",
    }


def _outputs_with(resources: list[Resource], *keys: str) -> list[Resource]:
    return [r for r in resources if all(r.outputs.get(k) not in (None, "") for k in keys)]


def _network(resources: list[Resource]) -> dict[str, str]:
    found: dict[str, str] = {}
    for r in _outputs_with(resources, "subnet", "gateway"):
        for key, names in (
            ("vlan", ("vlan_id", "vlan")),
            ("subnet", ("subnet",)),
            ("gateway", ("gateway",)),
            ("netmask", ("netmask",)),
            ("pool", ("pool",)),
            ("interface", ("interface",)),
            ("prefix_list", ("prefix_list",)),
        ):
            value = next((r.outputs[n] for n in names if r.outputs.get(n) not in (None, "")), None)
            if value is not None and key not in found:
                found[key] = display(value)
    for r in _outputs_with(resources, "vlan_id", "name", "dvswitch"):
        found.setdefault("portgroup", display(r.outputs["name"]))
        found.setdefault("dvswitch", display(r.outputs["dvswitch"]))
    for r in _outputs_with(resources, "path"):
        if r.executor.endswith("folder"):
            found.setdefault("folder", display(r.outputs["path"]))
    return {key: found.get(key, "") for key in NETWORK_KEYS} if found else {}


def _routers(resources: list[Resource]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for r in resources:
        devices = r.outputs.get("devices")
        if not isinstance(devices, list):
            continue
        for d in devices:
            if isinstance(d, Mapping) and d.get("device"):
                rows.append(_router_row(r, d))
    return rows


def _router_row(resource: Resource, device: Mapping[str, Any]) -> dict[str, str]:
    checks = []
    if device.get("lines_present") is not None:
        checks.append("config present" if device["lines_present"] else "config MISSING")
    if device.get("bgp_prefix_learned") is not None:
        checks.append("route learned" if device["bgp_prefix_learned"] else "route NOT learned")
    return {
        "name": str(device["device"]),
        "role": display(device.get("role")),
        "state": ", ".join(checks) or display(device.get("error")) or "configured",
        "department": resource.department,
    }


def _hosts(resources: list[Resource]) -> list[HostView]:
    views: list[HostView] = []
    for r in resources:
        hosts = r.outputs.get("hosts")
        if isinstance(hosts, Mapping):
            views += [
                HostView(str(name), r.department, data)
                for name, data in hosts.items()
                if isinstance(data, Mapping)
            ]
    return views


def _vms(resources: list[Resource], hosts: list[HostView], size: str) -> list[dict[str, str]]:
    bound = {h.name: display(h.data.get("bound_to")) for h in hosts if h.data.get("bound_to")}
    rows: list[dict[str, str]] = []
    for r in resources:
        vms = r.outputs.get("vms")
        if not isinstance(vms, list):
            continue
        for vm in vms:
            if isinstance(vm, Mapping) and vm.get("name"):
                name = str(vm["name"])
                rows.append(
                    {
                        "name": name,
                        "size": size,
                        "cpu": display(vm.get("cpu")),
                        "memory": _memory(vm.get("memory_mb")),
                        "address": display(vm.get("ip")),
                        "power": display(vm.get("power_state")),
                        "host": bound.get(name, ""),
                    }
                )
    return rows


def _memory(value: Any) -> str:
    if isinstance(value, int | float) and value >= 1024 and value % 1024 == 0:
        return f"{int(value) // 1024} GiB"
    return f"{display(value)} MiB" if value not in (None, "") else ""


def _access(resources: list[Resource], hosts: list[HostView]) -> list[tuple[str, str]]:
    rows = [(h.name, str(h.data["url"])) for h in hosts if h.data.get("url")]
    listed = {url for _, url in rows}
    for r in resources:
        urls = r.outputs.get("urls") or r.outputs.get("site_urls") or []
        if isinstance(urls, list):
            rows += [("", str(u)) for u in urls if str(u) not in listed]
    return rows


def _services(hosts: list[HostView]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for host in hosts:
        services = host.data.get("services")
        packages = host.data.get("packages") or {}
        if not isinstance(services, Mapping):
            continue
        for service, state in services.items():
            rows.append(
                {
                    "host": host.name,
                    "service": str(service),
                    "version": _version(str(service), packages),
                    "state": display(state),
                    "department": host.department,
                }
            )
    return sorted(rows, key=lambda r: (r["host"], r["department"], r["service"]))


def _version(service: str, packages: Any) -> str:
    if not isinstance(packages, Mapping):
        return ""
    if service in packages:
        return display(packages[service])
    close = [p for p in packages if service.startswith(p) or p.startswith(service)]
    return display(packages[close[0]]) if close else ""


def _department_facts(hosts: list[HostView], department: str) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for host in hosts:
        if host.department != department:
            continue
        facts = host.data.get("facts")
        packages = host.data.get("packages") or {}
        row = {"host": host.name, "tool": ", ".join(sorted(packages)) if packages else ""}
        if isinstance(facts, Mapping):
            row.update({str(k): display(v) for k, v in facts.items()})
        rows.append(row)
    return rows


DATABASE_KEYS = ("database", "owner", "server", "address", "port", "server_version")


def _databases(resources: list[Resource]) -> list[dict[str, str]]:
    """Databases: outputs with ``database``, ``owner`` and ``port`` (``dba.postgresql``);
    the clients it admits. Never a password: outputs hold none (only its secret's name)."""
    rows: list[dict[str, str]] = []
    for r in _outputs_with(resources, "database", "owner", "port"):
        row = {key: display(r.outputs.get(key)) for key in DATABASE_KEYS}
        row["clients"] = display(r.outputs.get("client_hosts") or r.outputs.get("clients") or [])
        row["department"] = r.department
        rows.append(row)
    return rows


def _owners(ledger: ProjectLedger) -> list[dict[str, str]]:
    state = ledger.verification.steps if ledger.verification else {}
    return [
        {
            "part": step.description or step.id,
            "department": step.department,
            "step": step.id,
            "status": step.status,
            "verified": state.get(step.id, ""),
        }
        for step in ledger.plan
    ]


def _verification(ledger: ProjectLedger) -> dict[str, Any] | None:
    record: VerificationRecord | None = ledger.verification
    if record is None:
        return None
    latest = ledger.latest_applied()
    stale = bool(
        latest
        and latest.started_at
        and record.finished_at
        and latest.started_at > record.finished_at
    )
    return {"record": record, "stale": stale, "latest_applied": latest}


def _plan_boxes(ledger: ProjectLedger) -> list[PlanBox]:
    return [PlanBox(s.id, s.department, s.executor, tuple(s.needs), s.status) for s in ledger.plan]


def _topology(
    routers: list[dict[str, str]],
    network: Mapping[str, str],
    vms: list[dict[str, str]],
    hosts: list[HostView],
) -> str:
    running: dict[str, list[str]] = {}
    for host in hosts:
        services = host.data.get("services")
        if isinstance(services, Mapping):
            for service, state in services.items():
                if str(service) not in running.setdefault(host.name, []) and state == "running":
                    running[host.name].append(str(service))
    boxes = [
        VmBox(
            vm["name"], vm["address"], vm["power"], vm["host"], tuple(running.get(vm["name"], []))
        )
        for vm in vms
    ]
    return topology_picture([(r["name"], r["role"]) for r in routers], network, boxes)
