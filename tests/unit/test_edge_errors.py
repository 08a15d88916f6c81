"""Error kinds at the executors' edges, and secrets through the step context only.

Lower-layer errors (netmiko, paramiko, sockets, pyVmomi, IPAM's allocations) become our
exception tree with the cause kept, and every failed step or target carries its kind.
Connection failures are produced for real against a closed port on 127.0.0.1.
"""

from __future__ import annotations

import errno
import http.client
import socket
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from netmiko import ConnectHandler
from netmiko.exceptions import (
    ConfigInvalidException,
    NetmikoAuthenticationException,
    NetmikoTimeoutException,
    ReadTimeout,
)
from paramiko.ssh_exception import AuthenticationException
from pyVmomi import vim

from infra_automation.departments import _vsphere, ipam, network, vmware
from infra_automation.departments.ipam import IpamPool
from infra_automation.departments.vmware import VCenter
from infra_automation.exceptions import (
    ConfigurationError,
    TargetAuthError,
    TargetError,
    TargetRejected,
    TargetTimeout,
    TargetUnreachable,
)
from infra_automation.executors.base import RunResources, StepContext
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.record import open_database
from infra_automation.results import ErrorKind, Status, error_kind_of
from infra_automation.secrets import Secrets

ROOT = Path(__file__).resolve().parents[2]
K = ErrorKind


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raised_while(handling: BaseException, exc: BaseException) -> BaseException:
    """``exc`` raised inside ``except handling`` (as netmiko raises its connect errors)."""
    try:
        try:
            raise handling
        except BaseException:
            raise exc from None
    except BaseException as caught:
        return caught


# --- network: the mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind", "cls"),
    [
        (NetmikoAuthenticationException("Authentication to device failed."), K.AUTH,
         TargetAuthError),
        (AuthenticationException("Authentication failed."), K.AUTH, TargetAuthError),
        (raised_while(ConnectionRefusedError(111, "refused"),
                      NetmikoTimeoutException("TCP connection to device failed.")),
         K.UNREACHABLE, TargetUnreachable),
        (OSError(errno.EHOSTUNREACH, "No route to host"), K.UNREACHABLE, TargetUnreachable),
        (ConnectionRefusedError(111, "Connection refused"), K.UNREACHABLE, TargetUnreachable),
        (EOFError(), K.UNREACHABLE, TargetUnreachable),
        (NetmikoTimeoutException("Timed out waiting for data"), K.TIMEOUT, TargetTimeout),
        (ReadTimeout("Pattern not detected: 'core#' in output."), K.TIMEOUT, TargetTimeout),
        (TimeoutError("timed out"), K.TIMEOUT, TargetTimeout),
        (ConfigInvalidException("Invalid input detected at command: frobnicate 1"), K.REJECTED,
         TargetRejected),
        (ValueError("a bug"), K.INTERNAL, TargetError),
    ],
)  # fmt: skip
def test_device_errors_map_into_the_tree_with_their_cause(
    exc: BaseException, kind: ErrorKind, cls: type[TargetError]
) -> None:
    mapped = network.map_device_error(exc, "127.0.0.1:2201")
    assert type(mapped) is cls and mapped.__cause__ is exc
    assert error_kind_of(mapped) is kind
    assert "127.0.0.1:2201" in str(mapped)


def test_a_real_connect_to_a_closed_port_is_unreachable() -> None:
    port = closed_port()
    with pytest.raises(NetmikoTimeoutException) as info:
        ConnectHandler(
            device_type="cisco_ios", host="127.0.0.1", port=port, username="u", password="p",
            conn_timeout=3, allow_agent=False, use_keys=False,
        )  # fmt: skip
    mapped = network.map_device_error(info.value, f"127.0.0.1:{port}")
    assert error_kind_of(mapped) is K.UNREACHABLE
    assert str(mapped).startswith(f"unreachable: cannot connect to 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("push failed: Invalid input detected at command: frobnicate 7", K.REJECTED),
        ("verify failed: lines missing after the push: ip route x", K.REJECTED),
        ("save failed: saving the config failed: Operation not permitted", K.REJECTED),
        ("push failed: Pattern not detected: 'core\\(config\\)#' in output.", K.TIMEOUT),
        ("push failed: Invalid input; ROLLBACK FAILED: Pattern not detected", K.REJECTED),
    ],
)  # fmt: skip
def test_failed_changes_reported_as_data_have_a_kind(error: str, kind: ErrorKind) -> None:
    assert network.outcome_kind({"error": error}) is kind


