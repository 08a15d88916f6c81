"""``core.built``: the params a project was built with, read from the run record by a later
operational change (the scale reads the firewall and the database tier from it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infra_automation.engine import Engine
from infra_automation.executors import ExecutorRegistry
from infra_automation.executors.built import BuiltExecutor
from tests.unit.engine_helpers import write_request

BUILD = {
    "name": "shop-build",
    "params": {
        "web_vms": {"type": "integer", "default": 2},
        "firewall": {"type": "boolean", "default": False},
    },
    "steps": [{"id": "a", "executor": "core.noop"}],
}
CHANGE = {
    "name": "shop-scale",
    "modifies": {"service": "shop-build", "params": ["web_vms"]},
    "params": {"web_vms": {"type": "integer"}, "firewall": {"type": "boolean", "default": False}},
    "steps": [{"id": "built", "executor": "core.built", "params": {"service": "shop-build"}}],
    "outputs": {"params": "{{ steps.built.outputs.params }}"},
}
DECOMMISSION = {"name": "shop-decommission", "steps": [{"id": "a", "executor": "core.noop"}]}


@pytest.fixture
def services(root: Path, engine: Engine, registry: ExecutorRegistry) -> Engine:
    registry.register("core.built", BuiltExecutor)
    for data in (BUILD, CHANGE, DECOMMISSION):
        (root / "catalog" / f"{data['name']}.yml").write_text(yaml.safe_dump(data))
    engine.reload()
    return engine


def run(engine: Engine, root: Path, service: str, check: bool = False, **params: Any) -> Any:
    request = engine.load_request(write_request(root, service, params=params, name=service))
    return engine.apply(request, check=check)


def built(result: Any) -> dict[str, Any]:
    assert not result.failed, {k: r.error for k, r in result.steps.items()}
    return dict(result.steps["built"].outputs)


def test_a_change_reads_the_build_params_with_the_changes_since(
    services: Engine, root: Path
) -> None:
    first = run(services, root, "shop-build", firewall=True)
    # the change's own value (firewall: false here) is not what the project was built with
    one = built(run(services, root, "shop-scale", web_vms=3))
    assert one["params"] == {"web_vms": 2, "firewall": True}  # defaults filled in at the build
    assert one["run_id"] == first.run_id and one["changes"] == []
    second = built(run(services, root, "shop-scale", web_vms=4))
    assert second["params"] == {"web_vms": 3, "firewall": True}
    assert len(second["changes"]) == 1
    # a dry run reads the same and counts for nothing afterwards
    assert built(run(services, root, "shop-scale", check=True, web_vms=5))["params"]["web_vms"] == 4
    assert built(run(services, root, "shop-scale", web_vms=2))["params"]["web_vms"] == 4


def test_a_new_build_after_a_decommission_is_the_build(services: Engine, root: Path) -> None:
    run(services, root, "shop-build", firewall=True)
    run(services, root, "shop-scale", web_vms=3)
    run(services, root, "shop-decommission")
    failed = run(services, root, "shop-scale", web_vms=3)
    assert failed.failed and "has no build in the record" in (failed.steps["built"].error or "")
    assert failed.steps["built"].error_kind == "invalid"
    run(services, root, "shop-build", web_vms=1)
    assert built(run(services, root, "shop-scale", web_vms=2))["params"] == {
        "web_vms": 1,
        "firewall": False,
    }


def test_a_project_built_by_another_service_is_refused(services: Engine, root: Path) -> None:
    other = {**BUILD, "name": "other-build"}
    (root / "catalog" / "other-build.yml").write_text(yaml.safe_dump(other))
    services.reload()
    run(services, root, "other-build")
    failed = run(services, root, "shop-scale", web_vms=3)
    assert "was built by 'other-build', not 'shop-build'" in (failed.steps["built"].error or "")
