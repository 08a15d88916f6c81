"""The lab orchestrator: one *instance* = its components, its state dir, its inventory folder.

::

    Lab(root, name="lab", options=LabOptions(...))
      .up()        requirements -> ssh key -> components up (parallel threads) -> generated/*.yml
      .down()      components down (parallel) -> generated/ removed -> state marker removed
      .status()    each component's health
      .acquire() / .release(lease)   what the pytest fixture uses: reuse a running lab,
                                     tear down only a lab this process started

Components are found through one registry (:data:`COMPONENTS`, ``name -> "module:Class"``)
and imported lazily: a component whose module is missing or broken gives an error naming
its file. ``up`` and ``down`` of one instance serialize on a ``flock`` in the state dir.

The default instance ``lab`` writes to ``<root>/inventories/lab/generated/``; any other
instance keeps its whole inventory folder (a copy of the hand-written ``inventory.yml``
limited to what runs, plus ``generated/``) under ``<root>/.lab/<name>/inventory/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from secrets import token_urlsafe
from typing import Any, Protocol, TypeVar, cast

import yaml

from infra_automation import yamlio
from infra_automation.exceptions import InfraError, LabError
from infra_automation.files import write_atomic
from infra_automation.inventory import GENERATED_DIR, HAND_WRITTEN, SECRETS_FILE
from infra_automation.lab.base import (
    Fragment,
    Health,
    LabComponent,
    LabContext,
    LabOptions,
    Missing,
    ensure_ssh_key,
    pid_alive,
    which,
)

DEFAULT_NAME = "lab"
LAB_SECRETS = ("backup_password",)  # generated once per instance, for the services built on it
GENERATED_FILE = "lab.yml"
STATE_FILE = "lab.json"
LOCK_FILE = "lock"
USERS_DIR = "users"
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")  # short: it prefixes netns, veth and containers
MAX_ROUTERS = 200
MAX_HOSTS = 50
MAX_GUESTS = 500
GUEST_HOSTS = 0  # `infra lab up` (guests): each VM has its own guest, no pool is needed
POOL_HOSTS = 3  # `infra lab up --no-guests`: the fixed pool the VMs are bound to

COMPONENTS: dict[str, str] = {
    "vcenter": "infra_automation.lab.vcenter:VCenterSim",
    "routers": "infra_automation.lab.routers:Routers",
    "hosts": "infra_automation.lab.hosts:DebianHosts",
    "guests": "infra_automation.lab.guests:LabGuests",
}
"""The registry of lab components (``name -> "module:Class"``); all start and stop in parallel."""

Progress = Callable[[str, str, float], None]
"""Called as ``progress(component, event, seconds)``; event is ``started``/``up``/``failed``."""

T = TypeVar("T")


class RouterControl(Protocol):
    """What the routers component offers beyond :class:`LabComponent`."""

    def stop_router(self, ctx: LabContext, name: str) -> None: ...

    def start_router(self, ctx: LabContext, name: str) -> None: ...

    def restart_router(self, ctx: LabContext, name: str) -> None: ...


@dataclass(frozen=True)
class UpReport:
    name: str
    inventory_path: Path
    timings: dict[str, float]  # seconds per component
    total: float
    was_up: bool  # the state marker said "up" before this call


@dataclass(frozen=True)
class LabStatus:
    name: str
    up: bool  # the state marker: the last ``up`` completed and no ``down`` since
    inventory_path: Path
    targets: list[Health] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.up and bool(self.targets) and all(t.healthy for t in self.targets)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "up": self.up,
            "healthy": self.healthy,
            "inventory": str(self.inventory_path),
            "targets": [asdict(t) for t in self.targets],
        }


@dataclass(frozen=True)
class Lease:
    """One process's use of an instance (see :meth:`Lab.acquire`)."""

    name: str
    started: bool  # nothing of the instance ran before: this process brought it up


# --- pure helpers ---------------------------------------------------------------------------