def test_a_task_that_keeps_the_exception_is_mapped_by_it() -> None:
    outcome = {"error": "push failed: x", "exception": ReadTimeout("x")}
    assert network.outcome_kind(outcome) is K.TIMEOUT


# --- network: secrets through the step context ------------------------------------------------


def _router_inventory() -> Inventory:
    spec = InventoryFile.model_validate(
        {
            "name": "t",
            "hosts": {
                "core": {
                    "hostname": "127.0.0.1", "port": closed_port(), "platform": "cisco_ios",
                    "password_secret": "router_password", "data": {"role": "core", "asn": 65001},
                },
            },
        }
    )  # fmt: skip
    return Inventory(spec)


def _net_ctx(inventory: Inventory, secrets: Secrets | None) -> StepContext:
    return StepContext(
        run_id="r", project="demo", step_id="network", department="network",
        params=network.ConfigureParams(
            vlan_id=120, subnet="10.20.20.0/24", gateway="10.20.20.1", devices=["core"]
        ),
        inventory=inventory, secrets=secrets, resources=RunResources(), root=ROOT,
    )  # fmt: skip


def test_network_reads_device_passwords_from_the_step_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFRA_SECRET_ROUTER_PASSWORD", "from-the-inventory")
    ctx = _net_ctx(_router_inventory(), Secrets(env={"INFRA_SECRET_ROUTER_PASSWORD": "from-ctx"}))
    handle = network.run_nornir(ctx, ["core"])
    assert handle.nornir.inventory.hosts["core"].password == "from-ctx"


def test_network_without_secrets_in_the_context_fails_as_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFRA_SECRET_ROUTER_PASSWORD", "from-the-inventory")
    result = network.ConfigureExecutor().apply(_net_ctx(_router_inventory(), None))
    assert result.status is Status.FAILED and result.error_kind is K.INVALID
    assert "the step context has no secrets" in (result.error or "")


def test_an_unreachable_router_is_a_target_of_kind_unreachable() -> None:
    ctx = _net_ctx(_router_inventory(), Secrets(env={"INFRA_SECRET_ROUTER_PASSWORD": "pw-1234"}))
    try:
        result = network.ConfigureExecutor().preview(ctx)
    finally:
        ctx.resources.close()
    assert result.status is Status.FAILED and result.error_kind is K.UNREACHABLE
    (target,) = result.targets
    assert target.error_kind is K.UNREACHABLE and "unreachable" in (target.error or "")


# --- VMware -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (ConnectionRefusedError(111, "Connection refused"), TargetUnreachable),
        (http.client.RemoteDisconnected("Remote end closed connection"), TargetUnreachable),
        (http.client.BadStatusLine("garbage"), TargetUnreachable),
        (TimeoutError("timed out"), TargetTimeout),
        (vim.fault.InvalidLogin(msg="Login failure"), TargetAuthError),
        (vim.fault.DuplicateName(msg="dup", name="shop"), TargetRejected),
    ],
)
def test_vsphere_errors_map_into_the_tree(exc: BaseException, cls: type[TargetError]) -> None:
    with pytest.raises(cls) as info, _vsphere.vsphere_errors("create folder DC0/vm/shop"):
        raise exc
    assert info.value.__cause__ is exc


def _vc_inventory(port: int) -> Inventory:
    vc = VCenter(host="127.0.0.1", port=port, protocol="http", verify_tls=False)
    return Inventory(InventoryFile(name="t", vcenter=vc))


def _vm_ctx(inventory: Inventory, secrets: Secrets | None) -> StepContext:
    return StepContext(
        run_id="r", project="shop", step_id="vm_folder", department="vmware",
        params=vmware.FolderParams(project="shop"), inventory=inventory, secrets=secrets,
        resources=RunResources(), root=ROOT,
    )  # fmt: skip


