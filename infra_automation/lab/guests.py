"""Lab guests on demand: each VM of the lab's vCenter simulator gets its own guest container.

vcsim's VMs have no guest. Instead of binding them to a fixed pool of hosts (``pool``), the
host binding kind ``lab-guests`` (entry point ``infra_automation.host_binders``) makes one
container per VM from the lab image when the VM is first bound (``bind``), with what the
lab's hosts have (:func:`infra_automation.lab.hosts.run_container`: the instance's network,
the lab key, CAP_NET_ADMIN, SSH and HTTP on 127.0.0.1), and removes it when the VM is
destroyed (``release``, called by the VMware department's destroy and decommission).

::

    infra lab up [--max-guests N]             (guests: the default) writes host_binding:
                                              {kind: lab-guests} and the
                                              lab_guests section into generated/lab.yml
    bind(vm)            the VM's guest (made once, under a reservation), its SSH answering
    bind(vm, dry_run)   the VM's guest if it has one; else a promise (counted against
                        max_guests, once per VM) and GuestPlanned: "not bound yet"
    release(vm)         podman rm of its container, its record dropped
    infra lab down      every guest of the instance removed (by label), the store with them

The guests of an instance are kept in ``.lab/<instance>/guests/guests.json`` (VM -> container
and ports; flock, replaced atomically, like :class:`~infra_automation.inventory.
JsonBindingStore`), shared by every project root and process using the lab. The capacity
``max_guests`` (the section's ``max_guests`` when set, else what ``infra lab up`` computed
from the available memory and ``guest_memory_mb``) is checked the same way by a dry run and
an apply: a VM with no guest and no promise that would exceed it is refused
(:class:`~infra_automation.exceptions.TargetRejected`, naming ``lab_guests.max_guests``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from infra_automation.exceptions import (
    ConfigurationError,
    InfraError,
    TargetRejected,
    TargetUnreachable,
)
from infra_automation.files import write_atomic
from infra_automation.inventory import Host, Inventory
from infra_automation.lab.base import (
    Fragment,
    Health,
    LabContext,
    Missing,
    ensure_ssh_key,
    ssh_banner,
    which,
)
from infra_automation.lab.hosts import (
    HOST_GROUPS,
    ensure_image,
    ensure_network,
    inspect,
    podman,
    read_ports,
    run_container,
    wait_ssh,
)
from infra_automation.sections import Section

KIND = "lab-guests"
SECTION = "lab_guests"
GUEST_LABEL = "io.infra-automation.lab.guest"  # value: the instance; the VM in .vm
VM_LABEL = "io.infra-automation.lab.vm"
GUEST_MEMORY_MB = 256  # what one guest may use with nginx, php-fpm and PostgreSQL running
MAX_GUESTS = 500
VM_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MEMINFO = Path("/proc/meminfo")


class GuestPlanned(ConfigurationError):
    """A VM has no guest yet (dry run): one is made when the run applies. The OS departments
    treat it as a VM that cannot be bound yet (planned), as for any binding error in check
    mode; a dry run that would exceed the capacity raises TargetRejected instead."""


class LabGuestsConfig(BaseModel):
    """Inventory section ``lab_guests`` (written by ``infra lab up``, guests its default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instance: str = Field(pattern=r"^[a-z][a-z0-9]{0,9}$")
    root: str  # the lab's project root: its state is under <root>/.lab/<instance>/
    image: str = Field(pattern=r"^[a-z0-9./:-]+$")
    max_guests: int | None = Field(default=None, ge=0, le=MAX_GUESTS)  # settable; wins
    default_max_guests: int = Field(default=1, ge=0, le=MAX_GUESTS)  # from memory at `up`
    guest_memory_mb: int = Field(default=GUEST_MEMORY_MB, ge=16, le=1 << 20)

    @property
    def limit(self) -> int:
        return self.default_max_guests if self.max_guests is None else self.max_guests

    def context(self) -> LabContext:
        root = Path(self.root)
        return LabContext(name=self.instance, root=root, state_dir=root / ".lab" / self.instance)


LAB_GUESTS_SECTION = Section(SECTION, LabGuestsConfig)


# --- the store ------------------------------------------------------------------------------


def store_file(ctx: LabContext) -> Path:
    return ctx.state_dir / "guests" / "guests.json"


def settings_file(ctx: LabContext) -> Path:
    """The ``lab_guests`` section the last ``up`` wrote (``status`` reports its limit)."""
    return ctx.state_dir / "guests" / "settings.json"


class GuestStore:
    """VM -> {container, ssh, http} as one JSON object, locked with flock, replaced atomically.

    A record without ports is a reservation: its container is being made.
    """

    def __init__(self, file: Path) -> None:
        self.file = file

    @contextlib.contextmanager
    def transaction(self, *, write: bool) -> Iterator[dict[str, dict[str, Any]]]:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.file.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            table: dict[str, dict[str, Any]] = {}
            if self.file.exists():
                table = json.loads(self.file.read_text() or "{}")
            yield table
            if write:
                write_atomic(self.file, json.dumps(table, indent=2, sort_keys=True))


# --- the binder -----------------------------------------------------------------------------


def vm_name(name: str) -> str:
    """A VM name usable as a container's name and hostname (refused naming it otherwise)."""
    if not VM_NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"VM name {name!r} cannot name a lab guest: use 1-63 lower-case letters, digits "
            "or '-', starting with a letter or digit"
        )
    return name


