"""The ``infra`` CLI: catalog, plan (text/json/mermaid), apply (exit codes 0/1/2, JSON,
JUnit), runs list/show, resume, the run lock, plugins from INFRA_PLUGINS."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from engine_helpers import step, write_request, write_service
from rich.console import Console
from typer.testing import CliRunner

from infra_automation import engine as engine_module
from infra_automation.cli import app
from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.progress import LiveProgress, PlainProgress
from infra_automation.record import open_database
from infra_automation.scheduler import ProjectLock

PLUGINS = Path(__file__).parent / "data" / "plugins"


@pytest.fixture
def cli(root: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("INFRA_PLUGINS", "INFRA_DATABASE_URL", "INFRA_SERVER", "INFRA_TOKEN"):
        monkeypatch.delenv(name, raising=False)  # local mode: no server from the environment
    write_service(
        root,
        "chain",
        [
            step("a", department="network"),
            step(
                "b",
                "core.sleep",
                needs=["a"],
                params={"seconds": 0.01, "echo": {"x": "{{ params.word }}"}},
            ),
            step("c", needs=["b"], params={"echo": {"got": "{{ steps.b.outputs.x }}"}}),
        ],
        params={"word": {"default": "hi"}},
    )
    write_service(
        root,
        "broken",
        [step("a", "core.fail", params={"message": "no luck"}), step("b", needs=["a"]), step("c")],
    )
    write_service(root, "loop", [step("a", needs=["b"]), step("b", needs=["a"])])
    write_request(root, "chain")
    write_request(root, "broken")
    write_request(root, "loop")
    return CliRunner()


def run(cli: CliRunner, root: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return cli.invoke(app, ["--root", str(root), *args], env=env)


def test_catalog_list_and_show(cli: CliRunner, root: Path) -> None:
    res = run(cli, root, "catalog", "list", "-o", "json")
    assert res.exit_code == 0, res.output
    assert {s["name"] for s in json.loads(res.stdout)} == {"chain", "broken", "loop"}
    res = run(cli, root, "catalog", "show", "chain", "-o", "json")
    assert json.loads(res.stdout)["params"]["word"]["default"] == "hi"
    res = run(cli, root, "catalog", "show", "chain")
    assert res.exit_code == 0 and "core.sleep" in res.stdout
    res = run(cli, root, "catalog", "show", "nope")
    assert res.exit_code == 2 and "no service 'nope'" in res.stderr


def test_plan_forms(cli: CliRunner, root: Path) -> None:
    req = str(root / "requests" / "chain.yml")
    res = run(cli, root, "plan", req)
    assert res.exit_code == 0 and "network" in res.stdout and "wave" in res.stdout
    data = json.loads(run(cli, root, "plan", req, "--output", "json").stdout)
    assert data["waves"] == [["a"], ["b"], ["c"]]
    mermaid = run(cli, root, "plan", req, "--output", "mermaid").stdout
    assert mermaid.startswith("flowchart LR") and "step_a --> step_b" in mermaid
    assert run(cli, root, "plan", req, "--output", "yaml").exit_code == 2


def test_apply_success_json_and_junit(cli: CliRunner, root: Path, tmp_path: Path) -> None:
    junit = tmp_path / "out" / "junit.xml"
    res = run(
        cli,
        root,
        "apply",
        str(root / "requests/chain.yml"),
        "--no-docs",
        "--output",
        "json",
        "--junit",
        str(junit),
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["status"] == "success" and data["steps"]["c"]["outputs"] == {"got": "hi"}
    assert "run.started" not in res.stdout  # progress goes to stderr with --output json
    assert "b success" in res.stderr
    suite = ET.fromstring(junit.read_text()).find("testsuite")  # noqa: S314 - our own file
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == ["a", "b", "c"]


def test_apply_failure_exits_1(cli: CliRunner, root: Path, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    res = run(
        cli, root, "apply", str(root / "requests/broken.yml"), "--no-docs", "--junit", str(junit)
    )
    assert res.exit_code == 1
    assert "no luck" in res.stdout
    suite = ET.fromstring(junit.read_text()).find("testsuite")  # noqa: S314 - our own file
    assert suite is not None
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["a"].find("failure")
    assert failure is not None and failure.get("message") == "no luck"
    skipped = cases["b"].find("skipped")
    assert skipped is not None and skipped.get("message") == "dependency 'a' failed"
    assert list(cases["c"]) == []


def test_invalid_input_exits_2_with_field_errors(cli: CliRunner, root: Path) -> None:
    bad = write_request(
        root, "chain", project="No Way", params={"word": "a\nb", "x": 1}, name="bad"
    )
    res = run(cli, root, "apply", str(bad), "--no-docs")
    assert res.exit_code == 2
    for text in ("project:", "params.word: contains characters", "params.x: Extra inputs"):
        assert text in res.stderr
    res = run(cli, root, "apply", str(root / "requests/loop.yml"), "--no-docs")
    assert res.exit_code == 2 and "CycleError: dependency cycle: " in res.stderr
    res = run(cli, root, "apply", str(root / "requests/missing.yml"), "--no-docs")
    assert res.exit_code == 2 and "cannot read" in res.stderr
    runs = json.loads(run(cli, root, "runs", "list", "-o", "json").stdout)
    assert runs == []  # nothing was recorded


def test_runs_list_show_and_resume(cli: CliRunner, root: Path) -> None:
    res = run(cli, root, "apply", str(root / "requests/broken.yml"), "--no-docs")
    assert res.exit_code == 1
    runs = json.loads(run(cli, root, "runs", "list", "--project", "shop", "-o", "json").stdout)
    assert len(runs) == 1 and runs[0]["status"] == "failed"
    run_id = runs[0]["id"]
    shown = json.loads(run(cli, root, "runs", "show", run_id, "--events", "-o", "json").stdout)
    assert {s["id"]: s["status"] for s in shown["steps"]} == {
        "a": "failed",
        "b": "skipped",
        "c": "success",
    }
    assert shown["events"][0]["kind"] == "run.started"
    text = run(cli, root, "runs", "show", run_id, "--events")
    assert text.exit_code == 0 and "no luck" in text.stdout
    assert run(cli, root, "runs", "list").exit_code == 0
    assert run(cli, root, "runs", "show", "nope").exit_code == 2

    res = run(cli, root, "resume", run_id, "--no-docs", "-o", "json")
    assert res.exit_code == 1  # core.fail still fails
    again = json.loads(res.stdout)
    assert set(again["steps"]) == {"a", "b", "c"}
    resumed = json.loads(run(cli, root, "runs", "show", again["run_id"], "-o", "json").stdout)
    assert resumed["resumed_from"] == run_id
    assert {s["id"]: s["reused"] for s in resumed["steps"]} == {"a": False, "b": False, "c": True}


def test_second_run_is_refused_with_a_clear_message(cli: CliRunner, root: Path) -> None:
    with ProjectLock(open_database(load_settings(root, env={}).database_url), "shop", "busy-run"):
        res = run(cli, root, "apply", str(root / "requests/chain.yml"), "--no-docs")
    assert res.exit_code == 2
    assert "RunLocked: project 'shop' has an active run (run busy-run, pid" in res.stderr


def test_plugins_from_environment(
    cli: CliRunner, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))
    log = tmp_path / "calls.log"
    write_service(
        root, "plugged", [step("p", "test.append", params={"log": str(log), "value": "v1"})]
    )
    write_request(root, "plugged")
    req = str(root / "requests/plugged.yml")
    res = run(cli, root, "apply", req, "--no-docs", env={"INFRA_PLUGINS": "infra_test_plugin"})
    assert res.exit_code == 0, res.output
    assert log.read_text() == "p v1\n"
    res = run(cli, root, "plan", req, env={"INFRA_PLUGINS": "no_such_plugin_module"})
    assert res.exit_code == 2 and "plugin 'no_such_plugin_module' cannot be imported" in res.stderr


def test_no_docs_flag_disables_entry_point_observers(
    cli: CliRunner, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[Path] = []

    def fake(root_dir: Path, db: object) -> list[tuple[str, object, str]]:
        loaded.append(root_dir)
        return []

    monkeypatch.setattr(engine_module, "load_entry_point_observers", fake)
    assert run(cli, root, "apply", str(root / "requests/chain.yml"), "--no-docs").exit_code == 0
    assert loaded == []
    assert run(cli, root, "apply", str(root / "requests/chain.yml")).exit_code == 0
    assert loaded == [root.resolve()]


def test_sub_apps_are_mounted(cli: CliRunner, root: Path) -> None:
    for name in ("lab", "docs"):
        res = run(cli, root, name, "--help")
        assert res.exit_code == 0, res.output


def test_progress_views(engine: Engine, request_for: Callable[..., Any]) -> None:
    """Plain view: one line per event; live view: steps by department (rendered once)."""
    plain_out, live_out = io.StringIO(), io.StringIO()
    plain = PlainProgress(Console(file=plain_out, width=200, color_system=None))
    live_console = Console(file=live_out, width=200, force_terminal=True, color_system=None)
    req = request_for(
        "view",
        [
            step("a", department="network"),
            step("b", "core.fail", needs=["a"], department="os"),
            step("c", needs=["b"], department="os"),
        ],
    )
    with LiveProgress(live_console) as live:
        engine.observers[:] = [plain, live]
        engine.apply(req)
        table = Console(file=io.StringIO(), width=200, color_system=None)
        table.print(live)
    lines = plain_out.getvalue().splitlines()
    assert lines[0].endswith("view for project shop, 3 steps")
    assert "[network] a running" in lines and "[os] b failed" in "\n".join(lines)
    assert "[os] c skipped: dependency 'b' failed" in lines
    assert lines[-1].endswith(": failed")
    rendered = table.file.getvalue()  # type: ignore[attr-defined]
    assert "network" in rendered and "1/1" in rendered and "2/2" in rendered
    assert "failed" in live_out.getvalue()  # failures are printed above the live table


def test_live_view_shows_the_latest_activity_per_department() -> None:
    from infra_automation.events import Event

    out = io.StringIO()
    live = LiveProgress(Console(file=out, width=200, force_terminal=True, color_system=None))
    plan = [{"id": "web", "department": "web"}, {"id": "vms", "department": "vmware"}]
    live.on_event(Event("r1", "run.started", data={"service": "s", "project": "p", "plan": plan}))
    live.on_event(Event("r1", "step.started", "web", {"department": "web"}))
    task = {"kind": "task", "host": "debian1", "task": "Install nginx", "status": "ok"}
    live.on_event(Event("r1", "step.log", "web", task))
    screen = Console(file=io.StringIO(), width=200, color_system=None)
    screen.print(live)
    rendered = screen.file.getvalue()  # type: ignore[attr-defined]
    assert "web: debian1 Install nginx (ok)" in rendered
    assert rendered.index("web ") < rendered.index("vmware")  # plan order, not alphabetical


def test_printed_json_and_junit_never_hold_a_secret(
    cli: CliRunner, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra_automation import secrets

    monkeypatch.setattr(secrets, "REDACTOR", secrets.Redactor())  # this test's secrets only
    secrets.REDACTOR.add("no luck")  # pretend the failure message leaks a known secret
    junit = tmp_path / "junit.xml"
    res = run(
        cli, root, "apply", str(root / "requests/broken.yml"), "--no-docs", "-o", "json",
        "--junit", str(junit),
    )  # fmt: skip
    assert res.exit_code == 1
    assert "no luck" not in res.stdout and "no luck" not in junit.read_text()
    assert json.loads(res.stdout)["steps"]["a"]["error"] == "********"


def test_service_outputs_are_printed_and_none_where_a_step_failed(
    cli: CliRunner, root: Path
) -> None:
    import yaml

    for name in ("chain", "broken"):
        path = root / "catalog" / f"{name}.yml"
        data = yaml.safe_load(path.read_text())
        data["outputs"] = {"word": "{{ params.word }}" if name == "chain" else "{{ project }}",
                           "got": "{{ steps.c.outputs.got }}" if name == "chain"
                           else "{{ steps.b.outputs.x }}"}  # fmt: skip
        path.write_text(yaml.safe_dump(data))
    ok = run(cli, root, "apply", str(root / "requests/chain.yml"), "--no-docs", "-o", "json")
    assert json.loads(ok.stdout)["outputs"] == {"word": "hi", "got": "hi"}
    text = run(cli, root, "apply", str(root / "requests/chain.yml"), "--no-docs")
    assert "got: hi" in text.stdout
    bad = run(cli, root, "apply", str(root / "requests/broken.yml"), "--no-docs", "-o", "json")
    assert json.loads(bad.stdout)["outputs"] == {"word": "shop", "got": None}  # b was skipped


def test_commands_the_server_does_not_serve_stay_local_with_a_server(
    cli: CliRunner, root: Path
) -> None:
    """catalog, docs, lab... run locally even when INFRA_SERVER names a server (here one that
    does not exist: any call to it would fail)."""
    env = {"INFRA_SERVER": "http://127.0.0.1:9", "INFRA_TOKEN": "t" * 40}
    res = run(cli, root, "catalog", "list", "-o", "json", env=env)
    assert res.exit_code == 0, res.output
    assert {s["name"] for s in json.loads(res.stdout)} == {"chain", "broken", "loop"}
    res = run(cli, root, "runs", "list", env=env)
    assert res.exit_code == 2 and "cannot reach the infra server" in res.stderr
