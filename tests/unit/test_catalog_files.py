"""Every shipped catalog service plans for every shipped request, with the real executors.

Found by glob, so a new service or request is covered without editing this file. Planning
checks the typed references between departments (each `steps.X.outputs.Y` names a field of
X's executor's outputs model), so a typo in a catalog fails here, without a lab.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra_automation.config import load_settings
from infra_automation.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = sorted((ROOT / "requests").glob("*.yml"))


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_settings(ROOT, env={}), load_observers=False)


def test_every_service_has_a_request() -> None:
    services = {p.stem for p in (ROOT / "catalog").glob("*.yml")}
    requested = {p.read_text().split("service:", 1)[1].split()[0] for p in REQUESTS}
    assert services <= requested


@pytest.mark.parametrize("request_file", REQUESTS, ids=lambda p: p.name)
def test_shipped_request_plans(engine: Engine, request_file: Path) -> None:
    plan = engine.plan(engine.load_request(request_file))
    assert plan.steps
    departments = {s.department for s in plan.steps}
    if plan.service == "project-landscape":
        assert departments >= {"network", "vmware", "os", "web", "docs"}
        waves = plan.waves
        assert waves[0] == ["ipam"] and waves[-1] == ["docs"]
        if plan.request.params.get("database", "none") == "none":
            assert set(waves[-2]) == {"web", "backup", "monitoring"}  # in parallel
        else:  # the landing page reads the database: web after it, backup and monitoring not
            assert waves[-2] == ["web"] and "database" in plan.step("web").needs
            assert {"backup", "monitoring"} <= set(waves[-3])


def test_landscape_without_options_leaves_their_steps_out(engine: Engine) -> None:
    request = engine.validate(
        {"service": "project-landscape", "project": "lean", "params": {"backup": False}}
    )
    plan = engine.plan(request)
    assert "backup" not in [s.id for s in plan.steps] and "backup" in plan.left_out
    docs = next(s for s in plan.steps if s.id == "docs")
    assert set(docs.needs) == {"web", "monitoring", "os_baseline"}  # inherits backup's needs
