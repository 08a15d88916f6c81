"""``infra --server URL``: plan, apply [--check], resume and runs through a real uvicorn server
on a loopback port print the same JSON and text, and exit with the same codes, as the same
commands run locally on the same project root; 401/403/unreachable/bad input are clear
errors (exit 2, no traceback, never the token)."""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from server_fixtures import LiveServer, live_server, make_root
from typer.testing import CliRunner

from infra_automation.cli import app
from infra_automation.identity import Role

SERVICES: dict[str, dict[str, Any]] = {
    "chain": {
        "description": "three steps, the last reads the second's outputs",
        "params": {"word": {"type": "string", "default": "hi"}},
        "steps": [
            {"id": "a", "department": "network", "executor": "core.noop"},
            {
                "id": "b",
                "executor": "core.sleep",
                "needs": ["a"],
                "params": {"seconds": 0.05, "echo": {"x": "{{ params.word }}"}},
            },
            {
                "id": "c",
                "executor": "core.noop",
                "needs": ["b"],
                "params": {"echo": {"got": "{{ steps.b.outputs.x }}"}},
            },
        ],
    },
    "broken": {
        "description": "a failing step, its dependent skipped, an independent one",
        "steps": [
            {"id": "a", "executor": "core.fail", "params": {"message": "no luck"}},
            {"id": "b", "executor": "core.noop", "needs": ["a"]},
            {"id": "c", "executor": "core.noop"},
        ],
    },
}
RUN_ID = re.compile(r"\d{8}T\d{6}-[0-9a-f]{8}")
SECONDS = re.compile(r"\d+\.\d\ds")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = make_root(tmp_path_factory.mktemp("client") / "project")
    for name, service in SERVICES.items():
        body = {"name": name, "owner": "tests", **service}
        (root / "catalog" / f"{name}.yml").write_text(yaml.safe_dump(body))
        for project in ("shop", "other"):
            request = {"service": name, "project": project, "requester": "engineer-user"}
            (root / "requests" / f"{name}-{project}.yml").write_text(yaml.safe_dump(request))
    with live_server(root) as live:
        yield live


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("INFRA_SERVER", "INFRA_TOKEN", "INFRA_TOKEN_FILE", "INFRA_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def root_of(server: LiveServer) -> Path:
    return server.state.engine.settings.root


def request(server: LiveServer, name: str) -> str:
    return str(root_of(server) / "requests" / f"{name}.yml")


def local(cli: CliRunner, server: LiveServer, *args: str) -> Result:
    return cli.invoke(app, ["--root", str(root_of(server)), *args])


def remote(
    cli: CliRunner, server: LiveServer, *args: str, role: Role = Role.ENGINEER, **env: str
) -> Result:
    variables = {"INFRA_SERVER": server.url, "INFRA_TOKEN": server.tokens[role], **env}
    return cli.invoke(app, list(args), env=variables)


def same_run(data: dict[str, Any]) -> dict[str, Any]:
    """A result's JSON without what differs between two runs of one request (id, times)."""
    steps = {k: {**v, "duration": None} for k, v in data["steps"].items()}
    return {**data, "run_id": None, "steps": steps}


def said(res: Result) -> str:
    """stderr on one line (rich wraps long messages)."""
    return " ".join(res.stderr.split())


def same_text(text: str) -> str:
    return SECONDS.sub("#s", RUN_ID.sub("RUN", text))


def test_plan_prints_the_same_as_locally(cli: CliRunner, server: LiveServer) -> None:
    req = request(server, "chain-shop")
    here, there = local(cli, server, "plan", req, "-o", "json"), remote(cli, server, "plan", req)
    assert here.exit_code == 0 and there.exit_code == 0, there.output
    mine, theirs = (
        json.loads(here.stdout),
        json.loads(remote(cli, server, "plan", req, "-o", "json").stdout),
    )
    assert theirs["request"]["requester"] == "engineer-user"  # the token's user, always
    assert theirs == mine  # the request file names the same requester
    assert there.stdout == local(cli, server, "plan", req).stdout
    mermaid = remote(cli, server, "plan", req, "-o", "mermaid").stdout
    assert mermaid == local(cli, server, "plan", req, "-o", "mermaid").stdout
    assert remote(cli, server, "plan", req, "-o", "yaml").exit_code == 2


@pytest.mark.parametrize(
    ("name", "check", "code"),
    [("chain-shop", False, 0), ("broken-shop", False, 1), ("chain-shop", True, 0),
     ("broken-shop", True, 0)],  # core.fail fails when applied; its preview succeeds
)  # fmt: skip
def test_apply_gives_the_same_json_and_exit_code(
    cli: CliRunner, server: LiveServer, name: str, check: bool, code: int
) -> None:
    args = ["apply", request(server, name), "-o", "json", *(["--check"] if check else [])]
    here = local(cli, server, *args, "--no-docs")
    there = remote(cli, server, *args)
    assert (here.exit_code, there.exit_code) == (code, code), there.output
    mine, theirs = json.loads(here.stdout), json.loads(there.stdout)
    assert same_run(theirs) == same_run(mine) and theirs["check"] is check
    assert "Traceback" not in there.output
    # the progress view, fed by the event stream, goes to stderr with --output json
    assert re.search(r"\] b (success|skipped)", there.stderr), there.stderr
    assert there.stderr.splitlines()[-1].endswith("success" if code == 0 else "failed")


@pytest.mark.parametrize("check", [False, True])
def test_parallel_goes_to_the_server(cli: CliRunner, server: LiveServer, check: bool) -> None:
    """``--parallel`` with ``--server``: the server runs the run with it (it was refused)."""
    args = ["apply", request(server, "chain-shop"), "-o", "json", "--parallel", "3"]
    there = remote(cli, server, *args, *(["--check"] if check else []))
    assert there.exit_code == 0, there.output
    run = server.state.engine.store.get_run(json.loads(there.stdout)["run_id"])
    assert (run.parallel, run.check) == (3, check)


def test_text_output_and_progress_lines_are_the_same(cli: CliRunner, server: LiveServer) -> None:
    for name in ("chain-other", "broken-other"):
        here = local(cli, server, "apply", request(server, name), "--no-docs")
        there = remote(cli, server, "apply", request(server, name))
        assert here.exit_code == there.exit_code
        # the same lines; parallel steps' events may interleave in another order
        assert sorted(same_text(there.stdout).splitlines()) == sorted(
            same_text(here.stdout).splitlines()
        )
    assert "[network] a running" in there.stdout or "[core] a running" in there.stdout


def test_junit_report_of_a_remote_run(cli: CliRunner, server: LiveServer, tmp_path: Path) -> None:
    mine, theirs = tmp_path / "local.xml", tmp_path / "remote.xml"
    here = local(
        cli, server, "apply", request(server, "broken-shop"), "--no-docs", "--junit", str(mine)
    )
    there = remote(cli, server, "apply", request(server, "broken-shop"), "--junit", str(theirs))
    assert here.exit_code == there.exit_code == 1

    def cases(path: Path) -> dict[str | None, list[tuple[str, str | None]]]:
        suite = ET.fromstring(path.read_text()).find("testsuite")  # noqa: S314 - our own file
        assert suite is not None
        return {
            c.get("name"): [(e.tag, e.get("message")) for e in c] for c in suite.iter("testcase")
        }

    assert cases(theirs) == cases(mine)
    assert cases(theirs)["a"] == [("failure", "no luck")]
    bad = remote(cli, server, "apply", request(server, "chain-shop"), "--junit", str(tmp_path))
    assert bad.exit_code == 2 and "Traceback" not in bad.output  # refused before the run


def test_resume_reuses_the_same_steps_as_locally(cli: CliRunner, server: LiveServer) -> None:
    failed = json.loads(
        remote(cli, server, "apply", request(server, "broken-shop"), "-o", "json").stdout
    )
    here = local(cli, server, "resume", failed["run_id"], "--no-docs", "-o", "json")
    there = remote(cli, server, "resume", failed["run_id"], "-o", "json")
    assert here.exit_code == there.exit_code == 1  # core.fail still fails
    assert same_run(json.loads(there.stdout)) == same_run(json.loads(here.stdout))
    resumed = json.loads(
        remote(cli, server, "runs", "show", json.loads(there.stdout)["run_id"], "-o", "json").stdout
    )
    assert resumed["resumed_from"] == failed["run_id"]
    assert {s["id"]: s["reused"] for s in resumed["steps"]} == {"a": False, "b": False, "c": True}
    missing = remote(cli, server, "resume", "no-such-run")
    assert missing.exit_code == 2 and "no run 'no-such-run'" in said(missing)


def _settled(cli: CliRunner, server: LiveServer, *args: str) -> tuple[Result, Result]:
    """The local and the remote answer, read again while they differ (for up to 10 s): a run
    of an earlier test may still be finishing between the two reads; a real difference stays."""
    deadline = time.monotonic() + 10
    while True:
        here, there = local(cli, server, *args), remote(cli, server, *args)
        if there.stdout == here.stdout or time.monotonic() > deadline:
            return here, there
        time.sleep(0.2)


def test_runs_list_and_show_print_the_same(cli: CliRunner, server: LiveServer) -> None:
    remote(cli, server, "apply", request(server, "chain-shop"), "--check")
    for args in (
        ("runs", "list", "-o", "json"),
        ("runs", "list", "--project", "shop", "--limit", "3", "-o", "json"),
        ("runs", "list", "--project", "other"),
    ):
        here, there = _settled(cli, server, *args)
        assert there.exit_code == 0, there.output
        assert there.stdout == here.stdout
    newest = json.loads(remote(cli, server, "runs", "list", "--limit", "1", "-o", "json").stdout)
    run_id = newest[0]["id"]
    for args in (("-o", "json"), ("--events", "-o", "json"), ("--events",), ()):
        here, there = _settled(cli, server, "runs", "show", run_id, *args)
        assert there.exit_code == 0 and there.stdout == here.stdout
    missing = remote(cli, server, "runs", "show", "nope")
    assert missing.exit_code == 2 and "no run 'nope'" in said(missing)


def test_runs_list_pages_beyond_one_page(cli: CliRunner, server: LiveServer) -> None:
    here = json.loads(local(cli, server, "runs", "list", "--limit", "500", "-o", "json").stdout)
    there = json.loads(remote(cli, server, "runs", "list", "--limit", "500", "-o", "json").stdout)
    assert there == here and len(there) > 1


def test_invalid_request_names_the_fields_and_runs_nothing(
    cli: CliRunner, server: LiveServer, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"service": "chain", "project": "No Way", "params": {"x": 1}}))
    before = remote(cli, server, "runs", "list", "-o", "json").stdout
    for command in (("plan",), ("apply",), ("apply", "--check")):
        res = remote(cli, server, *command, str(bad))
        assert res.exit_code == 2, res.output
        assert "project:" in said(res) and "params.x: Extra inputs" in said(res)
    unreadable = remote(cli, server, "apply", str(tmp_path / "missing.yml"))
    assert unreadable.exit_code == 2 and "cannot read" in said(unreadable)
    assert remote(cli, server, "runs", "list", "-o", "json").stdout == before


