"""Network department: a project's gateway, route origination and prefix-list on routers.

Executors ``network.configure`` and ``network.unconfigure`` run the Nornir tasks of
``<root>/tasks/network.py`` (content, like templates and playbooks) over nornir-netmiko.
One Nornir object — and so one SSH connection per device — is opened per run and shared by
every network step of that run (``ctx.resources``); it is built from our inventory
(hostname, port, username, platform normalized by netutils, SSH key via connection
extras).

Per device the config comes from ``templates/network/<platform>/<role>.j2`` (``role`` from
the host's data: core, edge, leaf). Every string that reaches a template is validated
(``SafeText``/``Name``; addresses are ``ipaddress`` types), so no request value can add a
line to a device config.

Errors are mapped at this edge to the exception tree and an ``error_kind`` per device
(:func:`map_device_error`, the cause kept as ``__cause__``): netmiko/paramiko authentication
failures -> ``TargetAuthError`` (auth); a failed TCP/SSH connect (refused, no route, no SSH
banner) -> ``TargetUnreachable``; netmiko read timeouts -> ``TargetTimeout``; a config line
the device rejects (``error_pattern=r"^%"``) -> ``TargetRejected``. Failures the tasks report
as data (push, verify or save of a change, then rolled back) are ``rejected``, a push that
timed out ``timeout``. Secrets come from the step context (``ctx.secrets``) only.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infra_automation.exceptions import (
    ConfigurationError,
    RenderError,
    TargetAuthError,
    TargetError,
    TargetRejected,
    TargetTimeout,
    TargetUnreachable,
)
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.inventory import Host, Inventory
from infra_automation.leases import Leases
from infra_automation.render import render_template
from infra_automation.results import ErrorKind, Status, StepResult, TargetResult, error_kind_of
from infra_automation.secrets import Secrets
from infra_automation.validation import NAME_RE, Name, SafeText

if TYPE_CHECKING:
    from sqlalchemy import Engine

WORKERS = 20
CONNECT_TIMEOUT = 10
ORIGIN_ROLES = frozenset({"core", "leaf"})  # roles whose template originates the subnet
LEARN_ROLES = frozenset({"edge"})  # roles that should learn the subnet over BGP


class _Routers(BaseModel):
    """Which routers a change of the project's network reaches, and how (both directions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: SafeText | None = Field(default=None, max_length=80)
    group: Name = "routers"
    devices: list[Name] = Field(default_factory=list, description="default: the whole group")
    bgp_wait: float = Field(default=20.0, ge=0, le=300, description="seconds to wait for BGP")
    save: bool = True


class ConfigureParams(_Routers):
    """The project's network, usually straight from ``ipam.allocate``'s outputs."""

    vlan_id: int = Field(ge=1, le=4094)
    subnet: IPv4Network
    gateway: IPv4Address

    @model_validator(mode="after")
    def _gateway_in_subnet(self) -> ConfigureParams:
        if self.gateway not in self.subnet or self.gateway in (
            self.subnet.network_address,
            self.subnet.broadcast_address,
        ):
            raise ValueError(f"gateway {self.gateway} is not a usable address of {self.subnet}")
        return self


class UnconfigureParams(_Routers):
    """``network.unconfigure``: the project's network as IPAM has it (``ipam.lookup``), or
    none of vlan_id, subnet, gateway when IPAM holds no allocation (a project never built, or
    decommissioned already): then nothing is known of it on the routers, nothing to remove."""

    vlan_id: int | None = Field(default=None, ge=1, le=4094)
    subnet: IPv4Network | None = None
    gateway: IPv4Address | None = None

    @model_validator(mode="after")
    def _all_or_none(self) -> UnconfigureParams:
        given = [f for f in ("vlan_id", "subnet", "gateway") if getattr(self, f) is not None]
        if given and len(given) < 3:
            raise ValueError("vlan_id, subnet, gateway: all three (the allocation) or none")
        return self

    def network(self) -> ConfigureParams | None:
        """The params of the removal; None: no allocation, nothing to remove."""
        if self.subnet is None:
            return None
        return ConfigureParams.model_validate(self.model_dump())


class DeviceState(BaseModel):
    """What was read back from one device after the step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str
    role: str
    changed: bool
    lines_present: bool | None  # the project's lines are in the running config
    bgp_prefix_learned: bool | None = None  # edge routers: the subnet is in the BGP table
    rolled_back: bool = False
    error: str | None = None


class ConfigureOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vlan_id: int
    subnet: str
    gateway: str
    interface: str
    prefix_list: str
    devices: list[DeviceState]


# --- the Nornir object of a run -----------------------------------------------------------


@dataclass
class NornirHandle:
    """A run's Nornir object; ``lock`` serializes steps that use the same connections."""

    nornir: Any
    lock: threading.Lock


