"""The Ansible executor when the process running the step dies, against a real lab host.

A child Python process runs ``os.playbook`` (ansible-runner -> guard -> ansible-playbook ->
sshd in a podman container) on a play that sleeps; the test SIGKILLs that child mid-play and
checks /proc: no process of that play may remain. Then the next step of the same project
root sweeps the dead step's private dir, and no secret value used (the step's secret, and an
unrelated ``INFRA_SECRET_*`` of the process) is found in any file of the project root or of
the system temp dir, after a normal, a failed and the killed run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra_automation.departments.ansible import JOBS_DIR, PlaybookExecutor, PlaybookParams
from infra_automation.executors.base import StepContext
from infra_automation.inventory import load_inventory
from infra_automation.results import ErrorKind, Status, StepResult
from infra_automation.secrets import Secrets

pytestmark = pytest.mark.lab

HOST = "debian1"
PLAY = """\
- name: Use a secret, then finish, fail or sleep
  hosts: all
  gather_facts: false
  tasks:
    - name: Store the secret
      ansible.builtin.copy:
        content: "{{ crash_token }}\\n"
        dest: "/tmp/infra-crash-{{ infra_run_id }}"
        mode: "0600"
      no_log: true
    - name: Fail on purpose
      ansible.builtin.fail:
        msg: failed on purpose
      when: crash_mode == 'fail'
    - name: Sleep so that the play is in progress
      ansible.builtin.command: sleep 97
      when: crash_mode == 'sleep'
      changed_when: false
"""
CHILD = """
import sys
from pathlib import Path
from infra_automation.departments.ansible import PlaybookExecutor, PlaybookParams
from infra_automation.executors.base import StepContext
from infra_automation.inventory import load_inventory
from infra_automation.secrets import Secrets

inventory_path, root, run_id = sys.argv[1:4]
ctx = StepContext(
    run_id=run_id, project="crash", step_id="sleep", department="os",
    params=PlaybookParams(
        playbook="crash.yml", vars={"crash_mode": "sleep"},
        secret_vars={"crash_token": "crash_token"},
    ),
    inventory=load_inventory(Path(inventory_path)), targets=("debian1",),
    secrets=Secrets(), root=Path(root),
)
print(PlaybookExecutor().apply(ctx))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "crash.yml").write_text(PLAY)
    return tmp_path


@pytest.fixture
def secrets() -> dict[str, str]:
    return {
        "INFRA_SECRET_CRASH_TOKEN": f"crash-{uuid.uuid4().hex}",
        "INFRA_SECRET_UNRELATED": f"unrelated-{uuid.uuid4().hex}",
    }


def processes_naming(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line holds ``text`` (our project root: only ours)."""
    found: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append((int(entry.name), cmdline))
    return found


def files_holding(values: list[str], *folders: Path) -> list[str]:
    """Every regular file under ``folders`` that holds one of ``values``."""
    needles = [v.encode() for v in values]
    hits: list[str] = []
    for folder in folders:
        for dirpath, _dirs, files in os.walk(folder, onerror=lambda _e: None):
            for name in files:
                path = Path(dirpath, name)
                try:
                    if not path.is_file() or path.is_symlink() or path.stat().st_size > 64 << 20:
                        continue
                    data = path.read_bytes()
                except OSError:
                    continue
                hits += [f"{path}: {v}" for v, n in zip(values, needles, strict=True) if n in data]
    return hits


def run_step(lab: Any, root: Path, mode: str, env: dict[str, str]) -> StepResult:
    ctx = StepContext(
        run_id=f"c{uuid.uuid4().hex[:8]}",
        project="crash",
        step_id=mode,
        department="os",
        params=PlaybookParams(
            playbook="crash.yml",
            vars={"crash_mode": mode},
            secret_vars={"crash_token": "crash_token"},
        ),
        inventory=load_inventory(lab.inventory_path),
        targets=(HOST,),
        secrets=Secrets(env=env),
        root=root,
    )
    return PlaybookExecutor().apply(ctx)


@pytest.fixture
def killed_child(lab: Any, project: Path, secrets: dict[str, str]) -> Iterator[float]:
    """Starts the sleeping play in a child process, SIGKILLs the child once the play runs;
    yields how long after the kill the last process of the play was gone."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(lab.inventory_path), str(project), "killed"],
        env={**os.environ, **secrets},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        # the play is in progress once ansible-playbook has forked a worker (2 processes)
        while len([p for p in processes_naming(str(project)) if "ansible-playbook" in p[1]]) < 3:
            assert child.poll() is None, "the step ended before the play ran"
            assert time.monotonic() < deadline, "the play did not start in 120 s"
            time.sleep(0.2)
        time.sleep(2)  # well into the sleeping task
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        killed = time.monotonic()
        while processes_naming(str(project)) and time.monotonic() < killed + 15:
            time.sleep(0.1)
        yield time.monotonic() - killed
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_a_killed_step_takes_its_play_along_and_leaves_no_secret(
    killed_child: float, lab: Any, project: Path, secrets: dict[str, str]
) -> None:
    left = processes_naming(str(project))
    assert left == [], f"processes of the killed play remain: {left}"
    assert killed_child < 10
    jobs = project / ".infra" / "ansible" / JOBS_DIR
    assert len(list(jobs.iterdir())) == 1  # the dead step's private dir, until the next start
    # the next steps of the project: a normal run and a failed run (they sweep the dead dir)
    env = {"INFRA_SECRET_CRASH_TOKEN": secrets["INFRA_SECRET_CRASH_TOKEN"]}
    ok = run_step(lab, project, "ok", env)
    assert ok.status is Status.SUCCESS, ok.error
    failed = run_step(lab, project, "fail", env)
    assert failed.status is Status.FAILED
    assert failed.error_kind is ErrorKind.REJECTED
    assert failed.targets[0].error_kind is ErrorKind.REJECTED
    assert "failed on purpose" in str(failed.error)
    assert list(jobs.iterdir()) == []
    values = list(secrets.values())
    assert files_holding(values, project, Path(tempfile.gettempdir())) == []
    for result in (ok, failed):
        assert all(v not in repr(result) for v in values)
        assert Path(result.artifacts["ansible"]).is_file()  # the log, secrets masked


def test_unreachable_and_failed_hosts_have_their_error_kind(
    lab: Any, project: Path, secrets: dict[str, str]
) -> None:
    inventory = load_inventory(lab.inventory_path)
    spec = inventory.spec.model_copy(deep=True)
    model = spec.hosts[HOST]
    from infra_automation.inventory import Inventory
    from infra_automation.lab.base import free_port

    spec.hosts["ghost"] = model.model_copy(update={"name": "ghost", "port": free_port()})
    ctx = StepContext(
        run_id=f"c{uuid.uuid4().hex[:8]}",
        project="crash",
        step_id="kinds",
        department="os",
        params=PlaybookParams(
            playbook="crash.yml",
            vars={"crash_mode": "fail"},
            secret_vars={"crash_token": "crash_token"},
        ),
        inventory=Inventory(spec, None),
        targets=(HOST, "ghost"),
        secrets=Secrets(env={"INFRA_SECRET_CRASH_TOKEN": secrets["INFRA_SECRET_CRASH_TOKEN"]}),
        root=project,
    )
    result = PlaybookExecutor().apply(ctx)
    kinds = {t.target: t.error_kind for t in result.targets}
    assert kinds == {HOST: ErrorKind.REJECTED, "ghost": ErrorKind.UNREACHABLE}
    assert result.error_kind is ErrorKind.UNREACHABLE  # the step shows the worst kind
