"""One inventory for every department: Nornir, Ansible and the departments' own sections.

An inventory is a folder (``inventories/<name>/``)::

    inventory.yml            hand-written: groups, hosts, their data, the departments' sections
    generated/*.yml          written by tools (``infra lab up``): connection details, merged in
    generated/secrets.yml    secrets (mode 0600), read through ``secrets.Secrets``

Generated files are deep-merged over the hand-written file, host by host, so that
connection details are kept apart from the data people maintain.

Besides its core keys (``name``, ``defaults``, ``groups``, ``hosts``, ``host_binding``,
``change``) an inventory holds one section per department that needs one (``vcenter`` of the
VMware department, ``ipam`` of IPAM, ...): each registered with its pydantic model through the
``infra_automation.inventory_sections`` entry points (:mod:`infra_automation.sections`), read
by the department with ``inventory.section("vcenter", VCenter)``. The core names none of them.

Hosts created at run time (VMs) are reached through a *host binding* (an extension point:
one Protocol, one registry): ``static`` treats the VM's address as the SSH host; ``pool``
binds each VM name to a free pre-provisioned host of a group and remembers the binding
(in a :class:`BindingStore`: the run database by default, shared by every process using it;
``generated/bindings.json`` with ``host_binding.store: file``, as the built-in lab does). A
dry run (check mode) stores nothing but promises each free host once: the promises live in
the inventory's binder, and the engine loads one inventory per run, so two VMs of one run
never share a promised host and a pool too small for the run fails the dry run as it fails
the apply. Every binder lists the VMs it has bound now (``bound()``, read through
:meth:`Inventory.bound_hosts`): the Ansible inventory view and the departments that act on
a project's bound VMs (security's firewall removal) use it, whatever the binder is.
"""

from __future__ import annotations

import fcntl
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    model_validator,
)

from infra_automation import yamlio
from infra_automation.exceptions import ConfigurationError, TargetRejected
from infra_automation.files import write_atomic
from infra_automation.registry import EntryPointRegistry
from infra_automation.secrets import Secrets
from infra_automation.sections import SECTIONS

if TYPE_CHECKING:
    from sqlalchemy import Engine

HAND_WRITTEN = "inventory.yml"
GENERATED_DIR = "generated"
SECRETS_FILE = "secrets.yml"
M = TypeVar("M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Group(_Model):
    platform: str | None = None
    username: str | None = None
    port: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Host(_Model):
    """A managed target: a router, a Linux host. ``platform`` is normalized by netutils."""

    name: str = ""
    hostname: str | None = None
    port: int | None = None
    username: str | None = None
    ssh_key_file: str | None = None
    password_secret: str | None = None  # name of a secret, never the password itself
    platform: str | None = None
    groups: list[str] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)


class HostBindingConfig(_Model):
    kind: str = "static"
    group: str | None = None  # for kind "pool": the group whose hosts VMs are bound to
    defaults: dict[str, Any] = Field(default_factory=dict)
    # kind "pool": where the bindings are kept. "database": the run database (shared by every
    # checkout, worker and server using it); "file": generated/bindings.json beside the
    # inventory (the built-in lab: one lab serves every project root on its machine).
    store: Literal["database", "file"] = "database"
    pool: str | None = None  # the pool's name in the database (default "<inventory>/<group>")


class InventoryFile(BaseModel):
    """The core keys of an inventory; every other top-level key is a department's section.

    Sections are validated by the models registered in :data:`~infra_automation.sections.
    SECTIONS` (entry points): an unregistered key is refused. ``host_binding`` is core: every
    department whose hosts are made at run time (VMs reached by the OS, web, backup steps) and
    the Ansible inventory plugin reach them through the inventory's binder. ``change`` is
    core: the change policy is read by the change gate, not by a department.
    """

    model_config = ConfigDict(extra="allow")  # the sections, validated below

    name: str = ""
    defaults: Group = Field(default_factory=Group)
    groups: dict[str, Group] = Field(default_factory=dict)
    hosts: dict[str, Host] = Field(default_factory=dict)
    host_binding: HostBindingConfig = Field(default_factory=HostBindingConfig)
    # The site's change policy (approvals, windows, blackouts): read by infra_automation.changes.
    change: dict[str, Any] | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _sections(cls, data: Any, handler: ModelWrapValidatorHandler[InventoryFile]) -> Any:
        """Core keys by this model, the others by their registered sections."""
        if not isinstance(data, Mapping):
            return handler(data)  # an instance, or pydantic's own error for a non-mapping
        core = {k: v for k, v in data.items() if k in cls.model_fields}
        rest = {k: v for k, v in data.items() if k not in cls.model_fields}
        spec = handler(core)
        spec.__pydantic_extra__ = SECTIONS.validate(rest, core=cls.model_fields)
        return spec

    @property
    def sections(self) -> dict[str, BaseModel]:
        """The departments' sections present in this inventory, by key."""
        return dict(self.__pydantic_extra__ or {})


