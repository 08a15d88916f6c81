"""Structured logs: the JSON line of a record with the bound ids, the engine observer that
binds a step's ids to the thread running it, ``infra --log-format json`` end to end, the
Celery task hooks and uvicorn's loggers."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra_automation import logs
from infra_automation.events import Event
from infra_automation.record import RunRecorder, open_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, state = list(root.handlers), root.level, dict(logs._state)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logs._state.update(state)
    logs.unbind_thread()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_carries_the_bound_ids_extra_fields_and_the_exception(
    restore_logging: None,
) -> None:
    stream = io.StringIO()
    assert logs.configure("json", stream=stream) == "json"
    log = logging.getLogger("infra_automation.test")
    with logs.bind(run_id="r1", project="shop"):
        log.info("hello %s", "world", extra={"step_id": "vms", "attempt": 2})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    log.warning("outside")
    first, second, third = lines(stream)
    assert first["message"] == "hello world" and first["level"] == "INFO"
    assert (first["run_id"], first["project"], first["step_id"]) == ("r1", "shop", "vms")
    assert first["attempt"] == 2 and first["logger"] == "infra_automation.test"
    assert "ValueError: boom" in second["exc"] and second["run_id"] == "r1"
    assert "run_id" not in third


def test_an_unknown_format_is_refused(restore_logging: None) -> None:
    with pytest.raises(Exception, match="not one of text, json"):
        logs.configure("xml")


def test_the_observer_binds_a_step_to_its_thread(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    observer = logs.RunLogObserver()
    observer.on_event(Event("r2", "run.started", data={"project": "shop", "check": False}))

    def step() -> None:
        observer.on_event(Event("r2", "step.started", "vms", {"department": "vmware"}))
        logging.getLogger("infra_automation.departments").warning("slow clone")
        observer.on_event(Event("r2", "step.finished", "vms", {"status": "failed", "error": "x"}))
        logging.getLogger("infra_automation.departments").warning("after")

    worker = threading.Thread(target=step)
    worker.start()
    worker.join()
    found = lines(stream)
    _, inside, finished, after = found[1:]
    assert inside["message"] == "slow clone"
    assert {k: inside[k] for k in logs.IDS} == {
        "run_id": "r2", "step_id": "vms", "project": "shop", "department": "vmware",
    }  # fmt: skip
    assert finished["level"] == "WARNING" and finished["status"] == "failed"
    assert finished["department"] == "vmware" and finished["event"] == "step.finished"
    assert "step_id" not in after and after["run_id"] == "r2"


def test_the_cli_logs_every_step_of_a_run_as_json(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for name in ("catalog", "requests"):
        (root / name).mkdir(parents=True)
        for item in (ROOT / name).glob("demo-chain.yml"):
            (root / name / item.name).write_text(item.read_text())
    (root / "inventories" / "lab").mkdir(parents=True)
    (root / "inventories" / "lab" / "inventory.yml").write_text(yaml.safe_dump({"name": "t"}))
    env = {**os.environ, "INFRA_LOG_FORMAT": "json"}
    env.pop("INFRA_DATABASE_URL", None)
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(root), "apply",
            str(root / "requests" / "demo-chain.yml"), "--no-docs", "--output", "json"]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    found = [json.loads(x) for x in run.stderr.splitlines() if x.startswith("{")]
    finished = [x for x in found if x.get("event") == "step.finished"]
    assert sorted(x["step_id"] for x in finished) == sorted(result["steps"])
    for line in finished:
        assert line["run_id"] == result["run_id"] and line["project"] == "demo"
        assert line["department"] and line["status"] == "success"
    wrong = [*argv[:3], "--log-format", "xml", "catalog", "list"]
    bad = subprocess.run(wrong, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert bad.returncode == 2 and "not one of text, json" in " ".join(bad.stderr.split())


def test_celery_tasks_bind_their_step_read_from_the_record(
    restore_logging: None, tmp_path: Path
) -> None:
    from celery import signals

    url = f"sqlite:///{tmp_path / 'record.db'}"
    engine = open_database(url)
    recorder = RunRecorder(engine)
    plan = [{"id": "vms", "department": "vmware", "needs": []}]
    recorder.on_event(Event("r3", "run.started", data={"service": "s", "project": "shop",
                                                       "check": False, "plan": plan}))  # fmt: skip
    recorder.close()
    engine.dispose()
    logs.configure("json", stream=io.StringIO())
    logs.for_celery(url)
    task = type("Task", (), {"name": "infra.run_step"})()
    signals.task_prerun.send(sender=task, task_id="t1", task=task, args=("r3", "vms", "vmware"))
    try:
        assert logs.current_ids() == {
            "run_id": "r3", "step_id": "vms", "project": "shop", "department": "vmware",
        }  # fmt: skip
    finally:
        signals.task_postrun.send(sender=task, task_id="t1", task=task)
    assert logs.current_ids() == {}
    assert signals.setup_logging.receivers  # Celery leaves logging to us


def test_uvicorn_logs_through_the_json_handler(restore_logging: None) -> None:
    from uvicorn import config

    saved = dict(config.LOGGING_CONFIG)
    try:
        logs.configure("json", stream=io.StringIO())
        logs.route_uvicorn()
        assert config.LOGGING_CONFIG["loggers"]["uvicorn.access"]["handlers"] == ["json"]
        logging.config.dictConfig(config.LOGGING_CONFIG)
        handler = logging.getLogger("uvicorn.access").handlers[0]
        assert isinstance(handler.formatter, logs.JsonFormatter)
    finally:
        config.LOGGING_CONFIG.clear()
        config.LOGGING_CONFIG.update(saved)
        logging.config.dictConfig(saved)