def netmiko_platform(platform: str | None) -> str:
    """Normalize any library's platform name (napalm ``ios``, ansible ``cisco.ios.ios``...)
    to netmiko's device type with netutils' lib_mapper."""
    from netutils import lib_mapper

    if not platform:
        raise ConfigurationError("host has no platform")
    mappers = (
        lib_mapper.NETMIKO_LIB_MAPPER,
        lib_mapper.MAIN_LIB_MAPPER,
        lib_mapper.NAPALM_LIB_MAPPER,
        lib_mapper.ANSIBLE_LIB_MAPPER,
        lib_mapper.SCRAPLI_LIB_MAPPER,
        lib_mapper.PYATS_LIB_MAPPER,
        lib_mapper.NTCTEMPLATES_LIB_MAPPER,
    )
    for mapper in mappers:
        if platform in mapper:
            normalized = mapper[platform]
            device_type = lib_mapper.NETMIKO_LIB_MAPPER_REVERSE.get(normalized)
            if device_type:
                return str(device_type)
    raise ConfigurationError(f"platform {platform!r} is not known to netutils' lib_mapper")


def build_nornir(
    inventory: Inventory, hosts: list[str], secrets: Secrets | None, workers: int = WORKERS
) -> Any:
    """A Nornir object over ``hosts`` of our inventory (ThreadedRunner, netmiko extras);
    device passwords (``password_secret``) are read from ``secrets`` (the step's)."""
    from nornir.core import Nornir
    from nornir.core.configuration import Config
    from nornir.core.inventory import ConnectionOptions, Defaults, Groups, Hosts
    from nornir.core.inventory import Host as NornirHost
    from nornir.core.inventory import Inventory as NornirInventory
    from nornir.core.plugins.connections import ConnectionPluginRegister
    from nornir.plugins.runners import ThreadedRunner

    ConnectionPluginRegister.auto_register()
    nornir_hosts = Hosts()
    for name in hosts:
        host = inventory.host(name)
        nornir_hosts[name] = NornirHost(
            name=name,
            hostname=host.hostname,
            port=host.port,
            username=host.username,
            password=_password(secrets, host),
            platform=netmiko_platform(host.platform),
            data=dict(host.data),
            connection_options={"netmiko": ConnectionOptions(extras=_extras(host))},
        )
    return Nornir(
        inventory=NornirInventory(hosts=nornir_hosts, groups=Groups(), defaults=Defaults()),
        runner=ThreadedRunner(num_workers=workers),
        config=Config(),
    )


def _password(secrets: Secrets | None, host: Host) -> str | None:
    if not host.password_secret:
        return None
    if secrets is None:
        raise ConfigurationError(
            f"host {host.name!r}: password_secret is set but the step context has no secrets"
        )
    return secrets.get(host.password_secret)


def _extras(host: Host) -> dict[str, Any]:
    extras: dict[str, Any] = {
        "allow_agent": False,
        "conn_timeout": CONNECT_TIMEOUT,
        "auth_timeout": CONNECT_TIMEOUT,
        "banner_timeout": CONNECT_TIMEOUT,
    }
    if host.ssh_key_file:
        extras.update(use_keys=True, key_file=host.ssh_key_file)
    return extras


def run_nornir(ctx: StepContext, hosts: list[str]) -> NornirHandle:
    """The run's Nornir object (created by the first network step, closed at run end)."""
    key = f"network.nornir:{ctx.inventory.name}:{id(ctx.inventory)}"
    wanted = [h for h in ctx.inventory.hosts if _is_network_host(ctx.inventory.host(h))]
    wanted += [h for h in hosts if h not in wanted]
    handle = ctx.resources.get(
        key,
        lambda: NornirHandle(build_nornir(ctx.inventory, wanted, ctx.secrets), threading.Lock()),
        _close,
    )
    return handle


def _is_network_host(host: Host) -> bool:
    return bool(host.hostname) and host.data.get("role") is not None and host.platform is not None


def _close(handle: NornirHandle) -> None:
    handle.nornir.close_connections(on_good=True, on_failed=True)


# --- tasks (content under <root>/tasks) ----------------------------------------------------

_tasks_lock = threading.Lock()