class Inventory:
    """A loaded inventory. Host fields are resolved (host > groups > defaults)."""

    def __init__(self, spec: InventoryFile, path: Path | None = None) -> None:
        self.spec = spec
        self.path = path
        self.name = spec.name or (path.name if path else "inline")
        self.hosts: dict[str, Host] = {n: self._resolve(n, h) for n, h in spec.hosts.items()}
        self.secrets = Secrets(files=(path / GENERATED_DIR / SECRETS_FILE,) if path else ())
        self._binder: HostBinder | None = None
        self._binder_lock = threading.Lock()
        self.db: Engine | None = None  # the run database (Engine.inventory attaches it)

    @property
    def groups(self) -> dict[str, Group]:
        return self.spec.groups

    def section(self, name: str, model: type[M], *, default: M | None = None) -> M:
        """The department section ``name``, validated as ``model`` (the one registered).

        A missing section is ``default``, or a ConfigurationError when there is none.
        """
        found = self.spec.sections.get(name)
        if found is None:
            if default is not None:
                return default
            raise ConfigurationError(f"inventory {self.name!r} has no {name!r} section")
        if not isinstance(found, model):
            raise ConfigurationError(
                f"inventory section {name!r} is registered as {type(found).__name__}, "
                f"not {model.__name__}"
            )
        return found

    @property
    def generated_dir(self) -> Path | None:
        return self.path / GENERATED_DIR if self.path else None

    def select(self, *, group: str | None = None, hosts: list[str] | None = None) -> list[str]:
        """Host names in ``group`` and/or named in ``hosts``; unknown names are an error."""
        chosen: list[str] = []
        if group is not None:
            if group not in self.spec.groups and not any(
                group in h.groups for h in self.hosts.values()
            ):
                raise ConfigurationError(f"inventory {self.name!r} has no group {group!r}")
            chosen += [n for n, h in self.hosts.items() if group in h.groups]
        for name in hosts or []:
            if name not in self.hosts:
                raise ConfigurationError(f"inventory {self.name!r} has no host {name!r}")
            if name not in chosen:
                chosen.append(name)
        return chosen

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise ConfigurationError(f"inventory {self.name!r} has no host {name!r}") from None

    def connectable(self, name: str) -> Host:
        """The host, refusing one whose connection details (its address) are missing."""
        host = self.host(name)
        if not host.hostname:
            where = f" ({self.path})" if self.path else ""
            raise ConfigurationError(
                f"host {name!r} has no address in inventory {self.name!r}{where}: its "
                f"connection details are missing (for the built-in lab: `infra lab up`)"
            )
        return host

    def bind_host(self, vm_name: str, address: str | None = None, *, dry_run: bool = False) -> Host:
        """Connection details for a host created at run time (a VM), via the binding.

        ``dry_run`` (check mode): answer what the binding would be, remember nothing.
        """
        return self.binder().bind(vm_name, address, dry_run=dry_run)

    def release_host(self, vm_name: str) -> None:
        self.binder().release(vm_name)

    def bound_hosts(self) -> dict[str, Host]:
        """The VMs bound now, by VM name, as hosts named after them (the binder's ``bound()``).

        A binder registered without ``bound()`` (written before it was part of
        :class:`HostBinder`) is a ConfigurationError naming its kind, never an empty answer.
        """
        binder = self.binder()
        listing = getattr(binder, "bound", None)
        if not callable(listing):
            kind = self.spec.host_binding.kind
            raise ConfigurationError(
                f"host_binding kind {kind!r}: its binder {type(binder).__name__} has no bound() "
                "(HostBinder lists the VMs it has bound; add it to the binder)"
            )
        return dict(listing())

    def binder(self) -> HostBinder:
        """The inventory's binder, made once: it holds the dry-run promises of the run."""
        with self._binder_lock:
            if self._binder is None:
                self._binder = BINDER_KINDS.get(self.spec.host_binding.kind)(self)
            return self._binder

    def _resolve(self, name: str, host: Host) -> Host:
        layers: list[Group] = [self.spec.defaults]
        for g in host.groups:
            if g not in self.spec.groups:
                raise ConfigurationError(f"host {name!r} is in unknown group {g!r}")
            layers.append(self.spec.groups[g])
        data: dict[str, Any] = {}
        resolved = host.model_copy(update={"name": name})
        for layer in layers:
            data.update(layer.data)
            for attr in ("platform", "username", "port"):
                if getattr(resolved, attr) is None and getattr(layer, attr) is not None:
                    resolved = resolved.model_copy(update={attr: getattr(layer, attr)})
        data.update(host.data)
        return resolved.model_copy(update={"data": data})


