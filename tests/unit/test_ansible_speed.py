"""The speed parts of the Ansible department: strategy choice, the run's session (shared SSH
masters and fact cache), the guard leaving SSH masters to the run, the inventory view of
Ansible's own tools. Against real hosts: ``tests/integration/test_speed_*_lab.py``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from infra_automation.departments import ansible
from infra_automation.departments.ansible import (
    MITOGEN_ENV,
    SESSION_ENV,
    PlaybookExecutor,
    PlaybookParams,
    choose_strategy,
    guard_command,
    inventory_view,
    new_session,
    run_session,
    sweep_sessions,
)
from infra_automation.exceptions import ExecutorUnavailable
from infra_automation.executors.base import RunResources, StepContext
from infra_automation.inventory import load_inventory
from infra_automation.results import ErrorKind, Status

ROOT = Path(__file__).resolve().parents[2]


# --- strategy -------------------------------------------------------------------------------


def test_mitogen_is_chosen_when_installed_and_stock_when_switched_off() -> None:
    pytest.importorskip("ansible_mitogen")  # the extra `fast` (installed in dev)
    tuned = choose_strategy("auto")
    assert tuned.name == "mitogen_linear"
    assert tuned.plugins is not None
    assert (Path(tuned.plugins) / "mitogen_linear.py").is_file()
    assert tuned.env == {
        "ANSIBLE_STRATEGY": "mitogen_linear",
        "ANSIBLE_STRATEGY_PLUGINS": tuned.plugins,
    }
    assert choose_strategy("1") == tuned
    stock = choose_strategy("0")
    assert (stock.name, stock.env) == ("linear", {})


def test_an_unsupported_ansible_core_falls_back_to_stock_or_fails_when_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = ansible._version
    monkeypatch.setattr(
        ansible, "_version", lambda dist: (2, 99, 0) if dist == "ansible-core" else real(dist)
    )
    fallback = choose_strategy("auto")
    assert (fallback.name, fallback.env) == ("linear", {})
    assert "does not support ansible-core 2.99.0" in fallback.note
    with pytest.raises(ExecutorUnavailable, match="INFRA_ANSIBLE_MITOGEN=1, but mitogen does not"):
        choose_strategy("1")


def test_without_mitogen_installed_auto_is_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ansible.importlib.util, "find_spec", lambda name: None)
    strategy = choose_strategy("")
    assert strategy.name == "linear"
    assert "infra-automation[fast]" in strategy.note


def test_a_bad_switch_value_fails_the_step_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "p.yml").write_text("- hosts: all\n  tasks: []\n")
    monkeypatch.setenv(MITOGEN_ENV, "fast")
    ctx = StepContext(
        run_id="r1",
        project="p",
        step_id="s",
        department="os",
        params=PlaybookParams(playbook="p.yml"),
        inventory=load_inventory(ROOT / "inventories" / "example-site"),
        targets=("nothere",),
        root=tmp_path,
    )
    result = PlaybookExecutor().apply(ctx)
    assert result.status is Status.FAILED
    assert result.error_kind is ErrorKind.INVALID
    assert "INFRA_ANSIBLE_MITOGEN='fast': expected 0, 1 or auto" in str(result.error)
    monkeypatch.setenv(MITOGEN_ENV, "0")
    monkeypatch.setenv(SESSION_ENV, "yes")
    result = PlaybookExecutor().apply(ctx)
    assert "INFRA_ANSIBLE_SESSION='yes': expected 0 or 1" in str(result.error)
    assert not (tmp_path / ".infra").exists()  # nothing ran, nothing was written


# --- the run's session ----------------------------------------------------------------------


def _ctx(resources: RunResources) -> StepContext:
    return StepContext(
        run_id="r1",
        project="p",
        step_id="s",
        department="os",
        params=PlaybookParams(playbook="p.yml"),
        inventory=load_inventory(ROOT / "inventories" / "example-site"),
        resources=resources,
    )


def test_one_session_per_run_closed_with_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SESSION_ENV, raising=False)
    resources = RunResources()
    first = run_session(_ctx(resources))
    assert first is not None
    assert run_session(_ctx(resources)) == first  # the next step of the run
    other = RunResources()
    assert run_session(_ctx(other)) != first  # another run
    assert first.control_dir.is_dir() and first.fact_dir.is_dir()
    assert first.path.stat().st_mode & 0o777 == 0o700
    env = first.env()
    assert f"ControlPath={first.control_dir}/%C" in env["ANSIBLE_SSH_ARGS"]
    assert env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(first.fact_dir)
    assert env["ANSIBLE_GATHERING"] == "smart"
    # ssh's %C is 40 hex digits; a UNIX socket path has at most 107 bytes
    assert len(f"{first.control_dir}/{'0' * 40}") < 108
    assert resources.close() == [] and other.close() == []
    assert not first.path.exists()
    monkeypatch.setenv(SESSION_ENV, "0")
    assert run_session(_ctx(RunResources())) is None


def test_sessions_of_dead_processes_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    gone = tmp_path / "infra-ansible-999999999-1-abc"
    (gone / "cp").mkdir(parents=True)
    reused = tmp_path / f"infra-ansible-{os.getpid()}-0-abc"  # our pid, another start time
    reused.mkdir()
    mine = new_session()
    live = tmp_path / mine.path.name
    live.mkdir()
    try:
        assert sorted(sweep_sessions(tmp_path)) == sorted([gone, reused])
        assert live.is_dir() and not gone.exists() and not reused.exists()
    finally:
        mine.close()


# --- the guard leaves the run's SSH masters, and only those ----------------------------------

# a play that leaves two detached processes behind: an "SSH master" of the keep folder (ssh
# names its masters "ssh: <socket> [mux]") and any other orphan
PLAY = (
    "import os, sys\n"
    "master = ['ssh: ' + sys.argv[1] + '/sock [mux]', '300']\n"
    "other = ['sleep ' + sys.argv[2], '300']\n"
    "for argv in (master, other):\n"
    "    if os.fork() == 0:\n"
    "        os.setsid(); os.execv('/bin/sleep', argv)\n"
)


def _tagged(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if tag.encode() in (entry / "cmdline").read_bytes() and state != "Z":
                found.append(int(entry.name))
    return found


def test_the_guard_leaves_the_runs_ssh_masters_when_the_play_ends(tmp_path: Path) -> None:
    tag = f"keep-{uuid.uuid4().hex}"
    keep = tmp_path / tag
    keep.mkdir()
    try:
        command = guard_command([sys.executable, "-c", PLAY, str(keep), tag], 60, keep=keep)
        assert subprocess.run(command, check=False, timeout=30).returncode == 0
        time.sleep(0.3)
        left = [Path(f"/proc/{p}/cmdline").read_bytes() for p in _tagged(tag)]
        assert left == [f"ssh: {keep}/sock [mux]\x00300\x00".encode()]  # the master only
    finally:
        for pid in _tagged(tag):
            os.kill(pid, signal.SIGKILL)


def test_a_stopped_play_takes_the_masters_along(tmp_path: Path) -> None:
    tag = f"keep-{uuid.uuid4().hex}"
    keep = tmp_path / tag
    keep.mkdir()
    play = PLAY + "import time\ntime.sleep(300)\n"
    guard = subprocess.Popen(
        guard_command([sys.executable, "-c", play, str(keep), tag], 60, keep=keep)
    )
    try:
        deadline = time.monotonic() + 20
        while len(_tagged(tag)) < 3:  # the play and its two orphans
            assert time.monotonic() < deadline, _tagged(tag)
            time.sleep(0.1)
        guard.send_signal(signal.SIGTERM)  # as when the step's process dies
        guard.wait(20)
        deadline = time.monotonic() + 10
        while _tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _tagged(tag) == []
    finally:
        for pid in _tagged(tag):
            os.kill(pid, signal.SIGKILL)


# --- Ansible's own tools --------------------------------------------------------------------


def test_the_inventory_view_has_every_host_group_variable_and_bound_vm(tmp_path: Path) -> None:
    folder = tmp_path / "inv"
    (folder / "generated").mkdir(parents=True)
    (folder / "inventory.yml").write_text(
        yaml.safe_dump(
            {
                "groups": {
                    "routers": {"platform": "cisco_ios", "data": {"department": "network"}},
                    "vm-pool": {"platform": "linux", "data": {"tier": "pool"}},
                },
                "hosts": {
                    "r1": {"groups": ["routers"], "hostname": "127.0.0.1", "port": 2201},
                    "h1": {"groups": ["vm-pool"], "hostname": "127.0.0.1", "port": 2202},
                    "h2": {
                        "groups": ["vm-pool"],
                        "hostname": "127.0.0.1",
                        "password_secret": "h2_password",
                    },
                },
                "host_binding": {"kind": "pool", "group": "vm-pool", "store": "file"},
            }
        )
    )
    (folder / "generated" / "bindings.json").write_text('{"web-1": "h1"}')
    view = inventory_view(load_inventory(folder))["all"]
    assert set(view["hosts"]) == {"r1", "h1", "h2", "web-1"}
    assert view["children"] == {
        "routers": {"hosts": {"r1": {}}},
        "vm_pool": {"hosts": {"h1": {}, "h2": {}, "web-1": {}}},
    }
    assert view["hosts"]["web-1"] == {**view["hosts"]["h1"], "bound_to": "h1"}
    assert view["hosts"]["h1"]["tier"] == "pool" and view["hosts"]["h1"]["ansible_port"] == 2202
    assert view["hosts"]["r1"]["ansible_connection"] == "ansible.netcommon.network_cli"
    assert view["hosts"]["r1"]["ansible_network_os"] == "cisco.ios.ios"
    assert "ansible_password" not in view["hosts"]["h2"]  # never a secret, nor a reference


def test_all_plays_gather_the_same_facts_so_the_first_gathering_serves_the_run() -> None:
    subsets = set()
    for play in sorted((ROOT / "playbooks").glob("*.yml")):
        for entry in yaml.safe_load(play.read_text()):
            assert entry.get("gather_facts") is True, play
            subsets.add(tuple(entry["gather_subset"]))
    assert len(subsets) == 1
