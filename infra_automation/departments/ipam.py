"""IPAM: a VLAN id and a subnet per project, from the inventory's pools (``ipam.pools``).

Allocations live in the run record's database (``StepContext.db``) in this module's own
table. Unique constraints on the VLAN id and on the subnet make two parallel runs unable to
take the same one: the loser of a race retries with the next free candidate. Overlaps
between subnets (pools of different sizes over the same space) are checked on top.

Allocating is idempotent (the same project gets the same allocation back, ``changed=False``);
``ipam.release`` frees it on decommission. Check mode shows the allocation that would be
made (or the existing one) and writes nothing.

Error kinds (``StepResult.error_kind``): a request the pools cannot mean — an unknown pool,
a VLAN or subnet outside its pool, more hosts than the subnet holds, a bad pool definition —
is ``invalid`` (:class:`ConfigurationError`: fix the request or the inventory). A valid
request the allocations refuse — the pool is exhausted, the VLAN or subnet is taken, the
project already holds a different allocation, parallel runs kept winning — is ``rejected``
(:class:`TargetRejected`: the allocator is the target of an allocation; retrying the same
request does not help until something is released). The same check fails the same way in
check mode and apply. Database errors of the run record are ``internal``.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Network
from typing import TYPE_CHECKING

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine

from infra_automation.exceptions import ConfigurationError, InfraError, TargetRejected
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.results import ErrorKind, StepResult, error_kind_of
from infra_automation.sections import Section
from infra_automation.validation import NAME_RE, Name

if TYPE_CHECKING:
    from infra_automation.inventory import Inventory

ATTEMPTS = 50  # races lost to parallel runs before giving up
HOSTS_MAX = 4096

metadata = sa.MetaData()
allocations = sa.Table(
    "ipam_allocations",
    metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("pool", sa.String(64), nullable=False),
    sa.Column("vlan_id", sa.Integer, nullable=False),
    sa.Column("subnet", sa.String(43), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False, default=""),
    sa.Column("allocated_at", sa.String(40), nullable=False),
    sa.UniqueConstraint("vlan_id", name="uq_ipam_vlan"),
    sa.UniqueConstraint("subnet", name="uq_ipam_subnet"),
)


# --- the department's inventory section ------------------------------------------------------


class IpamPool(BaseModel):
    """A pool of ``ipam.pools``: VLANs ``vlan_min..vlan_max``, subnets of ``supernet``."""

    model_config = ConfigDict(extra="forbid")

    vlan_min: int = Field(ge=1, le=4094)
    vlan_max: int = Field(ge=1, le=4094)
    supernet: str
    prefix_length: int = Field(ge=8, le=30)


class IpamConfig(BaseModel):
    """The inventory's ``ipam`` section."""

    model_config = ConfigDict(extra="forbid")

    pools: dict[str, IpamPool] = Field(default_factory=dict)


IPAM_SECTION = Section("ipam", IpamConfig)  # the entry point of infra_automation.sections


def ipam_config(inventory: Inventory) -> IpamConfig:
    """The inventory's ``ipam`` section; an inventory without one has no pools."""
    return inventory.section(IPAM_SECTION.name, IpamConfig, default=IpamConfig())


class AllocateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: Name = "default"
    hosts: int = Field(default=3, ge=0, le=HOSTS_MAX, description="host addresses to hand out")
    vlan_id: int | None = Field(default=None, ge=1, le=4094, description="ask for this VLAN")
    subnet: IPv4Network | None = Field(default=None, description="ask for this subnet")


class Allocation(BaseModel):
    """What a project got; used by the network, VMware and OS steps and by the docs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str
    pool: str
    vlan_id: int
    subnet: str  # CIDR, e.g. 10.20.3.0/24
    prefix_length: int
    netmask: str
    gateway: str
    hosts: list[str]


class ReleaseParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: Name | None = Field(default=None, description="refuse if the allocation is elsewhere")


class LookupParams(ReleaseParams):
    missing_ok: bool = Field(
        default=False,
        description="a project with no allocation (never built, or released) is no error",
    )


class LookupOutputs(BaseModel):
    """``ipam.lookup``: the project's allocation; with ``missing_ok`` and none, ``allocated``
    is false and the rest empty (None), which the decommission's removals take as nothing to
    remove."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allocated: bool
    project: str
    pool: str | None = None
    vlan_id: int | None = None
    subnet: str | None = None
    prefix_length: int | None = None
    netmask: str | None = None
    gateway: str | None = None
    hosts: list[str] = Field(default_factory=list)


class ReleaseOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    released: bool
    vlan_id: int | None = None
    subnet: str | None = None


