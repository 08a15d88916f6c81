"""Engine, on SQLite and PostgreSQL: nothing recorded for invalid input, resume, the run lock
(a database lease), observers (detached when they raise) and events, a failed record write."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from db_backends import database_url  # noqa: F401 - the fixture, over both backends
from engine_helpers import Calls, Collector, step, write_request

from infra_automation import engine as engine_module
from infra_automation.config import Settings, load_settings
from infra_automation.engine import Engine
from infra_automation.events import Event
from infra_automation.exceptions import (
    CycleError,
    RequestValidationError,
    RunLocked,
    RunNotFound,
)
from infra_automation.executors import ExecutorInfo, ExecutorRegistry, StepContext
from infra_automation.record import runs
from infra_automation.results import StepResult
from infra_automation.scheduler import ProjectLock
from infra_automation.secrets import REDACTOR

Make = Callable[..., Any]


@pytest.fixture
def settings(root: Path, database_url: str) -> Settings:  # noqa: F811 - over both backends
    return load_settings(root, env={"INFRA_DATABASE_URL": database_url})


def test_invalid_request_leaves_no_run(engine: Engine, request_for: Make, root: Path) -> None:
    request_for(
        "svc", [step("a")], params={"size": {"type": "integer", "maximum": 3}}, values={"size": 1}
    )
    bad = write_request(root, "svc", project="Bad Project", params={"size": 7}, name="bad")
    with pytest.raises(RequestValidationError) as info:
        engine.apply(engine.load_request(bad))
    assert {e.field for e in info.value.errors} == {"project", "params.size"}
    assert engine.store.list_runs() == []


def test_unplannable_request_leaves_no_run(engine: Engine, request_for: Make) -> None:
    req = request_for("loop", [step("a", needs=["b"]), step("b", needs=["a"])])
    with pytest.raises(CycleError):
        engine.apply(req)
    assert engine.store.list_runs() == []


RESUMABLE = [
    step("a", "test.record", params={"value": "from-a", "count": 1}),
    step(
        "b",
        "test.record",
        needs=["a"],
        params={"value": "{{ steps.a.outputs.value }}+b", "fail_if_exists": "{{ params.flag }}"},
    ),
    step("c", "test.record", needs=["b"], params={"value": "{{ steps.b.outputs.value }}+c"}),
    step("d", "test.record", params={"value": "independent"}),
]


def test_resume_reruns_only_failed_and_skipped_steps(
    engine: Engine, request_for: Make, calls: Calls, tmp_path: Path
) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    req = request_for(
        "resumable",
        RESUMABLE,
        params={"flag": {"pattern": "[a-z/_0-9.-]+"}},
        values={"flag": str(flag)},
    )
    first = engine.apply(req)
    assert first.failed_steps == ("b",) and first.skipped_steps == ("c",)
    assert sorted(calls.steps()) == ["a", "b", "d"]

    flag.unlink()  # "fix" the cause
    calls.items.clear()
    second = engine.resume(first.run_id)
    assert not second.failed
    assert sorted(calls.steps()) == ["b", "c"]  # a and d were not called again
    by_step = {c["step"]: c for c in calls.items}
    assert by_step["b"]["upstream"] == {"a": {"value": "from-a", "count": 1}}  # reused outputs
    assert second.steps["c"].outputs["value"] == "from-a+b+c"

    run = engine.store.get_run(second.run_id)
    assert run.resumed_from == first.run_id and run.status == "success"
    assert {s.step_id: (s.status, s.reused) for s in run.steps} == {
        "a": ("success", True),
        "b": ("success", False),
        "c": ("success", False),
        "d": ("success", True),
    }
    assert run.step("a").outputs == {"value": "from-a", "count": 1}
    old = engine.store.get_run(first.run_id)
    assert old.status == "failed" and old.step("c").status == "skipped"


def test_resume_of_unknown_run(engine: Engine) -> None:
    with pytest.raises(RunNotFound):
        engine.resume("nope")


def test_second_run_of_a_project_is_refused(engine: Engine, request_for: Make) -> None:
    req = request_for("locked", [step("a")])
    with (
        ProjectLock(engine.db, "shop", "other-run"),
        pytest.raises(
            RunLocked, match=r"project 'shop' has an active run \(run other-run, pid \d+ on "
        ),
    ):
        engine.apply(req)
    assert engine.store.list_runs() == []
    assert not engine.apply(req).failed  # the lock is free again
    other = request_for("locked", [step("a")], project="other")
    with ProjectLock(engine.db, "shop", "x"):
        assert not engine.apply(other).failed  # other projects are not blocked


def test_a_run_waits_for_the_lease_of_a_run_that_has_ended(
    engine: Engine, request_for: Make
) -> None:
    req = request_for("after", [step("a")])
    first = engine.apply(req)
    assert engine.store.get_run(first.run_id).status == "success"
    # the ended run's process still holds the lease (its observers at work): the next run
    # waits for it instead of being refused
    finishing = ProjectLock(engine.db, "shop", first.run_id)
    finishing.acquire()
    threading.Timer(0.5, finishing.release).start()
    started = time.monotonic()
    assert not engine.apply(req).failed
    assert time.monotonic() - started >= 0.4
    # a holder the record knows as running is refused at once, as is one it does not know
    running = engine.apply(request_for("busy", [step("a")]))
    with engine.db.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == running.run_id).values(status="running"))
    with ProjectLock(engine.db, "shop", running.run_id), pytest.raises(RunLocked):
        engine.apply(req)


def test_an_expired_project_lease_is_taken_over(engine: Engine, request_for: Make) -> None:
    req = request_for("expired", [step("a")])
    dead = ProjectLock(engine.db, "shop", "dead-run", ttl=0.2)
    dead.acquire()
    dead.leases._stop.set()  # its process died: no more heartbeats
    with pytest.raises(RunLocked):
        engine.apply(req)
    time.sleep(0.3)
    assert not engine.apply(req).failed


def test_events_and_their_payloads(engine: Engine, request_for: Make, collector: Collector) -> None:
    req = request_for(
        "events",
        [
            step("a", "test.record", params={"value": "v"}),
            step("b", "core.fail", needs=["a"]),
            step("c", needs=["b"]),
        ],
    )
    result = engine.apply(req, parallel=3)
    assert collector.kinds() == [
        "run.started",
        "step.started",
        "step.log",
        "step.finished",
        "step.started",
        "step.finished",
        "step.finished",
        "run.finished",
    ]
    started, finished = collector.events[0], collector.events[-1]
    assert set(started.data) == {
        "service",
        "project",
        "requester",
        "check",
        "parallel",
        "resumed_from",
        "request",
        "plan",
        "revision",
        "rerun",
        "modifies",
    }
    assert started.data["parallel"] == 3 and started.data["resumed_from"] is None
    assert started.data["modifies"] is None  # a build, not an operational change
    assert started.data["rerun"] == []
    assert set(started.data["revision"]) == {"catalog", "files", "git"}
    assert started.data["request"]["params"] == {}
    assert (
        started.data["plan"][1].items()
        >= {
            "id": "b",
            "department": "core",
            "executor": "core.fail",
            "needs": ["a"],
            "description": "",
        }.items()
    )
    step_finished = collector.events[3]
    assert step_finished.step_id == "a"
    assert set(step_finished.data) == {
        "department",
        "executor",
        "status",
        "changed",
        "error",
        "error_kind",
        "diff",
        "outputs",
        "targets",
        "artifacts",
        "started_at",
        "finished_at",
        "duration",
        "reused",
    }
    assert step_finished.data["outputs"] == {"value": "v", "count": 0}
    assert finished.data["status"] == "failed"
    assert finished.data["failed_steps"] == ["b"] and finished.data["skipped_steps"] == ["c"]
    assert set(finished.data) == {
        "status",
        "failed_steps",
        "skipped_steps",
        "changed",
        "started_at",
        "finished_at",
    }
    assert all(e.run_id == result.run_id for e in collector.events)
    recorded = [e.kind for e in engine.store.events(result.run_id)]
    assert recorded == collector.kinds()


def test_secrets_are_redacted_before_record_and_observers(
    engine: Engine, request_for: Make, collector: Collector
) -> None:
    REDACTOR.add("hunter2-very-secret")
    req = request_for(
        "secret", [step("a", "core.fail", params={"message": "login hunter2-very-secret refused"})]
    )
    result = engine.apply(req)
    run = engine.store.get_run(result.run_id)
    assert run.step("a").error == "login ******** refused"
    dumped = repr([e.data for e in collector.events])
    assert "hunter2" not in dumped
    assert "hunter2" not in repr([e.data for e in engine.store.events(result.run_id)])


class Broken:
    def __init__(self) -> None:
        self.seen = 0

    def on_event(self, event: Event) -> None:
        self.seen += 1
        raise ValueError(f"cannot handle {event.kind}")


def test_an_observer_that_raises_is_logged_and_detached(
    settings: Settings,
    registry: ExecutorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    request_for: Make,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    req = request_for("obs", [step("a"), step("b", needs=["a"])])
    seen = Collector()

    def fake_load(root: Path, db: Any) -> list[tuple[str, Any, str]]:
        assert root == settings.root
        return [("broken", Broken(), ""), ("good", seen, ""), ("missing", None, "ImportError: x")]

    monkeypatch.setattr(engine_module, "load_entry_point_observers", fake_load)
    local = Broken()
    with_observers = Engine(settings, registry=registry, observers=[local], load_observers=True)
    with caplog.at_level(logging.ERROR, logger="infra_automation.engine"):
        result = with_observers.apply(req)
    assert not result.failed
    assert engine.store.get_run(result.run_id).status == "success"
    assert seen.kinds()[0] == "run.started" and seen.kinds()[-1] == "run.finished"
    errors = engine.store.events(result.run_id, kind="observer.error")
    load = [e.data for e in errors if e.data["event"] == "load"]
    assert load == [{"observer": "missing", "event": "load", "error": "ImportError: x"}]
    raised = [(e.data["observer"], e.data["event"]) for e in errors if e.data["event"] != "load"]
    assert raised == [("Broken", "run.started"), ("broken", "run.started")]  # then detached
    assert local.seen == 1 and with_observers.observers == [local]
    logged = [r.getMessage() for r in caplog.records]
    assert any("observer broken raised on run.started" in m for m in logged), logged
    assert "observer.error" not in seen.kinds()  # diagnostics go to the record only
    with_observers.close()


def test_entry_point_observers_are_skipped_when_disabled(
    settings: Settings,
    registry: ExecutorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    request_for: Make,
) -> None:
    req = request_for("noobs", [step("a")])

    def fail(root: Path, db: Any) -> list[tuple[str, Any, str]]:
        raise AssertionError("observers must not be loaded")

    monkeypatch.setattr(engine_module, "load_entry_point_observers", fail)
    quiet = Engine(settings, registry=registry, load_observers=False)
    assert not quiet.apply(req).failed
    quiet.close()


def test_interrupted_run_is_shown_as_such(engine: Engine, request_for: Make) -> None:
    from infra_automation.record import runs

    result = engine.apply(request_for("intr", [step("a")]))
    with engine.db.begin() as conn:  # recorded as running, and no lease: its process died
        conn.execute(runs.update().where(runs.c.id == result.run_id).values(status="running"))
    assert engine.store.get_run(result.run_id).status == "interrupted"
    assert engine.store.list_runs()[0].status == "interrupted"
    with ProjectLock(engine.db, "shop", result.run_id):  # a live lease: it is running
        assert engine.store.get_run(result.run_id).status == "running"


def test_resume_keeps_request_values_whose_names_look_secret(
    engine: Engine, request_for: Make, calls: Calls, tmp_path: Path
) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    req = request_for(
        "resumable",
        RESUMABLE,
        params={
            "flag": {"pattern": "[a-z/_0-9.-]+"},
            "token_ttl": {"type": "integer", "default": 300},
        },
        values={"flag": str(flag), "token_ttl": 600},
    )
    first = engine.apply(req)
    assert first.failed_steps == ("b",)
    assert engine.store.get_run(first.run_id).request["params"]["token_ttl"] == 600
    flag.unlink()
    second = engine.resume(first.run_id)  # re-validates the recorded request
    assert not second.failed


class RecordLocker:
    """A step that locks the run record from another connection for ``hold`` seconds (SQLite:
    an exclusive transaction; PostgreSQL: an exclusive lock on the steps table), then
    succeeds: the record cannot be written until the lock goes."""

    info = ExecutorInfo(key="test.locker", department="test", description="locks the record")

    def __init__(self, url: str, hold: float) -> None:
        self.url, self.hold = url, hold
        self.thread: threading.Thread | None = None

    def preview(self, ctx: StepContext) -> StepResult:
        return self.apply(ctx)

    def apply(self, ctx: StepContext) -> StepResult:
        ready = threading.Event()
        self.thread = threading.Thread(target=self._lock, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)
        return StepResult.success(changed=True)

    def _lock(self, ready: threading.Event) -> None:
        import sqlalchemy as sa

        parsed = sa.engine.make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            conn = sqlite3.connect(str(parsed.database), timeout=5)
            conn.execute("BEGIN EXCLUSIVE")
            ready.set()
            time.sleep(self.hold)
            conn.rollback()
            conn.close()
            return
        engine = sa.create_engine(parsed)
        with engine.connect() as pg:
            pg.execute(sa.text("LOCK TABLE infra_steps IN ACCESS EXCLUSIVE MODE"))
            ready.set()
            time.sleep(self.hold)
            pg.rollback()
        engine.dispose()


def test_a_locked_record_fails_the_run_cleanly(
    root: Path,
    registry: ExecutorRegistry,
    database_url: str,  # noqa: F811 - the fixture
) -> None:
    env = {"INFRA_DATABASE_URL": database_url, "INFRA_DATABASE_TIMEOUT": "0.2"}
    settings = load_settings(root, env=env)
    locker = RecordLocker(database_url, hold=1.0)
    registry.register("test.locker", lambda: locker)
    eng = Engine(settings, registry=registry, load_observers=False)
    from engine_helpers import write_service

    plan = [step("a", "test.locker"), step("b", needs=["a"]), step("c")]
    write_service(root, "locked", plan)
    result = eng.apply(eng.load_request(write_request(root, "locked")), parallel=1)
    assert locker.thread is not None
    locker.thread.join(10)
    assert result.failed and result.steps["a"].status.value == "failed"
    error = result.steps["a"].error or ""
    assert "cannot write to the run record" in error and "finished success" in error
    assert "infra-test-pw" not in error
    assert result.steps["b"].status.value == "skipped"  # a dependent of the failed step
    assert result.steps["c"].status.value == "skipped"  # waiting: no step starts any more
    assert (result.steps["c"].error or "").startswith("not run: cannot write to the run record")
    run = eng.store.get_run(result.run_id)  # salvaged once the lock went
    assert run.status == "failed" and run.error and "cannot write to the run record" in run.error
    assert run.steps_with("running", "pending") == ()
    assert run.step("a").status == "failed" and "run record" in (run.step("a").error or "")
    assert run.step("b").status == "skipped" and run.step("c").status == "skipped"
    eng.close()
