"""A worker SIGKILLed during an ``os.playbook`` step on a real lab host: no process of the
play remains, the step reads ``interrupted`` (a play is not safe to re-run by itself), and
``infra resume`` through the workers completes the run without re-running what succeeded.

Needs the lab instance ``$INFRA_LAB_NAME`` (default ``lab``) up: ``infra lab up --name hw``.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
from engine_helpers import step, write_request, write_service
from test_workers import _append, _started, _wait_running

from infra_automation.engine import Engine
from infra_automation.lab import Lab
from infra_automation.workers import client
from tests.workers.conftest import Workers

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
PLAY = """\
- name: Sleep on the host so that the play is in progress
  hosts: all
  gather_facts: false
  tasks:
    - name: Sleep
      ansible.builtin.command: "sleep {{ pause }}"
      changed_when: false
"""


def _lab_inventory() -> Path:
    name = os.environ.get("INFRA_LAB_NAME", "lab")
    folder = REPO / "inventories" / "lab" if name == "lab" else REPO / ".lab" / name / "inventory"
    if not (folder / "inventory.yml").is_file():
        pytest.fail(f"lab {name!r} is not up: infra lab up --name {name}")
    return folder


def _plays(root: Path) -> list[int]:
    """Live ansible-playbook processes of this project root."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if "ansible-playbook" in cmdline and str(root) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_sigkilled_worker_during_a_play_leaves_no_orphan(
    lab: Lab, engine: Engine, workers: Workers, root: Path, tmp_path: Path
) -> None:
    (root / "playbooks").mkdir()
    (root / "playbooks" / "pause.yml").write_text(PLAY)
    toml = root / "infra.toml"
    toml.write_text(f'inventory = "{_lab_inventory()}"\n' + toml.read_text())
    toml.write_text(toml.read_text() + f'os = "{workers.queue("os")}"\n')
    queues = {**engine.settings.queues, "os": workers.queue("os")}  # as infra.toml says now
    engine.settings = type(engine.settings)(
        **{**vars(engine.settings), "inventory": _lab_inventory(), "queues": queues}
    )
    log = tmp_path / "calls.log"
    play = step(
        "play",
        "os.playbook",
        needs=["a"],
        params={"playbook": "pause.yml", "vars": {"pause": "60"}},
        targets={"hosts": ["debian1"]},
    )
    write_service(root, "play", [_append("a", log, []), play, _append("z", log, ["play"])])
    plan = engine.plan(engine.load_request(write_request(root, "play")))
    workers.start("runs", "test")
    os_worker = workers.start("os")
    workers.wait_ready()

    run_id = client.submit(engine, plan, docs=False)
    _wait_running(engine, run_id, "play", workers)
    deadline = time.monotonic() + 30
    while not _plays(root):
        assert time.monotonic() < deadline, "ansible-playbook did not start"
        time.sleep(0.1)
    os_worker.kill()

    deadline = time.monotonic() + 15
    while _plays(root):  # the play dies with its worker (the step's guard)
        assert time.monotonic() < deadline, f"orphan ansible-playbook: {_plays(root)}"
        time.sleep(0.2)
    result = client.follow(engine, run_id)
    assert result.failed and engine.store.get_run(run_id).step("play").status == "interrupted"

    workers.start("os")
    workers.wait_ready()
    resumed = engine.store.get_run(
        client.follow(engine, client.submit_resume(engine, run_id)).run_id
    )
    assert resumed.status == "success", resumed
    assert resumed.step("a").reused and resumed.step("play").queue == workers.queue("os")
    assert Counter(log.read_text().split()[::2]) == Counter({"a": 1, "z": 1})
    assert _started(engine, run_id)["play"] == 1 and not _plays(root)