@dataclass(frozen=True)
class Row:
    project: str
    pool: str
    vlan_id: int
    subnet: IPv4Network


# --- the allocator ---------------------------------------------------------------------------


class Ipam:
    """Allocations in one database. A request that cannot be met raises ConfigurationError,
    one the current allocations refuse TargetRejected; both with a clear message."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _create_tables(engine)

    def find(self, project: str) -> Row | None:
        with self.engine.connect() as conn:
            return _find(conn, project)

    def plan(self, project: str, pool_name: str, pool: IpamPool, params: AllocateParams) -> Row:
        """The existing allocation, or the one ``allocate`` would make now (nothing written)."""
        with self.engine.connect() as conn:
            return self._existing(conn, project, pool_name, params) or _choose(
                _rows(conn), project, pool_name, pool, params
            )

    def allocate(
        self, project: str, pool_name: str, pool: IpamPool, params: AllocateParams, run_id: str
    ) -> tuple[Row, bool]:
        """(allocation, created). Safe against parallel runs: the database decides."""
        last: Exception | None = None
        for attempt in range(ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    existing = self._existing(conn, project, pool_name, params)
                    if existing is not None:
                        return existing, False
                    row = _choose(_rows(conn), project, pool_name, pool, params)
                    conn.execute(allocations.insert().values(**_values(row, run_id)))
                    return row, True
            except (sa.exc.IntegrityError, sa.exc.OperationalError) as exc:
                last = exc  # another run took it first (or held the lock): look again
                time.sleep(0.01 * (attempt % 5))
        raise TargetRejected(
            f"ipam: could not allocate for project {project!r} after {ATTEMPTS} attempts: {last}"
        )

    def release(self, project: str, pool: str | None = None) -> Row | None:
        with self.engine.begin() as conn:
            row = _find(conn, project)
            _check_pool(row, pool)
            if row is not None:
                conn.execute(allocations.delete().where(allocations.c.project == project))
            return row

    def _existing(
        self, conn: Connection, project: str, pool_name: str, params: AllocateParams
    ) -> Row | None:
        row = _find(conn, project)
        if row is None:
            return None
        if row.pool != pool_name:
            raise TargetRejected(
                f"ipam: project {project!r} already has an allocation in pool {row.pool!r} "
                f"(requested pool {pool_name!r}); release it first"
            )
        if params.vlan_id is not None and params.vlan_id != row.vlan_id:
            raise TargetRejected(
                f"ipam: project {project!r} already has VLAN {row.vlan_id}, "
                f"not the requested {params.vlan_id}"
            )
        if params.subnet is not None and params.subnet != row.subnet:
            raise TargetRejected(
                f"ipam: project {project!r} already has subnet {row.subnet}, "
                f"not the requested {params.subnet}"
            )
        _check_hosts_fit(row.subnet, params.hosts)  # the project may have grown
        return row


def _choose(
    taken: list[Row], project: str, pool_name: str, pool: IpamPool, params: AllocateParams
) -> Row:
    vlan = _choose_vlan({r.vlan_id for r in taken}, pool_name, pool, params.vlan_id)
    subnet = _choose_subnet(taken, pool_name, pool, params.subnet)
    _check_hosts_fit(subnet, params.hosts)
    return Row(project, pool_name, vlan, subnet)


def _choose_vlan(taken: set[int], pool_name: str, pool: IpamPool, wanted: int | None) -> int:
    if wanted is not None:
        if not pool.vlan_min <= wanted <= pool.vlan_max:
            raise ConfigurationError(
                f"ipam: VLAN {wanted} is outside pool {pool_name!r} "
                f"({pool.vlan_min}-{pool.vlan_max})"
            )
        if wanted in taken:
            raise TargetRejected(f"ipam: VLAN {wanted} is already allocated")
        return wanted
    for vlan in range(pool.vlan_min, pool.vlan_max + 1):
        if vlan not in taken:
            return vlan
    raise TargetRejected(
        f"ipam: pool {pool_name!r} is exhausted: every VLAN {pool.vlan_min}-{pool.vlan_max} "
        "is allocated"
    )


def _choose_subnet(
    taken: list[Row], pool_name: str, pool: IpamPool, wanted: IPv4Network | None
) -> IPv4Network:
    supernet = pool_supernet(pool_name, pool)
    if wanted is not None:
        if not wanted.subnet_of(supernet):
            raise ConfigurationError(
                f"ipam: subnet {wanted} is outside pool {pool_name!r} ({supernet})"
            )
        clash = next((r for r in taken if r.subnet.overlaps(wanted)), None)
        if clash is not None:
            raise TargetRejected(
                f"ipam: subnet {wanted} overlaps {clash.subnet} of project {clash.project!r}"
            )
        return wanted
    used = [r.subnet for r in taken]
    for candidate in supernet.subnets(new_prefix=pool.prefix_length):
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise TargetRejected(
        f"ipam: pool {pool_name!r} is exhausted: no free /{pool.prefix_length} left in {supernet}"
    )


def pool_supernet(pool_name: str, pool: IpamPool) -> IPv4Network:
    try:
        supernet = ipaddress.ip_network(pool.supernet, strict=True)
    except ValueError as exc:
        raise ConfigurationError(f"ipam: pool {pool_name!r}: supernet: {exc}") from exc
    if not isinstance(supernet, IPv4Network):
        raise ConfigurationError(f"ipam: pool {pool_name!r}: supernet must be IPv4")
    if pool.prefix_length < supernet.prefixlen:
        raise ConfigurationError(
            f"ipam: pool {pool_name!r}: prefix_length /{pool.prefix_length} is larger than "
            f"the supernet {supernet}"
        )
    if pool.vlan_min > pool.vlan_max:
        raise ConfigurationError(f"ipam: pool {pool_name!r}: vlan_min is above vlan_max")
    return supernet


def _check_hosts_fit(subnet: IPv4Network, hosts: int) -> None:
    usable = max(subnet.num_addresses - 2, 0)
    if hosts + 1 > usable:
        raise ConfigurationError(
            f"ipam: hosts: {hosts} host addresses plus a gateway do not fit in {subnet} "
            f"({usable} usable addresses)"
        )


def describe(row: Row, hosts: int) -> Allocation:
    """The typed outputs: gateway = first usable address, then ``hosts`` host addresses."""
    usable = row.subnet.hosts()
    gateway = next(usable)
    addresses = [str(next(usable)) for _ in range(hosts)]
    return Allocation(
        project=row.project,
        pool=row.pool,
        vlan_id=row.vlan_id,
        subnet=str(row.subnet),
        prefix_length=row.subnet.prefixlen,
        netmask=str(row.subnet.netmask),
        gateway=str(gateway),
        hosts=addresses,
    )


# --- database helpers -----------------------------------------------------------------------

_created: weakref.WeakSet[Engine] = weakref.WeakSet()
_created_lock = threading.Lock()


def _create_tables(engine: Engine) -> None:
    with _created_lock:
        if engine in _created:
            return
        for attempt in range(5):
            try:
                metadata.create_all(engine)
                break
            except sa.exc.OperationalError:  # another process created it at the same moment
                if attempt == 4:
                    raise
                time.sleep(0.1)
        _created.add(engine)


def _find(conn: Connection, project: str) -> Row | None:
    found = conn.execute(allocations.select().where(allocations.c.project == project)).first()
    return _row(found._mapping) if found is not None else None


def _rows(conn: Connection) -> list[Row]:
    return [_row(r._mapping) for r in conn.execute(allocations.select())]


def _row(data: sa.RowMapping) -> Row:
    return Row(
        project=str(data["project"]),
        pool=str(data["pool"]),
        vlan_id=int(data["vlan_id"]),
        subnet=IPv4Network(str(data["subnet"])),
    )


def _values(row: Row, run_id: str) -> dict[str, object]:
    return {
        "project": row.project,
        "pool": row.pool,
        "vlan_id": row.vlan_id,
        "subnet": str(row.subnet),
        "run_id": run_id,
        "allocated_at": datetime.now(UTC).isoformat(),
    }


# --- executors --------------------------------------------------------------------------------


def _setup(ctx: StepContext) -> tuple[Ipam, str, IpamPool, AllocateParams]:
    params = AllocateParams.model_validate(ctx.params.model_dump())
    if not NAME_RE.fullmatch(ctx.project):
        raise ConfigurationError(f"ipam: project name {ctx.project!r} is not a valid name")
    if ctx.db is None:
        raise ConfigurationError("ipam: no database: the run record's engine is required")
    pools = ipam_config(ctx.inventory).pools
    if params.pool not in pools:
        known = ", ".join(sorted(pools)) or "none"
        raise ConfigurationError(
            f"ipam: pool: no pool {params.pool!r} in inventory {ctx.inventory.name!r} "
            f"(known: {known})"
        )
    return Ipam(ctx.db), params.pool, pools[params.pool], params


def _failure(exc: Exception) -> StepResult:
    """A failed step of ``exc``'s kind: invalid, rejected, or internal (the database)."""
    return StepResult.failure(str(exc), kind=error_kind_of(exc))


