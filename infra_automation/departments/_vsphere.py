"""vSphere plumbing for the VMware department: one session per run, task waiting, fault mapping.

pyVmomi is imported here and in :mod:`infra_automation.departments._vmware_ops` only: both
are imported when a step or a verifier talks to vCenter, never to plan.

Errors are mapped at this edge (``raise ... from exc``):

- ``vim.fault.InvalidLogin`` / ``NotAuthenticated`` / ``NoPermission`` -> ``TargetAuthError``
- any other vSphere fault -> ``TargetRejected`` carrying the fault's own message
- connection refused / reset, a broken HTTP answer -> ``TargetUnreachable``;
  socket or task timeouts -> ``TargetTimeout``

:func:`error_kind_of` turns them into the step's ``error_kind`` (auth, rejected, unreachable,
timeout). The password is read from the step context's secrets (``ctx.secrets``) only.

Reads (:func:`read`: lookups, listings, object properties, task polling) are tried again,
after a short pause, when the connection drops without an answer: a vCenter behind a load balancer
closes idle keep-alive connections, and vcsim drops the connection when a request panics in it.
Calls that change something are never repeated.

vcsim pitfalls (govmomi 0.24), each a panic that drops the connection:

- reading an *unset* property through pyVmomi's lazy accessor (e.g. ``template.resourcePool``).
  Read whole objects (``vm.config``) or use the property collector, as this module does;
- ``FindByInventoryPath`` into a folder while a clone into it is under way ("VirtualMachine
  ... does not have a Name"): two steps cloning into one project's folder at once (the web VMs
  and the database VM) meet it. The read's retry covers it.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pyVmomi
from pyVim.connect import Disconnect, SmartConnect

from infra_automation.departments.vmware import VCenter, vcenter_config
from infra_automation.exceptions import (
    ConfigurationError,
    TargetAuthError,
    TargetError,
    TargetRejected,
    TargetTimeout,
    TargetUnreachable,
)
from infra_automation.executors.base import StepContext

# pyVmomi's stubs leave the data-object constructors unannotated: use the SDK dynamically.
vim: Any = pyVmomi.vim
vmodl: Any = pyVmomi.vmodl

log = logging.getLogger(__name__)
T = TypeVar("T")

TASK_TIMEOUT = 300.0
CONNECT_TIMEOUT = 30
# Pauses before each new try of a read whose connection dropped without an answer.
READ_RETRY_DELAYS = (0.05, 0.2, 0.5)
# A connection closed or reset under the request (RemoteDisconnected is a ConnectionResetError);
# a refused connection (vCenter down) is not among them and fails at once.
DROPPED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
AUTH_FAULTS = ("InvalidLogin", "NotAuthenticated", "NoPermission", "InvalidLocale")
# Fault fields worth showing when vCenter leaves ``msg`` empty (vcsim often does).
FAULT_FIELDS = (
    "name",
    "object",
    "invalidProperty",
    "property",
    "file",
    "datastore",
    "existingState",
    "requestedState",
    "obj",
    "type",
)


# --- faults ---------------------------------------------------------------------------------


def fault_name(fault: BaseException) -> str:
    """``vim.fault.DuplicateName`` -> ``DuplicateName``."""
    return type(fault).__name__.rsplit(".", 1)[-1]


def fault_message(fault: BaseException) -> str:
    """The fault's own message, its localized messages, and its telling fields."""
    parts: list[str] = []
    msg = str(getattr(fault, "msg", "") or "")
    if msg and not msg.startswith("*types."):  # vcsim puts the Go type name here
        parts.append(msg)
    for item in getattr(fault, "faultMessage", None) or []:
        text = getattr(item, "message", "")
        if text and text not in parts:
            parts.append(str(text))
    fields = []
    for attr in FAULT_FIELDS:
        value = getattr(fault, attr, None)
        if value is None or (isinstance(value, str) and not value):
            continue
        shown = getattr(value, "_moId", value)
        fields.append(f"{attr}={shown}")
    text = "; ".join(parts)
    if fields:
        text = f"{text} ({', '.join(fields)})" if text else ", ".join(fields)
    return f"{fault_name(fault)}: {text}" if text else fault_name(fault)


def map_fault(fault: BaseException, what: str) -> TargetError:
    message = f"{what}: vCenter fault {fault_message(fault)}"
    if fault_name(fault) in AUTH_FAULTS:
        return TargetAuthError(message)
    return TargetRejected(message)


@contextlib.contextmanager
def vsphere_errors(what: str) -> Iterator[None]:
    """Map pyVmomi and socket errors raised inside the block to our exception tree."""
    try:
        yield
    except TargetError:
        raise
    except vmodl.MethodFault as exc:
        raise map_fault(exc, what) from exc
    except TimeoutError as exc:
        raise TargetTimeout(f"{what}: vCenter did not answer in time") from exc
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, unreachable, DNS
        raise TargetUnreachable(f"{what}: vCenter unreachable: {exc}") from exc


def read(what: str, call: Callable[[], T]) -> T:
    """``call()``, a read of vCenter, its errors mapped: tried again after each pause of
    ``READ_RETRY_DELAYS`` while the connection drops under it (never for a call that changes
    something: those use :func:`vsphere_errors`)."""
    for delay in READ_RETRY_DELAYS:
        try:
            with vsphere_errors(what):
                return call()
        except TargetUnreachable as exc:
            if not isinstance(exc.__cause__, DROPPED):
                raise
            log.warning("%s: connection dropped (%s); trying again", what, exc.__cause__)
        time.sleep(delay)
    with vsphere_errors(what):
        return call()