# --- host binding: one Protocol, one registry ---------------------------------------------


class HostBinder(Protocol):
    """Connection details for hosts created at run time.

    ``bind(..., dry_run=True)`` stores nothing, but answers as ``bind`` would in the same run
    (each free host promised once); a binder is made once per :class:`Inventory`.
    ``bound()`` lists the VMs bound now (stored, not this run's dry-run promises), by VM name,
    each as ``bind`` answers for it; a binder that keeps no table (``static``: the VM is its
    own host) answers ``{}``.
    """

    def bind(self, vm_name: str, address: str | None, *, dry_run: bool = False) -> Host: ...

    def release(self, vm_name: str) -> None: ...

    def bound(self) -> dict[str, Host]: ...


class BindingStore(Protocol):
    """Where the ``pool`` binding keeps VM name -> host name (the database, or a file).

    ``transaction(write=...)`` yields the whole table under an exclusive lock (across
    processes); with ``write=True`` the table as left by the block is stored when it ends.
    """

    def transaction(self, *, write: bool) -> AbstractContextManager[dict[str, str]]: ...


BINDERS: dict[str, Callable[[Inventory], HostBinder]] = {}


class StaticBinder:
    """Production default: the VM's own address is the SSH host."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def bind(self, vm_name: str, address: str | None, *, dry_run: bool = False) -> Host:
        if not address:
            raise ConfigurationError(f"VM {vm_name!r} has no address to connect to")
        defaults = self.inventory.spec.host_binding.defaults
        return Host.model_validate({"name": vm_name, "hostname": address, **defaults})

    def release(self, vm_name: str) -> None:
        return None

    def bound(self) -> dict[str, Host]:
        """None: the VMs are their own hosts, gone with them; nothing is kept here."""
        return {}


class PoolBinder:
    """Bind each VM name to a free host of a pre-provisioned group, kept in a BindingStore.

    Used where VMs have no reachable guest (the lab's vCenter simulator): the pool's hosts
    stand in for the VMs' guests. The same VM name always gets the same host. A dry run's
    promises are kept here, in memory, never stored: the binder lives as long as its
    inventory (one run).
    """

    def __init__(self, inventory: Inventory, store: BindingStore | None = None) -> None:
        self.inventory = inventory
        group = inventory.spec.host_binding.group
        if not group:
            raise ConfigurationError("host_binding kind 'pool' needs a 'group'")
        self.group = group
        self.store: BindingStore = store or _binding_store(inventory, group)
        self._promised: dict[str, str] = {}  # dry run: VM name -> host name, this run only
        self._lock = threading.Lock()  # the promises are shared by the run's parallel steps

    def bind(self, vm_name: str, address: str | None, *, dry_run: bool = False) -> Host:
        with self._lock, self.store.transaction(write=not dry_run) as table:
            name = self._choose(vm_name, table, dry_run=dry_run)
            if dry_run:
                self._promised[vm_name] = name
            else:
                table[vm_name] = name
                self._promised.pop(vm_name, None)
        return self._host(vm_name, name)

    def release(self, vm_name: str) -> None:
        with self._lock, self.store.transaction(write=True) as table:
            table.pop(vm_name, None)
            self._promised.pop(vm_name, None)

    def bound(self) -> dict[str, Host]:
        """The stored bindings (every project's), each VM as the host it is bound to."""
        with self.store.transaction(write=False) as table:
            stored = dict(table)
        return {vm: self._host(vm, name) for vm, name in sorted(stored.items())}

    def _host(self, vm_name: str, name: str) -> Host:
        """Pool host ``name`` seen as VM ``vm_name`` (``bound_to`` names the pool host)."""
        host = self.inventory.host(name)
        data = {**host.data, "bound_to": host.name}
        return host.model_copy(update={"name": vm_name, "data": data})

    def _choose(self, vm_name: str, table: Mapping[str, str], *, dry_run: bool) -> str:
        """The VM's stored host, else (dry run) its promised host, else the first free one."""
        if vm_name in table:
            return table[vm_name]
        taken = set(table.values())
        promised = self._promised.get(vm_name) if dry_run else None
        if promised is not None and promised not in taken:
            return promised
        if dry_run:
            taken |= {h for vm, h in self._promised.items() if vm != vm_name}
        free = [h for h in self.inventory.select(group=self.group) if h not in taken]
        if not free:
            raise TargetRejected(f"no free host in group {self.group!r} to bind VM {vm_name!r}")
        return free[0]


def _binding_store(inventory: Inventory, group: str) -> BindingStore:
    """The store ``host_binding.store`` names: the run database, or the inventory's file."""
    config = inventory.spec.host_binding
    if config.store == "file":
        base = inventory.generated_dir or Path.cwd()
        return JsonBindingStore(base / "bindings.json")
    if inventory.db is None:
        raise ConfigurationError(
            f"host_binding of inventory {inventory.name!r} keeps its bindings in the database, "
            "and none is attached (run it through the engine, or set host_binding.store: file)"
        )
    from infra_automation.leases import DatabaseBindingStore  # the record needs SQLAlchemy

    return DatabaseBindingStore(inventory.db, config.pool or f"{inventory.name}/{group}")


class JsonBindingStore:
    """The bindings as a JSON object in one file, locked with flock, replaced atomically."""

    def __init__(self, file: Path) -> None:
        self.file = file

    @contextmanager
    def transaction(self, *, write: bool) -> Iterator[dict[str, str]]:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.file.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            table: dict[str, str] = {}
            if self.file.exists():
                table = json.loads(self.file.read_text() or "{}")
            yield table
            if not write:
                return
            write_atomic(self.file, json.dumps(table, indent=2, sort_keys=True))


BINDERS["static"] = StaticBinder
BINDERS["pool"] = PoolBinder
BINDER_ENTRY_POINTS = "infra_automation.host_binders"
"""Entry-point group of third-party binder kinds (name -> ``Callable[[Inventory], HostBinder]``);
the built-in lab's ``lab-guests`` (:mod:`infra_automation.lab.guests`) is one."""


BINDER_KINDS = EntryPointRegistry[Callable[[Inventory], HostBinder]](
    BINDER_ENTRY_POINTS, "host_binding kind", items=BINDERS
)
"""The binder kinds: :data:`BINDERS` (registered and loaded), then the entry points."""


def binder_factory(kind: str) -> Callable[[Inventory], HostBinder] | None:
    """The binder kind ``kind``: from :data:`BINDERS`, else its entry point (loaded once,
    then kept in :data:`BINDERS`); ``None`` when nobody registers it."""
    return BINDER_KINDS.find(kind)


# --- loading --------------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _source(layers: list[tuple[Path, dict[str, Any]]], loc: tuple[Any, ...]) -> Path:
    """The file that supplied the value at ``loc`` of the merged inventory: the last layer
    holding the deepest part of that path (the main file when none does)."""
    best: tuple[int, Path] = (0, layers[0][0])
    for path, layer in layers:
        node: Any = layer
        depth = 0
        for key in loc:
            if not isinstance(node, dict) or key not in node:
                break
            node, depth = node[key], depth + 1
        if depth and depth >= best[0]:
            best = (depth, path)
    return best[1]


def _read_yaml(path: Path) -> dict[str, Any]:
    """One inventory file through the safe loader (UTF-8, size, depth, no duplicate keys);
    its errors name the file, line and column (:class:`InputFileError`, a ConfigurationError)."""
    return yamlio.load_mapping(path)


def load_inventory(path: str | Path) -> Inventory:
    """Load ``inventory.yml`` from a folder and merge ``generated/*.yml`` (not secrets) over it."""
    folder = Path(path)
    main = folder / HAND_WRITTEN
    if not main.is_file():
        raise ConfigurationError(f"no inventory at {main}")
    data = _read_yaml(main)
    layers: list[tuple[Path, dict[str, Any]]] = [(main, data)]
    gen = folder / GENERATED_DIR
    if gen.is_dir():
        for extra in sorted(gen.glob("*.yml")):
            if extra.name != SECRETS_FILE:
                layer = _read_yaml(extra)
                layers.append((extra, layer))
                data = _deep_merge(data, layer)
    try:
        spec = InventoryFile.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"{_source(layers, e['loc']).relative_to(folder)}: "
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigurationError(f"invalid inventory {folder}: {errors}") from exc
    return Inventory(spec, folder)
