"""``infra apply`` gated by the change record (the wiring in ``infra_automation.cli``):
exit 3 while a normal change waits, 0 once approved (and the change is implemented), 4
when refused; ``--check`` is a dry run, not a change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from change_helpers import INVENTORY, write_root
from typer.testing import CliRunner

from infra_automation.cli import app

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = {**INVENTORY, "change": {"approval": INVENTORY["change"]["approval"]}}  # no blackout
    root = write_root(tmp_path / "apply", site)
    for name, service in (("vms", "vmset"), ("plain", "plain")):
        data = {"service": service, "project": name, "requester": "jane"}
        (root / "requests" / f"{name}.yml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("INFRA_DATABASE_URL", f"sqlite:///{tmp_path / 'apply.db'}")
    return root


def infra(root: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--root", str(root), *args])
    return result.exit_code, result.output


def test_apply_waits_then_runs_the_approved_change(project: Path) -> None:
    request = str(project / "requests" / "vms.yml")
    code, shown = infra(project, "apply", request, "--no-docs")
    assert code == 3 and "waiting" in shown
    change = shown.split("change: ")[1].split()[0]
    assert infra(project, "changes", "approve", change, "--as", "jane")[0] == 4
    assert infra(project, "changes", "approve", change, "--as", "victor")[0] == 0
    code, shown = infra(project, "apply", request, "--no-docs", "--change", change[:12])
    assert code == 0, shown
    code, listed = infra(project, "changes", "list", "-o", "json")
    assert [(c["id"], c["state"]) for c in json.loads(listed)] == [(change, "implemented")]


def test_apply_check_is_no_change_and_undeclared_services_run(project: Path) -> None:
    vms = str(project / "requests" / "vms.yml")
    assert infra(project, "apply", vms, "--check", "--no-docs")[0] == 0
    assert json.loads(infra(project, "changes", "list", "-o", "json")[1]) == []
    plain = str(project / "requests" / "plain.yml")
    assert infra(project, "apply", plain, "--no-docs")[0] == 0
    code, refused = infra(project, "apply", vms, "--no-docs", "--change-type", "standard")
    assert code == 4 and "may not override" in refused
