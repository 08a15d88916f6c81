"""The fault matrix on the real lab: each fault injected while `infra apply` runs.

Every case runs the matrix service (``data/matrix``: gate -> net (core router) -> folder ->
portgroup (vCenter) -> play (debian1), and gate -> side -> side_done) in a subprocess on its
own project root, injects one fault, restores it in ``finally``, and checks:

- error kind: the failed step carries its ``ErrorKind`` value in ``infra runs show --output
  json`` (a killed run reads ``interrupted``, its killed step not ``success``);
- dependents skipped (killed run: not run), independent branch finished;
- no process of that run left (ansible-playbook, ssh), found by a marker in their environment;
- no secret value on disk (the case's root and TMPDIR) once the case is over;
- the record and the docs agree (run and step statuses; failures.md names the resume command);
- ``infra resume RUN`` with the fault restored exits 0 and completes every step.

The cells land in the session's printed matrix (conftest.pytest_terminal_summary).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fault_lab import (
    INDEPENDENT,
    LEASE_TTL,
    MATRIX,
    Case,
    cell,
    dependents,
    lab_secrets,
)

from infra_automation.lab import Lab, LabOptions
from infra_automation.lab.base import read_pid
from infra_automation.lab.hosts import container_name, podman

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 120


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> Iterator[Lab]:
    """The lab instance ``INFRA_LAB_NAME`` (default ``lab``), up for the session."""
    name = os.environ.get("INFRA_LAB_NAME", "lab")
    running = Lab(ROOT, name).options
    instance = Lab(
        ROOT, name, LabOptions(routers=max(running.routers, 2), hosts=max(running.hosts, 1))
    )
    lease = instance.acquire(cleanup_on_failure=os.environ.get("INFRA_LAB_KEEP") != "1")
    yield instance
    instance.release(lease, keep=os.environ.get("INFRA_LAB_KEEP") == "1")


@pytest.fixture
def case(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Case]:
    name = request.node.name.removeprefix("test_")
    c = Case(name=name, base=tmp_path, inventory=lab.inventory_path, gate=2.0)
    yield c
    c.end_processes(c.processes())  # whatever a failed assertion left running
    MATRIX[name] = c.cells


# --- faults (each restored by its context manager) ----------------------------------------


def when_running(
    c: Case, proc: subprocess.Popen[str], step: str, action: Callable[[], None]
) -> None:
    c.wait_running(step, proc)
    action()


@contextmanager
def router_down(lab: Lab, name: str = "core") -> Iterator[Callable[[], None]]:
    try:
        yield lambda: lab.stop_router(name)
    finally:
        lab.start_router(name)


def _vcsim_pidfile(lab: Lab) -> Path:
    return lab.state_dir / "vcenter" / "vcsim.pid"


@contextmanager
def vcenter_stopped(lab: Lab) -> Iterator[Callable[[], None]]:
    def stop() -> None:
        pid = read_pid(_vcsim_pidfile(lab))
        assert pid is not None, "vcsim is not running"
        os.kill(pid, signal.SIGTERM)

    try:
        yield stop
    finally:
        lab.up()  # starts vcsim again (new port and password: the inventory is rewritten)


@contextmanager
def host_stopped(lab: Lab, host: str = "debian1") -> Iterator[Callable[[], None]]:
    ctx = lab.context
    try:
        yield lambda: podman(ctx, "stop", "--time", "1", container_name(ctx, host)) and None
    finally:
        lab.up()  # starts the container again and writes its (new) ports to the inventory


@contextmanager
def play_switch(lab: Lab, host: str = "debian1") -> Iterator[None]:
    ctx = lab.context
    podman(ctx, "exec", container_name(ctx, host), "touch", "/root/fault-matrix-fail")
    try:
        yield
    finally:
        podman(ctx, "exec", container_name(ctx, host), "rm", "-f", "/root/fault-matrix-fail")


@contextmanager
def database_locked(c: Case, seconds: float) -> Iterator[Callable[[], None]]:
    """An exclusive write lock on the record, held ``seconds`` (within its busy timeout)."""
    done = threading.Event()

    def hold() -> None:
        db = sqlite3.connect(c.database, timeout=30, isolation_level=None)
        try:
            db.execute("BEGIN EXCLUSIVE")
            c.cells["_locked_at"] = str(time.time())
            done.wait(seconds)
            db.execute("COMMIT")
            c.cells["_released_at"] = str(time.time())
        finally:
            db.close()

    thread = threading.Thread(target=hold, daemon=True)
    try:
        yield thread.start
    finally:
        done.set()
        if thread.is_alive():
            thread.join(35)


@contextmanager
def disk_full(c: Case, size: str = "2m") -> Iterator[Callable[[], None]]:
    state = c.root / ".infra"
    state.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(state)], check=True)
    filler = state / "filler"

    def fill() -> None:
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass

    try:
        yield fill
    finally:
        filler.unlink(missing_ok=True)
        for _ in range(20):
            if subprocess.run(["umount", str(state)], check=False).returncode == 0:
                break
            time.sleep(0.5)


@contextmanager
def paused_pid(pidfile: Path) -> Iterator[None]:
    pid = read_pid(pidfile)
    assert pid is not None, f"no process in {pidfile}"
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def resume_pid(pidfile: Path) -> None:
    pid = read_pid(pidfile)
    if pid is not None:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def paused_host(lab: Lab, host: str = "debian1") -> Iterator[None]:
    ctx = lab.context
    podman(ctx, "pause", container_name(ctx, host))
    try:
        yield
    finally:
        podman(ctx, "unpause", container_name(ctx, host), check=False)  # may be unpaused


# --- the checks ---------------------------------------------------------------------------


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any] | None, str]:
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    try:
        data = json.loads(out)
    except ValueError:
        data = None
    return proc.returncode, data, err


def record_steps(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in record["steps"]}


def check_failed_run(
    c: Case,
    lab: Lab,
    proc: subprocess.Popen[str],
    failed: str,
    kind: str,
    *,
    mentions: str | None = None,
) -> str:
    """Cells of a run in which ``failed`` should fail with ``kind``; returns the run id."""
    code, data, err = finish(proc)
    orphans = c.orphans_after()
    c.end_processes(orphans)
    assert data is not None, f"exit {code}, no JSON result: {err[-3000:]}"
    run_id = data["run_id"]
    record = c.show(run_id)
    steps = record_steps(record)
    got = steps[failed]
    c.cells["error kind"] = cell(
        got["status"] == "failed" and got["error_kind"] == kind,
        f"{failed} {got['status']} kind={got['error_kind']} (want {kind})",
    )
    if mentions is not None and mentions not in (got["error"] or ""):
        c.cells["error kind"] += f"; error lacks {mentions!r}"
    deps = dependents(failed)
    not_skipped = sorted(d for d in deps if steps[d]["status"] != "skipped")
    c.cells["dependents skipped"] = cell(not not_skipped, f"not skipped: {not_skipped}")
    c.cells["independent done"] = independent(steps)
    c.cells["no orphans"] = cell(not orphans, f"left running: {sorted(orphans.values())}")
    consistent = [
        *(
            f"{sid}: json {v['status']} / record {steps[sid]['status']}"
            for sid, v in data["steps"].items()
            if steps[sid]["status"] != v["status"]
        ),
        *([f"record run {record['status']}"] if record["status"] != "failed" else []),
        *([f"exit {code}"] if code != 1 else []),
        *docs_problems(c, run_id, open_run=True),
    ]
    c.cells["record = docs"] = cell(not consistent, "; ".join(consistent))
    return str(run_id)


def independent(steps: dict[str, dict[str, Any]]) -> str:
    bad = {s: steps[s]["status"] for s in INDEPENDENT if steps[s]["status"] != "success"}
    return cell(not bad, f"{bad}")


def docs_problems(c: Case, run_id: str, *, open_run: bool) -> list[str]:
    problems = []
    if run_id not in c.page("history.md"):
        problems.append(f"history.md lacks {run_id}")
    failures = c.page("failures.md")
    if open_run and f"infra resume {run_id}" not in failures:
        problems.append(f"failures.md lacks `infra resume {run_id}`")
    if not open_run and "No open failures" not in failures:
        problems.append("failures.md still lists an open failure")
    return problems


def check_resume(c: Case, lab: Lab, run_id: str) -> None:
    proc = c.start("resume", run_id)
    code, data, err = finish(proc)
    orphans = c.orphans_after(grace=2)
    c.end_processes(orphans)
    problems = []
    if code != 0 or data is None:
        problems.append(f"exit {code}: {(err or '')[-600:]!s}")
    else:
        record = c.show(data["run_id"])
        bad = {s["id"]: s["status"] for s in record["steps"] if s["status"] != "success"}
        if record["status"] != "success" or bad:
            problems.append(f"resumed run {record['status']}, steps {bad}")
        problems += docs_problems(c, data["run_id"], open_run=False)
    c.cells["resume ok"] = cell(not problems, "; ".join(problems))
    hits = c.secrets_on_disk(lab_secrets(lab.inventory_path))
    where = sorted({f"{Path(h.where).relative_to(c.base)} ({h.secret.name})" for h in hits})
    c.cells["no secret on disk"] = cell(not hits, ", ".join(where[:6]))


def check_killed_run(
    c: Case,
    lab: Lab,
    proc: subprocess.Popen[str],
    step: str,
    resume_target: Callable[[], None],
    child: str | None = None,
) -> str:
    """SIGKILL `infra` while ``step`` runs (and, if given, its ``child`` process started);
    cells of the interrupted run; returns its id."""
    until = time.monotonic() + 20
    while child and time.monotonic() < until:
        if any(child in cmd for cmd in c.processes().values()):
            break
        time.sleep(0.1)
    else:
        assert not child, f"no {child} process of the step within 20s"
    time.sleep(1.0)  # well inside the step (its target is held)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    orphans = c.orphans_after(grace=3)
    c.end_processes(orphans)  # before the target is released: they would go on changing it
    resume_target()
    run_id = c.latest_run()
    assert run_id is not None
    record = c.show(run_id)
    until = time.monotonic() + LEASE_TTL + 10  # a dead run reads `running` until its lease ends
    while record["status"] == "running" and time.monotonic() < until:
        time.sleep(0.5)
        record = c.show(run_id)
    steps = record_steps(record)
    c.cells["error kind"] = cell(
        record["status"] == "interrupted" and steps[step]["status"] != "success",
        f"run {record['status']}, {step} {steps[step]['status']}",
    )
    ran = sorted(d for d in dependents(step) if steps[d]["status"] not in ("pending", "skipped"))
    c.cells["dependents skipped"] = cell(not ran, f"ran: {ran}")
    c.cells["independent done"] = independent(steps)
    c.cells["no orphans"] = cell(not orphans, f"left running: {sorted(orphans.values())}")
    consistent = docs_problems(c, run_id, open_run=True)
    c.cells["record = docs"] = cell(not consistent, "; ".join(consistent))
    return str(run_id)


def assert_cells(c: Case) -> None:
    failed = {k: v for k, v in c.cells.items() if v != "ok" and not v.startswith("n/a")}
    assert not failed, "\n".join(f"{k}: {v}" for k, v in failed.items())


# --- the cases ----------------------------------------------------------------------------


def test_router_down_mid_run(lab: Lab, case: Case) -> None:
    with router_down(lab) as stop:
        proc = case.apply()
        when_running(case, proc, "gate", stop)
        run_id = check_failed_run(case, lab, proc, "net", "unreachable")
    check_resume(case, lab, run_id)
    assert_cells(case)


def test_vcenter_stopped(lab: Lab, case: Case) -> None:
    with vcenter_stopped(lab) as stop:
        proc = case.apply()
        when_running(case, proc, "gate", stop)
        run_id = check_failed_run(case, lab, proc, "folder", "unreachable")
    check_resume(case, lab, run_id)
    assert_cells(case)


def test_host_unreachable(lab: Lab, case: Case) -> None:
    with host_stopped(lab) as stop:
        proc = case.apply()
        when_running(case, proc, "gate", stop)
        run_id = check_failed_run(case, lab, proc, "play", "unreachable")
    check_resume(case, lab, run_id)
    assert_cells(case)


def test_play_failing(lab: Lab, case: Case) -> None:
    with play_switch(lab):
        proc = case.apply()
        run_id = check_failed_run(case, lab, proc, "play", "rejected", mentions="fault switch")
    check_resume(case, lab, run_id)
    assert_cells(case)


def test_database_locked(lab: Lab, case: Case) -> None:
    """The record is locked by another writer for 5 s mid-run (inside its busy timeout):
    the run waits and finishes, nothing fails, the record is complete."""
    with database_locked(case, 5.0) as lock:
        proc = case.apply()
        when_running(case, proc, "gate", lock)
        code, data, err = finish(proc)
    orphans = case.orphans_after()
    assert data is not None, f"exit {code}: {err[-3000:]}"
    record = case.show(data["run_id"])
    released = float(case.cells.pop("_released_at", "inf"))
    case.cells.pop("_locked_at", None)
    finished = datetime.fromisoformat(record["finished_at"]).timestamp()
    assert finished > released, "the run ended before the lock was released: nothing was tested"
    steps = record_steps(record)
    bad = {s: v["status"] for s, v in steps.items() if v["status"] != "success"}
    case.cells["error kind"] = cell(not bad and code == 0, f"exit {code}, not success: {bad}")
    case.cells["dependents skipped"] = "n/a (nothing fails)"
    case.cells["independent done"] = independent(steps)
    case.cells["no orphans"] = cell(not orphans, f"{sorted(orphans.values())}")
    mismatch = [s for s, v in data["steps"].items() if steps[s]["status"] != v["status"]]
    problems = [f"json/record differ: {mismatch}"] if mismatch else []
    problems += docs_problems(case, data["run_id"], open_run=False)
    case.cells["record = docs"] = cell(not problems, "; ".join(problems))
    check_resume(case, lab, data["run_id"])
    assert_cells(case)


def test_disk_full(lab: Lab, case: Case) -> None:
    """The state dir (.infra: locks, Ansible's private data dir) fills up during the run."""
    with disk_full(case) as fill:
        proc = case.apply()
        when_running(case, proc, "gate", fill)
        run_id = check_failed_run(case, lab, proc, "play", "internal", mentions="space")
        (case.root / ".infra" / "filler").unlink()
        check_resume(case, lab, run_id)
    assert_cells(case)


def test_sigkill_during_network_step(lab: Lab, case: Case) -> None:
    sshd = lab.component("routers").paths(lab.context, "core").sshd_pid  # type: ignore[attr-defined]
    with paused_pid(sshd):
        proc = case.apply()
        case.wait_running("net", proc)
        run_id = check_killed_run(case, lab, proc, "net", lambda: resume_pid(sshd))
    check_resume(case, lab, run_id)
    assert_cells(case)


def test_sigkill_during_vmware_step(lab: Lab, case: Case) -> None:
    pidfile = _vcsim_pidfile(lab)
    with paused_pid(pidfile):
        proc = case.apply()
        case.wait_running("folder", proc)
        run_id = check_killed_run(case, lab, proc, "folder", lambda: resume_pid(pidfile))
    check_resume(case, lab, run_id)
    assert_cells(case)


def test_sigkill_during_ansible_step(lab: Lab, case: Case) -> None:
    ctx = lab.context
    host = container_name(ctx, "debian1")
    with paused_host(lab):
        proc = case.apply()
        case.wait_running("play", proc)
        run_id = check_killed_run(
            case,
            lab,
            proc,
            "play",
            lambda: podman(ctx, "unpause", host, check=False) and None,
            child="ansible-playbook",
        )
    check_resume(case, lab, run_id)
    assert_cells(case)
