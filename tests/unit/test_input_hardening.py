"""Hostile input through the ``infra`` CLI: each case is a clear error and exit 2 (never a
traceback), and no secret reaches stderr, --output json, the JUnit file or the run record."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from engine_helpers import step, write_request, write_service
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from infra_automation import secrets
from infra_automation.cli import app
from infra_automation.executors import REGISTRY, ExecutorInfo, StepContext
from infra_automation.results import StepResult

SECRET = "Tr0ub4dor-and-3"


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretReader:
    """Reads ``db_password`` from the inventory's secrets, as a real executor would."""

    info = ExecutorInfo(
        key="test.secretread", department="test", description="reads a secret", params=NoParams
    )

    def preview(self, ctx: StepContext) -> StepResult:
        assert ctx.secrets is not None
        return StepResult.success(changed=bool(ctx.secrets.get("db_password")))

    def apply(self, ctx: StepContext) -> StepResult:
        return self.preview(ctx)


@pytest.fixture
def cli(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.delenv("INFRA_PLUGINS", raising=False)
    monkeypatch.delenv("INFRA_DATABASE_URL", raising=False)
    monkeypatch.delenv("INFRA_SECRETS_BACKEND", raising=False)
    monkeypatch.setattr(secrets, "REDACTOR", secrets.Redactor())
    write_service(root, "chain", [step("a"), step("b", needs=["a"])])
    write_request(root, "chain")
    REGISTRY.register("test.secretread", SecretReader, replace=True)
    yield CliRunner()
    REGISTRY.unregister("test.secretread")


def run(cli: CliRunner, root: Path, *args: str) -> Result:
    return cli.invoke(app, ["--root", str(root), *args])


def flat(text: str) -> str:
    """stderr without the console's line wrapping."""
    return text.replace("\n", "")


def _everything_written(root: Path) -> str:
    texts = []
    for path in root.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def test_a_typo_in_the_secrets_file_never_leaks_the_secret(
    cli: CliRunner, root: Path, tmp_path: Path
) -> None:
    generated = root / "inventories" / "lab" / "generated"
    generated.mkdir()
    (generated / "secrets.yml").write_text(f'db_password: "{SECRET}\n')
    write_service(root, "needs-secret", [step("read", "test.secretread")])
    write_request(root, "needs-secret")
    junit = tmp_path / "report.xml"
    res = run(
        cli, root, "apply", str(root / "requests/needs-secret.yml"), "-o", "json",
        "--junit", str(junit), "--no-docs",
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    error = json.loads(res.stdout)["steps"]["read"]["error"]
    assert "secrets.yml:2:1" in error and "line 1, column 14" in error
    written = _everything_written(root).replace((generated / "secrets.yml").read_text(), "")
    for place in (res.stdout, res.stderr, junit.read_text(), written):
        assert SECRET not in place and "Tr0ub4dor" not in place


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x00\xff\xfe binary \x89PNG", "not UTF-8 text"),
        ("service: chain\nproject: shop\n".encode("utf-16"), "not UTF-8 text"),
        (b"[" * 50_000, "nested deeper than"),
        (b"{a: " * 50_000, "nested deeper than"),
        (b"service: chain\nproject: shop\nparams: {}\nproject: other\n", "duplicate key 'project'"),
        (b"a: &a [x, x]\nb: &b [*a, *a]\nservice: *b\n", "aliases"),
    ],
)
def test_hostile_request_files_are_invalid_input(
    cli: CliRunner, root: Path, content: bytes, expected: str
) -> None:
    req = root / "requests" / "hostile.yml"
    req.write_bytes(content)
    for command in ("plan", "apply"):
        extra = ["--no-docs"] if command == "apply" else []
        res = run(cli, root, command, str(req), *extra)
        assert res.exit_code == 2, res.output
        assert res.exception is None or isinstance(res.exception, SystemExit)
        assert f"invalid {req}" in flat(res.stderr) and expected in flat(res.stderr)
    assert json.loads(run(cli, root, "runs", "list", "-o", "json").stdout) == []


def test_a_fifo_or_device_as_request_is_refused_without_hanging(cli: CliRunner, root: Path) -> None:
    fifo = root / "requests" / "fifo.yml"
    os.mkfifo(fifo)
    results: list[Result] = []
    worker = threading.Thread(target=lambda: results.append(run(cli, root, "plan", str(fifo))))
    worker.daemon = True
    worker.start()
    worker.join(10)
    assert results, "infra plan blocked on a FIFO"
    assert results[0].exit_code == 2 and "not a regular file" in flat(results[0].stderr)
    res = run(cli, root, "plan", "/dev/zero")
    assert res.exit_code == 2 and "not a regular file" in flat(res.stderr)
    huge = root / "requests" / "huge.yml"
    with huge.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    res = run(cli, root, "plan", str(huge))
    assert res.exit_code == 2 and "larger than" in flat(res.stderr)


