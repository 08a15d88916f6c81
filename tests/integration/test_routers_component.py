"""The lab's FRR routers component against the real thing: namespaces, daemons, sshd, BGP.

Uses its own lab instance ("rtest", 3 routers) so the shared lab is untouched.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
from collections.abc import Iterator

import pytest
from lab_instance import ROOT, own_instance

from infra_automation.lab.base import Fragment, LabContext, LabOptions, pid_alive, read_pid
from infra_automation.lab.routers import DAEMONS, Routers

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def rtest() -> Iterator[tuple[Routers, LabContext, Fragment]]:
    with own_instance(Routers(), "rtest", LabOptions(routers=3)) as instance:
        yield instance


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def _ssh_show(fragment: Fragment, name: str, command: str) -> str:
    from netmiko import ConnectHandler

    host = fragment.inventory["hosts"][name]
    conn = ConnectHandler(
        device_type="cisco_ios",
        host=host["hostname"],
        port=host["port"],
        username=host["username"],
        use_keys=True,
        key_file=host["ssh_key_file"],
        allow_agent=False,
    )
    try:
        return str(conn.send_command(command))
    finally:
        conn.disconnect()


def test_up_builds_namespaces_daemons_and_fragment(rtest: tuple[Routers, LabContext, Fragment]):
    routers, ctx, fragment = rtest
    assert {"rtest-core", "rtest-edge", "rtest-r003"} <= _netns()
    hosts = fragment.inventory["hosts"]
    assert set(hosts) == {"core", "edge", "r003"}
    for name in hosts:
        paths = routers.paths(ctx, name)
        assert all(read_pid(paths.daemon_pid(d)) for d in DAEMONS)
        assert hosts[name]["hostname"] == "127.0.0.1"
        assert hosts[name]["ssh_key_file"] == str(ctx.ssh_key)
    assert hosts["r003"]["groups"] == ["routers"]
    assert hosts["r003"]["data"]["asn"] == 65003
    assert "groups" not in hosts["core"]  # core/edge data comes from the hand-written file


def test_ssh_reaches_vtysh_of_the_right_router(rtest: tuple[Routers, LabContext, Fragment]):
    _, _, fragment = rtest
    assert "hostname edge" in _ssh_show(fragment, "edge", "show running-config")
    assert "router bgp 65003" in _ssh_show(fragment, "r003", "show running-config")


def test_core_and_edge_peer_over_bgp(rtest: tuple[Routers, LabContext, Fragment]):
    routers, ctx, _ = rtest
    routers.wait_bgp(ctx, "core")
    assert routers.bgp_peers(ctx, "edge") == {"10.255.0.1": "Established"}
    addr = subprocess.run(
        ["ip", "-n", "rtest-core", "-br", "addr", "show", "core-edge"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "10.255.0.1/30" in addr.stdout  # zebra put the configured address in the kernel


def test_up_is_idempotent(rtest: tuple[Routers, LabContext, Fragment]):
    routers, ctx, fragment = rtest
    pid = read_pid(routers.paths(ctx, "core").daemon_pid("bgpd"))
    again = routers.up(ctx)
    assert again.inventory == fragment.inventory
    assert read_pid(routers.paths(ctx, "core").daemon_pid("bgpd")) == pid


def test_stop_and_start_router_keeps_port_and_config(
    rtest: tuple[Routers, LabContext, Fragment],
):
    routers, ctx, fragment = rtest
    port = fragment.inventory["hosts"]["edge"]["port"]
    routers.stop_router(ctx, "edge")
    health = {h.target: h for h in routers.status(ctx)}
    assert not health["router edge"].healthy
    assert "not running" in health["router edge"].detail
    assert health["router core"].healthy
    assert _refused(port)
    routers.start_router(ctx, "edge")
    assert routers.port(ctx, "edge") == port
    routers.wait_bgp(ctx, "edge")
    assert all(h.healthy for h in routers.status(ctx))
    summary = json.loads(routers.vtysh(ctx, "edge", "show bgp summary json"))
    assert summary["ipv4Unicast"]["as"] == 65002


def test_asking_for_fewer_routers_removes_the_extra_ones(
    rtest: tuple[Routers, LabContext, Fragment],
):
    routers, ctx, _ = rtest
    smaller = dataclasses.replace(ctx, options=LabOptions(routers=2))
    fragment = routers.up(smaller)
    assert set(fragment.inventory["hosts"]) == {"core", "edge"}
    assert "rtest-r003" not in _netns()
    assert {"rtest-core", "rtest-edge"} <= _netns()


def test_down_removes_everything() -> None:
    ctx = LabContext(name="rdown", root=ROOT, state_dir=ROOT / ".lab" / "rdown")
    routers = Routers()
    fragment = routers.up(ctx)
    pids = [read_pid(routers.paths(ctx, "core").daemon_pid(d)) for d in DAEMONS]
    routers.down(ctx)
    assert not {"rdown-core", "rdown-edge"} & _netns()
    assert all(p is not None and not pid_alive(p) for p in pids)
    assert all(_refused(h["port"]) for h in fragment.inventory["hosts"].values())
    assert not (ctx.state_dir / "routers" / "core").exists()
