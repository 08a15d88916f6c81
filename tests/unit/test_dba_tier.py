"""``dba.postgresql_tier``: the scale's database step, nothing to do without a database tier,
``dba.postgresql`` itself with one (the lab test opens a real database to an added VM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra_automation.departments.dba import PostgresParams
from infra_automation.departments.dba_tier import PostgresTierExecutor, TierParams
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.results import Status


def context(params: TierParams, tmp_path: Path) -> StepContext:
    return StepContext(
        run_id="run-1",
        project="shop",
        step_id="database",
        department="dba",
        params=params,
        inventory=Inventory(InventoryFile.model_validate({"name": "t"})),
        root=tmp_path,  # no playbooks, no secrets file here: nothing may be run or kept
    )


def test_no_database_vm_is_nothing_to_do(tmp_path: Path) -> None:
    params = TierParams(project="shop", server=None, clients=[{"name": "shop-web-01"}])
    for result in (
        PostgresTierExecutor().preview(context(params, tmp_path)),
        PostgresTierExecutor().apply(context(params, tmp_path)),
    ):
        assert result.status == Status.SUCCESS and not result.changed, result.error
        assert result.outputs["server"] == "" and result.outputs["database"] == "shop"
    assert list(tmp_path.iterdir()) == []


def test_with_a_database_vm_the_params_are_dba_postgresqls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[PostgresParams] = []

    def run(self: object, ctx: StepContext, *, check: bool) -> object:
        seen.append(ctx.typed_params(PostgresParams))
        return "ran"

    monkeypatch.setattr(PostgresTierExecutor, "_run", run)
    vm = {"name": "shop-db-01", "ip": "10.20.0.4", "moid": "vm-9", "cpu": 1}
    params = TierParams(project="shop", server=vm, clients=[{"name": "shop-web-01"}])
    assert PostgresTierExecutor().apply(context(params, tmp_path)) == "ran"
    assert seen[0].server.name == "shop-db-01" and seen[0].server.ip == "10.20.0.4"
    assert [c.name for c in seen[0].clients] == ["shop-web-01"]