def guest_container(ctx: LabContext, vm: str) -> str:
    return ctx.prefixed(f"guest-{vm}")


class GuestBinder:
    """Host binding ``lab-guests``: one guest container per VM, made on demand.

    Made once per :class:`Inventory` (one run): the dry run's promises live here, so two
    VMs of one dry run never count one free place twice.
    """

    def __init__(self, inventory: Inventory, config: LabGuestsConfig | None = None) -> None:
        self.inventory = inventory
        self.config = config or _section(inventory)
        self.ctx = self.config.context()
        self.store = GuestStore(store_file(self.ctx))
        self._promised: set[str] = set()  # dry run: VMs promised a guest, this run only
        self._lock = threading.Lock()  # the promises are shared by the run's parallel steps

    @property
    def max_guests(self) -> int:
        return self.config.limit

    def bind(self, vm_name_: str, address: str | None, *, dry_run: bool = False) -> Host:
        vm = vm_name(vm_name_)
        if dry_run:
            return self._promise(vm)
        with self._lock, self.store.transaction(write=True) as table:
            if vm not in table:
                self._check_capacity(vm, table)
                table[vm] = {"container": guest_container(self.ctx, vm)}
            self._promised.discard(vm)
            record = dict(table[vm])
        return self._host(vm, self._ensure(vm, record))

    def release(self, vm_name_: str) -> None:
        vm = vm_name(vm_name_)
        with self._lock:
            self._promised.discard(vm)
        with self.store.transaction(write=True) as table:
            record = table.get(vm)
            if record is None:
                return
            remove_containers(self.ctx, [str(record["container"])])
            del table[vm]

    def bound(self) -> dict[str, Host]:
        """The VMs with a guest now (recorded with its ports), as hosts named after them."""
        with self.store.transaction(write=False) as table:
            ready = {vm: dict(r) for vm, r in table.items() if "ssh" in r}
        return {vm: self._host(vm, record) for vm, record in sorted(ready.items())}

    # --- pieces ---------------------------------------------------------------------------

    def _promise(self, vm: str) -> Host:
        with self._lock, self.store.transaction(write=False) as table:
            record = table.get(vm)
            if record is not None and "ssh" in record:
                return self._host(vm, record)
            self._check_capacity(vm, table)
            self._promised.add(vm)
        raise GuestPlanned(f"VM {vm!r} has no lab guest yet: the apply makes one")

    def _check_capacity(self, vm: str, table: Mapping[str, Any]) -> None:
        """Refuse a VM that would exceed ``max_guests``: the guests there are and this run's
        dry-run promises, each VM counted once."""
        taken = set(table) | self._promised
        if vm in taken or len(taken) < self.max_guests:
            return
        raise TargetRejected(
            f"lab guests: no room for VM {vm!r}: lab_guests.max_guests is {self.max_guests} "
            f"and {len(taken)} guests are made or promised (lab {self.ctx.name!r}; raise it "
            "with `infra lab up --max-guests N` or lab_guests.max_guests)"
        )

    def _ensure(self, vm: str, record: dict[str, Any]) -> dict[str, Any]:
        """The VM's container running with SSH answering; its ports recorded."""
        if "ssh" in record and ssh_banner(int(record["ssh"])):
            return record
        cname = str(record["container"])
        try:
            self._start(vm, cname)
            ports = read_ports(self.ctx, cname)
            wait_ssh(vm, ports.ssh)
        except InfraError as exc:
            if "ssh" in record:  # a guest that ran: slow or stopped, never removed for that
                raise TargetUnreachable(f"lab guest {cname} of VM {vm!r}: {exc}") from exc
            self.release(vm)  # only the reservation made by this bind, and what it started
            raise TargetRejected(f"lab guest {cname} of VM {vm!r} did not start: {exc}") from exc
        fresh = {"container": cname, "ssh": ports.ssh, "http": ports.http}
        with self.store.transaction(write=True) as table:
            table[vm] = fresh
        return fresh

    def _start(self, vm: str, cname: str) -> None:
        state = inspect(self.ctx, cname)
        if state is None:
            pub = ensure_ssh_key(self.ctx.ssh_key)
            network = ensure_network(self.ctx)
            labels = {GUEST_LABEL: self.ctx.name, VM_LABEL: vm}
            run_container(self.ctx, cname, vm, self.config.image, network, pub, labels)
        elif not state.get("State", {}).get("Running"):
            podman(self.ctx, "start", cname)

    def _host(self, vm: str, record: Mapping[str, Any]) -> Host:
        data = {
            "http_port": int(record["http"]),
            "container": str(record["container"]),
            "bound_to": str(record["container"]),
            # fresh host keys on every guest, on reused 127.0.0.1 ports
            "ansible_host_key_checking": False,
            "ansible_ssh_common_args": "-o UserKnownHostsFile=/dev/null",
        }
        host = Host(
            name=vm,
            hostname="127.0.0.1",
            port=int(record["ssh"]),
            username="root",
            ssh_key_file=str(self.ctx.ssh_key),
            groups=[g for g in HOST_GROUPS if g in self.inventory.groups],
            data=data,
        )
        return _with_groups(self.inventory, host)


