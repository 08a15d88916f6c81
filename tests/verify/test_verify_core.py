"""The verify orchestrator and ``infra verify`` on a real engine with file-backed executors.

``test.file`` writes a file (its "target") on apply and, on verify, reads it back: missing or
different is drift, unreadable is unverifiable. ``test.plain`` stands for a third-party
executor without ``verify``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from infra_automation.cli import verify as verify_cli
from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.events import Event
from infra_automation.executors import ExecutorInfo, StepContext
from infra_automation.executors.registry import REGISTRY
from infra_automation.results import ErrorKind, StepResult
from infra_automation.verify import (
    VERIFIERS,
    ResourceCheck,
    SyncState,
    Verification,
    VerifyContext,
    VerifyResult,
    latest_verifications,
)

SERVICE = """\
name: files
description: Two files and a third-party step
owner: test-team
steps:
  - id: first
    department: os
    executor: test.file
    params: {name: a.txt, content: "alpha"}
  - id: second
    department: web
    executor: test.file
    needs: [first]
    params: {name: b.txt, content: "{{ steps.first.outputs.content }} beta"}
  - id: other
    department: dns
    executor: test.plain
    needs: [first]
"""


class FileParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    content: str


class FileOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    content: str


class FileExecutor:
    info = ExecutorInfo(
        key="test.file", department="os", description="a file", params=FileParams,
        outputs=FileOutputs,
    )  # fmt: skip

    def preview(self, ctx: StepContext) -> StepResult:
        return self.apply(ctx)

    def apply(self, ctx: StepContext) -> StepResult:
        p = ctx.typed_params(FileParams)
        path = ctx.root / "live" / p.name
        path.parent.mkdir(exist_ok=True)
        path.write_text(p.content + "\n")
        return StepResult.success(changed=True, outputs={"path": str(path), "content": p.content})

    def verify(self, ctx: VerifyContext) -> VerifyResult:
        p = ctx.typed_params(FileParams)
        path = Path(ctx.recorded["path"])
        if not path.exists():
            return VerifyResult.of(
                ResourceCheck.drifted(f"file {p.name}", expected=p.content, found="(missing)")
            )
        try:
            found = path.read_text().rstrip("\n")
        except OSError as exc:
            return VerifyResult.unverifiable(f"file {p.name}", str(exc), ErrorKind.UNREACHABLE)
        return VerifyResult.of(ResourceCheck.compare(f"file {p.name}", p.content, found))


class PlainExecutor:
    info = ExecutorInfo(key="test.plain", department="dns", description="no verify")

    def preview(self, ctx: StepContext) -> StepResult:
        return StepResult.success()

    def apply(self, ctx: StepContext) -> StepResult:
        return StepResult.success()


class PlainVerifier:
    def verify(self, ctx: VerifyContext) -> VerifyResult:
        return VerifyResult.of(ResourceCheck.in_sync("record", target=ctx.step.step_id))


class Collect:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture(autouse=True)
def executors() -> object:
    REGISTRY.register("test.file", FileExecutor, replace=True)
    REGISTRY.register("test.plain", PlainExecutor, replace=True)
    yield
    REGISTRY.unregister("test.file")
    REGISTRY.unregister("test.plain")
    VERIFIERS.unregister("test.plain")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "files.yml").write_text(SERVICE)
    (tmp_path / "inventories" / "lab").mkdir(parents=True)
    (tmp_path / "inventories" / "lab" / "inventory.yml").write_text("name: verify-test\n")
    return tmp_path


def engine(root: Path) -> Engine:
    return Engine(load_settings(root, env={}), load_observers=False)


def apply(root: Path, *, check: bool = False) -> str:
    eng = engine(root)
    try:
        request = eng.validate({"service": "files", "project": "shop", "requester": "t"})
        result = eng.apply(request, check=check)
        assert not result.failed
        return result.run_id
    finally:
        eng.close()


def verify(root: Path, observers: list[object] | None = None) -> object:
    eng = engine(root)
    try:
        return Verification(eng, observers=observers or []).run("shop")  # type: ignore[arg-type]
    finally:
        eng.close()


def test_in_sync_after_apply_but_third_party_step_is_unverifiable(root: Path) -> None:
    run_id = apply(root)
    collect = Collect()
    report = verify(root, [collect])
    states = {c.step_id: c.state for c in report.checks}  # type: ignore[attr-defined]
    assert states == {
        "first": SyncState.IN_SYNC,
        "second": SyncState.IN_SYNC,
        "other": SyncState.UNVERIFIABLE,
    }
    other = next(c for c in report.checks if c.step_id == "other")  # type: ignore[attr-defined]
    assert "test.plain has no verify" in other.reason
    assert report.based_on == (run_id,)  # type: ignore[attr-defined]
    assert report.exit_code() == 1  # type: ignore[attr-defined]
    kinds = [e.kind for e in collect.events]
    assert kinds[0] == "verify.started" and kinds[-1] == "verify.finished"
    assert kinds.count("verify.resource") == 3


def test_drift_names_resource_and_diff_and_is_recorded(root: Path) -> None:
    apply(root)
    VERIFIERS.register("test.plain", PlainVerifier)  # a registered verifier counts too
    assert verify(root).exit_code() == 0  # type: ignore[attr-defined]
    (root / "live" / "b.txt").write_text("alpha gamma\n")  # changed by hand
    (root / "live" / "a.txt").unlink()
    report = verify(root)
    assert report.exit_code() == 3  # type: ignore[attr-defined]
    drifted = {c.resource: c for c in report.checks if c.state is SyncState.DRIFTED}  # type: ignore[attr-defined]
    assert set(drifted) == {"file a.txt", "file b.txt"}
    assert "-alpha beta\n+alpha gamma" in drifted["file b.txt"].diff
    assert drifted["file a.txt"].found == "(missing)"
    recorded = latest_verifications(engine(root), "shop")
    assert [r["state"] for r in recorded] == ["drifted", "in-sync"]
    assert {c["resource"] for c in recorded[0]["open"]} == {"file a.txt", "file b.txt"}


def test_unreadable_target_and_raising_verifier_are_unverifiable_not_in_sync(root: Path) -> None:
    apply(root)
    (root / "live" / "a.txt").unlink()
    (root / "live" / "a.txt").mkdir()  # reading it fails: cannot tell

    class Boom:
        def verify(self, ctx: VerifyContext) -> VerifyResult:
            raise TimeoutError("router did not answer")

    VERIFIERS.register("test.plain", Boom)
    report = verify(root)
    by_step = {c.step_id: c for c in report.checks}  # type: ignore[attr-defined]
    assert by_step["first"].state is SyncState.UNVERIFIABLE
    assert by_step["first"].error_kind is ErrorKind.UNREACHABLE
    assert by_step["other"].state is SyncState.UNVERIFIABLE
    assert by_step["other"].error_kind is ErrorKind.TIMEOUT
    assert by_step["second"].state is SyncState.IN_SYNC
    assert report.exit_code() == 1  # type: ignore[attr-defined]


def test_dry_runs_are_not_recorded_state(root: Path) -> None:
    apply(root, check=True)
    result = CliRunner().invoke(verify_cli.app, ["--project", "shop", "--root", str(root)])
    assert result.exit_code == 2
    assert "no applied run of 'shop'" in result.output


def test_cli_json_junit_and_exit_codes(root: Path) -> None:
    apply(root)
    VERIFIERS.register("test.plain", PlainVerifier)
    runner = CliRunner()
    base = ["--root", str(root), "--no-docs"]
    ok = runner.invoke(verify_cli.app, [*base, "--all", "--output", "json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output)
    assert data["projects"][0]["state"] == "in-sync"
    (root / "live" / "b.txt").write_text("changed\n")
    junit = root / "reports" / "verify.xml"
    drift = runner.invoke(verify_cli.app, [*base, "-p", "shop", "--junit", str(junit)])
    assert drift.exit_code == 3, drift.output
    assert "drifted" in drift.output and "+changed" in drift.output
    suite = ET.parse(junit).getroot().find("testsuite")  # noqa: S314 - our own report
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "3"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "either --project P or --all"),
        (["--all", "-p", "shop"], "either --project P or --all"),
        (["-p", "nope"], "no applied run of 'nope'"),
        (["--all", "--output", "yaml"], "--output must be one of"),
    ],
)
def test_cli_invalid_input_exits_2_and_records_nothing(
    root: Path, args: list[str], message: str
) -> None:
    apply(root)
    result = CliRunner().invoke(verify_cli.app, [*args, "--root", str(root)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert latest_verifications(engine(root)) == []


def test_builtin_verifiers_load_once_under_parallel_lookups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Steps asking at the same moment all get the verifier (a race once lost some)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import infra_automation.registry as registry_module
    import infra_automation.verify as verify_module

    def slow_entry_points(group: str) -> list[object]:
        time.sleep(0.05)  # widens the window the race needed
        return []

    monkeypatch.setattr(registry_module, "entry_points", slow_entry_points)
    registry = verify_module.VerifierRegistry()
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda _: registry.get("vmware.folder"), range(16)))
    assert all(v is not None for v in found)


BUILD = """\
name: sized
description: A file whose content is a size
owner: test-team
params:
  size: {type: string, default: small}
  note: {type: string, default: built}
