"""The lab as a whole, against the real targets: vcsim, FRR routers over SSH, Debian hosts.

The shared default lab comes from the session fixture ``lab``; the ``down`` test runs on its
own small instance (``labdown``) so it never stops the lab other tests use.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from infra_automation.departments.vmware import vcenter_config
from infra_automation.inventory import Host, Inventory, load_inventory
from infra_automation.lab import Lab, LabOptions
from infra_automation.lab.base import pid_alive, read_pid
from infra_automation.lab.hosts import podman_env

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


def ssh(host: Host, command: str) -> subprocess.CompletedProcess[str]:
    assert host.hostname == "127.0.0.1" and host.port and host.ssh_key_file
    argv = [
        "ssh", "-i", host.ssh_key_file, "-p", str(host.port),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
        f"{host.username}@{host.hostname}", command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


# --- vCenter ------------------------------------------------------------------------------


def test_pyvmomi_finds_datacenter_cluster_hosts_datastore_switch_and_template(
    inventory: Inventory,
) -> None:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    vc = vcenter_config(inventory)
    password = inventory.secrets.get(vc.password_secret)
    si = SmartConnect(host=vc.host, port=vc.port, user=vc.username, pwd=password, protocol="http")
    try:
        index = si.content.searchIndex
        dc = index.FindByInventoryPath(vc.datacenter)
        assert isinstance(dc, vim.Datacenter)
        cluster = index.FindByInventoryPath(f"{vc.datacenter}/host/{vc.cluster}")
        assert isinstance(cluster, vim.ClusterComputeResource)
        assert len(cluster.host) >= 1
        template = index.FindByInventoryPath(f"{vc.datacenter}/vm/{vc.template}")
        assert isinstance(template, vim.VirtualMachine)
        assert template.config.template is True
        assert vc.datastore in [ds.name for ds in dc.datastore]
        switches = [
            n for n in dc.networkFolder.childEntity if isinstance(n, vim.DistributedVirtualSwitch)
        ]
        assert vc.dvswitch in [s.name for s in switches]
    finally:
        Disconnect(si)


# --- routers ------------------------------------------------------------------------------


def connect(host: Host) -> Any:
    from netmiko import ConnectHandler

    return ConnectHandler(
        device_type="cisco_ios",
        host=host.hostname,
        port=host.port,
        username=host.username,
        use_keys=True,
        key_file=host.ssh_key_file,
        allow_agent=False,
        timeout=30,
    )


def test_each_router_shows_its_running_config_and_takes_a_pushed_line(
    inventory: Inventory,
) -> None:
    routers = inventory.select(group="routers")
    assert {"core", "edge"} <= set(routers)
    for name in routers:
        conn = connect(inventory.host(name))
        try:
            config = conn.send_command("show running-config")
            assert re.search(rf"^hostname {name}$", config, re.M), config
            line = f"ip prefix-list LABTEST-{uuid.uuid4().hex[:8]} seq 5 permit 10.99.0.0/24"
            conn.send_config_set([line], error_pattern=r"^%")
            assert line in conn.send_command("show running-config")
            conn.send_config_set([f"no {line.rsplit(' seq', 1)[0]}"], error_pattern=r"^%")
            assert line not in conn.send_command("show running-config")
        finally:
            conn.disconnect()


@pytest.fixture
def saved_line(lab: Lab, inventory: Inventory) -> Iterator[str]:
    line = f"ip prefix-list LABSAVE-{uuid.uuid4().hex[:8]} seq 5 permit 10.98.0.0/24"
    yield line
    conn = connect(inventory.host("edge"))  # leave the shared lab as it was
    try:
        conn.send_config_set([f"no {line.rsplit(' seq', 1)[0]}"], error_pattern=r"^%")
        conn.save_config()
    finally:
        conn.disconnect()


def test_write_memory_survives_a_router_restart(
    lab: Lab, inventory: Inventory, saved_line: str
) -> None:
    edge = inventory.host("edge")
    conn = connect(edge)
    try:
        conn.send_config_set([saved_line], error_pattern=r"^%")
        output = conn.save_config()
        assert "[OK]" in output, output  # netmiko's save_config does not raise on failure
    finally:
        conn.disconnect()
    lab.restart_router("edge")
    after = load_inventory(lab.inventory_path).host("edge")
    assert after.port == edge.port  # the restarted router answers where the inventory says
    conn = connect(after)
    try:
        assert saved_line in conn.send_command("show running-config")
    finally:
        conn.disconnect()


def test_core_edge_bgp_session_is_established(inventory: Inventory) -> None:
    core, edge = inventory.host("core"), inventory.host("edge")
    peer = str(core.data["peer_address"])
    conn = connect(core)
    try:
        state = ""
        deadline = time.monotonic() + 60  # a router may just have been restarted
        while time.monotonic() < deadline:
            summary = json.loads(conn.send_command("show ip bgp summary json"))
            state = summary["ipv4Unicast"]["peers"][peer]["state"]
            if state == "Established":
                break
            time.sleep(1)
        assert state == "Established"
        assert summary["ipv4Unicast"]["peers"][peer]["remoteAs"] == edge.data["asn"]
    finally:
        conn.disconnect()


# --- Debian hosts ------------------------------------------------------------------------


def test_ssh_into_each_debian_host_runs_a_command(inventory: Inventory) -> None:
    hosts = inventory.select(group="debian")
    assert hosts
    for name in hosts:
        proc = ssh(inventory.host(name), "hostname; cat /etc/debian_version")
        assert proc.returncode == 0, proc.stderr
        hostname, version = proc.stdout.split()
        assert hostname == name
        assert version.startswith("12.")


def test_a_vm_bound_to_the_pool_is_reachable_over_ssh(lab: Lab) -> None:
    inventory = load_inventory(lab.inventory_path)
    vm = f"labtest-{uuid.uuid4().hex[:8]}"
    host = inventory.bind_host(vm)
    try:
        assert host.name == vm
        assert host.data["bound_to"] in inventory.select(group="vm-pool")
        assert load_inventory(lab.inventory_path).bind_host(vm).port == host.port  # stable
        proc = ssh(host, "hostname")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == host.data["bound_to"]
    finally:
        inventory.release_host(vm)
    bindings = json.loads((lab.inventory_path / "generated" / "bindings.json").read_text())
    assert vm not in bindings


# --- down, on a separate instance ---------------------------------------------------------


def _netns() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def _podman(lab: Lab, *args: str) -> list[str]:
    out = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **podman_env(lab.context)},
    )
    return out.stdout.split()


def _processes_using(folder: Path) -> list[int]:
    """PIDs whose command line names a path inside ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(folder) + "/" in cmdline and pid_alive(int(proc.name)):
                found.append(int(proc.name))
    return found


