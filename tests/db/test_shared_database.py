"""Several ``infra`` processes sharing one database (SQLite and PostgreSQL): a project is
locked per database, not per checkout; a killed holder's lease expires and its run is resumed
from another root; leases never overlap; a locked record fails a run cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from db_backends import BACKENDS, database
from engine_helpers import INVENTORY, step, write_request, write_service

from infra_automation.exceptions import RunLocked
from infra_automation.record import RunRecord, RunStore, head_revision, open_database
from infra_automation.scheduler import ProjectLock

HERE = Path(__file__).parent
PLUGINS = HERE / "plugins"
WORKER = HERE / "lease_worker.py"
CHAIN = ["s1", "s2", "s3", "s4", "s5"]
TTL = "4"  # long enough that a loaded machine checks the lock before it expires
CLI = (
    "from infra_automation.cli import app, main; from infra_automation.cli.db import app as db; "
    "app.add_typer(db, name='db'); main()"
)


def infra(root: Path, url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    """``infra --root ROOT ARGS`` in a process of its own (``infra db`` wired as the lead will)."""
    environ = {
        **os.environ,
        "INFRA_PLUGINS": "infra_db_test_plugin",
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
        "INFRA_DATABASE_URL": url,
        "INFRA_LEASE_TTL": TTL,
        "COLUMNS": "200",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "--root", str(root), *args],
        cwd=root,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def make_root(base: Path, steps: list[dict[str, object]]) -> Path:
    (base / "catalog").mkdir(parents=True)
    (base / "requests").mkdir()
    inventory = base / "inventories" / "lab"
    inventory.mkdir(parents=True)
    (inventory / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    write_service(base, "slow", steps)
    write_request(base, "slow")
    return base


def chain(log: Path, release: Path) -> list[dict[str, object]]:
    """Five steps in a row; s3 holds the run until ``release`` exists (so the run is still
    going, whatever the machine's load, while a second process starts and is refused)."""

    def value(i: int) -> str:
        return f"{{{{ steps.{CHAIN[i - 1]}.outputs.value }}}}{i}" if i else "0"

    def params(i: int) -> dict[str, object]:
        held = {"hold_until": str(release)} if CHAIN[i] == "s3" else {}
        return {"log": str(log), "seconds": 0.4, "value": value(i), **held}

    return [
        step(sid, "test.append", needs=[CHAIN[i - 1]] if i else [], params=params(i))
        for i, sid in enumerate(CHAIN)
    ]


def wait_for(store: RunStore, done: int, timeout: float = 30) -> RunRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = store.list_runs()
        if runs and len(store.get_run(runs[0].id).steps_with("success")) >= done:
            return store.get_run(runs[0].id)
        time.sleep(0.05)
    raise AssertionError(f"no run finished {done} steps in {timeout}s")


def test_a_project_is_locked_per_database_and_resumed_from_another_root(
    tmp_path: Path, database_url: str
) -> None:
    log = tmp_path / "calls.log"
    release = tmp_path / "release"
    first = make_root(tmp_path / "checkout-a", chain(log, release))
    second = tmp_path / "checkout-b"
    shutil.copytree(first, second)
    store = RunStore(open_database(database_url))

    holder = infra(first, database_url, "apply", "requests/slow.yml", "--no-docs")
    try:
        running = wait_for(store, done=2)
        refused = infra(second, database_url, "apply", "requests/slow.yml", "--no-docs")
        _, err = refused.communicate(timeout=60)
        assert refused.returncode == 2, err
        flat = " ".join(err.split())
        assert f"project 'shop' has an active run (run {running.id}, pid {holder.pid}" in flat
        assert "Traceback" not in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)

    killed = store.get_run(running.id)
    with pytest.raises(RunLocked, match=running.id):  # until its lease expires
        ProjectLock(store.engine, "shop", "too-early").acquire()
    deadline = time.monotonic() + float(TTL) + 5
    while store.get_run(killed.id).status != "interrupted":
        assert time.monotonic() < deadline, "the lease of the killed run did not expire"
        time.sleep(0.1)
    finished = set(store.get_run(killed.id).steps_with("success"))
    assert {"s1", "s2"} <= finished and "s5" not in finished
    release.touch()  # the resumed run's s3 goes on at once

    resume = infra(second, database_url, "resume", killed.id, "--no-docs", "-o", "json")
    out, err = resume.communicate(timeout=60)
    assert resume.returncode == 0, err
    resumed = store.get_run(json.loads(out)["run_id"])
    assert resumed.resumed_from == killed.id and resumed.status == "success"
    assert {s.step_id for s in resumed.steps if s.reused} == finished
    assert resumed.step("s5").outputs == {"value": "01234"}
    calls = Counter(line.split()[0] for line in log.read_text().splitlines())
    assert set(calls) == set(CHAIN) and all(calls[s] == 1 for s in finished)
    store.engine.dispose()