steps:
  - id: box
    department: os
    executor: test.file
    params: {name: box.txt, content: "{{ params.size }}"}
  - id: label
    department: web
    executor: test.file
    needs: [box]
    params: {name: label.txt, content: "{{ params.note }} {{ steps.box.outputs.content }}"}
"""
RESIZE = """\
name: sized-resize
description: Resize the box of a project built by sized
owner: test-team
modifies: {service: sized, params: [size]}
params:
  size: {type: string}
  note: {type: string, default: resized}
steps:
  - id: box
    department: os
    executor: test.file
    params: {name: box.txt, content: "{{ params.size }}"}
"""


def _run(root: Path, service: str, **params: str) -> str:
    eng = engine(root)
    try:
        request = eng.validate(
            {"service": service, "project": "shop", "requester": "t", "params": params}
        )
        result = eng.apply(request)
        assert not result.failed
        return result.run_id
    finally:
        eng.close()


def test_verify_after_an_operational_change_checks_the_build_as_changed(root: Path) -> None:
    """A change with ``modifies`` (scale, resize) does not replace the build as the plan:
    the build's steps are verified with the params the change set and the step state it
    recorded; only the params it names are taken (its own defaults are not)."""
    (root / "catalog" / "sized.yml").write_text(BUILD)
    (root / "catalog" / "sized-resize.yml").write_text(RESIZE)
    built = _run(root, "sized", note="first")
    resized = _run(root, "sized-resize", size="large")
    (root / "live" / "label.txt").write_text("first large\n")  # the label a rebuild would write
    report = verify(root)
    states = {c.step_id: c.state for c in report.checks}  # type: ignore[attr-defined]
    assert states == {"box": SyncState.IN_SYNC, "label": SyncState.IN_SYNC}, report.checks  # type: ignore[attr-defined]
    assert set(report.based_on) == {built, resized}  # type: ignore[attr-defined]
    (root / "live" / "box.txt").write_text("small\n")  # back to the build's size by hand
    box = next(c for c in verify(root).checks if c.step_id == "box")  # type: ignore[attr-defined]
    assert box.state is SyncState.DRIFTED and box.expected == "large"


def test_a_service_naming_params_it_lacks_in_modifies_is_refused(root: Path) -> None:
    from infra_automation.catalog import load_catalog
    from infra_automation.exceptions import CatalogError

    (root / "catalog" / "bad.yml").write_text(
        RESIZE.replace("name: sized-resize", "name: bad").replace(
            "params: [size]", "params: [colour]"
        )
    )
    with pytest.raises(CatalogError, match="colour"):
        load_catalog(root / "catalog")