class AllocateExecutor:
    info = ExecutorInfo(
        key="ipam.allocate",
        department="network",
        description="Allocate a VLAN id and a subnet (gateway + host addresses) to the project.",
        params=AllocateParams,
        outputs=Allocation,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        try:
            ipam, pool_name, pool, params = _setup(ctx)
            existing = ipam.find(ctx.project)
            row = ipam.plan(ctx.project, pool_name, pool, params)
        except (InfraError, sa.exc.SQLAlchemyError) as exc:
            return _failure(exc)
        out = describe(row, params.hosts)
        diff = "" if existing else f"+ VLAN {out.vlan_id}, subnet {out.subnet} ({pool_name})\n"
        return StepResult.success(
            changed=existing is None, diff=diff, outputs=out.model_dump(mode="json")
        )

    def apply(self, ctx: StepContext) -> StepResult:
        try:
            ipam, pool_name, pool, params = _setup(ctx)
            row, created = ipam.allocate(ctx.project, pool_name, pool, params, ctx.run_id)
        except (InfraError, sa.exc.SQLAlchemyError) as exc:
            return _failure(exc)
        out = describe(row, params.hosts)
        ctx.emit(
            "task",
            {"host": "ipam", "task": "allocate", "status": "changed" if created else "ok"},
        )
        diff = f"+ VLAN {out.vlan_id}, subnet {out.subnet} ({pool_name})\n" if created else ""
        return StepResult.success(changed=created, diff=diff, outputs=out.model_dump(mode="json"))


class LookupExecutor:
    """The project's existing allocation (decommission reads it; nothing is allocated)."""

    info = ExecutorInfo(
        key="ipam.lookup",
        department="network",
        description="Read the project's VLAN id and subnet; none fails (unless missing_ok).",
        params=LookupParams,
        outputs=LookupOutputs,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self.apply(ctx)

    def apply(self, ctx: StepContext) -> StepResult:
        try:
            row = _current(ctx)
        except (InfraError, sa.exc.SQLAlchemyError) as exc:
            return _failure(exc)
        missing = f"ipam: project {ctx.project!r} has no allocation (never built, or released)"
        if row is None and not ctx.typed_params(LookupParams).missing_ok:
            return StepResult.failure(missing, kind=ErrorKind.INVALID)
        if row is None:
            ctx.emit("task", {"host": "ipam", "task": missing, "status": "ok"})
            outputs = LookupOutputs(allocated=False, project=ctx.project)
        else:
            outputs = LookupOutputs(allocated=True, **describe(row, 0).model_dump(mode="json"))
        return StepResult.success(outputs=outputs.model_dump(mode="json"))


class ReleaseExecutor:
    info = ExecutorInfo(
        key="ipam.release",
        department="network",
        description="Release the project's VLAN id and subnet (decommission).",
        params=ReleaseParams,
        outputs=ReleaseOutputs,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        try:
            row = _current(ctx)
        except (InfraError, sa.exc.SQLAlchemyError) as exc:
            return _failure(exc)
        return _released(row)

    def apply(self, ctx: StepContext) -> StepResult:
        try:
            ipam, pool = _release_setup(ctx)
            row = ipam.release(ctx.project, pool)
        except (InfraError, sa.exc.SQLAlchemyError) as exc:
            return _failure(exc)
        return _released(row)


def _current(ctx: StepContext) -> Row | None:
    """The project's allocation as it stands (None if it has none); nothing is written."""
    ipam, pool = _release_setup(ctx)
    row = ipam.find(ctx.project)
    _check_pool(row, pool)
    return row


def _release_setup(ctx: StepContext) -> tuple[Ipam, str | None]:
    params = LookupParams.model_validate(ctx.params.model_dump())  # release's, or lookup's
    if ctx.db is None:
        raise ConfigurationError("ipam: no database: the run record's engine is required")
    return Ipam(ctx.db), params.pool


def _check_pool(row: Row | None, pool: str | None) -> None:
    if row is not None and pool is not None and row.pool != pool:
        raise ConfigurationError(
            f"ipam: pool: project {row.project!r} has its allocation in pool {row.pool!r}, "
            f"not {pool!r}"
        )


def _released(row: Row | None) -> StepResult:
    if row is None:
        return StepResult.success(outputs=ReleaseOutputs(released=False).model_dump())
    out = ReleaseOutputs(released=True, vlan_id=row.vlan_id, subnet=str(row.subnet))
    diff = f"- VLAN {row.vlan_id}, subnet {row.subnet} ({row.pool})\n"
    return StepResult.success(changed=True, diff=diff, outputs=out.model_dump())
