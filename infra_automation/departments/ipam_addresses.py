"""IPAM host addresses: which VM of a project holds which address of the project's subnet.

``ipam.allocate`` gives a project its VLAN and subnet; the host addresses it hands out are
the first N of the subnet after the gateway. Once a project changes while it runs (scale up,
scale down), each address is recorded against its VM in this module's table
(``ipam_addresses``, unique per address), so that a removed VM's address is released and
the next VM gets the lowest free one. VMs built before any record are adopted in name order,
which gives each the address the build gave it.

``ipam.addresses`` (params ``names``): every name gets an address (its recorded one, else the
lowest free); with ``release_others`` the project's other records are released (a scale-down
after the VM is destroyed; decommission with no names). Check mode shows the same and writes
nothing. The table is created when first used, like ``ipam_allocations``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Network

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, Engine

from infra_automation.departments.ipam import Ipam, Row
from infra_automation.exceptions import ConfigurationError, InfraError, TargetRejected
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.results import StepResult, error_kind_of
from infra_automation.validation import HostLabel, Name

metadata = sa.MetaData()
addresses = sa.Table(
    "ipam_addresses",
    metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("address", sa.String(45), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False, default=""),
    sa.Column("assigned_at", sa.String(40), nullable=False),
    sa.UniqueConstraint("address", name="uq_ipam_address"),
)


class AddressesParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: Name | None = Field(default=None, description="refuse if the allocation is elsewhere")
    names: list[HostLabel] = Field(default_factory=list, max_length=4096)
    release_others: bool = Field(default=False, description="release the project's other names")


class HostAddress(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    address: str


class AddressesOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subnet: str  # "" when the project has no allocation (released)
    gateway: str
    hosts: list[HostAddress]  # in the order of params.names
    addresses: list[str]  # the same, addresses only (vmware.vms takes them)
    assigned: list[HostAddress]  # newly recorded
    released: list[HostAddress]


# --- the assignment (pure) ------------------------------------------------------------------


def assign(
    subnet: IPv4Network, names: Sequence[str], recorded: Mapping[str, str]
) -> dict[str, str]:
    """name -> address for ``names``: the recorded one, else the lowest free host address
    after the gateway (the first usable); TargetRejected when the subnet is full."""
    usable = list(subnet.hosts())[1:]
    taken = set(recorded.values())
    out: dict[str, str] = {}
    free = (str(a) for a in usable if str(a) not in taken)
    for name in names:
        if name in recorded:
            out[name] = recorded[name]
            continue
        address = next(free, None)
        if address is None:
            raise TargetRejected(
                f"ipam: subnet {subnet} has no free host address left for {name!r}"
            )
        out[name] = address
    return out


def released(
    names: Sequence[str], recorded: Mapping[str, str], *, release_others: bool
) -> dict[str, str]:
    if not release_others:
        return {}
    return {n: a for n, a in recorded.items() if n not in set(names)}


# --- database -------------------------------------------------------------------------------

_created: weakref.WeakSet[Engine] = weakref.WeakSet()
_created_lock = threading.Lock()


def _create_table(engine: Engine) -> None:
    with _created_lock:
        if engine not in _created:
            metadata.create_all(engine)
            _created.add(engine)


def recorded(conn: Connection, project: str) -> dict[str, str]:
    query = sa.select(addresses.c.name, addresses.c.address).where(addresses.c.project == project)
    return {str(r.name): str(r.address) for r in conn.execute(query)}


def project_addresses(engine: Engine, project: str) -> dict[str, str]:
    """The project's recorded addresses (name -> address)."""
    _create_table(engine)
    with engine.connect() as conn:
        return recorded(conn, project)


def _write(
    conn: Connection, project: str, new: Mapping[str, str], gone: Mapping[str, str], run_id: str
) -> None:
    now = datetime.now(UTC).isoformat()
    for name, address in new.items():
        conn.execute(
            addresses.insert().values(
                project=project, name=name, address=address, run_id=run_id, assigned_at=now
            )
        )
    if gone:
        conn.execute(
            addresses.delete().where(
                addresses.c.project == project, addresses.c.name.in_(list(gone))
            )
        )


# --- the executor ---------------------------------------------------------------------------


class AddressesExecutor:
    info = ExecutorInfo(
        key="ipam.addresses",
        department="network",
        description="Record a host address of the project's subnet per VM name; release others.",
        params=AddressesParams,
        outputs=AddressesOutputs,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return _addresses(ctx, write=False)

    def apply(self, ctx: StepContext) -> StepResult:
        return _addresses(ctx, write=True)


def _addresses(ctx: StepContext, *, write: bool) -> StepResult:
    params = AddressesParams.model_validate(ctx.params.model_dump())
    try:
        if ctx.db is None:
            raise ConfigurationError("ipam: no database: the run record's engine is required")
        _create_table(ctx.db)
        allocation = _allocation(ctx.db, ctx.project, params)
        with ctx.db.begin() if write else ctx.db.connect() as conn:
            before = recorded(conn, ctx.project)
            subnet = allocation.subnet if allocation else None
            held = assign(subnet, params.names, before) if subnet else {}
            gone = released(params.names, before, release_others=params.release_others)
            new = {n: a for n, a in held.items() if n not in before}
            if write:
                _write(conn, ctx.project, new, gone, ctx.run_id)
    except (InfraError, sa.exc.SQLAlchemyError) as exc:
        return StepResult.failure(str(exc), kind=error_kind_of(exc))
    return _result(allocation, params.names, held, new, gone)


def _allocation(engine: Engine, project: str, params: AddressesParams) -> Row | None:
    row = Ipam(engine).find(project)
    if row is not None and params.pool is not None and row.pool != params.pool:
        raise ConfigurationError(
            f"ipam: pool: project {project!r} has its allocation in pool {row.pool!r}, "
            f"not {params.pool!r}"
        )
    if row is None and params.names:
        raise ConfigurationError(
            f"ipam: names: project {project!r} has no allocation (never built, or released)"
        )
    return row


def _result(
    allocation: Row | None,
    names: Sequence[str],
    held: Mapping[str, str],
    new: Mapping[str, str],
    gone: Mapping[str, str],
) -> StepResult:
    lines = [f"+ address {a} {n}" for n, a in new.items()]
    lines += [f"- address {a} {n}" for n, a in gone.items()]
    gateway = str(next(allocation.subnet.hosts())) if allocation else ""
    outputs = AddressesOutputs(
        subnet=str(allocation.subnet) if allocation else "",
        gateway=gateway,
        hosts=[HostAddress(name=n, address=held[n]) for n in names],
        addresses=[held[n] for n in names],
        assigned=[HostAddress(name=n, address=a) for n, a in new.items()],
        released=[HostAddress(name=n, address=a) for n, a in gone.items()],
    )
    diff = "".join(line + "\n" for line in lines)
    return StepResult.success(changed=bool(lines), diff=diff, outputs=outputs.model_dump())