def test_host_bindings_hold_across_roots_sharing_the_database(
    tmp_path: Path, database_url: str
) -> None:
    pool = {f"h{i}": {"groups": ["pool"]} for i in range(1, 5)}
    inventory = {**INVENTORY, "groups": {"pool": {}}, "hosts": pool}
    inventory["host_binding"] = {"kind": "pool", "group": "pool"}  # kept in the database
    bind = step("bind", "test.bind", params={"count": 2, "seconds": 0.2})
    roots = [make_root(tmp_path / name, [bind]) for name in ("r1", "r2", "r3")]
    for root, project in zip(roots, ("p1", "p2", "p3"), strict=True):
        (root / "inventories" / "lab" / "inventory.yml").write_text(yaml.safe_dump(inventory))
        write_request(root, "slow", project=project)
    open_database(database_url).dispose()  # migrated before the processes start

    procs = [infra(root, database_url, "apply", "requests/slow.yml") for root in roots[:2]]
    for proc in procs:  # two roots bind at the same time
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    store = RunStore(open_database(database_url))
    bound = {
        vm: host
        for run in store.list_runs()
        for vm, host in store.get_run(run.id).step("bind").outputs["hosts"].items()
    }
    assert sorted(bound) == ["p1-vm-1", "p1-vm-2", "p2-vm-1", "p2-vm-2"]
    assert sorted(bound.values()) == ["h1", "h2", "h3", "h4"]  # never one host twice

    third = infra(roots[2], database_url, "apply", "requests/slow.yml")
    out, err = third.communicate(timeout=120)
    assert third.returncode == 1 and "no free host in group 'pool'" in out + err
    assert not (roots[0] / "inventories" / "lab" / "generated").exists()  # not in a file


def test_leases_never_overlap_over_four_processes(tmp_path: Path, database_url: str) -> None:
    open_database(database_url).dispose()  # migrated before the workers start
    markers = tmp_path / "markers"
    markers.mkdir()
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "lease_worker.py"),
                database_url,
                str(markers),
                str(i),
                "250",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    totals: Counter[str] = Counter()
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        totals.update(json.loads(out))
    assert totals["acquired"] + totals["refused"] == 1000
    assert totals["overlaps"] == 0
    assert totals["refused"] > 0 and totals["acquired"] > 100  # they did contend
    db = open_database(database_url)
    with db.connect() as conn:  # every lease was given back
        assert conn.execute(sa.text("SELECT count(*) FROM infra_leases")).scalar() == 0
    db.dispose()


def test_a_locked_record_ends_the_run_failed_exit_1_no_traceback(
    tmp_path: Path, database_url: str
) -> None:
    steps = [
        step("lock", "test.lockrecord", params={"seconds": 1.5}),
        step("after", "test.append", needs=["lock"], params={"log": str(tmp_path / "log")}),
    ]
    root = make_root(tmp_path / "root", steps)
    proc = infra(
        root, database_url, "apply", "requests/slow.yml", "--no-docs", INFRA_DATABASE_TIMEOUT="0.3"
    )
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "Traceback" not in out + err
    flat = " ".join((out + err).split())
    assert "cannot write to the run record" in flat
    assert "infra-test-pw" not in out + err
    store = RunStore(open_database(database_url))
    run = store.get_run(store.list_runs()[0].id)
    assert run.status == "failed" and "cannot write to the run record" in (run.error or "")
    assert run.steps_with("running", "pending") == ()
    assert run.step("lock").status == "failed" and run.step("after").status == "skipped"
    assert not (tmp_path / "log").exists()  # the step after it never ran
    store.engine.dispose()


@pytest.mark.parametrize("kind", BACKENDS)
def test_infra_db_upgrade_then_current(tmp_path: Path, kind: str) -> None:
    root = make_root(tmp_path / "root", [step("a")])
    with database(kind, tmp_path, migrated=False) as url:

        def shown(*args: str) -> str:
            proc = infra(root, url, "db", *args)
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert "infra-test-pw" not in out + err
            return " ".join(out.split())

        head = head_revision()
        assert f"revision none (newest {head}, behind: run `infra db upgrade`)" in shown("current")
        assert f"upgraded from none to {head}" in shown("upgrade")
        assert f"revision {head} (newest {head}, up to date)" in shown("current")
        assert f"at revision {head}, nothing to do" in shown("upgrade")
        apply = infra(root, url, "apply", "requests/slow.yml", "--no-docs")
        assert apply.wait(timeout=60) == 0


def test_infra_db_names_a_bad_database_without_its_password(tmp_path: Path) -> None:
    root = make_root(tmp_path / "root", [step("a")])
    url = "postgresql+psycopg://infra:s3cr3t-pw@127.0.0.1:1/nodb"
    proc = infra(root, url, "db", "upgrade")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "s3cr3t-pw" not in out + err and "infra:***@127.0.0.1:1/nodb" in err
    assert "Traceback" not in err