def test_control_characters_in_keys_are_shown_escaped(cli: CliRunner, root: Path) -> None:
    req = root / "requests" / "controls.yml"
    req.write_text(
        'service: chain\nproject: shop\n"evil\\e[31m\\u202e\\x9b": 1\n'
        'params: {"w\\u2066x\\x07": 1}\n'
    )
    res = run(cli, root, "plan", str(req))
    assert res.exit_code == 2
    for raw in ("\x1b", "\u202e", "\x9b", "\u2066", "\x07"):
        assert raw not in flat(res.stderr)
    assert "evil\\x1b[31m\\u202e\\x9b" in flat(res.stderr) and "w\\u2066x\\x07" in flat(res.stderr)


def test_an_unwritable_project_root_is_a_clear_error(cli: CliRunner, root: Path) -> None:
    (root / ".infra").write_text("not a folder")  # as root, permissions would not stop us
    res = run(cli, root, "apply", str(root / "requests/chain.yml"), "--no-docs")
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "error" in flat(res.stderr) and ".infra" in flat(res.stderr)


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_a_bad_junit_path_is_refused_before_anything_runs(
    cli: CliRunner, root: Path, tmp_path: Path, where: str
) -> None:
    blocker = tmp_path / "blocker"
    if where == "folder":
        blocker.mkdir()
        junit = blocker
    else:
        blocker.write_text("a file")
        junit = blocker / "report.xml"
    res = run(
        cli, root, "apply", str(root / "requests/chain.yml"), "--no-docs", "--junit", str(junit)
    )
    assert res.exit_code == 2, res.output
    assert "--junit" in flat(res.stderr) and str(junit) in flat(res.stderr)
    runs = run(cli, root, "runs", "list", "-o", "json")
    assert json.loads(runs.stdout) == []  # nothing ran


@pytest.mark.parametrize("driver", ["psycopg", "nodriver"])
def test_database_passwords_are_never_printed(
    cli: CliRunner, root: Path, monkeypatch: pytest.MonkeyPatch, driver: str
) -> None:
    url = f"postgresql+{driver}://infra:db-pass-4711@127.0.0.1:1/runs"
    monkeypatch.setenv("INFRA_DATABASE_URL", url)
    res = run(cli, root, "runs", "list")
    assert res.exit_code == 2, res.output
    assert "db-pass-4711" not in res.output and "127.0.0.1:1" in flat(res.stderr)


def test_the_catalog_refuses_duplicate_keys(cli: CliRunner, root: Path) -> None:
    path = root / "catalog" / "chain.yml"
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(data) + "name: chain\n")
    res = run(cli, root, "catalog", "list")
    assert (
        res.exit_code == 2
        and "duplicate key 'name'" in flat(res.stderr)
        and "chain.yml" in flat(res.stderr)
    )


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "ci"


def test_the_github_example_never_runs_pr_code_on_the_infrastructure_runner() -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    events = workflow[True]  # YAML 1.1 reads the key `on` as True
    assert "pull_request_target" in events and workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        steps = job["steps"]
        for s in steps:  # event data reaches scripts as environment, never spliced into them
            assert "${{" not in s.get("run", ""), f"{name}: {s['run'][:40]}"
        if "self-hosted" not in job["runs-on"]:
            assert "pull_request_target" not in job["if"]
            continue
        assert "'pull_request'" not in job["if"], f"{name} runs a PR's code on the infra runner"
        checkout = next(s for s in steps if s.get("uses", "").startswith("actions/checkout"))
        ref = checkout.get("with", {}).get("ref", "")
        assert "head" not in ref and "merge" not in ref, f"{name} checks out the PR"
        if "pull_request_target" in job["if"]:
            assert ref == "${{ github.event.pull_request.base.sha }}"
            assert "environment" in job  # a maintainer approves the dry run


def test_the_gitlab_example_keeps_mr_pipelines_off_the_infrastructure_runner() -> None:
    pipeline = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    assert "tags" not in pipeline.get("default", {})
    for name, job in pipeline.items():
        if not isinstance(job, dict) or "script" not in job:
            continue
        template = pipeline.get(job.get("extends", ""), {})
        tags = job.get("tags", template.get("tags", []))
        rules = " ".join(str(r.get("if", "")) for r in job["rules"])
        if "infra" in tags:
            assert "merge_request_event" not in rules, (
                f"{name} runs an MR's code on the infra runner"
            )
            assert "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH" in rules
        else:
            assert "VCENTER_PASSWORD" not in str(job.get("variables", {}))
