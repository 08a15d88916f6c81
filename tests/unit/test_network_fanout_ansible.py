"""The fan-out benchmark's Ansible side (benchmarks/_ansible_network.py): the inventory,
playbook and configs it writes for N routers, read by Ansible's own tools. The benchmark itself
(50 lab routers, ``cisco.ios`` over network_cli) is run by hand."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import _ansible_network as ansible_net
from infra_automation.departments.network import ConfigureParams, make_plan
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Inventory, InventoryFile

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
N = 5


def routers(n: int = N) -> list[ansible_net.Router]:
    """N leaf routers, their configs rendered by the network department's own templates."""
    hosts = {
        f"r{i:03d}": {
            "groups": ["routers"],
            "hostname": "127.0.0.1",
            "port": 40000 + i,
            "username": "root",
            "ssh_key_file": f"/keys/k{i}",
            "data": {"role": "leaf", "asn": 65000 + i},
        }
        for i in range(3, 3 + n)
    }
    spec = {"name": "t", "groups": {"routers": {"platform": "cisco_ios"}}, "hosts": hosts}
    inventory = Inventory(InventoryFile.model_validate(spec))
    params = ConfigureParams(vlan_id=3999, subnet="10.99.0.0/24", gateway="10.99.0.1")
    ctx = StepContext(
        run_id="r",
        project="bench",
        step_id="network",
        department="network",
        params=params,
        inventory=inventory,
        root=ROOT,
    )
    intended = make_plan(ctx).intended
    return [
        ansible_net.Router(name, "127.0.0.1", int(h["port"]), "root", h["ssh_key_file"], c)
        for (name, h), c in zip(hosts.items(), intended.values(), strict=True)
    ]


def test_inventory_has_every_router_with_its_connection_and_lines():
    given = routers()
    data = ansible_net.inventory(given, python="/venv/bin/python")
    hosts = data["all"]["children"]["routers"]["hosts"]
    assert list(hosts) == [r.name for r in given]
    r005 = hosts["r005"]
    assert r005["ansible_host"] == "127.0.0.1"
    assert r005["ansible_port"] == 40005
    assert r005["ansible_ssh_private_key_file"] == "/keys/k5"
    assert r005["intended_lines"] == [
        "interface vlan3999",
        "description project bench",
        "ip address 10.99.0.1/24",
        "ip route 10.99.0.0/24 Null0",
        "router bgp 65005",
        "address-family ipv4 unicast",
        "network 10.99.0.0/24",
    ]
    assert data["all"]["vars"] == {
        "ansible_connection": "ansible.netcommon.network_cli",
        "ansible_network_os": "cisco.ios.ios",
        "ansible_become": False,
        "ansible_host_key_checking": False,
        "ansible_terminal_stderr_re": [{"pattern": "^%", "flags": "re.M"}],
        "ansible_python_interpreter": "/venv/bin/python",
    }


def test_playbook_pushes_saves_reads_back_and_asserts():
    (play,) = ansible_net.playbook()
    assert play["hosts"] == "routers"
    assert play["gather_facts"] is False
    push, show, check = play["tasks"]
    assert push["cisco.ios.ios_config"] == {
        "src": "configs/{{ inventory_hostname }}.cfg",
        "save_when": "changed",
    }
    assert show["cisco.ios.ios_command"] == {"commands": ["show running-config"]}
    assert show["register"] == "running"
    assert "intended_lines" in check["ansible.builtin.assert"]["that"][0]


def test_project_files_for_n_routers(tmp_path: Path):
    given = routers()
    ansible_net.write_project(tmp_path, given, forks=20)
    cfg = (tmp_path / "configs" / "r004.cfg").read_text()
    assert cfg == (
        "interface vlan3999\n description project bench\n ip address 10.99.0.1/24\n"
        "ip route 10.99.0.0/24 Null0\nrouter bgp 65004\n address-family ipv4 unicast\n"
        "  network 10.99.0.0/24\n"
    )  # the rendered lines, indentation kept, exit navigation dropped
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == [
        f"{r.name}.cfg" for r in given
    ]
    assert "forks = 20" in (tmp_path / "ansible.cfg").read_text()
    assert yaml.safe_load((tmp_path / "push.yml").read_text()) == ansible_net.playbook()


def test_ansible_inventory_reads_the_n_routers(tmp_path: Path):
    ansible_net.write_project(tmp_path, routers(), forks=20)
    proc = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", "inventory.yml", "--list"],
        cwd=tmp_path,
        env=ansible_net.environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listed = json.loads(proc.stdout)
    assert listed["routers"]["hosts"] == [f"r{i:03d}" for i in range(3, 3 + N)]
    r007 = listed["_meta"]["hostvars"]["r007"]
    assert r007["ansible_port"] == 40007
    assert r007["ansible_network_os"] == "cisco.ios.ios"
    assert r007["ansible_connection"] == "ansible.netcommon.network_cli"


