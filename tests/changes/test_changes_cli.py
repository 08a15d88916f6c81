"""``infra changes`` through typer's CliRunner: exit 3 while a change waits, 4 when refused,
2 for bad input; the export is a document whose sha256 can be recomputed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from change_helpers import INVENTORY, write_root
from typer.testing import CliRunner

from infra_automation.changes.model import canonical
from infra_automation.cli.changes import app

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = {**INVENTORY, "change": {"approval": INVENTORY["change"]["approval"]}}  # no blackout
    root = write_root(tmp_path / "cli", site)
    (root / "requests" / "vms.yml").write_text(
        yaml.safe_dump({"service": "vmset", "project": "shop", "requester": "jane"})
    )
    monkeypatch.setenv("INFRA_ROOT", str(root))
    monkeypatch.setenv("INFRA_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    return root


def propose(root: Path) -> tuple[int, dict[str, object]]:
    result = runner.invoke(app, ["propose", str(root / "requests" / "vms.yml"), "-o", "json"])
    return result.exit_code, json.loads(result.stdout)


def test_propose_approve_and_export(project: Path) -> None:
    code, waiting = propose(project)
    assert code == 3 and waiting["decision"] == "waiting"
    change = str(waiting["change"])
    own = runner.invoke(app, ["approve", change[:10], "--as", "jane"])
    assert own.exit_code == 4 and "cannot approve" in own.stdout
    listed = runner.invoke(app, ["list", "-o", "json", "--state", "waiting"])
    assert [c["id"] for c in json.loads(listed.stdout)] == [change]
    ok = runner.invoke(app, ["approve", change, "--as", "victor", "--comment", "fine"])
    assert ok.exit_code == 0 and "approved" in ok.stdout
    code, ready = propose(project)
    assert code == 0 and ready["decision"] == "run" and ready["change"] == change
    shown = runner.invoke(app, ["show", change])
    assert shown.exit_code == 0 and "vmware" in shown.stdout and "victor" in shown.stdout
    exported = runner.invoke(app, ["export", change, "--output", "json"])
    doc = json.loads(exported.stdout)
    assert doc["number"] == change and doc["state"] == "approved"
    assert hashlib.sha256(canonical(doc["content"]).encode()).hexdigest() == doc["sha256"]
    assert doc["cmdb_ci"] == [{"kind": "project", "name": "shop"}, {"kind": "vm", "name": "v1"}]
    assert [a["approver"] for a in doc["approvals"]] == ["victor"]
    assert [n["to"] for n in doc["work_notes"]] == ["waiting", "approved"]


def test_a_rejected_change_is_refused_with_exit_4(project: Path) -> None:
    _, waiting = propose(project)
    change = str(waiting["change"])
    rejected = runner.invoke(app, ["reject", change, "--as", "victor", "--comment", "no"])
    assert rejected.exit_code == 0
    code, refused = propose(project)
    assert code == 4 and "rejected by victor: no" in str(refused["reason"])
    assert runner.invoke(app, ["approve", change, "--as", "victor"]).exit_code == 4


@pytest.mark.parametrize(
    "args",
    [
        ["show", "deadbeefdeadbeef"],
        ["show", "abc"],
        ["export", "deadbeefdeadbeef", "--output", "yaml"],
        ["list", "--state", "pending"],
    ],
)
def test_bad_input_exits_2(project: Path, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_a_type_override_without_permission_is_refused(project: Path) -> None:
    request = str(project / "requests" / "vms.yml")
    refused = runner.invoke(app, ["propose", request, "--type", "emergency"])
    assert refused.exit_code == 4 and "may not override" in refused.stdout
    allowed = runner.invoke(app, ["propose", request, "--type", "emergency", "--allowed"])
    assert allowed.exit_code == 0
    flagged = runner.invoke(app, ["list", "--flagged", "-o", "json"])
    assert len(json.loads(flagged.stdout)) == 1
