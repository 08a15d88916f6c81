"""The fan-out change pushed with Ansible's own network modules, for ``network_fanout.py``.

``cisco.ios.ios_config`` over ``ansible.netcommon.network_cli`` (PyPI's ``ansible`` package:
``pip install -e '.[bench]'``), the lab routers being FRR's vtysh behind sshd. What it takes
for network_cli to drive vtysh as ``cisco_ios`` (all set in the inventory's ``all.vars``):

- ``ansible_connection: ansible.netcommon.network_cli``, ``ansible_network_os: cisco.ios.ios``;
- ``ansible_become: false``: vtysh starts privileged (``r003#``), there is no ``enable``;
- ``ansible_terminal_stderr_re: [{pattern: '^%', flags: re.M}]``: vtysh rejects a line with
  ``% Unknown command`` / ``% Invalid ...``; cisco.ios's own patterns miss the first, so a
  rejected line would pass silently (the same ``^%`` as our ``error_pattern``);
- nothing else: cisco.ios's terminal plugin sends ``terminal length 0`` (vtysh accepts it) and
  ``terminal width 512`` (refused, only a warning); the prompts match cisco.ios's regexes.
  ``save_when: changed`` sends ``copy running-config startup-config``, which vtysh takes for
  ``write memory``. The SSH client is ansible-pylibssh when installed, else paramiko.

The play, per router: ``ios_config`` with the router's rendered config (the same lines our
executor and the bare Nornir script push; navigation lines dropped), saved when changed; then
``ios_command: show running-config`` and an ``assert`` that every intended line is there
(the read-back our executor does too). A project folder is written per run (inventory,
playbook, configs, an ``ansible.cfg`` of its own so the project's is not read) and
``ansible-playbook`` runs in it with the ``ansible.posix.json`` callback; its stats say what
changed and what failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra_automation.exceptions import ConfigurationError

NAVIGATION = frozenset({"!", "exit", "exit-address-family", "end", "exit-vrf", "quit"})
JINJA_MARKERS = ("{{", "{%", "{#")  # ios_config templates its src: refuse anything Jinja reads
ERROR_PATTERN = {"pattern": "^%", "flags": "re.M"}
PLAYBOOK = "push.yml"
INVENTORY = "inventory.yml"


@dataclass(frozen=True)
class Router:
    """How Ansible reaches one router, and the config it must end up with."""

    name: str
    hostname: str
    port: int
    username: str
    key_file: str
    config: str  # the rendered config (IOS-like text, ``exit`` navigation allowed)


@dataclass(frozen=True)
class Outcome:
    """One ``ansible-playbook`` run: its exit code, per-host stats and per-host errors."""

    rc: int
    stats: Mapping[str, Mapping[str, int]]
    errors: Mapping[str, str] = field(default_factory=dict)
    output: str = ""

    def changed(self) -> list[str]:
        return sorted(h for h, s in self.stats.items() if s.get("changed", 0) > 0)

    def failed(self) -> list[str]:
        bad = {h for h, s in self.stats.items() if s.get("failures", 0) or s.get("unreachable", 0)}
        return sorted(bad | set(self.errors))


def config_lines(config: str) -> list[str]:
    """The config as ios_config's ``src`` wants it: indented lines, no navigation or blanks."""
    kept = []
    for line in config.replace("\r\n", "\n").splitlines():
        stripped = line.strip()
        if stripped and stripped not in NAVIGATION and not stripped.startswith("!"):
            kept.append(line.rstrip())
    return kept


def check_router(router: Router) -> None:
    """Refuse values that could add lines or Jinja to what Ansible reads (field named)."""
    for name, value in (("hostname", router.hostname), ("username", router.username)):
        if not value or any(c in value for c in "\r\n\0"):
            raise ConfigurationError(f"router {router.name!r}: {name} {value!r} is not valid")
    if not 0 < router.port < 65536:
        raise ConfigurationError(f"router {router.name!r}: port {router.port} is not valid")
    if any(marker in router.config for marker in JINJA_MARKERS):
        raise ConfigurationError(f"router {router.name!r}: config holds Jinja markers")
    if not config_lines(router.config):
        raise ConfigurationError(f"router {router.name!r}: config is empty")


def inventory(routers: Sequence[Router], python: str = sys.executable) -> dict[str, Any]:
    """The YAML inventory: group ``routers``, connection settings in ``all.vars``."""
    hosts: dict[str, Any] = {}
    for router in routers:
        check_router(router)
        hosts[router.name] = {
            "ansible_host": router.hostname,
            "ansible_port": router.port,
            "ansible_user": router.username,
            "ansible_ssh_private_key_file": router.key_file,
            "intended_lines": [line.strip() for line in config_lines(router.config)],
        }
    variables = {
        "ansible_connection": "ansible.netcommon.network_cli",
        "ansible_network_os": "cisco.ios.ios",
        "ansible_become": False,
        "ansible_host_key_checking": False,
        "ansible_terminal_stderr_re": [ERROR_PATTERN],
        "ansible_python_interpreter": python,
    }
    return {"all": {"vars": variables, "children": {"routers": {"hosts": hosts}}}}