def test_bad_and_missing_tokens_are_clear_errors(cli: CliRunner, server: LiveServer) -> None:
    token = "x" * 43
    res = remote(cli, server, "runs", "list", INFRA_TOKEN=token)
    assert res.exit_code == 2
    assert "refused the credentials (401)" in said(res) and "INFRA_TOKEN" in said(res)
    assert token not in res.output and "Traceback" not in res.output
    res = cli.invoke(app, ["--server", server.url, "runs", "list"])
    assert res.exit_code == 2 and "needs an API token" in said(res)
    res = cli.invoke(app, ["--server", server.url, "--token", token, "runs", "list"])
    assert res.exit_code == 2 and token not in res.output  # no such option: never on the line


def test_a_role_that_may_not_gets_403(cli: CliRunner, server: LiveServer) -> None:
    res = remote(cli, server, "apply", request(server, "chain-shop"), "--check", role=Role.VIEWER)
    assert res.exit_code == 2 and "not allowed by the infra server (403)" in said(res)
    res = remote(cli, server, "runs", "list", role=Role.ADMIN)
    assert res.exit_code == 2 and "(403)" in said(res)
    assert server.tokens[Role.ADMIN] not in res.output
    res = remote(cli, server, "plan", request(server, "chain-shop"), role=Role.TAM)
    assert res.exit_code == 2 and "not assigned to project 'shop'" in said(res)


