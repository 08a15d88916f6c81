"""The server's run queue through real uvicorn servers, on SQLite and PostgreSQL: a
submission is answered 202 at once however many runs wait for the workers, and all of them
run; a queued run survives a server stop and start and runs once; two ``infra server``
processes on one PostgreSQL database never run a queued run twice; beyond the queue's limit
the answer is 429 with ``Retry-After``; with a broker the run goes to the workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from infra_automation.cli import app
from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.exceptions import InfraError
from infra_automation.identity import IdentityStore, Role, create_identity_tables
from infra_automation.record import events, runs
from infra_automation.server.runner import INTAKE_QUIET, RunQueue
from tests.server.conftest import LiveServer, live_server, make_root
from tests.unit.db_backends import BACKENDS, database

API = "/api/v1"
SLOW = {"service": "slow", "params": {"pause": 0.2}}  # five steps: about a second a run
LONG = {"service": "slow", "params": {"pause": 0.4}}  # about two seconds a run


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


def post(live: LiveServer, body: dict[str, Any]) -> tuple[httpx.Response, float]:
    with live.client(Role.ENGINEER) as http:
        t0 = time.perf_counter()
        response = http.post(f"{API}/requests/submit", json=body)
        return response, time.perf_counter() - t0


def statuses(live: LiveServer, run_ids: list[str]) -> list[str]:
    with live.client(Role.VIEWER) as http:
        return [http.get(f"{API}/runs/{r}").json()["status"] for r in run_ids]


def started_events(url: str, run_ids: list[str]) -> dict[str, int]:
    """How many ``run.started`` events each run has in the record."""
    db = sa.create_engine(url)
    query = (
        sa.select(events.c.run_id, sa.func.count())
        .where(events.c.kind == "run.started", events.c.run_id.in_(run_ids))
        .group_by(events.c.run_id)
    )
    try:
        with db.connect() as conn:
            found = {str(r): int(n) for r, n in conn.execute(query)}
    finally:
        db.dispose()
    return {r: found.get(r, 0) for r in run_ids}


def test_runs_beyond_the_workers_are_accepted_at_once_and_all_run(
    tmp_path: Path, database_url: str
) -> None:
    root = make_root(tmp_path / "project")
    with live_server(root, env={"INFRA_DATABASE_URL": database_url}, workers=1) as live:
        answers = [post(live, {**LONG, "project": f"wide-{i}"}) for i in range(5)]
        run_ids = [r.json()["run_id"] for r, _ in answers]
        waiting = statuses(live, run_ids)
        assert [r.status_code for r, _ in answers] == [202] * 5, answers[0][0].text
        slowest = max(seconds for _, seconds in answers)
        assert slowest < 2.0, f"a submission waited {slowest:.2f} s (a run takes 2 s)"
        assert waiting.count("queued") >= 3, f"one worker: the later runs wait ({waiting})"
        ended = [live.wait_idle(r, timeout=60) for r in run_ids]
    assert [r["status"] for r in ended] == ["success"] * 5
    assert started_events(database_url, run_ids) == {r: 1 for r in run_ids}


def test_a_queued_run_survives_a_server_restart_and_runs_once(
    tmp_path: Path, database_url: str
) -> None:
    root = make_root(tmp_path / "project")
    env = {"INFRA_DATABASE_URL": database_url}
    with live_server(root, env=env, workers=1) as first:
        busy = post(first, {**SLOW, "project": "restart-busy"})[0].json()["run_id"]
        waiting = post(first, {"service": "quick", "project": "restart-waits"})[0]
        assert waiting.status_code == 202
        run_id = waiting.json()["run_id"]
    stopped = Engine(load_settings(root, env=env), load_observers=False)
    try:
        assert stopped.store.get_run(busy).status == "success"  # the run in progress ended
        assert stopped.store.get_run(run_id).status == "queued"  # the queued one waits
    finally:
        stopped.close()
    with live_server(root, env=env, workers=1) as second:
        run = second.wait_idle(run_id, timeout=60)
    assert run["status"] == "success" and [s["status"] for s in run["steps"]] == ["success"] * 2
    assert started_events(database_url, [run_id]) == {run_id: 1}


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    root = make_root(tmp_path / "project")
    with live_server(root, workers=1) as live:
        live.state.runs.limit = 1
        first = post(live, {**SLOW, "project": "full-a"})[0]  # taken by the worker
        deadline = time.monotonic() + 10
        while statuses(live, [first.json()["run_id"]]) == ["queued"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = post(live, {**SLOW, "project": "full-b"})[0]  # waits: the queue is full
        third = post(live, {**SLOW, "project": "full-c"})[0]
        assert [first.status_code, second.status_code, third.status_code] == [202, 202, 429]
        assert third.json()["error"] == "busy" and int(third.headers["retry-after"]) >= 1
        assert "wait for a worker" in third.json()["message"]
        live.wait_idle(second.json()["run_id"], timeout=60)
        with live.client(Role.ENGINEER) as http:
            listed = http.get(f"{API}/runs", params={"project": "full-c"}).json()["runs"]
    assert listed == []  # refused: nothing recorded


def test_while_runs_are_submitted_a_quarter_of_the_workers_start_runs(tmp_path: Path) -> None:
    engine = Engine(load_settings(make_root(tmp_path / "project"), env={}), load_observers=False)
    try:
        pool = RunQueue(engine, workers=8)
        pool._intake()  # a submission just now
        assert [pool._reserve() for _ in range(3)] == [True, True, False]
        pool._release(None)
        assert pool._reserve() and not pool._reserve()
        time.sleep(INTAKE_QUIET + 0.05)  # quiet: every worker takes runs
        assert all(pool._reserve() for _ in range(6))
    finally:
        engine.close()


def test_a_submission_reads_the_inventory_again_once_it_changed(tmp_path: Path) -> None:
    root = make_root(tmp_path / "project")
    engine = Engine(load_settings(root, env={}), load_observers=False)
    try:
        data = {"service": "quick", "project": "inv-cache", "requester": "tests"}
        plan = engine.plan(engine.validate(data))
        first = engine._checked_inventory(plan.request)
        assert engine._checked_inventory(plan.request) is first  # parsed once
        inventory = root / "inventories" / "lab" / "inventory.yml"
        inventory.write_text(inventory.read_text() + "bogus: [\n")
        with pytest.raises(InfraError, match=r"inventory\.yml"):
            engine.submit(plan)  # a broken inventory is refused at once
    finally:
        engine.close()


def test_with_a_broker_the_run_goes_to_the_workers(tmp_path: Path) -> None:
    url = os.environ.get("INFRA_TEST_REDIS_URL")
    if not url:
        pytest.fail('INFRA_TEST_REDIS_URL is not set: eval "$(scripts/services.sh)"')
    root = make_root(tmp_path / "project")
    queue = f"srv-{uuid.uuid4().hex[:8]}-runs"
    (root / "infra.toml").write_text(f'scheduler_queue = "{queue}"\n')
    broker = redis.Redis.from_url(url)
    try:
        with live_server(root, env={"INFRA_BROKER_URL": url}, workers=2) as live:
            answer = post(live, {"service": "quick", "project": "brokered"})[0]
            assert answer.status_code == 202, answer.text
            run_id = answer.json()["run_id"]
            assert answer.json()["status"] == "queued"  # what the record says, not "running"
            time.sleep(1.5)  # longer than a sweep: the server's own threads never take it
            assert statuses(live, [run_id]) == ["queued"]
            assert not live.state.runs._threads
        messages = [m.decode() for m in broker.lrange(queue, 0, -1)]  # type: ignore[union-attr]
    finally:
        broker.delete(queue)
        broker.close()
    assert len(messages) == 1 and run_id in messages[0] and "infra.schedule_run" in messages[0]


def test_with_a_broker_a_department_without_a_queue_is_refused(tmp_path: Path) -> None:
    """``[queues]`` maps core only: a service with a ``net`` step is refused (422, and exit
    2 for ``infra --server URL apply``; its dry run too) naming the department and the key;
    nothing is queued. A service of mapped departments still goes to the workers."""
    url = os.environ.get("INFRA_TEST_REDIS_URL")
    if not url:
        pytest.fail('INFRA_TEST_REDIS_URL is not set: eval "$(scripts/services.sh)"')
    root = make_root(tmp_path / "project")
    tag = uuid.uuid4().hex[:8]
    (root / "infra.toml").write_text(
        f'scheduler_queue = "srv-{tag}-runs"\n[queues]\ncore = "srv-{tag}-core"\n'
    )
    steps = [{"id": "a", "executor": "core.noop"}, {"id": "b", "department": "net",
              "executor": "core.noop", "needs": ["a"]}]  # fmt: skip
    service = {"name": "netted", "description": "a step of net", "owner": "t", "steps": steps}
    (root / "catalog" / "netted.yml").write_text(yaml.safe_dump(service))
    (root / "requests" / "netted.yml").write_text(
        yaml.safe_dump({"service": "netted", "project": "netted", "requester": "t"})
    )
    broker = redis.Redis.from_url(url)
    try:
        with live_server(root, env={"INFRA_BROKER_URL": url}, workers=2) as live:
            refused = post(live, {"service": "netted", "project": "netted"})[0]
            env = {"INFRA_SERVER": live.url, "INFRA_TOKEN": live.tokens[Role.ENGINEER]}
            cli = CliRunner().invoke(app, ["apply", str(root / "requests" / "netted.yml")], env=env)
            mapped = post(live, {"service": "quick", "project": "mapped"})[0]
            with live.client(Role.ENGINEER) as http:
                netted = {"service": "netted", "project": "netted"}
                checked = http.post(f"{API}/requests/check", json=netted)
                listed = http.get(f"{API}/runs", params={"project": "netted"}).json()["runs"]
    finally:
        broker.delete(f"srv-{tag}-runs")
        broker.close()
    assert refused.status_code == checked.status_code == 422, refused.text
    assert "department 'net'" in checked.json()["message"]  # a dry run waits on queues too
    message = refused.json()["message"]
    assert "department 'net' (steps of netted)" in message and "[queues] of infra.toml" in message
    said = " ".join(cli.stderr.split())
    assert cli.exit_code == 2 and "department 'net'" in said, said
    assert listed == []  # nothing recorded
    assert mapped.status_code == 202 and mapped.json()["status"] == "queued", mapped.text


# --- two server processes on one PostgreSQL database --------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_process(root: Path, url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INFRA_DATABASE_URL": url}
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(root), "server"]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*argv, "--port", str(port), "--workers", "4"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}{API}/openapi.json", timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def _queue_runs(root: Path, url: str, projects: int, each: int) -> list[str]:
    """Runs queued in the record before any server is up (``each`` per project)."""
    engine = Engine(load_settings(root, env={"INFRA_DATABASE_URL": url}), load_observers=False)
    try:
        ids = []
        for _ in range(each):
            for p in range(projects):
                data = {"service": "quick", "project": f"both-{p}", "requester": "tests"}
                ids.append(engine.submit(engine.plan(engine.validate(data)), docs=False))
        return ids
    finally:
        engine.close()


def _wait_all_ended(url: str, run_ids: list[str], timeout: float) -> dict[str, tuple[str, int]]:
    db = sa.create_engine(url)
    query = sa.select(runs.c.id, runs.c.status, runs.c.pid).where(runs.c.id.in_(run_ids))
    deadline = time.monotonic() + timeout
    try:
        while True:
            with db.connect() as conn:
                found = {str(r): (str(s), int(p or 0)) for r, s, p in conn.execute(query)}
            if all(s not in ("queued", "running") for s, _ in found.values()):
                return found
            assert time.monotonic() < deadline, f"runs still waiting: {found}"
            time.sleep(0.2)
    finally:
        db.dispose()


def test_two_server_processes_on_one_postgresql_never_run_a_queued_run_twice(
    tmp_path: Path,
) -> None:
    root = make_root(tmp_path / "project")
    with database("postgresql", tmp_path) as url:
        db = sa.create_engine(url)
        create_identity_tables(db)
        IdentityStore(db).add_user("ops", Role.ENGINEER, "correct horse battery")
        token = IdentityStore(db).create_token("ops", "tests").value
        db.dispose()
        run_ids = _queue_runs(root, url, projects=4, each=6)  # both servers race for all
        ports = [_free_port(), _free_port()]
        logs = [tmp_path / f"server-{i}.log" for i in range(2)]
        procs = [_server_process(root, url, p, log) for p, log in zip(ports, logs, strict=True)]
        try:
            for port, proc, log in zip(ports, procs, logs, strict=True):
                _wait_listening(port, proc, log)
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=f"http://127.0.0.1:{ports[1]}", headers=headers) as http:
                more = [
                    http.post(f"{API}/requests/submit", json={"service": "slow", "project": p})
                    for p in ("both-api-0", "both-api-1")
                ]
            assert [m.status_code for m in more] == [202, 202], more[0].text
            run_ids += [m.json()["run_id"] for m in more]
            ended = _wait_all_ended(url, run_ids, timeout=120)
            counts = started_events(url, run_ids)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGINT)
            for proc in procs:
                proc.wait(timeout=60)
    assert {s for s, _ in ended.values()} == {"success"}
    assert counts == {r: 1 for r in run_ids}, "a queued run was started twice"
    assert {p for _, p in ended.values()} <= {proc.pid for proc in procs}
