"""Capacity: the headroom of every pool the catalog draws on, and the pre-flight check.

Pools (:class:`Pool`: capacity, used, used per project, free), read by :func:`read_headroom`:

====================== ======= ==================================================================
pool id                unit    capacity / used
====================== ======= ==================================================================
``ipam:P:vlans``       VLANs   ``vlan_min..vlan_max`` of IPAM pool P / VLANs allocated in that range
``ipam:P:subnets``     subnets the ``/prefix_length`` subnets of P's supernet / those overlapping an
                               allocation
``vcenter:C:cpu``      vCPUs   logical CPUs of cluster C's hosts x ``cpu_overcommit`` / vCPUs of
                               its powered-on VMs
``vcenter:C:memory``   MiB     memory of C's hosts x ``memory_overcommit`` / configured memory of
                               its powered-on VMs (a powered-off VM holds none)
``vcenter:D:space``    GiB     datastore D's capacity less ``datastore_reserve`` / capacity - free
``hosts:G``            hosts   pre-provisioned guest hosts of group G (``host_binding: pool``, the
                               lab) / hosts bound to a VM
====================== ======= ==================================================================

A VM's project is its ``guestinfo.infra.project`` (set by ``vm.yml.j2``), else its folder; an
IPAM allocation's is its row's; a bound host's is the ``<project>`` of ``<project>-<role>-NN``.

**Pre-flight** (:func:`check_capacity`, called by the engine before a dry run, a run or a
submission starts): each planned step whose executor has a demand estimator (:data:`DEMANDS`,
keyed by executor key: ``ipam.allocate``, ``vmware.vms``) says what it would take — a VLAN
and a subnet for a project that has none; for each VM of ``vmware.vms`` that does not exist
yet its vCPUs, memory (``vm.yml.j2`` rendered as the executor renders it) and its template's
disk, for one that exists only what it grows by, and a guest host for each VM not bound yet.
A plan that needs more of an enforced pool than is free is refused with
:class:`CapacityExceeded` naming each pool and the shortfall; nothing runs and nothing is
recorded. Guest-host pools are advisory (shown, not enforced): the binder refuses the step
itself, in the dry run as in the apply. A pool that cannot be read (vCenter unreachable)
is unknown, never zero: it refuses nothing. The check is advisory against parallel runs
(two runs may pass it together); the allocators stay the authority.

``capacity.yml`` in the project root (optional)::

    check: true              # refuse plans over a pool (INFRA_CAPACITY_CHECK=0 turns it off)
    cpu_overcommit: 4        # vCPUs per logical CPU of the cluster
    memory_overcommit: 1     # configured VM memory per byte of host memory
    datastore_reserve: 0.1   # share of the datastore kept free
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine

from infra_automation import yamlio
from infra_automation.exceptions import (
    ConfigurationError,
    InfraError,
    InputFileError,
    PlanningError,
    RenderError,
)
from infra_automation.inventory import Inventory
from infra_automation.planner import Plan, PlannedStep
from infra_automation.render import package_templates, render_template, render_value

CAPACITY_FILE = "capacity.yml"
CHECK_VARIABLE = "INFRA_CAPACITY_CHECK"
GIB = 1024**3
VM_TEMPLATE = "vmware/vm.yml.j2"


class CapacityPolicy(BaseModel):
    """``capacity.yml``: whether plans are checked, overcommit ratios, the datastore reserve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    check: bool = True
    cpu_overcommit: float = Field(default=4.0, gt=0, le=64)
    memory_overcommit: float = Field(default=1.0, gt=0, le=16)
    datastore_reserve: float = Field(default=0.0, ge=0, lt=1)


def load_policy(root: Path) -> CapacityPolicy:
    """``<root>/capacity.yml`` (defaults when absent); ConfigurationError naming bad fields."""
    path = root / CAPACITY_FILE
    if not path.is_file():
        return CapacityPolicy()
    try:
        data = yamlio.load_mapping(path)
        return CapacityPolicy.model_validate(data)
    except InputFileError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"{path}: {errors}") from exc


