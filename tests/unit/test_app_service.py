"""The containers department's catalog: project-app (an operational change of the landscape),
the landscape's own ``app`` step, and the decommission's removal. Planned with the real
executors and catalog; the lab test runs them (tests/integration/test_containers_lab.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.exceptions import RequestValidationError
from infra_automation.record import RunRecord
from infra_automation.verify import built_request

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_settings(ROOT, env={}), load_observers=False)


def request(service: str, **params: Any) -> dict[str, Any]:
    return {"service": service, "project": "shop", "requester": "t@example.com", "params": params}


def test_project_app_runs_the_playbook_on_the_tier_it_reads(engine: Engine) -> None:
    plan = engine.plan(engine.validate(request("project-app", app_message="Hi there")))
    assert plan.waves == [["tier"], ["app"], ["docs"]]
    (app,) = [s for s in plan.steps if s.id == "app"]
    assert app.department == "containers" and app.executor == "os.playbook"
    assert app.params["playbook"] == "app.yml"
    assert app.params["vars"]["app_state"] == "{{ 'present' if params.app else 'absent' }}"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("app_name", "App"),
        ("app_name", "app/../x"),
        ("app_port", 80),
        ("app_port", 70000),
        ("app_message", "hi\nlocation / { return 500; }"),
        ("app_message", "{{ lookup('pipe', 'id') }}"),
        ("app_message", "x; podman rm -fa"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(engine: Engine, field: str, value: Any) -> None:
    with pytest.raises(RequestValidationError, match=field):
        engine.validate(request("project-app", **{field: value}))


def test_the_landscape_plans_the_app_only_when_asked(engine: Engine) -> None:
    without = engine.plan(engine.validate(request("project-landscape")))
    assert "app" not in {s.id for s in without.steps}
    plan = engine.plan(engine.validate(request("project-landscape", app=True)))
    (app,) = [s for s in plan.steps if s.id == "app"]
    assert "web" in app.needs and app.department == "containers"
    assert "app" in next(s for s in plan.steps if s.id == "docs").needs


def test_verify_reads_the_build_with_the_app_the_change_set(engine: Engine) -> None:
    """project-app modifies the landscape: the landscape's plan as verify rebuilds it has the
    app step (same id, the step project-app recorded), with the change's values."""
    build = run("r1", "project-landscape", web_vms=2)
    change = run("r2", "project-app", app=True, app_name="shop-api", app_port=9000)
    _, merged = built_request(engine, [change, build])
    params = merged["params"]
    assert params["app"] is True and params["app_name"] == "shop-api" and params["web_vms"] == 2
    plan = engine.plan(engine.validate(merged))
    (app,) = [s for s in plan.steps if s.id == "app"]
    assert app.executor == "os.playbook"
    assert app.params["vars"]["app_port"] == "{{ params.app_port }}"
    removed = run("r3", "project-app", app=False)
    _, gone = built_request(engine, [removed, change, build])
    assert "app" not in {s.id for s in engine.plan(engine.validate(gone)).steps}


def test_decommission_removes_the_apps_before_the_vms(engine: Engine) -> None:
    plan = engine.plan(engine.validate(request("project-decommission")))
    steps = {s.id: s for s in plan.steps}
    assert steps["app_remove"].params["vars"] == {"app_state": "absent"}
    assert "app_remove" in steps["vmware"].needs


def run(run_id: str, service: str, **params: Any) -> RunRecord:
    return RunRecord(
        id=run_id,
        project="shop",
        service=service,
        requester="t@example.com",
        status="success",
        check=False,
        request=request(service, **params),
        parallel=1,
        resumed_from=None,
        pid=None,
        host="",
        changed=True,
        started_at=None,
        finished_at=None,
        plan=[],
    )
