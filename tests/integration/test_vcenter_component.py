"""The lab's vCenter component against the real simulator process it starts.

Runs its own instance (``vctest``, state in a temp dir) so that up/down can be exercised
without disturbing the session lab.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

from infra_automation.lab.base import Fragment, LabContext, pid_alive, read_pid
from infra_automation.lab.vcenter import VCenterSim, port_answers

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def component() -> VCenterSim:
    comp = VCenterSim()
    if comp.requirements():
        pytest.skip(f"vcsim cannot be built here: {comp.requirements()}")
    return comp


@pytest.fixture(scope="module")
def lab_ctx(tmp_path_factory: pytest.TempPathFactory) -> LabContext:
    return LabContext(name="vctest", root=ROOT, state_dir=tmp_path_factory.mktemp("vctest"))


@pytest.fixture(scope="module")
def running(component: VCenterSim, lab_ctx: LabContext) -> Iterator[Fragment]:
    fragment = component.up(lab_ctx)
    yield fragment
    component.down(lab_ctx)


def _connect(fragment: Fragment, password: str) -> vim.ServiceInstance:
    vc = fragment.inventory["vcenter"]
    return SmartConnect(
        host=vc["host"], port=vc["port"], user=vc["username"], pwd=password, protocol="http"
    )


def _pid(lab_ctx: LabContext) -> int:
    pid = read_pid(lab_ctx.state_dir / "vcenter" / "vcsim.pid")
    assert pid is not None
    return pid


def test_fragment_names_a_local_http_vcenter(running: Fragment) -> None:
    vc = running.inventory["vcenter"]
    assert vc["host"] == "127.0.0.1"
    assert vc["protocol"] == "http"
    assert vc["username"] == "user"
    assert port_answers(vc["port"])
    assert len(running.secrets["vcenter_password"]) >= 24


def test_login_with_the_generated_password_shows_the_lab_model(running: Fragment) -> None:
    si = _connect(running, running.secrets["vcenter_password"])
    try:
        content = si.RetrieveContent()
        index = content.searchIndex
        assert isinstance(index.FindByInventoryPath("DC0"), vim.Datacenter)
        assert isinstance(index.FindByInventoryPath("DC0/host/DC0_C0"), vim.ClusterComputeResource)
        assert isinstance(index.FindByInventoryPath("DC0/datastore/LocalDS_0"), vim.Datastore)
        dvs = index.FindByInventoryPath("DC0/network/DVS0")
        assert isinstance(dvs, vim.DistributedVirtualSwitch)
        template = index.FindByInventoryPath("DC0/vm/debian12-template")
        assert isinstance(template, vim.VirtualMachine)
        assert template.config.template is True
        assert template.runtime.powerState == "poweredOff"
        cluster = index.FindByInventoryPath("DC0/host/DC0_C0")
        assert len(cluster.host) == 3
    finally:
        Disconnect(si)


@pytest.mark.parametrize("password", ["wrong-password", "pass"])
def test_other_passwords_are_refused(running: Fragment, password: str) -> None:
    with pytest.raises(vim.fault.InvalidLogin) as info:
        _connect(running, password)
    assert "Login failure" in info.value.msg


def test_other_user_is_refused(running: Fragment) -> None:
    vc = running.inventory["vcenter"]
    with pytest.raises(vim.fault.InvalidLogin):
        SmartConnect(
            host=vc["host"],
            port=vc["port"],
            user="administrator",
            pwd=running.secrets["vcenter_password"],
            protocol="http",
        )


def test_password_is_not_on_the_command_line(running: Fragment, lab_ctx: LabContext) -> None:
    pid = _pid(lab_ctx)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert running.secrets["vcenter_password"].encode() not in argv
    log = (lab_ctx.state_dir / "vcenter" / "vcsim.log").read_text()
    assert running.secrets["vcenter_password"] not in log
    mode = (lab_ctx.state_dir / "vcenter" / "password").stat().st_mode & 0o777
    assert mode == 0o600


def test_up_is_idempotent(component: VCenterSim, lab_ctx: LabContext, running: Fragment) -> None:
    pid = _pid(lab_ctx)
    again = component.up(lab_ctx)
    assert again == running
    assert _pid(lab_ctx) == pid


def test_status_reports_healthy(
    component: VCenterSim, lab_ctx: LabContext, running: Fragment
) -> None:
    [health] = component.status(lab_ctx)
    assert health.healthy, health.detail
    assert str(running.inventory["vcenter"]["port"]) in health.detail


def test_down_stops_the_process_and_up_starts_a_new_password(
    component: VCenterSim, lab_ctx: LabContext, running: Fragment
) -> None:
    """Runs last in this module (pytest keeps file order): it restarts the instance."""
    pid = _pid(lab_ctx)
    port = running.inventory["vcenter"]["port"]
    si = _connect(running, running.secrets["vcenter_password"])
    datastore = si.content.searchIndex.FindByInventoryPath("DC0/datastore/LocalDS_0")
    storage = Path(datastore.summary.url)  # vcsim backs the datastore with a temp dir
    Disconnect(si)
    assert storage.is_dir()
    component.down(lab_ctx)
    assert not pid_alive(pid)
    assert not port_answers(port)
    assert not storage.exists()  # vcsim closed cleanly (SIGTERM -> Remove())
    [health] = component.status(lab_ctx)
    assert not health.healthy
    component.down(lab_ctx)  # a second down is harmless

    fresh = component.up(lab_ctx)
    try:
        assert fresh.secrets["vcenter_password"] != running.secrets["vcenter_password"]
        si = _connect(fresh, fresh.secrets["vcenter_password"])
        Disconnect(si)
        with pytest.raises(vim.fault.InvalidLogin):
            _connect(fresh, running.secrets["vcenter_password"])
    finally:
        component.down(lab_ctx)