# --- pools ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    id: str  # e.g. vcenter:DC0_C0:memory
    source: str  # ipam | vcenter | hosts
    label: str  # what a person reads: "memory of cluster DC0_C0"
    unit: str
    capacity: float
    used: float
    by_project: Mapping[str, float] = field(default_factory=dict)
    enforced: bool = True  # a plan over it is refused (False: shown only)

    @property
    def free(self) -> float:
        return max(self.capacity - self.used, 0.0)

    @property
    def used_share(self) -> float | None:
        return self.used / self.capacity if self.capacity > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "label": self.label,
            "unit": self.unit,
            "capacity": self.capacity,
            "used": self.used,
            "free": self.free,
            "used_share": self.used_share,
            "enforced": self.enforced,
            "by_project": dict(sorted(self.by_project.items())),
        }


@dataclass(frozen=True)
class Unreadable:
    source: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


@dataclass(frozen=True)
class Headroom:
    pools: tuple[Pool, ...]
    unreadable: tuple[Unreadable, ...] = ()

    def pool(self, pool_id: str) -> Pool | None:
        return next((p for p in self.pools if p.id == pool_id), None)

    def for_project(self, project: str) -> Headroom:
        """Only the pools the project uses (every pool when it uses none yet)."""
        used = tuple(p for p in self.pools if p.by_project.get(project))
        return Headroom(used or self.pools, self.unreadable)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pools": [p.to_dict() for p in self.pools],
            "unreadable": [u.to_dict() for u in self.unreadable],
        }


class CapacityContext:
    """What the pool readers and demand estimators share for one check: the inventory, the
    record's database, the policy, and each source read at most once."""

    def __init__(
        self,
        inventory: Inventory,
        db: Engine | None,
        root: Path,
        policy: CapacityPolicy | None = None,
    ) -> None:
        self.inventory = inventory
        self.db = db
        self.root = root
        self.policy = policy or load_policy(root)
        self._read: dict[str, Any] = {}

    def once(self, key: str, read: Callable[[], Any]) -> Any:
        if key not in self._read:
            self._read[key] = read()
        return self._read[key]

    @cached_property
    def allocations(self) -> list[tuple[str, str, int, IPv4Network]]:
        """(project, pool, vlan, subnet) of every IPAM allocation in the record."""
        if self.db is None:
            return []
        from infra_automation.departments.ipam import allocations

        with self.db.connect() as conn:
            if not sa.inspect(conn).has_table(allocations.name):
                return []
            c = allocations.c
            rows = conn.execute(sa.select(c.project, c.pool, c.vlan_id, c.subnet)).all()
        return [(str(p), str(pool), int(v), IPv4Network(str(s))) for p, pool, v, s in rows]

    def vcenter(self) -> Any:
        """:class:`~infra_automation.metrics.vcenter_capacity.VCenterFacts` (read once)."""

        def read() -> Any:
            from infra_automation.departments.vmware import vcenter_config
            from infra_automation.metrics.vcenter_capacity import read_vcenter

            vc = vcenter_config(self.inventory)
            return read_vcenter(vc, self.inventory.secrets.get(vc.password_secret))

        return self.once("vcenter", read)

    def bindings(self) -> dict[str, str]:
        """VM -> guest host of the ``pool`` host binding (empty for other bindings)."""

        def read() -> dict[str, str]:
            if self.inventory.spec.host_binding.kind != "pool":
                return {}
            store = getattr(self.inventory.binder(), "store", None)
            if store is None:
                return {}
            with store.transaction(write=False) as table:
                return {str(k): str(v) for k, v in table.items()}

        found: dict[str, str] = self.once("bindings", read)
        return found


PoolReader = Callable[[CapacityContext], list[Pool]]