def _section(inventory: Inventory) -> LabGuestsConfig:
    try:
        return inventory.section(SECTION, LabGuestsConfig)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"host_binding kind {KIND!r} needs the {SECTION!r} section ({exc}); "
            "`infra lab up` (guests are its default) writes it"
        ) from exc


def _with_groups(inventory: Inventory, host: Host) -> Host:
    """The host with its groups' settings (defaults < groups < its own), as the inventory
    resolves a declared host."""
    layers = [inventory.spec.defaults, *(inventory.groups[g] for g in host.groups)]
    data: dict[str, Any] = {}
    update: dict[str, Any] = {}
    for layer in layers:
        data.update(layer.data)
        for attr in ("platform", "username", "port"):
            value = getattr(layer, attr)
            if getattr(host, attr) is None and attr not in update and value is not None:
                update[attr] = value
    return host.model_copy(update={**update, "data": {**data, **host.data}})


# --- the lab component ----------------------------------------------------------------------


def remove_containers(ctx: LabContext, names: list[str]) -> None:
    if names:
        podman(ctx, "rm", "--force", "--ignore", "--time", "2", *names, timeout=120)


def guest_containers(ctx: LabContext) -> list[str]:
    """Every guest container of the instance, by label (whatever the store says)."""
    out = podman(
        ctx, "ps", "-a", "--filter", f"label={GUEST_LABEL}={ctx.name}", "--format", "{{.Names}}"
    ).stdout.split()
    return sorted(out)


def default_max_guests(guest_memory_mb: int = GUEST_MEMORY_MB, meminfo: Path = MEMINFO) -> int:
    """How many guests the available memory holds (at least 1, at most MAX_GUESTS)."""
    available_kb = 0
    with contextlib.suppress(OSError):
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available_kb = int(line.split()[1])
    return max(1, min(MAX_GUESTS, available_kb // 1024 // guest_memory_mb))


class LabGuests:
    """Lab component ``guests`` (``infra lab up``'s default): the binding's settings in the
    generated inventory; ``down`` removes every guest of the instance."""

    name = "guests"

    def requirements(self) -> list[Missing]:
        return [*which("podman", "podman"), *which("runc", "runc")]

    def up(self, ctx: LabContext) -> Fragment:
        image = ensure_image(ctx)
        ensure_ssh_key(ctx.ssh_key)
        ensure_network(ctx)
        section: dict[str, Any] = {
            "instance": ctx.name,
            "root": str(ctx.root),
            "image": image,
            "default_max_guests": default_max_guests(),
            "guest_memory_mb": GUEST_MEMORY_MB,
        }
        if ctx.options.max_guests is not None:
            section["max_guests"] = ctx.options.max_guests
        write_atomic(settings_file(ctx), json.dumps(section, indent=2, sort_keys=True) + "\n")
        return Fragment(inventory={"host_binding": {"kind": KIND}, SECTION: section})

    def down(self, ctx: LabContext) -> None:
        store = GuestStore(store_file(ctx))
        with store.transaction(write=True) as table:
            remove_containers(ctx, guest_containers(ctx))
            table.clear()
        settings_file(ctx).unlink(missing_ok=True)

    def status(self, ctx: LabContext) -> list[Health]:
        """One line for the binding (how many guests, the limit), then one per guest."""
        with GuestStore(store_file(ctx)).transaction(write=False) as table:
            records = dict(table)
        guests = [_health(vm, r) for vm, r in sorted(records.items())]
        return [_summary(ctx, len(records)), *guests]


def _summary(ctx: LabContext, count: int) -> Health:
    """The binding's line: unhealthy until an ``up`` wrote the section (after a ``down``)."""
    try:
        section = LabGuestsConfig.model_validate_json(settings_file(ctx).read_text())
    except (OSError, ValueError):
        return Health("guests", False, "not set up: `infra lab up` gives each VM a guest")
    limit = section.limit
    return Health("guests", True, f"{count} of at most {limit} (lab_guests.max_guests)")


def _health(vm: str, record: Mapping[str, Any]) -> Health:
    target = f"guest {vm}"
    if "ssh" not in record:
        return Health(target, False, f"container {record.get('container')} is being made")
    port = int(record["ssh"])
    ok = ssh_banner(port)
    return Health(target, ok, f"ssh 127.0.0.1:{port} " + ("answers" if ok else "does not answer"))