def test_the_assert_fails_a_router_missing_a_line(tmp_path: Path):
    """The play's read-back assert, run by ansible-playbook on two local hosts: the one whose
    running config lacks a line fails, naming it; the other passes."""
    (router,) = routers(1)
    lines = ansible_net.config_lines(router.config)
    running = ["Building configuration...", "!", *lines, "exit", "end"]
    hosts = {
        "full": {"running": {"stdout_lines": [running]}},
        "short": {"running": {"stdout_lines": [[x for x in running if "Null0" not in x]]}},
    }
    for host in hosts.values():
        host["intended_lines"] = [x.strip() for x in lines]
        host["ansible_connection"] = "local"
        host["ansible_python_interpreter"] = sys.executable
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    (play,) = ansible_net.playbook()
    check = {**play, "hosts": "all", "tasks": play["tasks"][2:]}
    (tmp_path / "check.yml").write_text(yaml.safe_dump([check]))
    (tmp_path / "ansible.cfg").write_text("[defaults]\nstdout_callback = default\n")
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory.yml", "check.yml"],
        cwd=tmp_path,
        env=ansible_net.environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert re.search(r"^full\s+: ok=1 .*failed=0", proc.stdout, re.M), proc.stdout
    assert re.search(r"^short\s+: ok=0 .*failed=1", proc.stdout, re.M), proc.stdout
    assert "missing after the push: ['ip route 10.99.0.0/24 Null0']" in proc.stdout


# The collection modules the play uses, as stubs: ansible-playbook --syntax-check resolves
# every task's module by name (an unknown one fails it) but imports none, so the check runs
# with ansible-core alone (CI has no bench extra); the benchmark itself uses the real ones.
PLAY_MODULES = ("cisco.ios.ios_config", "cisco.ios.ios_command")


def syntax_check(
    folder: Path, modules: tuple[str, ...] = PLAY_MODULES
) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook --syntax-check`` of the project in ``folder``, the collections
    being stubs of ``modules`` only (installed collections are not looked at)."""
    stubs = folder / "stub-collections"
    for module in modules:
        namespace, collection, name = module.split(".")
        where = stubs / "ansible_collections" / namespace / collection / "plugins" / "modules"
        where.mkdir(parents=True, exist_ok=True)
        (where / f"{name}.py").write_text(f'"""Stub of {module} for the syntax check."""\n')
    env = ansible_net.environment(folder)
    env.update(ANSIBLE_COLLECTIONS_PATH=str(stubs), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False")
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory.yml", "--syntax-check", "push.yml"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_playbook_passes_ansibles_syntax_check(tmp_path: Path):
    ansible_net.write_project(tmp_path, routers(), forks=20)
    proc = syntax_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "playbook: push.yml" in proc.stdout


def test_the_syntax_check_refuses_a_module_it_cannot_resolve(tmp_path: Path):
    """The check is not blind to module names: without ios_command it fails, naming it."""
    ansible_net.write_project(tmp_path, routers(), forks=20)
    proc = syntax_check(tmp_path, modules=("cisco.ios.ios_config",))
    assert proc.returncode != 0
    assert "couldn't resolve module/action 'cisco.ios.ios_command'" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hostname": "127.0.0.1\nansible_become: true"}, "hostname"),
        ({"username": ""}, "username"),
        ({"port": 0}, "port"),
        ({"config": "interface {{ lookup('pipe', 'id') }}\n"}, "Jinja"),
        ({"config": "!\nexit\n"}, "empty"),
    ],
)
def test_bad_router_values_are_refused_naming_the_field(change: dict[str, object], field: str):
    (router,) = routers(1)
    bad = dataclasses.replace(router, **change)
    with pytest.raises(ConfigurationError, match=field):
        ansible_net.inventory([bad])


def test_json_callback_output_gives_changed_and_failed_hosts():
    out = {
        "plays": [
            {
                "tasks": [
                    {"hosts": {"r003": {"changed": True}, "r004": {"changed": True}}},
                    {"hosts": {"r004": {"failed": True, "msg": "missing after the push: [x]"}}},
                    {"hosts": {"r005": {"unreachable": True, "msg": "Traceback:\n  x\nTimeout\n"}}},
                ]
            }
        ],
        "stats": {
            "r003": {"changed": 1, "failures": 0, "ok": 3, "unreachable": 0},
            "r004": {"changed": 1, "failures": 1, "ok": 1, "unreachable": 0},
            "r005": {"changed": 0, "failures": 0, "ok": 0, "unreachable": 1},
        },
    }
    outcome = ansible_net.parse_output(2, "[WARNING]: x\n" + json.dumps(out))
    assert outcome.changed() == ["r003", "r004"]
    assert outcome.failed() == ["r004", "r005"]
    assert outcome.errors == {"r004": "missing after the push: [x]", "r005": "Timeout"}
    assert ansible_net.parse_output(1, "ERROR! no play").failed() == ["*"]
