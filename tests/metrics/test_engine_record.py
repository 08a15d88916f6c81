"""The metrics of a record the real engine wrote (core.* and a test executor): a run whose
second step fails, its resume reusing the first step; read back on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from db_backends import BACKENDS, database
from engine_helpers import INVENTORY, Calls, RecordExecutor, step, write_request, write_service

from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.events import utcnow
from infra_automation.executors import ExecutorRegistry
from infra_automation.executors.builtin import NoopExecutor, SleepExecutor
from infra_automation.metrics import compute_stats, load_history


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    root = tmp_path / "project"
    for folder in ("catalog", "requests", "inventories/lab"):
        (root / folder).mkdir(parents=True)
    (root / "inventories/lab/inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    registry = ExecutorRegistry(use_entry_points=False)
    registry.register("core.noop", NoopExecutor)
    registry.register("core.sleep", SleepExecutor)
    registry.register("test.record", lambda: RecordExecutor(Calls()))
    with database(request.param, tmp_path) as url:
        settings = load_settings(root, env={"INFRA_DATABASE_URL": url})
        eng = Engine(settings, registry=registry, load_observers=False)
        yield eng
        eng.close()


def test_failed_run_resumed(engine: Engine, tmp_path: Path) -> None:
    flag = tmp_path / "broken"
    flag.touch()
    root = engine.settings.root
    write_service(root, "svc", [
        step("net", "core.sleep", department="network", params={"seconds": 0.2}),
        step("os", "test.record", ["net"], department="os",
             params={"value": "x", "fail_if_exists": str(flag)}),
    ])  # fmt: skip
    engine.reload()
    began = utcnow()
    first = engine.apply(engine.load_request(write_request(root, "svc", "shop")))
    assert first.failed
    flag.unlink()
    second = engine.resume(first.run_id)
    assert not second.failed

    history = load_history(engine.db, began - timedelta(minutes=1))
    report = compute_stats(history)
    [incident] = report.incidents
    one, two = engine.store.get_run(first.run_id), engine.store.get_run(second.run_id)
    assert (incident.id, incident.department, incident.step_id) == (f"run:{one.id}", "os", "os")
    assert (incident.opened_at, incident.resolved_at) == (one.finished_at, two.finished_at)
    assert incident.responded_by == f"run {two.id}"
    [delivery] = history.deliveries
    assert [r.id for r in delivery.runs] == [one.id, two.id]
    clocks = {c.step_id: c for c in report.clocks}
    # the os step was ready when net finished in the first run, done in the resume
    assert clocks["os"].ready_at == one.step("net").finished_at
    assert (clocks["os"].done_at, clocks["os"].run_id) == (two.step("os").finished_at, two.id)
    assert clocks["net"].run_id == one.id  # the resume reused it
    net = report.departments["network"]
    assert net.steps == 1 and net.step_duration.p50 == pytest.approx(0.2, abs=0.15)
    dora = report.totals.dora
    assert (dora.deployments, dora.change_fail_rate, dora.rework_rate) == (2, 0.5, 0.5)
    assert dora.failed_deployment_recovery_time.p50 == incident.resolution_time
