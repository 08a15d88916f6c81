"""The Ansible steps of one run share SSH masters and facts, against the lab's Debian hosts.

Two ``web.yml`` steps of one run (one :class:`RunResources`, as the scheduler hands them)
from a project root with a long path (the engine's run ids make the steps' private dirs
long): the second step reuses the first one's SSH masters and cached facts; closing the
run's resources ends the masters and removes the session. Runs under the strategy that
``INFRA_ANSIBLE_MITOGEN`` selects (CI runs the Ansible lab tests with 0 and with 1).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from infra_automation.departments.ansible import (
    SESSION_KEY,
    AnsibleSession,
    PlaybookExecutor,
    PlaybookParams,
    choose_strategy,
)
from infra_automation.executors.base import RunResources, StepContext
from infra_automation.inventory import load_inventory
from infra_automation.results import Status, StepResult
from infra_automation.secrets import Secrets

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("debian1", "debian2")


def masters(session: AnsibleSession) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and str(session.control_dir).encode() in cmdline:
            found.append(int(entry.name))
    return found


def step(lab: Any, root: Path, resources: RunResources, run_id: str, n: int) -> StepResult:
    ctx = StepContext(
        run_id=run_id,
        project="speedtest",
        step_id=f"web-step-{n}",
        department="web",
        params=PlaybookParams(playbook="web.yml", timeout=240),
        inventory=load_inventory(lab.inventory_path),
        targets=HOSTS,
        secrets=Secrets(env={}),
        root=root,
        resources=resources,
    )
    return PlaybookExecutor().apply(ctx)


def test_the_steps_of_a_run_share_ssh_masters_and_facts(lab: Any, tmp_path: Path) -> None:
    root = tmp_path / ("a-project-root-with-a-long-path-" * 3).rstrip("-")
    root.mkdir()
    (root / "playbooks").symlink_to(ROOT / "playbooks", target_is_directory=True)
    run_id = f"20261201T101010-{uuid.uuid4().hex[:8]}"  # as long as the engine's
    resources = RunResources()
    try:
        first = step(lab, root, resources, run_id, 1)
        assert first.status is Status.SUCCESS, first.error
        session = resources.get(SESSION_KEY, lambda: None)
        assert isinstance(session, AnsibleSession)
        assert len(masters(session)) == len(HOSTS)  # left to the run by the guard
        cached = sorted(p.name for p in session.fact_dir.iterdir())  # ansible-core 2.19: s1_<host>
        assert len(cached) == len(HOSTS) and all(any(c.endswith(h) for c in cached) for h in HOSTS)
        second = step(lab, root, resources, run_id, 2)
        assert second.status is Status.SUCCESS, second.error
        logs = [Path(r.artifacts["ansible"]).read_text() for r in (first, second)]
        strategy = choose_strategy()
        assert all(log.startswith(f"strategy: {strategy.name} ") for log in logs)
        assert "TASK [Gathering Facts]" in logs[0]
        assert "TASK [Gathering Facts]" not in logs[1]  # the run's cache served them
        assert second.outputs["hosts"]["debian1"]["services"]["nginx"] == "running"
    finally:
        assert resources.close() == []
    assert masters(session) == []
    assert not session.path.exists()


PARALLEL_PLAY = """\
- name: Tasks on one host, {n} of them
  hosts: all
  gather_facts: false
  tasks:
    - name: A command
      ansible.builtin.command: "sleep 0.2"
      changed_when: false
      loop: "{{{{ range({n}) | list }}}}"
"""


@pytest.mark.parametrize("shared", ["1", "0"])
def test_parallel_plays_on_one_host_do_not_break_each_others_connections(
    lab: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared: str
) -> None:
    """A play that ends first must not end the SSH master a parallel play still uses (with
    or without the run's session: INFRA_ANSIBLE_SESSION). Plays in parallel on one host:
    steps of one run that do not share a process (a batch would run these in one)."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("INFRA_ANSIBLE_SESSION", shared)
    monkeypatch.setenv("INFRA_ANSIBLE_BATCH", "0")
    (tmp_path / "playbooks").mkdir()
    for n in (2, 40):
        (tmp_path / "playbooks" / f"p{n}.yml").write_text(PARALLEL_PLAY.format(n=n))
    resources = RunResources()
    inventory = load_inventory(lab.inventory_path)

    def play(name: str) -> StepResult:
        ctx = StepContext(
            run_id="r-parallel",
            project="speedtest",
            step_id=name,
            department="os",
            params=PlaybookParams(playbook=f"{name}.yml", timeout=240),
            inventory=inventory,
            targets=("debian3",),
            secrets=Secrets(env={}),
            root=tmp_path,
            resources=resources,
        )
        return PlaybookExecutor().apply(ctx)

    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(play, ["p2", "p40", "p2", "p2"]))
    finally:
        resources.close()
    for result in results:
        assert result.status is Status.SUCCESS, result.error