def playbook() -> list[dict[str, Any]]:
    """Push, save when changed, read back, assert every intended line is configured."""
    tasks = [
        {
            "name": "Push the rendered config",
            "cisco.ios.ios_config": {
                "src": "configs/{{ inventory_hostname }}.cfg",
                "save_when": "changed",
            },
        },
        {
            "name": "Read the running config back",
            "cisco.ios.ios_command": {"commands": ["show running-config"]},
            "register": "running",
        },
        {
            "name": "Every intended line is configured",
            "ansible.builtin.assert": {
                "that": [
                    "intended_lines | difference(running.stdout_lines[0] | map('trim')) "
                    "| length == 0"
                ],
                "fail_msg": "missing after the push: "
                "{{ intended_lines | difference(running.stdout_lines[0] | map('trim')) }}",
                "quiet": True,
            },
        },
    ]
    return [
        {
            "name": "Fan-out change with cisco.ios over network_cli",
            "hosts": "routers",
            "gather_facts": False,
            "tasks": tasks,
        }
    ]


def ansible_cfg(folder: Path, forks: int) -> str:
    """An ``ansible.cfg`` of the run's own (the project's one is not read)."""
    return "\n".join(
        [
            "[defaults]",
            f"forks = {int(forks)}",
            "host_key_checking = False",
            "gathering = explicit",
            "retry_files_enabled = False",
            "deprecation_warnings = False",
            "stdout_callback = ansible.posix.json",
            "",
            "[persistent_connection]",
            f"control_path_dir = {folder / 'pc'}",
            "connect_timeout = 30",
            "command_timeout = 60",
            "",
        ]
    )


def write_project(folder: Path, routers: Sequence[Router], forks: int) -> Path:
    """Inventory, playbook, one config file per router and ``ansible.cfg`` under ``folder``."""
    data = inventory(routers)
    configs = folder / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    for router in routers:
        (configs / f"{router.name}.cfg").write_text("\n".join(config_lines(router.config)) + "\n")
    (folder / INVENTORY).write_text(yaml.safe_dump(data, sort_keys=False))
    (folder / PLAYBOOK).write_text(yaml.safe_dump(playbook(), sort_keys=False))
    (folder / "ansible.cfg").write_text(ansible_cfg(folder, forks))
    return folder


def environment(folder: Path) -> dict[str, str]:
    """The environment ``ansible-playbook`` runs in: this folder's config and home only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    bindir = str(Path(sys.executable).parent)
    env.update(
        ANSIBLE_CONFIG=str(folder / "ansible.cfg"),
        ANSIBLE_HOME=str(folder / "home"),
        ANSIBLE_LOCAL_TEMP=str(folder / "tmp"),
        PATH=bindir + os.pathsep + env.get("PATH", ""),
    )
    return env


def ansible_playbook() -> str:
    """The ``ansible-playbook`` next to this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if found is None:
        raise ConfigurationError("ansible-playbook not found: pip install -e '.[bench]'")
    return found


def missing_collections() -> list[str]:
    """The collections the play needs that this Python cannot import."""
    wanted = ("ansible.netcommon", "cisco.ios", "ansible.posix")
    return [name for name in wanted if not _importable(f"ansible_collections.{name}")]


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # without the bench extra there is no ansible_collections
        return False


def run(folder: Path, timeout: float = 900.0) -> Outcome:
    """Run the play written by :func:`write_project`; the json callback's stats and errors."""
    proc = subprocess.run(
        [ansible_playbook(), "-i", INVENTORY, PLAYBOOK],
        cwd=folder,
        env=environment(folder),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return parse_output(proc.returncode, proc.stdout, proc.stderr)


def last_line(message: str) -> str:
    """A module's message on one line: a traceback's last line (the error) is what says why."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "failed")[:500]


def parse_output(rc: int, stdout: str, stderr: str = "") -> Outcome:
    """The ``ansible.posix.json`` callback's output as an :class:`Outcome`."""
    try:
        data = json.loads(stdout[stdout.index("{") :])
    except ValueError:
        return Outcome(rc, {}, {"*": "no JSON from ansible-playbook"}, (stdout + stderr)[-2000:])
    errors: dict[str, str] = {}
    for play in data.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                if result.get("failed") or result.get("unreachable"):
                    errors.setdefault(host, last_line(str(result.get("msg", "failed"))))
    stats = {h: {k: int(v) for k, v in s.items()} for h, s in data.get("stats", {}).items()}
    return Outcome(rc, stats, errors, stderr[-2000:])
