"""Real Redis, real ``infra worker`` processes: steps go to their department's queue, a
SIGKILLed worker costs no run, a step recorded success never runs twice."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from engine_helpers import step, write_request, write_service

from infra_automation.engine import Engine
from infra_automation.record import RunRecord
from infra_automation.workers import client
from tests.workers.conftest import Workers


def _plan(engine: Engine, root: Path, steps: list[dict[str, object]], project: str = "shop"):  # type: ignore[no-untyped-def]
    write_service(root, "mixed", steps)
    return engine.plan(engine.load_request(write_request(root, "mixed", project=project)))


def _append(sid: str, log: Path, needs: list[str], seconds: float = 0.0) -> dict[str, object]:
    return step(
        sid, "test.append", needs=needs, params={"log": str(log), "value": sid, "seconds": seconds}
    )


def _sleep(sid: str, seconds: float, needs: list[str]) -> dict[str, object]:
    return step(sid, "core.sleep", needs=needs, params={"seconds": seconds})


def _wait_running(
    engine: Engine, run_id: str, sid: str, workers: Workers, timeout: float = 30
) -> str:
    """The worker (host:pid) running step ``sid`` once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = engine.store.get_run(run_id).step(sid)
        if record.status == "running" and record.worker:
            return record.worker
        time.sleep(0.05)
    steps = {s.step_id: s.status for s in engine.store.get_run(run_id).steps}
    raise AssertionError(f"step {sid} did not start in {timeout}s: {steps}\n{workers.dump()}")


def _started(engine: Engine, run_id: str) -> Counter[str]:
    return Counter(e.step_id or "" for e in engine.store.events(run_id, kind="step.started"))


def _pid_of(worker: str) -> int:
    return int(worker.rsplit(":", 1)[1])


def test_each_step_runs_on_a_worker_of_its_queue(
    engine: Engine, workers: Workers, root: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    core = workers.start("runs", "core", concurrency=2)
    test = workers.start("test", concurrency=2)
    workers.wait_ready()
    plan = _plan(
        engine,
        root,
        [
            _sleep("a", 0.2, []),
            _append("b", log, ["a"]),
            _sleep("c", 0.2, ["a"]),
            _append("d", log, ["b", "c"]),
        ],
    )
    run_id = client.submit(engine, plan, docs=False)
    result = client.follow(engine, run_id)

    assert not result.failed and set(result.steps) == {"a", "b", "c", "d"}
    run = engine.store.get_run(run_id)
    assert run.status == "success"
    where = {s.step_id: (s.queue, _pid_of(s.worker or ":0")) for s in run.steps}
    assert where == {
        "a": (workers.queue("core"), core.pid),
        "b": (workers.queue("test"), test.pid),
        "c": (workers.queue("core"), core.pid),
        "d": (workers.queue("test"), test.pid),
    }
    assert log.read_text().split() == ["b", "b", "d", "d"]  # "<step> <value>" once each
    seen = engine.observers[0]
    kinds = [(e.kind, e.step_id) for e in seen.events]  # the same progress events as here
    assert kinds[0] == ("run.queued", None) and kinds[-1] == ("run.finished", None)
    assert kinds.count(("step.finished", "d")) == 1


def test_sigkilled_worker_mid_step_the_run_completes(
    engine: Engine, workers: Workers, root: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    workers.start("runs")
    first = workers.start("core")
    second = workers.start("core")
    workers.start("test")
    workers.wait_ready()
    plan = _plan(
        engine,
        root,
        [_append("a", log, []), _sleep("long", 5, ["a"]), _append("b", log, ["long"])],
    )
    run_id = client.submit(engine, plan, docs=False)
    killed = _pid_of(_wait_running(engine, run_id, "long", workers))
    assert killed in (first.pid, second.pid)
    next(w for w in workers.started if w.pid == killed).kill()

    result = client.follow(engine, run_id)

    assert not result.failed, result
    run = engine.store.get_run(run_id)
    assert run.status == "success"
    assert _pid_of(run.step("long").worker or ":0") not in (killed, 0)
    interrupted = [
        e for e in engine.store.events(run_id, kind="step.finished") if e.step_id == "long"
    ]
    assert [e.data["status"] for e in interrupted] == ["interrupted", "success"]
    assert _started(engine, run_id) == Counter({"a": 1, "long": 2, "b": 1})
    assert Counter(log.read_text().split()[::2]) == Counter({"a": 1, "b": 1})


def test_unsafe_step_interrupted_waits_for_resume(
    engine: Engine, workers: Workers, root: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    workers.start("runs", "core")
    test = workers.start("test")
    workers.wait_ready()
    plan = _plan(
        engine,
        root,
        [_sleep("a", 0.1, []), _append("slow", log, ["a"], 5), _sleep("z", 0, ["slow"])],
    )
    run_id = client.submit(engine, plan, docs=False)
    _wait_running(engine, run_id, "slow", workers)
    test.kill()

    result = client.follow(engine, run_id)

    assert result.failed
    run = engine.store.get_run(run_id)
    assert run.status == "failed" and run.step("slow").status == "interrupted"
    assert run.step("z").status == "skipped" and _started(engine, run_id)["slow"] == 1

    workers.start("test")
    workers.wait_ready()
    resumed = client.follow(engine, client.submit_resume(engine, run_id, docs=False))
    assert not resumed.failed
    again: RunRecord = engine.store.get_run(resumed.run_id)
    assert again.step("a").reused and not again.step("slow").reused
    assert Counter(log.read_text().split()[::2]) == Counter({"slow": 2})  # killed, then again


def test_a_run_whose_message_was_lost_is_scheduled_from_the_record(
    engine: Engine, workers: Workers, root: Path
) -> None:
    workers.start("runs", "core")
    workers.wait_ready()
    plan = _plan(engine, root, [_sleep("a", 0, [])])
    run_id = engine.submit(plan, docs=False)  # recorded queued; no message sent (lost)
    assert engine.store.get_run(run_id).status == "queued"
    result = client.follow(engine, run_id)
    assert not result.failed and engine.store.get_run(run_id).status == "success"


def test_killed_scheduler_run_is_resumed_by_another(
    engine: Engine, workers: Workers, root: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    scheduler = workers.start("runs")
    workers.start("core", concurrency=2)
    workers.start("test")
    workers.wait_ready()
    plan = _plan(
        engine, root, [_append("a", log, []), _sleep("b", 1.5, ["a"]), _sleep("c", 0.5, ["b"])]
    )
    run_id = client.submit(engine, plan, docs=False)
    _wait_running(engine, run_id, "b", workers)
    scheduler.kill()
    workers.start("runs")  # another scheduler

    result = client.follow(engine, run_id)  # followed into the resume

    assert not result.failed and result.run_id != run_id
    resumed = engine.store.get_run(result.run_id)
    assert resumed.resumed_from == run_id and resumed.status == "success"
    assert resumed.step("a").reused
    assert log.read_text().split()[::2] == ["a"]  # the succeeded step ran once