def load_tasks(root: Path) -> ModuleType:
    """``<root>/tasks/network.py`` as a module (cached per path and modification time)."""
    path = (root / "tasks" / "network.py").resolve()
    if not path.is_file():
        raise ConfigurationError(f"network tasks not found: {path}")
    name = f"_infra_tasks_network_{abs(hash((str(path), path.stat().st_mtime_ns)))}"
    with _tasks_lock:
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigurationError(f"cannot load network tasks from {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            del sys.modules[name]
            raise
        return module


# --- rendering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one step will do: validated params, target devices and their intended configs."""

    params: ConfigureParams
    devices: list[str]
    roles: dict[str, str]
    intended: dict[str, str]
    outputs_base: dict[str, Any]


def make_plan(ctx: StepContext) -> Plan:
    """Validate everything and render every device's config; nothing touches a device."""
    try:  # validated again here: a params object built without validation is refused too
        params = ConfigureParams.model_validate(ctx.params.model_dump())
    except ValidationError as exc:
        raise ConfigurationError(_validation_message(exc)) from exc
    if not NAME_RE.fullmatch(ctx.project):
        raise ConfigurationError(f"project: {ctx.project!r} is not a valid name")
    devices = list(ctx.targets) or params.devices or ctx.inventory.select(group=params.group)
    if not devices:
        raise ConfigurationError(f"group {params.group!r} has no devices")
    base = {
        "vlan_id": params.vlan_id,
        "subnet": str(params.subnet),
        "gateway": str(params.gateway),
        "interface": f"vlan{params.vlan_id}",
        "prefix_list": f"PROJECT-{ctx.project}",
    }
    variables = {
        **base,
        "project": ctx.project,
        "prefix_length": params.subnet.prefixlen,
        "netmask": str(params.subnet.netmask),
        "network": str(params.subnet.network_address),
        "description": params.description or f"project {ctx.project}",
    }
    roles: dict[str, str] = {}
    intended: dict[str, str] = {}
    for name in devices:
        host = ctx.inventory.connectable(name)
        roles[name] = str(host.data.get("role", ""))
        intended[name] = render_device(ctx.root, host, variables)
    return Plan(params, devices, roles, intended, base)


def render_device(root: Path, host: Host, variables: Mapping[str, Any]) -> str:
    role = host.data.get("role")
    if not isinstance(role, str) or not NAME_RE.fullmatch(role):
        raise ConfigurationError(f"host {host.name!r}: data.role must be a name (core, edge...)")
    platform = netmiko_platform(host.platform)
    template = f"network/{platform}/{role}.j2"
    return render_template(root / "templates", template, {**variables, "host": host.data})


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
    )


# --- executors ---------------------------------------------------------------------------


class ConfigureExecutor:
    """Configure the project's network on the routers (``tasks.network.apply_config``)."""

    info = ExecutorInfo(
        key="network.configure",
        department="network",
        description="Gateway interface, route origination (core) and prefix-list (edge).",
        params=ConfigureParams,
        outputs=ConfigureOutputs,
        requires=("nornir", "nornir_netmiko", "netmiko"),
        extra="network",
    )
    task_name = "apply_config"
    expect_learned = True  # edge routers should learn the subnet: wait for BGP

    def preview(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=True)

    def apply(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=ctx.check)

    def _run(self, ctx: StepContext, check: bool) -> StepResult:
        try:
            plan = self.make_plan(ctx)
            tasks = load_tasks(ctx.root)
            handle = run_nornir(ctx, plan.devices)
        except (ConfigurationError, RenderError) as exc:
            return StepResult.failure(str(exc), kind=error_kind_of(exc))
        locks = [] if check else plan.devices  # a preview changes nothing: no device lock
        with handle.lock, device_locks(ctx.db, locks):
            nornir = handle.nornir.filter(filter_func=lambda h: h.name in plan.devices)
            handle.nornir.data.reset_failed_hosts()
            results = nornir.run(
                task=getattr(tasks, self.task_name),
                name=self.info.key,
                intended=plan.intended,
                check=check,
                save_after=plan.params.save,
            )
            learned = self._bgp_check(tasks, nornir, plan, results, check)
            read = self.read_back(tasks, nornir, plan, results)
        return self._result(ctx, plan, results, learned, read)

    def make_plan(self, ctx: StepContext) -> Plan:
        """Validated params and every device's intended config (subclasses render others)."""
        return make_plan(ctx)

    def read_back(self, tasks: ModuleType, nornir: Any, plan: Plan, results: Any) -> Any:
        """What a subclass reads from its devices after the change, for its outputs."""
        return None

    def outputs(self, plan: Plan, states: list[DeviceState], read: Any) -> dict[str, Any]:
        return ConfigureOutputs(**plan.outputs_base, devices=states).model_dump(mode="json")

    def _bgp_check(
        self,
        tasks: ModuleType,
        nornir: Any,
        plan: Plan,
        results: Any,
        check: bool,
    ) -> dict[str, bool]:
        """Edge devices: is the subnet in their BGP table? Waits up to ``bgp_wait`` when a
        router of this step originates it (returns at once when already learned)."""
        edges = [d for d in plan.devices if plan.roles[d] in LEARN_ROLES and not results[d].failed]
        if not edges:
            return {}
        originated = any(
            plan.roles[d] in ORIGIN_ROLES and not results[d].failed for d in plan.devices
        )
        wait = plan.params.bgp_wait if self.expect_learned and originated and not check else 0.0
        checked = nornir.filter(filter_func=lambda h: h.name in edges).run(
            task=tasks.bgp_prefix_learned,
            name="bgp prefix check",
            prefix=str(plan.params.subnet),
            wait=wait,
        )
        return {d: bool(checked[d][0].result) for d in edges if not checked[d].failed}

    def _result(
        self, ctx: StepContext, plan: Plan, results: Any, learned: Mapping[str, bool], read: Any
    ) -> StepResult:
        targets: list[TargetResult] = []
        states: list[DeviceState] = []
        for device in plan.devices:
            target, state = _device_outcome(device, plan.roles[device], results[device], learned)
            ctx.emit(
                "task",
                {
                    "host": device,
                    "task": self.info.key,
                    "status": "failed" if target.failed else "changed" if target.changed else "ok",
                },
            )
            targets.append(target)
            states.append(state)
        outputs = self.outputs(plan, states, read)
        return StepResult.from_targets(tuple(targets), outputs=outputs)


