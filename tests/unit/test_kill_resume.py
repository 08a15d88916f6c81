"""A real ``infra apply`` process is SIGKILLed mid-run (SQLite and PostgreSQL): the record
stays readable, the run reads as interrupted once its project lease expires, the lock is then
free, and ``infra resume`` completes the run without re-running the steps that had finished
(the executor logs every call to a file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from db_backends import database_url  # noqa: F401 - the fixture, over both backends
from engine_helpers import step, write_request, write_service

from infra_automation.record import RunRecord, RunStore, open_database

PLUGINS = Path(__file__).parent / "data" / "plugins"
CHAIN = ["s1", "s2", "s3", "s4", "s5"]
TTL = 1.5


def _infra(root: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "INFRA_PLUGINS": "infra_test_plugin",
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
        "INFRA_DATABASE_URL": url,
        "INFRA_LEASE_TTL": str(TTL),
    }
    cmd = [sys.executable, "-c", "from infra_automation.cli import main; main()"]
    return subprocess.Popen(
        [*cmd, "--root", str(root), *args, "--no-docs"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _value(i: int) -> str:
    """Each step's value extends its predecessor's: the outputs must flow through resume."""
    return f"{{{{ steps.{CHAIN[i - 1]}.outputs.value }}}}{i}" if i else "0"


def _wait_for(store: RunStore, done: int, timeout: float = 30) -> RunRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = store.list_runs()
        if runs:
            run = store.get_run(runs[0].id)
            if len(run.steps_with("success")) >= done:
                return run
        time.sleep(0.05)
    raise AssertionError(f"the run did not finish {done} steps in {timeout}s")


def test_sigkill_then_resume_completes_without_redoing_steps(
    root: Path,
    tmp_path: Path,
    database_url: str,  # noqa: F811 - the fixture
) -> None:
    log = tmp_path / "calls.log"
    steps = [
        step(
            sid,
            "test.append",
            needs=[CHAIN[i - 1]] if i else [],
            params={
                "log": str(log),
                "seconds": 0.5,
                "value": _value(i),
            },
        )
        for i, sid in enumerate(CHAIN)
    ]
    write_service(root, "slow", steps)
    request = write_request(root, "slow")
    store = RunStore(open_database(database_url))

    proc = _infra(root, database_url, "apply", str(request))
    try:
        before = _wait_for(store, done=2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    deadline = time.monotonic() + TTL + 5
    while store.get_run(before.id).status == "running":  # until its lease expires
        assert time.monotonic() < deadline, "the killed run's lease did not expire"
        time.sleep(0.1)
    killed = store.get_run(before.id)
    assert killed.status == "interrupted"  # recorded as running, its lease expired
    finished = set(killed.steps_with("success"))
    assert {"s1", "s2"} <= finished and "s5" not in finished
    assert killed.step("s1").outputs == {"value": "0"}
    assert all(s.status in ("success", "running", "pending") for s in killed.steps)

    resume = _infra(root, database_url, "resume", killed.id, "--output", "json")
    _, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err

    runs = store.list_runs()
    resumed = store.get_run(runs[0].id)
    assert resumed.resumed_from == killed.id and resumed.status == "success"
    assert {s.step_id for s in resumed.steps if s.reused} == finished
    assert resumed.step("s5").outputs == {"value": "01234"}  # earlier outputs flowed on
    calls = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert set(calls) == set(CHAIN)
    for sid in finished:
        assert calls[sid] == 1, f"{sid} ran again"
    store.engine.dispose()