def validate_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise LabError(
            f"lab instance name {name!r} is invalid: use 1-10 lower-case letters or digits, "
            "starting with a letter (it prefixes namespaces, interfaces and containers)"
        )
    return name


def validate_options(options: LabOptions) -> LabOptions:
    if options.routers != 0 and not 2 <= options.routers <= MAX_ROUTERS:
        raise LabError(
            f"routers: {options.routers} is invalid: 0 (none) or 2..{MAX_ROUTERS} "
            "(core and edge, then r003, r004, ...)"
        )
    if not 0 <= options.hosts <= MAX_HOSTS:
        raise LabError(f"hosts: {options.hosts} is invalid: 0..{MAX_HOSTS}")
    if options.max_guests is not None and not 0 <= options.max_guests <= MAX_GUESTS:
        raise LabError(f"max_guests: {options.max_guests} is invalid: 0..{MAX_GUESTS}")
    if options.max_guests is not None and not options.guests:
        raise LabError("max_guests: only with guests (infra lab up --max-guests N)")
    return options


def enabled(name: str, options: LabOptions) -> bool:
    """Whether the options ask for component ``name`` (unknown names always run)."""
    if name == "vcenter":
        return options.vcenter
    if name == "routers":
        return options.routers > 0
    if name == "hosts":
        return options.hosts > 0
    if name == "guests":
        return options.guests
    return True


def load_component(name: str, registry: Mapping[str, str] = COMPONENTS) -> LabComponent:
    """Import and build a registered component; LabError naming its file if unavailable."""
    spec = registry.get(name)
    if spec is None:
        raise LabError(f"unknown lab component {name!r} (known: {', '.join(registry)})")
    module_name, _, class_name = spec.partition(":")
    where = module_name.replace(".", "/") + ".py"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise LabError(f"lab component {name!r} is not available: {where} ({exc})") from exc
    except Exception as exc:
        raise LabError(f"lab component {name!r} fails to import from {where}: {exc!r}") from exc
    factory = getattr(module, class_name, None)
    if factory is None:
        raise LabError(f"lab component {name!r}: {where} has no class {class_name}")
    return cast(LabComponent, factory())


def requirements_message(missing: Sequence[Missing]) -> str | None:
    """One message naming what is missing and one command per installer (``None`` if none)."""
    if not missing:
        return None
    whats = list(dict.fromkeys(m.what for m in missing))
    commands: dict[str, list[str]] = {}
    for m in missing:
        prefix, packages = _split_install(m.install)
        bucket = commands.setdefault(prefix, [])
        bucket += [p for p in packages if p not in bucket]
    lines = ["the lab cannot start; missing: " + ", ".join(whats)]
    lines.append("to fix it, run:")
    lines += [f"  {prefix} {' '.join(pkgs)}".rstrip() for prefix, pkgs in commands.items()]
    return "\n".join(lines)


def _split_install(command: str) -> tuple[str, list[str]]:
    """``apt-get install -y a b`` -> (``apt-get install -y``, [a, b]); others kept whole."""
    words = command.split()
    if "install" not in words:
        return command, []
    i = words.index("install") + 1
    prefix = words[:i] + [w for w in words[i:] if w.startswith("-")]
    return " ".join(prefix), [w for w in words[i:] if not w.startswith("-")]