def ipam_pools(ctx: CapacityContext) -> list[Pool]:
    """VLANs and subnets of each IPAM pool of the inventory."""
    from infra_automation.departments.ipam import ipam_config, pool_supernet

    out: list[Pool] = []
    allocations = ctx.allocations
    for name, spec in sorted(ipam_config(ctx.inventory).pools.items()):
        vlans: dict[str, float] = defaultdict(float)
        for project, _, vlan, _ in allocations:
            if spec.vlan_min <= vlan <= spec.vlan_max:
                vlans[project] += 1
        out.append(
            Pool(f"ipam:{name}:vlans", "ipam", f"VLANs of IPAM pool {name}", "VLANs",
                 spec.vlan_max - spec.vlan_min + 1, sum(vlans.values()), dict(vlans))
        )  # fmt: skip
        supernet = pool_supernet(name, spec)
        blocked, by_project = _blocked_subnets(supernet, spec.prefix_length, allocations)
        out.append(
            Pool(f"ipam:{name}:subnets", "ipam", f"/{spec.prefix_length} subnets of IPAM pool "
                 f"{name} ({supernet})", "subnets", 2 ** (spec.prefix_length - supernet.prefixlen),
                 blocked, by_project)
        )  # fmt: skip
    return out


def _blocked_subnets(
    supernet: IPv4Network, prefix: int, allocations: Iterable[tuple[str, str, int, IPv4Network]]
) -> tuple[float, dict[str, float]]:
    """How many ``/prefix`` subnets of ``supernet`` overlap an allocation, and per project."""
    blocked: set[int] = set()
    by_project: dict[str, float] = defaultdict(float)
    size = 2 ** (32 - prefix)
    base = int(supernet.network_address)
    for project, _, _, subnet in allocations:
        if not subnet.overlaps(supernet):
            continue
        start = max(int(subnet.network_address), base)
        end = min(int(subnet.broadcast_address), int(supernet.broadcast_address))
        indices = set(range((start - base) // size, (end - base) // size + 1))
        by_project[project] += len(indices - blocked)
        blocked |= indices
    return float(len(blocked)), dict(by_project)


def vcenter_pools(ctx: CapacityContext) -> list[Pool]:
    """vCPUs and memory of the inventory's cluster, space of its datastore."""
    facts = ctx.vcenter()
    policy = ctx.policy
    running = [v for v in facts.in_cluster() if v.powered_on]
    cpu: dict[str, float] = defaultdict(float)
    memory: dict[str, float] = defaultdict(float)
    for vm in running:
        cpu[vm.project] += vm.cpu
        memory[vm.project] += vm.memory_mb
    space: dict[str, float] = defaultdict(float)
    for vm in facts.vms:
        if vm.committed:
            space[vm.project] += vm.committed / GIB
    capacity_gib = facts.datastore_capacity / GIB
    cluster = facts.cluster
    return [
        Pool(f"vcenter:{cluster}:cpu", "vcenter", f"vCPUs of cluster {cluster} "
             f"({facts.cluster_threads} logical CPUs x {policy.cpu_overcommit:g})", "vCPUs",
             facts.cluster_threads * policy.cpu_overcommit, sum(cpu.values()), dict(cpu)),
        Pool(f"vcenter:{cluster}:memory", "vcenter", f"memory of cluster {cluster}", "MiB",
             round(facts.cluster_memory_mb * policy.memory_overcommit, 1),
             sum(memory.values()), dict(memory)),
        Pool(f"vcenter:{facts.datastore}:space", "vcenter", f"space of datastore "
             f"{facts.datastore}", "GiB", round(capacity_gib * (1 - policy.datastore_reserve), 2),
             round((facts.datastore_capacity - facts.datastore_free) / GIB, 2), dict(space)),
    ]  # fmt: skip


def host_pools(ctx: CapacityContext) -> list[Pool]:
    """The pre-provisioned guest hosts of a ``pool`` host binding (the lab)."""
    binding = ctx.inventory.spec.host_binding
    if binding.kind != "pool" or not binding.group:
        return []
    hosts = set(ctx.inventory.select(group=binding.group))
    by_project: dict[str, float] = defaultdict(float)
    for vm, host in ctx.bindings().items():
        if host in hosts:
            by_project[project_of_vm(vm)] += 1
    return [
        Pool(f"hosts:{binding.group}", "hosts", f"guest hosts of group {binding.group}",
             "hosts", len(hosts), sum(by_project.values()), dict(by_project), enforced=False)
    ]  # fmt: skip


def project_of_vm(name: str) -> str:
    """``shop`` of ``shop-web-01`` (VM names are ``<project>-<role>-NN``)."""
    parts = name.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else name


#: source -> reader; a third party adds its own pools here.
SOURCES: dict[str, PoolReader] = {
    "ipam": ipam_pools,
    "vcenter": vcenter_pools,
    "hosts": host_pools,
}


def read_headroom(ctx: CapacityContext, sources: Iterable[str] | None = None) -> Headroom:
    """The pools of ``sources`` (default: all); a source that fails is listed as unreadable."""
    pools: list[Pool] = []
    unreadable: list[Unreadable] = []
    for name in sources if sources is not None else SOURCES:
        reader = SOURCES[name]
        try:
            pools += ctx.once(f"pools:{name}", lambda: reader(ctx))  # noqa: B023 - called now
        except (InfraError, OSError, sa.exc.SQLAlchemyError, ValueError) as exc:
            unreadable.append(Unreadable(name, str(exc)))
    return Headroom(tuple(pools), tuple(unreadable))


# --- demands and the pre-flight check ---------------------------------------------------------


@dataclass(frozen=True)
class Demand:
    pool: str
    amount: float
    step_id: str
    what: str  # e.g. "2 new VMs of 4096 MiB"


@dataclass(frozen=True)
class Shortfall:
    pool: Pool
    needed: float
    steps: tuple[str, ...]

    @property
    def short(self) -> float:
        return self.needed - self.pool.free

    def message(self) -> str:
        p = self.pool
        return (
            f"{p.id} ({p.label}): the plan needs {_amount(self.needed, p.unit)}, "
            f"{_amount(p.free, p.unit)} free of {_amount(p.capacity, p.unit)} "
            f"(short by {_amount(self.short, p.unit)}; steps {', '.join(self.steps)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool.id,
            "label": self.pool.label,
            "unit": self.pool.unit,
            "needed": self.needed,
            "free": self.pool.free,
            "short": self.short,
            "enforced": self.pool.enforced,
            "steps": list(self.steps),
        }


@dataclass(frozen=True)
class CapacityCheck:
    headroom: Headroom
    demands: tuple[Demand, ...] = ()
    unknown: tuple[str, ...] = ()  # why a step's demand could not be told

    @cached_property
    def needed(self) -> dict[str, float]:
        total: dict[str, float] = defaultdict(float)
        for demand in self.demands:
            total[demand.pool] += demand.amount
        return dict(total)

    @cached_property
    def shortfalls(self) -> tuple[Shortfall, ...]:
        found = []
        for pool_id, needed in self.needed.items():
            pool = self.headroom.pool(pool_id)
            if pool is not None and needed > pool.free + 1e-9:
                steps = tuple(dict.fromkeys(d.step_id for d in self.demands if d.pool == pool_id))
                found.append(Shortfall(pool, needed, steps))
        return tuple(found)

    @property
    def refused(self) -> tuple[Shortfall, ...]:
        return tuple(s for s in self.shortfalls if s.pool.enforced)

    @property
    def fits(self) -> bool:
        return not self.refused

    def to_dict(self) -> dict[str, Any]:
        return {
            "fits": self.fits,
            "needed": self.needed,
            "shortfalls": [s.to_dict() for s in self.shortfalls],
            "demands": [d.__dict__ for d in self.demands],
            "unknown": list(self.unknown),
            **self.headroom.to_dict(),
        }


class CapacityExceeded(PlanningError):
    """A plan needs more of a pool than is free; ``check`` holds the pools and shortfalls."""

    def __init__(self, check: CapacityCheck) -> None:
        self.check = check
        shown = "; ".join(s.message() for s in check.refused)
        super().__init__(f"not enough capacity, nothing was run: {shown}")


class UnknownDemand(Exception):
    """A step's demand cannot be told before it runs (e.g. its count is an upstream output)."""


@dataclass(frozen=True)
class StepDemand:
    sources: tuple[str, ...]  # the pool sources the estimator reads
    estimate: Callable[[PlannedStep, Mapping[str, Any], CapacityContext], list[Demand]]


def _param(step: PlannedStep, name: str, variables: Mapping[str, Any], default: Any) -> Any:
    """One param of ``step`` rendered over the request (UnknownDemand when it reads steps)."""
    if name not in step.params:
        return default
    try:
        return render_value(step.params[name], variables, f"steps.{step.id}.params.{name}")
    except RenderError as exc:
        raise UnknownDemand(f"step {step.id!r}: {name} is known only when it runs") from exc


def _int(value: Any, step: PlannedStep, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UnknownDemand(f"step {step.id!r}: {name} {value!r} is not a number") from None


def ipam_demand(
    step: PlannedStep, variables: Mapping[str, Any], ctx: CapacityContext
) -> list[Demand]:
    """A VLAN and a subnet of the pool, unless the project has its allocation already."""
    pool = str(_param(step, "pool", variables, "default"))
    project = str(variables["project"])
    if any(row[0] == project for row in ctx.allocations):
        return []
    what = f"a VLAN and a subnet for project {project}"
    return [
        Demand(f"ipam:{pool}:vlans", 1, step.id, what),
        Demand(f"ipam:{pool}:subnets", 1, step.id, what),
    ]


def vms_demand(
    step: PlannedStep, variables: Mapping[str, Any], ctx: CapacityContext
) -> list[Demand]:
    """vCPUs, memory and disk of the VMs that do not exist yet (the growth of those that do),
    a guest host for each VM not bound yet."""
    count = _int(_param(step, "count", variables, None), step, "count")
    project = str(_param(step, "project", variables, variables["project"]))
    role = str(_param(step, "role", variables, "app"))
    names = [f"{project}-{role}-{i:02d}" for i in range(1, count + 1)]
    cpu, memory = _vm_size(step, variables, ctx, project, role)
    from infra_automation.departments.vmware import vcenter_config

    facts = ctx.vcenter()
    default_template = vcenter_config(ctx.inventory).template
    template = str(_param(step, "template", variables, None) or default_template)
    disk = facts.template_disks.get(template, 0) / GIB
    cluster = facts.cluster
    new = [n for n in names if facts.vm(n) is None]
    grow_cpu = grow_memory = 0.0
    for name in names:
        vm = facts.vm(name)
        if vm is not None and vm.powered_on:
            grow_cpu += max(cpu - vm.cpu, 0)
            grow_memory += max(memory - vm.memory_mb, 0)
        elif vm is not None:  # powered off: it takes its whole size once powered on
            grow_cpu, grow_memory = grow_cpu + cpu, grow_memory + memory
    what = f"{len(new)} new VMs of {cpu} vCPUs / {memory} MiB"
    demands = [
        Demand(f"vcenter:{cluster}:cpu", len(new) * cpu + grow_cpu, step.id, what),
        Demand(f"vcenter:{cluster}:memory", len(new) * memory + grow_memory, step.id, what),
        Demand(f"vcenter:{facts.datastore}:space", round(len(new) * disk, 3), step.id, what),
    ]
    binding = ctx.inventory.spec.host_binding
    if binding.kind == "pool" and binding.group:
        unbound = [n for n in names if n not in ctx.bindings()]
        demands.append(
            Demand(f"hosts:{binding.group}", len(unbound), step.id, f"{len(unbound)} VMs")
        )
    return [d for d in demands if d.amount > 0]


def _vm_size(
    step: PlannedStep, variables: Mapping[str, Any], ctx: CapacityContext, project: str, role: str
) -> tuple[int, int]:
    """(vCPUs, memory MiB) of one VM, from ``vm.yml.j2`` as the executor renders it."""
    own = ctx.root / "templates"
    root = own if (own / VM_TEMPLATE).is_file() else package_templates()
    values = {
        "name": f"{project}-{role}-01",
        "project": project,
        "role": role,
        "index": 1,
        "size": _param(step, "size", variables, "small"),
        "cpu": _param(step, "cpu", variables, None),
        "memory_mb": _param(step, "memory_mb", variables, None),
        "portgroup": project,
        "ip": "192.0.2.1",
        "description": "",
    }
    try:
        spec = yaml.safe_load(render_template(root, VM_TEMPLATE, values))
        return int(spec["cpu"]), int(spec["memory_mb"])
    except (InfraError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise UnknownDemand(f"step {step.id!r}: VM size: {exc}") from exc


#: executor key -> what a step of it takes from the pools.
DEMANDS: dict[str, StepDemand] = {
    "ipam.allocate": StepDemand(("ipam",), ipam_demand),
    "vmware.vms": StepDemand(("vcenter", "hosts"), vms_demand),
}


def plan_variables(plan: Plan) -> dict[str, Any]:
    """What a step's params see before anything ran (no ``steps``)."""
    return {
        "project": plan.project,
        "service": plan.service,
        "requester": plan.request.requester,
        "params": dict(plan.request.params),
    }


def assess(plan: Plan, ctx: CapacityContext) -> CapacityCheck:
    """What ``plan`` takes from each pool and what is free (nothing raised for a shortfall)."""
    steps = [s for s in plan.steps if s.executor in DEMANDS]
    sources = sorted({src for s in steps for src in DEMANDS[s.executor].sources})
    headroom = read_headroom(ctx, sources)
    broken = {u.source for u in headroom.unreadable}
    variables = plan_variables(plan)
    demands: list[Demand] = []
    unknown: list[str] = [f"{u.source}: {u.reason}" for u in headroom.unreadable]
    for step in steps:
        estimator = DEMANDS[step.executor]
        if broken & set(estimator.sources[:1]):
            continue  # its main source is unreadable: its demand is unknown
        try:
            demands += estimator.estimate(step, variables, ctx)
        except UnknownDemand as exc:
            unknown.append(str(exc))
        except (InfraError, OSError, sa.exc.SQLAlchemyError) as exc:
            unknown.append(f"step {step.id!r}: {exc}")
    return CapacityCheck(headroom, tuple(demands), tuple(unknown))


def check_capacity(
    plan: Plan, inventory: Inventory, db: Engine | None, root: Path
) -> CapacityCheck | None:
    """The engine's pre-flight: :class:`CapacityExceeded` if ``plan`` needs more of an
    enforced pool than is free. None when nothing was checked (no step draws on a pool, or
    the check is off in ``capacity.yml`` or by ``INFRA_CAPACITY_CHECK=0``)."""
    if not any(s.executor in DEMANDS for s in plan.steps):
        return None
    if os.environ.get(CHECK_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    ctx = CapacityContext(inventory, db, root)
    if not ctx.policy.check:
        return None
    found = assess(plan, ctx)
    if not found.fits:
        raise CapacityExceeded(found)
    return found


def _amount(value: float, unit: str) -> str:
    shown = f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value)}"
    if value == 1 and unit.endswith("s"):  # 1 VLAN, 1 host; MiB and GiB are not plurals
        unit = unit[:-1]
    return f"{shown} {unit}"


def amount(value: float, unit: str) -> str:
    """``12286.5 MiB``, ``3 VLANs``: a pool's figure as text."""
    return _amount(value, unit)