def test_a_stopped_vcenter_is_unreachable() -> None:
    ctx = _vm_ctx(
        _vc_inventory(closed_port()), Secrets(env={"INFRA_SECRET_VCENTER_PASSWORD": "x" * 24})
    )
    result = vmware.FolderExecutor().apply(ctx)
    assert result.status is Status.FAILED and result.error_kind is K.UNREACHABLE
    assert "cannot connect" in (result.error or "")


def test_vmware_reads_the_password_from_the_step_context(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def connect(vc: VCenter, password: str) -> Any:
        seen.append(password)
        raise TargetAuthError("refused")

    monkeypatch.setattr(_vsphere.VSphere, "connect", staticmethod(connect))
    monkeypatch.setenv("INFRA_SECRET_VCENTER_PASSWORD", "from-the-inventory")
    inv = _vc_inventory(closed_port())
    result = vmware.FolderExecutor().apply(
        _vm_ctx(inv, Secrets(env={"INFRA_SECRET_VCENTER_PASSWORD": "from-ctx"}))
    )
    assert seen == ["from-ctx"] and result.error_kind is K.AUTH
    missing = vmware.FolderExecutor().apply(_vm_ctx(inv, None))
    assert missing.error_kind is K.INVALID and seen == ["from-ctx"]
    assert "no secrets in the step context" in (missing.error or "")


# --- IPAM ---------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> sa.Engine:
    return open_database(f"sqlite:///{tmp_path / 'record.db'}")


def _ipam_ctx(db: sa.Engine, project: str, **params: object) -> StepContext:
    pool = IpamPool(vlan_min=100, vlan_max=101, supernet="10.20.0.0/23", prefix_length=24)
    inv = Inventory(InventoryFile.model_validate({"name": "t", "ipam": {"pools": {"pl": pool}}}))
    return StepContext(
        run_id="r", project=project, step_id="ipam", department="network",
        params=ipam.AllocateParams.model_validate({"pool": "pl", "hosts": 2, **params}),
        inventory=inv, db=db,
    )  # fmt: skip


def test_ipam_exhaustion_is_rejected_in_check_mode_and_apply(db: sa.Engine) -> None:
    for name in ("a1", "a2"):
        assert ipam.AllocateExecutor().apply(_ipam_ctx(db, name)).status is Status.SUCCESS
    late = _ipam_ctx(db, "late")
    for result in (ipam.AllocateExecutor().preview(late), ipam.AllocateExecutor().apply(late)):
        assert result.status is Status.FAILED and result.error_kind is K.REJECTED
        assert "exhausted" in (result.error or "")


@pytest.mark.parametrize(
    ("params", "kind", "text"),
    [
        ({"vlan_id": 150}, K.INVALID, "outside pool"),
        ({"subnet": "10.99.0.0/24"}, K.INVALID, "outside pool"),
        ({"hosts": 300}, K.INVALID, "do not fit"),
        ({"vlan_id": 100}, K.REJECTED, "already allocated"),
        ({"subnet": "10.20.0.0/24"}, K.REJECTED, "overlaps"),
    ],
)
def test_ipam_bad_requests_are_invalid_conflicts_rejected(
    db: sa.Engine, params: dict[str, object], kind: ErrorKind, text: str
) -> None:
    assert ipam.AllocateExecutor().apply(_ipam_ctx(db, "first")).status is Status.SUCCESS
    result = ipam.AllocateExecutor().apply(_ipam_ctx(db, "second", **params))
    assert (result.status, result.error_kind) == (Status.FAILED, kind)
    assert text in (result.error or "")


def test_ipam_unknown_pool_is_invalid(db: sa.Engine) -> None:
    ctx = _ipam_ctx(db, "xx")
    bad = StepContext(**{**ctx.__dict__, "params": ipam.AllocateParams(pool="nope")})
    result = ipam.AllocateExecutor().apply(bad)
    assert result.error_kind is K.INVALID and "no pool 'nope'" in (result.error or "")
    with pytest.raises(ConfigurationError):
        ipam.pool_supernet("pl", IpamPool(vlan_min=5, vlan_max=1, supernet="10.0.0.0/8",
                                          prefix_length=24))  # fmt: skip
