"""The lab's Debian hosts component against real podman containers with sshd.

Uses its own lab instance ("htest", 4 hosts: one beyond the hand-written debian1..3) so the
shared lab is untouched. The image is built once (cached under ``.lab/cache``) and reused.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from lab_instance import ROOT, own_instance

from infra_automation.lab.base import Fragment, LabContext, LabOptions
from infra_automation.lab.hosts import DebianHosts, image_tag, podman_env

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def htest() -> Iterator[tuple[DebianHosts, LabContext, Fragment]]:
    with own_instance(DebianHosts(), "htest", LabOptions(hosts=4)) as instance:
        yield instance


def _podman(ctx: LabContext, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **podman_env(ctx)},
        check=False,
    )


def _ssh(entry: dict[str, object], command: str) -> subprocess.CompletedProcess[str]:
    argv = [
        "ssh", "-i", str(entry["ssh_key_file"]), "-p", str(entry["port"]),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        f"{entry['username']}@{entry['hostname']}", command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_fragment_names_every_host_with_its_ports(
    htest: tuple[DebianHosts, LabContext, Fragment],
) -> None:
    _, ctx, fragment = htest
    hosts = fragment.inventory["hosts"]
    assert sorted(hosts) == ["debian1", "debian2", "debian3", "debian4"]
    ports = set()
    for name, entry in hosts.items():
        assert entry["hostname"] == "127.0.0.1"
        assert entry["username"] == "root"
        assert entry["ssh_key_file"] == str(ctx.ssh_key)
        assert entry["data"]["container"] == f"htest-{name}"
        ports |= {entry["port"], entry["data"]["http_port"]}
    assert len(ports) == 8  # every host has its own SSH and HTTP port
    # the hand-written inventory names no pool host: each entry carries its groups
    assert all(entry["groups"] == ["debian", "vm-pool"] for entry in hosts.values())


def test_hosts_answer_ssh_with_the_lab_key_and_have_the_baked_packages(
    htest: tuple[DebianHosts, LabContext, Fragment],
) -> None:
    _, _, fragment = htest
    for name, entry in fragment.inventory["hosts"].items():
        proc = _ssh(entry, "hostname; . /etc/os-release; echo $VERSION_CODENAME; "
                    "dpkg-query -W -f '${Package} ${Status}\\n' nginx php-fpm restic "
                    "prometheus-node-exporter python3-apt")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == name
        assert lines[1] == "bookworm"
        assert all(line.endswith("install ok installed") for line in lines[2:]), lines
        assert len(lines) == 7


def test_image_carries_no_key_and_hosts_have_distinct_host_keys(
    htest: tuple[DebianHosts, LabContext, Fragment],
) -> None:
    _, ctx, fragment = htest
    proc = _podman(ctx, "run", "--rm", image_tag(), "ls", "-A", "/root/.ssh", "/etc/ssh")
    assert proc.returncode == 0, proc.stderr
    assert "authorized_keys" not in proc.stdout
    assert "ssh_host_" not in proc.stdout
    keys = {
        _ssh(entry, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout
        for entry in fragment.inventory["hosts"].values()
    }
    assert len(keys) == 4


def test_up_is_idempotent_and_status_is_healthy(
    htest: tuple[DebianHosts, LabContext, Fragment],
) -> None:
    hosts, ctx, fragment = htest
    ids = _podman(ctx, "ps", "-q", "--filter", "label=io.infra-automation.lab=htest").stdout
    again = hosts.up(ctx)
    assert again.inventory == fragment.inventory
    assert _podman(ctx, "ps", "-q", "--filter", "label=io.infra-automation.lab=htest").stdout == ids
    health = hosts.status(ctx)
    assert [h.target for h in health] == [f"host debian{i}" for i in range(1, 5)]
    assert all(h.healthy for h in health), health


def test_stopped_container_is_reported_and_restarted_by_up(
    htest: tuple[DebianHosts, LabContext, Fragment],
) -> None:
    """...and its start is a boot: pid files of its last run are gone (one naming a pid that
    another process has after the restart made nginx's init script say "running")."""
    hosts, ctx, fragment = htest
    entry = fragment.inventory["hosts"]["debian2"]
    stale = "echo 1 > /run/nginx.pid && mkdir -p /run/php && echo 1 > /run/php/php8.2-fpm.pid"
    assert _ssh(entry, stale).returncode == 0
    assert _podman(ctx, "stop", "--time", "1", "htest-debian2").returncode == 0
    bad = {h.target: h for h in hosts.status(ctx)}["host debian2"]
    assert not bad.healthy and "not running" in bad.detail
    fragment = hosts.up(ctx)
    assert all(h.healthy for h in hosts.status(ctx))
    entry = fragment.inventory["hosts"]["debian2"]
    gone = _ssh(entry, "test ! -e /run/nginx.pid && test ! -e /run/php/php8.2-fpm.pid")
    assert gone.returncode == 0, gone.stderr
    assert _ssh(entry, "test -d /run/sshd").returncode == 0


def test_down_removes_containers_and_network_but_keeps_the_image() -> None:
    ctx = LabContext(name="htest2", root=ROOT, state_dir=ROOT / ".lab" / "htest2",
                     options=LabOptions(hosts=1))  # fmt: skip
    hosts = DebianHosts()
    hosts.up(ctx)
    assert _podman(ctx, "container", "exists", "htest2-debian1").returncode == 0
    hosts.down(ctx)
    assert _podman(ctx, "container", "exists", "htest2-debian1").returncode == 1
    assert _podman(ctx, "network", "exists", "htest2-infra-lab").returncode == 1
    assert _podman(ctx, "image", "exists", image_tag()).returncode == 0
    hosts.down(ctx)  # nothing left: still fine
    assert not any(h.healthy for h in hosts.status(ctx))