def test_lab_down_leaves_no_process_namespace_container_or_network() -> None:
    from infra_automation.lab.cli import app

    small = Lab(ROOT, "labdown", LabOptions(routers=2, hosts=1, vcenter=True))
    prefix = small.context.prefixed("")
    try:
        small.up()
        assert small.status().healthy, small.status()
        pids = [p for f in small.state_dir.rglob("*.pid") if (p := read_pid(f)) is not None]
        assert len(pids) >= 1 + 2 * 4  # vcsim; per router zebra, staticd, bgpd, sshd
        assert {f"{prefix}core", f"{prefix}edge"} <= set(_netns())
        assert f"{prefix}debian1" in _podman(small, "ps", "-a", "--format", "{{.Names}}")
        assert any(
            n.startswith(prefix) for n in _podman(small, "network", "ls", "--format", "{{.Name}}")
        )
        assert (small.inventory_path / "generated" / "lab.yml").is_file()

        result = CliRunner().invoke(app, ["down", "--name", "labdown", "--root", str(ROOT)])
        assert result.exit_code == 0, result.output
    except BaseException:
        small.down()
        raise

    assert [p for p in pids if pid_alive(p)] == []
    assert _processes_using(small.state_dir) == []
    assert [n for n in _netns() if n.startswith(prefix)] == []
    assert [
        n for n in _podman(small, "ps", "-a", "--format", "{{.Names}}") if n.startswith(prefix)
    ] == []
    assert [
        n for n in _podman(small, "network", "ls", "--format", "{{.Name}}") if n.startswith(prefix)
    ] == []
    assert str(small.state_dir) not in Path("/proc/mounts").read_text()
    assert not (small.inventory_path / "generated").exists()
    assert not small.is_up()
