"""Ansible's own tools on the project's inventory, through the project's inventory plugin.

``ansible-inventory -i <lab inventory folder> --list`` (run from the repository root, whose
``ansible.cfg`` enables ``infra_inventory``) must list the hosts, groups and variables the
engine's :class:`Inventory` has, the bound VM hosts included; ``ansible ... -m ping`` must
reach the Linux hosts through it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra_automation.departments.ansible import ansible_env, ansible_playbook
from infra_automation.inventory import load_inventory

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]


def ansible_tool(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / tool
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "INFRA_"))},
        **ansible_env(
            ansible_playbook(), ROOT / "playbooks" / "web.yml", ROOT / ".infra" / "ansible" / "home"
        ),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
    }
    return subprocess.run(
        [str(binary), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def plain(value: Any) -> Any:
    """ansible-inventory marks values from plugins untrusted: ``{"__ansible_unsafe": v}``."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@pytest.fixture
def bound_vm(lab: Any) -> Any:
    """A VM name bound to a pool host in the lab's binding store, released afterwards."""
    inventory = load_inventory(lab.inventory_path)
    name = f"speed-vm-{uuid.uuid4().hex[:6]}"
    host = inventory.bind_host(name)
    yield name, host
    load_inventory(lab.inventory_path).release_host(name)


def test_ansible_inventory_lists_what_the_engine_has(lab: Any, bound_vm: Any) -> None:
    vm, bound = bound_vm
    listed = ansible_tool("ansible-inventory", "-i", str(lab.inventory_path), "--list")
    assert listed.returncode == 0, listed.stderr
    assert "WARNING" not in listed.stderr, listed.stderr
    data = plain(json.loads(listed.stdout))
    inventory = load_inventory(lab.inventory_path)
    hostvars = data["_meta"]["hostvars"]
    assert set(hostvars) == {*inventory.hosts, vm}
    for name, host in [*inventory.hosts.items(), (vm, bound)]:
        got = hostvars[name]
        assert {k: got[k] for k in host.data} == host.data
        assert got["ansible_host"] == host.hostname and got["ansible_port"] == host.port
        assert got["ansible_user"] == host.username
        assert got["ansible_ssh_private_key_file"] == host.ssh_key_file
        for group in host.groups:
            assert name in data[group.replace("-", "_")]["hosts"]
    assert hostvars[vm]["bound_to"] == bound.data["bound_to"]
    routers = [n for n, h in inventory.hosts.items() if h.platform == "cisco_ios"]
    assert routers and all(hostvars[n]["ansible_network_os"] == "cisco.ios.ios" for n in routers)


def test_ansible_pings_the_linux_hosts_and_the_bound_vm(lab: Any, bound_vm: Any) -> None:
    vm, _ = bound_vm
    inventory = load_inventory(lab.inventory_path)
    linux = sorted(n for n, h in inventory.hosts.items() if h.platform == "linux")
    pattern = ":".join([*linux, vm])
    pinged = ansible_tool("ansible", "-i", str(lab.inventory_path), pattern, "-m", "ping", "-o")
    assert pinged.returncode == 0, pinged.stdout + pinged.stderr
    lines = {line.split(" | ")[0]: line for line in pinged.stdout.splitlines() if " | " in line}
    for name in [*linux, vm]:
        assert "SUCCESS" in lines[name] and '"pong"' in lines[name], pinged.stdout