def test_unreachable_server_is_a_clear_error(cli: CliRunner, server: LiveServer) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    res = remote(cli, server, "runs", "list", INFRA_SERVER=url)
    assert res.exit_code == 2 and "cannot reach the infra server" in said(res)
    assert server.tokens[Role.ENGINEER] not in res.output and "Traceback" not in res.output


def test_token_file(cli: CliRunner, server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(server.tokens[Role.VIEWER] + "\n")
    args = ["--server", server.url, "--token-file", str(path), "runs", "list", "-o", "json"]
    res = cli.invoke(app, args, env={"INFRA_TOKEN": server.tokens[Role.ADMIN]})
    assert res.exit_code == 0, res.output  # the file wins over the variable: a viewer may list
    path.write_text("two\nlines")
    assert "one token, on one line" in said(cli.invoke(app, args))
    args[3] = str(tmp_path / "missing")
    res = cli.invoke(app, args)
    assert res.exit_code == 2 and "--token-file: cannot read" in said(res)


@pytest.mark.parametrize(
    "url", ["ftp://host", "localhost:8080", "http://user:secret@127.0.0.1:1", "http://"]
)
def test_bad_server_urls_are_refused(cli: CliRunner, url: str) -> None:
    res = cli.invoke(app, ["--server", url, "runs", "list"], env={"INFRA_TOKEN": "t" * 40})
    assert res.exit_code == 2 and "--server (or INFRA_SERVER)" in said(res)
    assert "secret" not in res.output


@pytest.mark.parametrize(
    "option",
    [
        ("apply", "--no-docs"),
        ("apply", "--change", "abcdef12"),
        ("apply", "--change-type", "emergency"),
        ("resume", "--changed", "refuse"),
    ],
)
def test_options_the_server_does_not_take_are_refused(
    cli: CliRunner, server: LiveServer, option: tuple[str, ...]
) -> None:
    command, *rest = option
    target = request(server, "chain-shop") if command == "apply" else "some-run"
    before = remote(cli, server, "runs", "list", "-o", "json").stdout
    res = remote(cli, server, command, target, *rest)
    assert res.exit_code == 2 and f"{rest[0]}: not supported with --server" in said(res)
    assert remote(cli, server, "runs", "list", "-o", "json").stdout == before


def test_nothing_is_written_where_the_client_runs(server: LiveServer, tmp_path: Path) -> None:
    """A pipeline's checkout: only the request file; the CLI creates no record, no folder."""
    import os
    import subprocess

    bare = tmp_path / "checkout"
    bare.mkdir()
    (bare / "req.yml").write_text(Path(request(server, "chain-other")).read_text())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("INFRA_")},
        "INFRA_SERVER": server.url,
        "INFRA_TOKEN": server.tokens[Role.ENGINEER],
    }
    argv = [
        sys.executable,
        "-m",
        "infra_automation.cli",
        "apply",
        "req.yml",
        "--check",
        "-o",
        "json",
    ]
    done = subprocess.run(
        argv, cwd=bare, env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "success"
    assert sorted(p.name for p in bare.iterdir()) == ["req.yml"]


def test_without_a_server_nothing_changes(cli: CliRunner, server: LiveServer) -> None:
    """No --server, no INFRA_SERVER: the local record, not the server's users."""
    res = local(cli, server, "apply", request(server, "chain-shop"), "--no-docs", "-o", "json")
    assert res.exit_code == 0
    run = json.loads(
        local(cli, server, "runs", "show", json.loads(res.stdout)["run_id"], "-o", "json").stdout
    )
    assert run["requester"] == "engineer-user"  # from the request file, not a token
