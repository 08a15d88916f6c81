"""With ``[queues]`` in infra.toml every department of the catalog must have a queue: a
department left out would wait on a queue of its own name that no worker serves. ``infra
worker`` refuses to start and ``infra apply`` / ``infra resume`` with a broker refuse to
queue (exit 2), naming the department, the services using it and the key; nothing is
queued. Without ``[queues]`` each department's queue is its own name, as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import step, write_request, write_service
from typer.testing import CliRunner

from infra_automation.catalog import load_catalog
from infra_automation.cli import app
from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.exceptions import ConfigurationError
from infra_automation.workers import client
from infra_automation.workers.queues import (
    departments_of,
    require_catalog_mapped,
    require_plan_mapped,
    unmapped,
)
from infra_automation.workers.worker import serve

# never reached: every command below is refused before it talks to the broker
BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture
def project(root: Path) -> Path:
    """Two services: core and net steps (``build``), core steps only (``quick``)."""
    write_service(root, "build", [step("a"), step("b", "core.noop", ["a"], department="net")])
    write_service(root, "quick", [step("a")])
    write_request(root, "build")
    write_request(root, "quick")
    return root


def with_queues(root: Path, **queues: str) -> None:
    lines = "".join(f'{dept} = "{queue}"\n' for dept, queue in queues.items())
    (root / "infra.toml").write_text(f'scheduler_queue = "t-runs"\n[queues]\n{lines}')


def invoke(root: Path, *args: str, broker: bool = False) -> tuple[int, str]:
    env = {"INFRA_BROKER_URL": BROKER} if broker else {"INFRA_BROKER_URL": ""}
    result = CliRunner().invoke(app, ["--root", str(root), *args], env=env)
    return result.exit_code, " ".join(result.stderr.split())


def test_departments_of_the_catalog_and_which_have_no_queue(project: Path) -> None:
    catalog = load_catalog(project / "catalog")
    used = departments_of(catalog.services.values())
    assert used == {"core": ["build", "quick"], "net": ["build"]}
    assert unmapped(load_settings(project, env={}), used) == {}  # no [queues]: own names
    with_queues(project, core="c")
    settings = load_settings(project, env={})
    assert unmapped(settings, used) == {"net": ["build"]}
    with pytest.raises(ConfigurationError) as err:
        require_catalog_mapped(settings, catalog)
    message = str(err.value)
    assert "[queues] of infra.toml maps no queue for department 'net' (steps of build)" in message
    assert 'net = "net"' in message
    with_queues(project, core="c", net="net")
    require_catalog_mapped(load_settings(project, env={}), catalog)  # all mapped


def test_a_worker_refuses_to_start_naming_the_department(project: Path) -> None:
    with_queues(project, core="t-core")
    with pytest.raises(ConfigurationError, match=r"department 'net' \(steps of build\)"):
        serve(load_settings(project, env={"INFRA_BROKER_URL": BROKER}), ["t-core"])
    code, said = invoke(project, "worker", "--queues", "t-core")
    assert code == 2, said
    assert "department 'net'" in said and "[queues] of infra.toml" in said


def test_apply_with_a_broker_refuses_to_queue_naming_the_department(project: Path) -> None:
    with_queues(project, core="t-core")
    code, said = invoke(project, "apply", str(project / "requests" / "build.yml"), broker=True)
    assert code == 2, said
    assert "department 'net' (steps of build)" in said and "[queues] of infra.toml" in said
    engine = Engine(load_settings(project, env={}), load_observers=False)
    try:
        assert engine.store.list_runs() == []  # nothing queued
        plan = engine.plan(engine.load_request(project / "requests" / "quick.yml"))
        require_plan_mapped(engine.settings, plan)  # its departments are mapped: it may queue
        built = engine.plan(engine.load_request(project / "requests" / "build.yml"))
        with pytest.raises(ConfigurationError, match="department 'net'"):
            client.submit(engine, built)
        assert engine.store.list_runs() == []
    finally:
        engine.close()


def test_resume_with_a_broker_refuses_to_queue(project: Path) -> None:
    code, _ = invoke(project, "apply", str(project / "requests" / "build.yml"), "--no-docs")
    assert code == 0  # run here, before any [queues]
    with_queues(project, core="t-core")
    engine = Engine(load_settings(project, env={}), load_observers=False)
    try:
        (first,) = engine.store.list_runs()
        with pytest.raises(ConfigurationError, match="department 'net'"):
            client.submit_resume(engine, first.id)
        assert [r.id for r in engine.store.list_runs()] == [first.id]
    finally:
        engine.close()
