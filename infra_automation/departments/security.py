"""Security department (cyber defence): the project's gateway ACLs and its hosts' firewall.

Executors:

- ``security.gateway_acl`` / ``security.gateway_acl_remove``: two access-lists for the
  project's gateway on the routers that hold it (roles ``core``, ``leaf``), rendered from
  ``templates/network/<platform>/gateway_acl.j2`` and pushed through the network
  department's Nornir + netmiko change cycle (diff, push, verify, save, rollback on failure;
  removal leaves the rest of the config alone). Outputs add the ACL entries read back from
  the running config.
- ``security.firewall_remove``: the decommission side of ``playbooks/firewall.yml``: the
  project's VMs that are still bound to a lab/pool host get their nftables table removed
  before the VMs go (a pool host is reused by the next project).

What the gateway ACL enforces, honestly: FRR's ``access-list`` (lib/filter, held by zebra
and bgpd) matches IP addresses only, and FRR has no ``ip access-group``: vtysh answers
``% Unknown command`` and zebra programs no packet filter. So the router *holds* the ACLs
(running and saved config, ``show ip access-list``), the change cycle diffs, verifies and
removes them, but no forwarded packet is filtered by them. Ports are enforced where FRR
cannot: on each host, by nftables (``playbooks/roles/firewall``).

- ``PROJECT-<project>-FROM-HOSTS``: traffic from the VLAN may only carry the project's
  source addresses (anti-spoofing), nothing else;
- ``PROJECT-<project>-TO-HOSTS``: the project's own addresses never arrive as a source from
  outside; anything else may reach the subnet (80 is open to anyone; SSH is limited per host).
"""

from __future__ import annotations

import re
from dataclasses import replace
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra_automation.departments.ansible import (
    HostAddress,
    PlaybookExecutor,
    PlaybookOutputs,
    PlaybookParams,
)
from infra_automation.departments.network import (
    ORIGIN_ROLES,
    ConfigureExecutor,
    ConfigureParams,
    DeviceState,
    Plan,
    UnconfigureParams,
    _validation_message,
    load_tasks,
    netmiko_platform,
    nothing_allocated,
    run_nornir,
)
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.render import render_template
from infra_automation.results import ErrorKind, StepResult
from infra_automation.validation import NAME_RE
from infra_automation.verify import ResourceCheck, VerifyContext, VerifyResult

ACL_TEMPLATE = "gateway_acl.j2"
FIREWALL_PLAYBOOK = "firewall.yml"
ENFORCEMENT = (
    "held in the router's config (zebra, bgpd): FRR matches IP addresses only and binds no "
    "access-list to interface traffic; packets are filtered by the hosts' nftables"
)


def acl_names(project: str) -> tuple[str, str]:
    """The project's two ACL names: (from the hosts, to the hosts)."""
    return f"PROJECT-{project}-FROM-HOSTS", f"PROJECT-{project}-TO-HOSTS"


class AclOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subnet: str
    acls: list[str]
    enforcement: str
    entries: dict[str, list[str]] = Field(description="device -> ACL lines read back")
    devices: list[DeviceState]


def make_acl_plan(ctx: StepContext) -> Plan:
    """Validate the params and the project, render each gateway router's ACLs."""
    try:
        params = ConfigureParams.model_validate(ctx.params.model_dump())
    except ValidationError as exc:
        raise ConfigurationError(_validation_message(exc)) from exc
    if not NAME_RE.fullmatch(ctx.project):
        raise ConfigurationError(f"project: {ctx.project!r} is not a valid name")
    candidates = list(ctx.targets) or params.devices or ctx.inventory.select(group=params.group)
    hosts = {name: ctx.inventory.connectable(name) for name in candidates}
    devices = [n for n, h in hosts.items() if h.data.get("role") in ORIGIN_ROLES]
    if not devices:
        raise ConfigurationError(
            f"no gateway router (roles {sorted(ORIGIN_ROLES)}) to hold the ACL"
        )
    from_hosts, to_hosts = acl_names(ctx.project)
    variables = {
        "network": str(params.subnet.network_address),
        "wildcard": str(params.subnet.hostmask),
        "acl_from_hosts": from_hosts,
        "acl_to_hosts": to_hosts,
    }
    intended = {}
    for name in devices:
        platform = netmiko_platform(hosts[name].platform)
        template = f"network/{platform}/{ACL_TEMPLATE}"
        intended[name] = render_template(ctx.root / "templates", template, variables)
    roles = {n: str(hosts[n].data.get("role")) for n in devices}
    base = {"subnet": str(params.subnet), "acls": [from_hosts, to_hosts]}
    return Plan(params, devices, roles, intended, base)


