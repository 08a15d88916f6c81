"""``infra stats`` and ``infra incidents`` on the hand-made history: text, json, csv, bad
input (exit 2, nothing written), an acknowledgement that becomes the response."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import typer
from history_fixture import at
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from infra_automation.cli import stats as stats_cli
from infra_automation.metrics import derive_incidents, load_history

RANGE = ["--since", "2026-11-01", "--until", "2026-11-08"]


def cli() -> typer.Typer:
    """Wired exactly as the main CLI wires them (see the module doc of cli/stats.py)."""
    app = typer.Typer()
    app.add_typer(stats_cli.stats_app, name="stats")
    app.add_typer(stats_cli.incidents_app, name="incidents")
    return app


@pytest.fixture
def root(tmp_path: Path, history_db: Engine, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    (folder / "sla.yml").write_text(
        "incidents: {response: 15m, resolution: 90m}\n"
        "services: {project-landscape: {delivery: 2h}}\n"
        "departments: {network: {step: 30m}, vmware: {incident_response: 2h}}\n"
    )
    monkeypatch.setenv("INFRA_DATABASE_URL", history_db.url.render_as_string(hide_password=False))
    return folder


def invoke(root: Path, *args: str) -> Result:
    wide = {"COLUMNS": "200"}  # rich wraps table cells to the terminal's width
    return CliRunner().invoke(cli(), [*args, "--root", str(root)], env=wide)


def test_json(root: Path) -> None:
    result = invoke(root, "stats", *RANGE, "--output", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["totals"]["dora"]["change_fail_rate"] == pytest.approx(0.4)
    assert data["totals"]["lead_time"]["p50"] == 57 * 60
    assert data["departments"]["network"]["waiting"]["p95"] == 70 * 60
    assert len(data["breaches"]) == 7


def test_text(root: Path) -> None:
    result = invoke(root, "stats", *RANGE, "--project", "alpha")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for title in ("Deliveries and incidents", "DORA", "Departments", "SLA breaches"):
        assert title in text
    assert "3h" in text  # alpha's lead time: 09:00 -> 12:00
    assert "run a2 step network" in text


def test_csv(root: Path) -> None:
    result = invoke(root, "stats", *RANGE, "--department", "network", "-o", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    found = {(r["scope"], r["name"], r["metric"]): r["value"] for r in rows}
    assert found[("department", "network", "step_duration.p95")] == "900.0"
    assert ("department", "vmware", "steps") not in found


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last week"], "--since"),
        (["--since", "2026-11-08", "--until", "2026-11-01"], "--since"),
        (["--output", "xml"], "--output"),
    ],
)
def test_bad_input_exits_2(root: Path, args: list[str], message: str) -> None:
    result = invoke(root, "stats", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_invalid_sla_file_exits_2(root: Path) -> None:
    (root / "sla.yml").write_text("departments: {network: {step: soon}}\n")
    result = invoke(root, "stats", *RANGE)
    assert result.exit_code == 2
    assert "departments.network.step" in result.output


def test_ack_is_the_response(root: Path, history_db: Engine) -> None:
    listed = invoke(root, "incidents", "list", "--since", "3650d", "--open", "-o", "json")
    assert [i["id"] for i in json.loads(listed.output)] == ["run:g1"]
    result = invoke(root, "incidents", "ack", "run:g1", "--by", "carol")
    assert result.exit_code == 0, result.output
    incident = next(
        i for i in derive_incidents(load_history(history_db, at(1, 0))) if i.id == "run:g1"
    )
    assert (incident.responded_by, incident.resolved_at) == ("ack carol", None)


def test_ack_of_an_unknown_incident_writes_nothing(root: Path, history_db: Engine) -> None:
    result = invoke(root, "incidents", "ack", "run:nope", "--by", "carol")
    assert result.exit_code == 2
    assert "no incident 'run:nope'" in " ".join(result.output.split())
    acks = load_history(history_db, at(1, 0)).acknowledgements
    assert [a.actor for a in acks] == ["alice"]