def merge_fragments(parts: Sequence[tuple[str, Fragment]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Deep-merge the components' inventory fragments and secrets; conflicts are errors."""
    inventory: dict[str, Any] = {}
    owners: dict[tuple[str, ...], str] = {}
    secrets: dict[str, str] = {}
    for source, fragment in parts:
        _merge_into(inventory, fragment.inventory, (), source, owners)
        for key, value in fragment.secrets.items():
            if key in secrets and secrets[key] != value:
                raise LabError(f"lab components disagree on secret {key!r} ({source})")
            secrets[key] = str(value)
    return inventory, secrets


def _merge_into(
    into: dict[str, Any],
    over: Mapping[str, Any],
    path: tuple[str, ...],
    source: str,
    owners: dict[tuple[str, ...], str],
) -> None:
    for key, value in over.items():
        here = (*path, str(key))
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge_into(into[key], value, here, source, owners)
        elif key in into and into[key] != value:
            raise LabError(
                f"lab components {_owner(owners, here)!r} and {source!r} both set "
                f"{'.'.join(here)} ({into[key]!r} vs {value!r})"
            )
        else:
            into[key] = _plain(value)
            owners[here] = source


def _owner(owners: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> str:
    """The component that set ``path`` or the nearest mapping above it."""
    for end in range(len(path), 0, -1):
        if path[:end] in owners:
            return owners[path[:end]]
    return "?"


def _plain(value: Any) -> Any:
    """Mappings/sequences as dicts/lists, so YAML dumps plain data."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def binding_summary(inventory_path: Path) -> str:
    """How the instance's inventory binds the simulator's VMs to hosts, in one line."""
    from infra_automation.inventory import load_inventory  # the CLI's line only

    try:
        inventory = load_inventory(inventory_path)
    except InfraError as exc:
        return f"unknown: the inventory does not load ({exc})"
    binding = inventory.spec.host_binding
    if binding.kind == "pool":
        pool = inventory.select(group=binding.group) if binding.group in inventory.groups else []
        return (
            f"bound to a fixed pool of {len(pool)} hosts of group {binding.group!r} "
            f"(host_binding pool; `infra lab up` without --no-guests gives each VM a guest)"
        )
    if binding.kind == "lab-guests":
        from infra_automation.lab.guests import SECTION, LabGuestsConfig

        try:
            limit = inventory.section(SECTION, LabGuestsConfig).limit
        except InfraError as exc:
            return f"host_binding lab-guests, without its section ({exc})"
        return (
            f"each gets its own guest container when first bound, at most {limit} "
            f"(host_binding lab-guests, {SECTION}.max_guests; --no-guests: a fixed pool)"
        )
    return f"host_binding kind {binding.kind!r}"


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest folder (upwards) holding ``inventories/lab/inventory.yml``."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "inventories" / DEFAULT_NAME / HAND_WRITTEN).is_file():
            return folder
    return here


def in_parallel(
    items: Sequence[T], call: Callable[[T], Any], *, parallel: bool = True
) -> list[tuple[T, Any, BaseException | None, float]]:
    """Run ``call`` on each item in its own thread: (item, result, error, seconds) in order.

    ``parallel=False`` runs them one after the other (the baseline of the lab benchmark).
    """

    def timed(item: T) -> tuple[T, Any, BaseException | None, float]:
        t0 = time.monotonic()
        try:
            return item, call(item), None, time.monotonic() - t0
        except Exception as exc:
            return item, None, exc, time.monotonic() - t0

    if len(items) <= 1 or not parallel:
        return [timed(i) for i in items]
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="lab") as pool:
        return list(pool.map(timed, items))


def _own_requirements() -> list[Missing]:
    missing = which("ssh-keygen", "openssh-client")
    if os.geteuid() != 0:
        missing.append(
            Missing(
                "root (network namespaces, rootful podman)", "run it as root: sudo infra lab up"
            )
        )
    return missing


# --- the instance ---------------------------------------------------------------------------


class Lab:
    """One lab instance. ``components`` replaces the registry (tests use small fakes)."""

    def __init__(
        self,
        root: Path | str,
        name: str = DEFAULT_NAME,
        options: LabOptions | None = None,
        components: Sequence[LabComponent] | None = None,
        *,
        check_privileges: bool = True,
        parallel: bool = True,
    ) -> None:
        self.root = Path(root).resolve()
        self.name = validate_name(name)
        self._options = validate_options(options) if options is not None else None
        self._given = {c.name: c for c in components} if components is not None else None
        self._loaded: dict[str, LabComponent] = {}
        self._check_privileges = check_privileges
        self._parallel = parallel  # components start (and stop) in threads

    # -- where things live

    @property
    def state_dir(self) -> Path:
        return self.root / ".lab" / self.name

    @property
    def inventory_path(self) -> Path:
        if self.name == DEFAULT_NAME:
            return self.root / "inventories" / DEFAULT_NAME
        return self.state_dir / "inventory"

    @property
    def generated_dir(self) -> Path:
        return self.inventory_path / GENERATED_DIR

    @property
    def options(self) -> LabOptions:
        """Options given to this object, else those recorded by the last ``up``, else defaults."""
        if self._options is not None:
            return self._options
        recorded = self._read_state().get("options")
        if isinstance(recorded, dict):
            with contextlib.suppress(TypeError):
                return LabOptions(**recorded)
        return LabOptions()

    @property
    def context(self) -> LabContext:
        return LabContext(
            name=self.name, root=self.root, state_dir=self.state_dir, options=self.options
        )

    def is_up(self) -> bool:
        """The last ``up`` completed and no ``down`` ran since (says nothing about health)."""
        return bool(self._read_state())

    # -- components

    def component_names(self) -> list[str]:
        return list(self._given) if self._given is not None else list(COMPONENTS)

    def component(self, name: str) -> LabComponent:
        if self._given is not None:
            if name not in self._given:
                raise LabError(f"lab {self.name!r} has no component {name!r}")
            return self._given[name]
        if name not in self._loaded:
            self._loaded[name] = load_component(name)
        return self._loaded[name]

    def selected(self, options: LabOptions | None = None) -> list[LabComponent]:
        """The components the options ask for, in start order (import errors are raised)."""
        opts = options or self.options
        return [self.component(n) for n in self.component_names() if enabled(n, opts)]

    def _check_requirements(self) -> None:
        message = requirements_message(self.requirements())
        if message:
            raise LabError(message)

    def requirements(self) -> list[Missing]:
        missing = _own_requirements() if self._check_privileges else []
        for comp in self.selected():
            missing += comp.requirements()
        return missing

    # -- up / down / status

    def up(self, progress: Progress | None = None) -> UpReport:
        """Build (once) and start every selected component; write the generated inventory.

        An instance brought up explicitly is *pinned*: no test session's ``release`` stops it.
        """
        self._check_requirements()  # before the lock: says what is missing, creates nothing
        with self._locked():
            return self._up(progress, pin=True)

    def down(self) -> None:
        """Stop and remove everything of this instance; remove the generated inventory."""
        with self._locked():
            self._down()

    def status(self) -> LabStatus:
        targets: list[Health] = []
        names = [n for n in self.component_names() if enabled(n, self.options)]
        ctx = self.context
        for name, result, error, _ in in_parallel(names, lambda n: self.component(n).status(ctx)):
            if error is not None:
                targets.append(Health(name, False, f"status failed: {error}"))
            else:
                targets += result
        return LabStatus(self.name, self.is_up(), self.inventory_path, targets)

    def _up(self, progress: Progress | None, *, pin: bool) -> UpReport:
        t0 = time.monotonic()
        was_up = self.is_up()
        pinned = pin or bool(self._read_state().get("pinned"))
        options = self.options
        comps = self.selected(options)
        self._check_requirements()
        ctx = self.context
        ensure_ssh_key(ctx.ssh_key, f"infra-{ctx.name}")
        self._prepare_inventory()

        def start(comp: LabComponent) -> Fragment:
            t0 = time.monotonic()
            if progress:
                progress(comp.name, "started", 0.0)
            try:
                fragment = comp.up(ctx)
            except Exception:
                if progress:
                    progress(comp.name, "failed", time.monotonic() - t0)
                raise
            if progress:
                progress(comp.name, "up", time.monotonic() - t0)
            return fragment

        results = in_parallel(comps, start, parallel=self._parallel)
        failures = [f"  {c.name}: {error}" for c, _, error, _ in results if error is not None]
        if failures:
            raise LabError(
                f"lab {self.name!r} did not come up:\n" + "\n".join(failures) + "\n"
                f"what did start is left running for inspection; "
                f"`infra lab down --name {self.name}` removes it"
            )
        inventory, secrets = merge_fragments([(c.name, frag) for c, frag, _, _ in results])
        secrets = {**self._lab_secrets(), **secrets}
        self._write_generated(ctx, inventory, secrets)
        timings = {c.name: seconds for c, _, _, seconds in results}
        self._write_state(options, [c.name for c in comps], timings, pinned=pinned)
        return UpReport(self.name, self.inventory_path, timings, time.monotonic() - t0, was_up)

    def _down(self) -> None:
        ctx = self.context
        comps: list[LabComponent] = []
        errors: list[str] = []
        for name in reversed(self.component_names()):
            try:
                comps.append(self.component(name))
            except LabError as exc:
                if (self.state_dir / name).exists():  # it may have started things: say so
                    errors.append(f"  {name}: {exc}")
        for comp, _, error, _ in in_parallel(comps, lambda c: c.down(ctx), parallel=self._parallel):
            if error is not None:
                errors.append(f"  {comp.name}: {error}")
        if errors:
            raise LabError(f"lab {self.name!r} did not come down cleanly:\n" + "\n".join(errors))
        shutil.rmtree(self.generated_dir, ignore_errors=True)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)

    # -- the pytest fixture's logic (lives here so it is unit tested)

    def acquire(self, *, cleanup_on_failure: bool = True) -> Lease:
        """Make sure the instance is up, and register this process as a user.

        A lab whose marker says up and whose targets are all healthy is reused untouched.
        Otherwise ``up`` runs (idempotent). ``Lease.started`` is true only when nothing of
        the instance was healthy before: then this process may tear it down in ``release``.
        """
        with self._locked():
            self._register_user()
            before = self.status()
            if before.healthy:
                return Lease(self.name, started=False)
            started = not any(t.healthy for t in before.targets)
            self._keep_guests()
            try:
                self._up(None, pin=False)
            except BaseException:
                self._unregister_user()
                if started and cleanup_on_failure:
                    with contextlib.suppress(Exception):
                        self._down()
                raise
            return Lease(self.name, started=started)

    def _keep_guests(self) -> None:
        """A repair by :meth:`acquire` keeps the guests binding the last ``up`` asked for: the
        VMs of running projects have guests, and a binding switched back to the pool would
        strand them (``infra lab up --no-guests`` switches it off on purpose)."""
        recorded = self._read_state().get("options")
        if self._options is None or self._options.guests or not isinstance(recorded, dict):
            return
        if recorded.get("guests") is True:
            limit = recorded.get("max_guests")
            self._options = validate_options(
                replace(self._options, guests=True, max_guests=limit if limit else None)
            )

    def release(self, lease: Lease, *, keep: bool = False) -> str:
        """Unregister this process; tear down only what it started and nobody else uses."""
        with self._locked():
            self._unregister_user()
            if not lease.started:
                return "left running: this process did not start it"
            if keep:
                return "kept running (asked to keep it)"
            if self._read_state().get("pinned"):
                return "left running: someone brought it up explicitly (`infra lab up`)"
            others = self._live_users()
            if others:
                return f"left running: still used by processes {', '.join(map(str, others))}"
            self._down()
            return "stopped"

    # -- routers

    def stop_router(self, name: str) -> None:
        self._routers().stop_router(self.context, name)

    def start_router(self, name: str) -> None:
        self._routers().start_router(self.context, name)

    def restart_router(self, name: str) -> None:
        self._routers().restart_router(self.context, name)

    def _routers(self) -> RouterControl:
        comp = self.component("routers")
        for method in ("stop_router", "start_router", "restart_router"):
            if not callable(getattr(comp, method, None)):
                raise LabError(f"the routers component has no {method}()")
        return cast(RouterControl, comp)

    # -- files

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.state_dir / LOCK_FILE, "a")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise LabError(f"cannot use the lab's state dir {self.state_dir}: {exc}") from exc
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.state_dir / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(
        self,
        options: LabOptions,
        components: list[str],
        timings: dict[str, float],
        *,
        pinned: bool,
    ) -> None:
        state = {
            "name": self.name,
            "pinned": pinned,
            "options": asdict(options),
            "components": components,
            "inventory": str(self.inventory_path),
            "up_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        write_atomic(self.state_dir / STATE_FILE, json.dumps(state, indent=2) + "\n")

    def _hand_written(self) -> Path:
        path = self.root / "inventories" / DEFAULT_NAME / HAND_WRITTEN
        if not path.is_file():
            raise LabError(f"the lab's hand-written inventory is missing: {path}")
        return path

    def _prepare_inventory(self) -> None:
        source = self._hand_written()
        if self.name != DEFAULT_NAME:
            write_atomic(self.inventory_path / HAND_WRITTEN, source.read_text())

    def _lab_secrets(self) -> dict[str, str]:
        """The secrets file as an ``up`` keeps it: every secret kept there before (the lab's
        services' own, made once, and those departments keep, such as a database owner's
        password), the components' fresh ones written over them by the caller."""
        path = self.generated_dir / SECRETS_FILE
        old: dict[str, Any] = {}
        if path.is_file():
            old = yamlio.load_mapping(
                path, literal=True, secret=True, aliases=False, max_bytes=yamlio.SECRETS_MAX_BYTES
            )
        kept = {str(name): str(value) for name, value in old.items() if value is not None}
        return {**kept, **{name: kept.get(name) or token_urlsafe(18) for name in LAB_SECRETS}}

    def _write_generated(
        self, ctx: LabContext, inventory: dict[str, Any], secrets: dict[str, str]
    ) -> None:
        for host in (inventory.get("hosts") or {}).values():
            if isinstance(host, dict):
                host.setdefault("ssh_key_file", str(ctx.ssh_key))
        if self.name != DEFAULT_NAME:
            self._limit_copy(inventory)
        header = (
            f"# Written by `infra lab up` for lab instance {self.name!r}: connection details\n"
            "# of what runs. Do not edit; `infra lab down` removes this folder.\n"
        )
        body = yaml.safe_dump(inventory, sort_keys=False, default_flow_style=False)
        write_atomic(self.generated_dir / GENERATED_FILE, header + body)
        write_atomic(
            self.generated_dir / SECRETS_FILE,
            yaml.safe_dump(secrets, sort_keys=True, default_flow_style=False),
            mode=0o600,
        )

    def _limit_copy(self, inventory: Mapping[str, Any]) -> None:
        """An instance's inventory lists what runs: drop hand-written hosts nobody started."""
        data = yamlio.load_mapping(self._hand_written())
        data["name"] = self.name
        running = set(inventory.get("hosts") or {})
        data["hosts"] = {n: h for n, h in (data.get("hosts") or {}).items() if n in running}
        if "vcenter" not in inventory:
            data.pop("vcenter", None)
        write_atomic(
            self.inventory_path / HAND_WRITTEN,
            f"# Copy of inventories/lab/{HAND_WRITTEN} for lab instance {self.name!r}.\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=False),
        )

    # -- users of a shared instance (processes holding a lease)

    def _user_file(self, pid: int) -> Path:
        return self.state_dir / USERS_DIR / str(pid)

    def _register_user(self) -> None:
        path = self._user_file(os.getpid())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_start_time(os.getpid()))

    def _unregister_user(self) -> None:
        self._user_file(os.getpid()).unlink(missing_ok=True)

    def _live_users(self) -> list[int]:
        users: list[int] = []
        folder = self.state_dir / USERS_DIR
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            pid = int(path.name) if path.name.isdigit() else 0
            if pid and pid_alive(pid) and path.read_text() == _start_time(pid):
                users.append(pid)
            else:
                path.unlink(missing_ok=True)  # a user that died without releasing
        return users


def _start_time(pid: int) -> str:
    """The process start time (jiffies since boot): tells a reused PID from the original."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