class GatewayAclExecutor(ConfigureExecutor):
    """The project's gateway ACLs on its gateway routers (see module docstring)."""

    info = ExecutorInfo(
        key="security.gateway_acl",
        department="security",
        description="Anti-spoofing access-lists of the project's gateway on its routers.",
        params=ConfigureParams,
        outputs=AclOutputs,
        requires=("nornir", "nornir_netmiko", "netmiko"),
        extra="network",
    )
    task_name = "apply_config"
    expect_learned = False

    def make_plan(self, ctx: StepContext) -> Plan:
        return make_acl_plan(ctx)

    def read_back(self, tasks: ModuleType, nornir: Any, plan: Plan, results: Any) -> Any:
        prefixes = [f"access-list {name} " for name in plan.outputs_base["acls"]]
        read = nornir.run(task=tasks.config_lines, name="acl read-back", prefixes=prefixes)
        return {d: list(read[d][0].result) for d in plan.devices if not read[d].failed}

    def outputs(self, plan: Plan, states: list[DeviceState], read: Any) -> dict[str, Any]:
        outputs = AclOutputs(
            **plan.outputs_base, enforcement=ENFORCEMENT, entries=read or {}, devices=states
        )
        return outputs.model_dump(mode="json")


class GatewayAclRemoveExecutor(GatewayAclExecutor):
    """Remove the project's gateway ACLs (decommission); a project IPAM holds no allocation
    of (never built, or decommissioned already) has none to remove."""

    info = ExecutorInfo(
        key="security.gateway_acl_remove",
        department="security",
        description="Remove the access-lists of the project's gateway from its routers.",
        params=UnconfigureParams,
        outputs=AclOutputs,
        requires=("nornir", "nornir_netmiko", "netmiko"),
        extra="network",
    )
    task_name = "remove_config"

    def _run(self, ctx: StepContext, check: bool) -> StepResult:
        network = ctx.typed_params(UnconfigureParams).network()
        if network is None:
            outputs = AclOutputs(
                subnet="", acls=[], enforcement=ENFORCEMENT, entries={}, devices=[]
            )
            return nothing_allocated(ctx, outputs.model_dump(mode="json"))
        return super()._run(replace(ctx, params=network), check)


# --- host firewall removal -------------------------------------------------------------------


class FirewallRemoveParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: int = Field(default=600, ge=10, le=86400)


def bound_vms(ctx: StepContext) -> list[str]:
    """The project's VMs bound to a host now (``<project>-<role>-<nn>``), whatever the binder
    (a pool host, a lab guest: :meth:`Inventory.bound_hosts`); none for a binder that keeps no
    table (a real site's VMs are their own hosts, gone with the VM)."""
    pattern = re.compile(rf"^{re.escape(ctx.project)}-[a-z0-9]+-[0-9]{{2,}}$")
    return sorted(vm for vm in ctx.inventory.bound_hosts() if pattern.fullmatch(vm))


class FirewallRemoveExecutor:
    """Remove the project's nftables table from the pool hosts of its VMs (decommission)."""

    info = ExecutorInfo(
        key="security.firewall_remove",
        department="security",
        description="Remove the host firewall from the project's VMs' pool hosts.",
        params=FirewallRemoveParams,
        outputs=PlaybookOutputs,
        supports_check=True,
        requires=("ansible_runner",),
        extra="ansible",
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self._run(replace(ctx, check=True))

    def apply(self, ctx: StepContext) -> StepResult:
        return self._run(ctx)

    def _run(self, ctx: StepContext) -> StepResult:
        if not NAME_RE.fullmatch(ctx.project):
            return StepResult.failure(
                f"project: {ctx.project!r} is not a valid name", kind=ErrorKind.INVALID
            )
        params = ctx.typed_params(FirewallRemoveParams)
        vms = bound_vms(ctx)
        if not vms:
            outputs = PlaybookOutputs(playbook=FIREWALL_PLAYBOOK, check=ctx.check)
            return StepResult.success(outputs=outputs.model_dump())
        playbook = PlaybookParams(
            playbook=FIREWALL_PLAYBOOK,
            hosts=[HostAddress(name=vm) for vm in vms],
            vars={"firewall_state": "absent"},
            timeout=params.timeout,
        )
        executor = PlaybookExecutor()
        inner = replace(ctx, params=playbook)
        return executor.preview(inner) if ctx.check else executor.apply(inner)


# --- drift (infra verify) ---------------------------------------------------------------------


class GatewayAclVerifier:
    """``infra verify``: the project's ACL lines are still in each gateway router's running
    config (the missing ones are the drift). Read-only, the network verifier's reading."""

    def verify(self, ctx: VerifyContext) -> VerifyResult:
        from infra_automation.verify_network import _device_checks, _read_device

        step = ctx.step
        plan = make_acl_plan(step)
        tasks = load_tasks(step.root)
        handle = run_nornir(step, plan.devices)
        with handle.lock:
            handle.nornir.data.reset_failed_hosts()
            nornir = handle.nornir.filter(filter_func=lambda h: h.name in plan.devices)
            results = nornir.run(
                task=_read_device,
                name="verify",
                tasks=tasks,
                intended=plan.intended,
                learn=set(),
                prefix=plan.outputs_base["subnet"],
            )
        checks: list[ResourceCheck] = []
        for device in plan.devices:
            intended = plan.intended[device]
            checks += _device_checks(device, results[device], intended, "", tasks)
        return VerifyResult(tuple(checks))


def gateway_acl_verifier() -> GatewayAclVerifier:
    return GatewayAclVerifier()