# How long a change waits for another run's change of the same device.
DEVICE_LOCK_WAIT = 600.0


@contextmanager
def device_locks(db: Engine | None, devices: Sequence[str]) -> Iterator[None]:
    """Hold one lease per device (``device:<name>``, taken in sorted order: no deadlock)
    while changing it.

    A change is snapshot -> push -> verify -> save, and a rollback restores the snapshot:
    two runs (of different projects, on any machine sharing the run record's database) must
    not interleave on one device, or one's rollback would undo the other's change.
    """
    if not devices:
        yield
        return
    if db is None:
        raise ConfigurationError("device locks are leases in the run record: no database given")
    # No run id on these leases: a run's liveness is its project lease alone (a killed run
    # reads interrupted when that one expires); a device lease only keeps other changes off.
    with Leases(db) as leases:
        leases.acquire_all([f"device:{d}" for d in devices], timeout=DEVICE_LOCK_WAIT)
        yield


class UnconfigureExecutor(ConfigureExecutor):
    """Remove the project's lines from the routers (decommission)."""

    info = ExecutorInfo(
        key="network.unconfigure",
        department="network",
        description="Remove the project's gateway, route origination and prefix-list.",
        params=UnconfigureParams,
        outputs=ConfigureOutputs,
        requires=("nornir", "nornir_netmiko", "netmiko"),
        extra="network",
    )
    task_name = "remove_config"
    expect_learned = False

    def _run(self, ctx: StepContext, check: bool) -> StepResult:
        try:  # validated again: a params object built without validation is refused too
            network = ctx.typed_params(UnconfigureParams).network()
        except ValidationError as exc:
            error = ConfigurationError(_validation_message(exc))
            return StepResult.failure(str(error), kind=error_kind_of(error))
        if network is None:
            return nothing_allocated(ctx, self.outputs_of_nothing(ctx))
        return super()._run(replace(ctx, params=network), check)

    def outputs_of_nothing(self, ctx: StepContext) -> dict[str, Any]:
        outputs = ConfigureOutputs(
            vlan_id=0, subnet="", gateway="", interface="", prefix_list="", devices=[]
        )
        return outputs.model_dump(mode="json")


def nothing_allocated(ctx: StepContext, outputs: Mapping[str, Any]) -> StepResult:
    """A removal of a project IPAM holds no allocation of: succeeded, nothing changed."""
    what = f"project {ctx.project!r} has no allocation: nothing to remove"
    ctx.emit("task", {"host": "routers", "task": what, "status": "ok"})
    return StepResult.success(outputs=outputs)