# --- the session ----------------------------------------------------------------------------


@dataclass
class VSphere:
    """A logged-in vCenter session and the inventory's object names."""

    si: Any
    vc: VCenter

    @classmethod
    def connect(cls, vc: VCenter, password: str, timeout: float = CONNECT_TIMEOUT) -> VSphere:
        where = f"vCenter {vc.host}:{vc.port}"
        try:
            si = SmartConnect(  # type: ignore[no-untyped-call]  # pyVim.connect is unannotated
                host=vc.host,
                port=vc.port,
                user=vc.username,
                pwd=password,
                protocol=vc.protocol,
                disableSslCertValidation=not vc.verify_tls,
                httpConnectionTimeout=timeout,
            )
        except vim.fault.InvalidLogin as exc:
            raise TargetAuthError(
                f"{where}: login as {vc.username!r} refused ({fault_message(exc)}); "
                f"check the secret {vc.password_secret!r}"
            ) from exc
        except vmodl.MethodFault as exc:
            raise map_fault(exc, f"{where}: login") from exc
        except TimeoutError as exc:
            raise TargetTimeout(f"{where}: no answer within {timeout}s") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TargetUnreachable(f"{where}: cannot connect: {exc}") from exc
        return cls(si=si, vc=vc)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # logging out of a dead session is not an error
            Disconnect(self.si)  # type: ignore[no-untyped-call]  # pyVim.connect is unannotated

    @property
    def content(self) -> Any:
        return self.si.content

    # --- inventory paths ----------------------------------------------------------------

    def path(self, kind: str, *names: str) -> str:
        """``DC0/vm/<vm_root_folder>/<names>`` for kind ``vm``; ``DC0/network/...`` etc."""
        parts = [self.vc.datacenter, kind]
        if kind == "vm" and self.vc.vm_root_folder:
            parts += [p for p in self.vc.vm_root_folder.split("/") if p]
        return "/".join(parts + list(names))

    def find(self, path: str) -> Any | None:
        return read(f"look up {path}", lambda: self.content.searchIndex.FindByInventoryPath(path))

    def find_typed(self, path: str, kind: type[Any], what: str) -> Any | None:
        """The object at ``path``; TargetRejected if something of another type is there."""
        obj = self.find(path)
        if obj is not None and not isinstance(obj, kind):
            raise TargetRejected(
                f"{what} {path!r} exists but is a {fault_name(obj)}, not a {kind.__name__}"
            )
        return obj

    def require(self, path: str, kind: type[Any], what: str) -> Any:
        obj = self.find_typed(path, kind, what)
        if obj is None:
            raise TargetRejected(f"{what} {path!r} not found in vCenter {self.vc.host}")
        return obj

    def datacenter(self) -> Any:
        return self.require(self.vc.datacenter, vim.Datacenter, "datacenter")

    def vm_names(self) -> dict[str, list[str]]:
        """Every VM and template of the datacenter: name -> parent folder names."""
        dc = self.datacenter()
        return read("list VMs", lambda: self._vm_names(dc))

    def _vm_names(self, dc: Any) -> dict[str, list[str]]:
        pc = vmodl.query.PropertyCollector
        view = self.content.viewManager.CreateContainerView(dc.vmFolder, [vim.VirtualMachine], True)
        try:
            traverse = pc.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView
            )
            spec = pc.FilterSpec(
                objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["name", "parent"])],
            )
            found = self.content.propertyCollector.RetrieveContents([spec]) or []
        finally:
            with contextlib.suppress(Exception):  # a view dies with its session anyway
                view.Destroy()
        parents: dict[str, Any] = {}
        out: dict[str, list[str]] = {}
        for item in found:
            props: dict[str, Any] = {p.name: p.val for p in item.propSet}
            parent = props["parent"]
            key = getattr(parent, "_moId", "")
            if key and key not in parents:
                parents[key] = parent.name
            out.setdefault(str(props.get("name", "")), []).append(parents.get(key, "?"))
        return out

    # --- tasks --------------------------------------------------------------------------

    def wait(self, task: Any, what: str, timeout: float = TASK_TIMEOUT) -> Any:
        """Wait for a vCenter task; its fault becomes TargetRejected/TargetAuthError."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            info = read(what, lambda: task.info)
            if info.state == vim.TaskInfo.State.success:
                return info.result
            if info.state == vim.TaskInfo.State.error:
                raise map_fault(info.error, what)
            if time.monotonic() > deadline:
                raise TargetTimeout(
                    f"{what}: vCenter task {task._moId} still {info.state} after {timeout:.0f}s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def session(ctx: StepContext) -> VSphere:
    """The run's vCenter session: created by the first step that asks, logged out at run end."""
    vc = vcenter_config(ctx.inventory)
    if ctx.secrets is None:
        raise ConfigurationError(f"step {ctx.step_id!r}: no secrets in the step context")
    password = ctx.secrets.get(vc.password_secret)
    return ctx.resources.get(
        f"vmware:{vc.host}:{vc.port}",
        lambda: VSphere.connect(vc, password),
        VSphere.close,
    )
