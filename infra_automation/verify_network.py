"""Verifiers of the network department: IPAM allocations and router configuration.

- ``ipam.allocate``: the project's allocation is still in IPAM with the recorded VLAN and
  subnet (a database read).
- ``network.configure``: per router, the lines the step's template renders for it are in
  the running config (``show running-config``; the missing lines are the diff), and on the
  edge routers the project's subnet is in the BGP table with a valid path
  (``show ip bgp <subnet> json``). One Nornir run over the step's routers, read-only: the
  same connection settings, templates and tasks as ``network.configure`` itself.

A router that does not answer makes its resources ``unverifiable`` with the error kind.
"""

from __future__ import annotations

from typing import Any

from infra_automation.departments import network
from infra_automation.departments.ipam import Ipam
from infra_automation.results import ErrorKind, error_kind_of
from infra_automation.verify import ResourceCheck, VerifyContext, VerifyResult

MISSING = "(missing)"


class IpamVerifier:
    """The allocation recorded by ``ipam.allocate`` is still held by the project."""

    def verify(self, ctx: VerifyContext) -> VerifyResult:
        resource = f"IP allocation of {ctx.step.project}"
        if ctx.step.db is None:
            return VerifyResult.unverifiable(resource, "no IPAM database", ErrorKind.INTERNAL)
        row = Ipam(ctx.step.db).find(ctx.step.project)
        expected = _allocation(ctx.recorded.get("vlan_id"), ctx.recorded.get("subnet"))
        found = _allocation(row.vlan_id, row.subnet) if row is not None else MISSING
        return VerifyResult.of(
            ResourceCheck.compare(resource, expected, found, target="ipam", reason=_why(found))
        )


def _allocation(vlan: Any, subnet: Any) -> str:
    return f"vlan {vlan}\nsubnet {subnet}"


def _why(found: str) -> str:
    return "released or taken by another run" if found == MISSING else "allocation differs"


class RoutersVerifier:
    """Router configuration lines present, and the subnet learned over BGP at the edge."""

    def verify(self, ctx: VerifyContext) -> VerifyResult:
        step = ctx.step
        plan = network.make_plan(step)
        tasks = network.load_tasks(step.root)
        handle = network.run_nornir(step, plan.devices)
        prefix = str(plan.params.subnet)
        with handle.lock:
            handle.nornir.data.reset_failed_hosts()
            nornir = handle.nornir.filter(filter_func=lambda h: h.name in plan.devices)
            results = nornir.run(
                task=_read_device,
                name="verify",
                tasks=tasks,
                intended=plan.intended,
                learn={d for d in plan.devices if plan.roles[d] in network.LEARN_ROLES},
                prefix=prefix,
            )
        checks: list[ResourceCheck] = []
        for device in plan.devices:
            checks += _device_checks(device, results[device], plan.intended[device], prefix, tasks)
        return VerifyResult(tuple(checks))


def _read_device(
    task: Any, tasks: Any, intended: dict[str, str], learn: set[str], prefix: str
) -> Any:
    """Nornir task: the running config and, on edge routers, whether ``prefix`` is learned."""
    from nornir.core.task import Result

    running = tasks.read_running(task)
    learned = None
    if task.host.name in learn:
        learned = bool(tasks.bgp_prefix_learned(task, prefix).result)
    return Result(host=task.host, result={"running": running, "learned": learned})


def _device_checks(
    device: str, multi: Any, intended: str, prefix: str, tasks: Any
) -> list[ResourceCheck]:
    config = f"configuration of {device}"
    if multi.failed:
        error = network.device_error(multi)
        kind = error_kind_of(error)
        return [ResourceCheck.unverifiable(config, str(error), target=device, kind=kind)]
    data = multi[0].result
    want = tasks.clean(intended)
    absent = tasks.missing(want, data["running"])
    present = tasks.present_lines(want, tasks.clean(data["running"]))
    reason = f"{len(absent.splitlines())} configuration lines missing" if absent else ""
    checks = [
        ResourceCheck.in_sync(config, target=device, expected=want)
        if not absent
        else ResourceCheck.drifted(
            config, expected=want, found=present or MISSING, target=device, reason=reason
        )
    ]
    if data["learned"] is not None:
        found = "learned" if data["learned"] else "not learned"
        checks.append(
            ResourceCheck.compare(
                f"BGP route {prefix}",
                "learned",
                found,
                target=device,
                reason="the project's subnet is not in the BGP table",
            )
        )
    return checks


def routers() -> RoutersVerifier:
    return RoutersVerifier()


def ipam() -> IpamVerifier:
    return IpamVerifier()
