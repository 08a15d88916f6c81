"""IPAM host addresses: which VM of a project holds which address of the project's subnet.

``ipam.allocate`` gives a project its VLAN and subnet; the host addresses it hands out are
the first N of the subnet after the gateway. Once a project changes while it runs (scale up,
scale down), each address is recorded against its VM in this module's table
(``ipam_addresses``, unique per address), so that a removed VM's address is released and
the next VM gets the lowest free one. VMs built before any record (a build records none) are
adopted with the address they hold (``held``: the VMs as vCenter reports them, each with the
address its build gave it), so that no address of a VM that exists (the db VM's, after the
web VMs') is ever handed to another name.

``ipam.addresses`` (params ``names``, ``held``, ``release``): the ``held`` VMs' addresses are
recorded against them when not recorded yet; every name gets an address (its recorded one,
else the one it holds, else the lowest free); ``release`` names the records to release (a
scale-down, after the VMs are destroyed); with ``release_others`` the project's records of
any other name are released (decommission, with no names). Check mode shows the same and
writes nothing. The table is created when first used, like ``ipam_allocations``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Network

import sqlalchemy as sa
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator
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


class HeldAddress(BaseModel):
    """A VM that exists and the address it holds; extra fields are ignored so that the VMware
    department's VM records (``vmware.tier``'s ``current``: name, ip...) pass as they are."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: HostLabel
    address: str = Field(default="", validation_alias=AliasChoices("address", "ip"))


class AddressesParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: Name | None = Field(default=None, description="refuse if the allocation is elsewhere")
    names: list[HostLabel] = Field(default_factory=list, max_length=4096)
    held: list[HeldAddress] = Field(
        default_factory=list, max_length=4096, description="the project's VMs and their addresses"
    )
    release: list[HostLabel] = Field(default_factory=list, max_length=4096)
    release_others: bool = Field(default=False, description="release the project's other names")

    @model_validator(mode="after")
    def _kept_or_released(self) -> AddressesParams:
        both = sorted(set(self.names) & set(self.release))
        if both:
            raise ValueError(f"release: names also given an address: {', '.join(both)}")
        return self


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


def adopted(
    subnet: IPv4Network, held: Sequence[HeldAddress], recorded: Mapping[str, str]
) -> dict[str, str]:
    """name -> address of the ``held`` VMs to record: those not recorded yet, with the host
    address of the subnet they hold (none, or one outside the subnet: nothing to keep).
    TargetRejected when the address is recorded for another name (two VMs, one address)."""
    usable = {str(a) for a in list(subnet.hosts())[1:]}
    owner = {address: name for name, address in recorded.items()}
    out: dict[str, str] = {}
    for vm in held:
        if vm.name in recorded or vm.address not in usable:
            continue
        other = owner.get(vm.address) or next(
            (n for n, a in out.items() if a == vm.address and n != vm.name), None
        )
        if other is not None:
            raise TargetRejected(
                f"ipam: address {vm.address} is held by VM {vm.name!r} and recorded for "
                f"{other!r}: release one of them first"
            )
        out[vm.name] = vm.address
    return out


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
    names: Sequence[str],
    recorded: Mapping[str, str],
    *,
    release: Sequence[str] = (),
    release_others: bool = False,
) -> dict[str, str]:
    """name -> address of the records to release: those named in ``release``; with
    ``release_others`` every record not of ``names``."""
    if release_others:
        return {n: a for n, a in recorded.items() if n not in set(names)}
    return {n: a for n, a in recorded.items() if n in set(release)}


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
        description="Record a host address of the project's subnet per VM name (the VMs that "
        "exist keep theirs); release the others.",
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
            adopt = adopted(subnet, params.held, before) if subnet else {}
            known = {**before, **adopt}
            kept = [*params.names, *(vm.name for vm in params.held)]
            gone = released(
                kept, known, release=params.release, release_others=params.release_others
            )
            held = assign(subnet, params.names, known) if subnet else {}
            new = {n: a for n, a in {**adopt, **held}.items() if n not in before and n not in gone}
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