def _device_outcome(
    device: str, role: str, multi: Any, learned: Mapping[str, bool]
) -> tuple[TargetResult, DeviceState]:
    result = multi[0]
    if multi.failed and not isinstance(result.result, dict):
        error = device_error(multi)
        target = TargetResult(
            device, Status.FAILED, error=str(error), error_kind=error_kind_of(error)
        )
        return target, DeviceState(
            device=device, role=role, changed=False, lines_present=None, error=str(error)
        )
    outcome: dict[str, Any] = result.result
    state = DeviceState(
        device=device,
        role=role,
        changed=bool(outcome["changed"]),
        lines_present=bool(outcome["lines_present"]),
        bgp_prefix_learned=learned.get(device) if role in LEARN_ROLES else None,
        rolled_back=bool(outcome["rolled_back"]),
        error=outcome["error"],
    )
    status = Status.FAILED if outcome["error"] else Status.SUCCESS
    target = TargetResult(
        device,
        status,
        changed=state.changed,
        diff=str(outcome["diff"]),
        error=outcome["error"],
        details=state.model_dump(mode="json"),
        error_kind=outcome_kind(outcome) if outcome["error"] else None,
    )
    return target, state


# --- error mapping ---------------------------------------------------------------------------

# netmiko's text for a read that never saw the prompt (ReadTimeout); tasks report a failed
# change as text (``push failed: <message>``), so this is how a push timeout is told apart.
READ_TIMEOUT_TEXT = "Pattern not detected"


def device_error(multi: Any) -> TargetError:
    """The exception a device's task raised, as our exception tree (names the device)."""
    exc = next((r.exception for r in multi if r.exception is not None), None)
    host = multi[0].host
    where = f"{host.hostname}:{host.port}" if host is not None else "device"
    if exc is None:
        return TargetError(f"failed on {where}: {multi[0].result}")
    return map_device_error(exc, where)


def map_device_error(exc: BaseException, where: str) -> TargetError:
    """A netmiko / paramiko / socket error as a TargetError subclass, ``exc`` as its cause."""
    text = " ".join(str(exc).split())[:300]
    kind = _device_error_kind(exc)
    mapped: TargetError
    if kind is ErrorKind.AUTH:
        mapped = TargetAuthError(f"authentication refused by {where} ({text})")
    elif kind is ErrorKind.UNREACHABLE:
        mapped = TargetUnreachable(f"unreachable: cannot connect to {where} ({text})")
    elif kind is ErrorKind.TIMEOUT:
        mapped = TargetTimeout(f"timeout: {where} did not answer in time ({text})")
    elif kind is ErrorKind.REJECTED:
        mapped = TargetRejected(f"rejected by {where}: {text}")
    else:
        mapped = TargetError(f"{type(exc).__name__} on {where}: {text}")
    mapped.__cause__ = exc  # what ``raise mapped from exc`` records
    return mapped


def _device_error_kind(exc: BaseException) -> ErrorKind:
    from netmiko.exceptions import ConfigInvalidException, NetmikoTimeoutException, ReadTimeout
    from paramiko.ssh_exception import (  # type: ignore[import-untyped]  # paramiko has no stubs
        AuthenticationException,
        SSHException,
    )

    if isinstance(exc, TargetError):
        return error_kind_of(exc)
    if isinstance(exc, AuthenticationException):  # netmiko's auth error is a subclass
        return ErrorKind.AUTH
    if isinstance(exc, ConfigInvalidException):
        return ErrorKind.REJECTED
    if isinstance(exc, ReadTimeout):
        return ErrorKind.TIMEOUT
    if isinstance(exc, NetmikoTimeoutException):
        # raised while handling the failed TCP/SSH connect (refused, no route, no banner):
        # unreachable; raised on its own (no prompt after login, session lock): a timeout
        return ErrorKind.UNREACHABLE if exc.__context__ is not None else ErrorKind.TIMEOUT
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, OSError | EOFError | SSHException):  # refused, reset, closed, no route
        return ErrorKind.UNREACHABLE
    return ErrorKind.INTERNAL


def outcome_kind(outcome: Mapping[str, Any]) -> ErrorKind:
    """The kind of a failed change the task reported as data (``<stage> failed: ...``).

    The device refused the change (a rejected line, lines missing after the push, a failed
    ``write memory``): rejected; a push whose answer never came: timeout.
    """
    exc = outcome.get("exception")
    if isinstance(exc, BaseException):  # tasks that keep the exception: map it exactly
        return _device_error_kind(exc)
    error = str(outcome.get("error") or "")
    if error.startswith("push failed") and READ_TIMEOUT_TEXT in error.split("; ROLLBACK")[0]:
        return ErrorKind.TIMEOUT
    return ErrorKind.REJECTED
