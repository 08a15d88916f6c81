"""Pinned runs: step fingerprints, the content revision, and what a resume may reuse."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import Calls, RecordExecutor, RecordOutputs, step
from pydantic import BaseModel, ConfigDict

from infra_automation.catalog import StepDef
from infra_automation.engine import Engine
from infra_automation.exceptions import ResumeRefused
from infra_automation.executors import ExecutorInfo, ExecutorRegistry, StepContext
from infra_automation.pinning import (
    PACKAGE_PREFIX,
    StepPin,
    content_files,
    content_revision,
    reusable_results,
)
from infra_automation.planner import Plan, build_plan
from infra_automation.record import RunRecord
from infra_automation.request import Request
from infra_automation.results import StepResult
from infra_automation.secrets import MASK

Make = Callable[..., Request]


class TemplateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    template: str


class TemplateExecutor:
    """Uses the content file ``templates/test/<template>`` (declared, never read here)."""

    info = ExecutorInfo(
        key="test.template",
        department="test",
        description="uses a template",
        params=TemplateParams,
        content=("templates/test/{template}", "templates/vmware/vm.yml.j2"),
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return StepResult.success()

    def apply(self, ctx: StepContext) -> StepResult:
        return StepResult.success()


CHAIN = [
    step("a", "test.record", params={"value": "from-a", "count": 1}),
    step("b", "test.record", needs=["a"], params={"value": "{{ steps.a.outputs.value }}+b"}),
    step("c", "test.record", needs=["b"], params={"value": "{{ steps.b.outputs.value }}+c"}),
    step("d", "test.record", params={"value": "independent"}),
]
TEMPLATED = [
    step("t1", "test.template", params={"template": "one.j2"}),
    step("t2", "test.template", params={"template": "two.j2"}),
    step("after", "core.noop", needs=["t1"]),
]


@pytest.fixture(autouse=True)
def _template_executor(registry: ExecutorRegistry) -> None:
    registry.register("test.template", TemplateExecutor)


@pytest.fixture
def templates(root: Path) -> Path:
    folder = root / "templates" / "test"
    folder.mkdir(parents=True)
    (folder / "one.j2").write_text("one {{ x }}\n")
    (folder / "two.j2").write_text("two {{ x }}\n")
    return folder


def plan(engine: Engine, req: Request) -> Plan:
    service = engine.catalog().get(req.service)
    return build_plan(service, req, engine.registry, root=engine.settings.root)


def first_run(engine: Engine, req: Request) -> RunRecord:
    result = engine.run(plan(engine, req))
    assert not result.failed
    return engine.store.get_run(result.run_id)


def replan(engine: Engine, request_for: Make, name: str, steps: list[dict[str, Any]]) -> Plan:
    return plan(engine, request_for(name, steps))


def test_unchanged_definitions_reuse_every_finished_step(
    engine: Engine, request_for: Make, templates: Path
) -> None:
    old = first_run(engine, request_for("chain", CHAIN + TEMPLATED))
    reuse = reusable_results(old, replan(engine, request_for, "chain", CHAIN + TEMPLATED))
    assert reuse.changed == ()
    assert set(reuse.results) == {"a", "b", "c", "d", "t1", "t2", "after"}
    assert reuse.results["a"].outputs == {"value": "from-a", "count": 1}
    reuse.refuse_changed(old.id)  # nothing changed: nothing to refuse


def test_a_catalog_change_reruns_the_changed_step_and_its_dependents(
    engine: Engine, request_for: Make
) -> None:
    old = first_run(engine, request_for("chain", CHAIN))
    changed = [dict(s) for s in CHAIN]
    changed[1] = step("b", "test.record", needs=["a"], params={"value": "new", "count": 2})
    reuse = reusable_results(old, replan(engine, request_for, "chain", changed))
    assert {c.step_id: c.kind for c in reuse.changed} == {"b": "params", "c": "upstream"}
    assert str(reuse.changed[1]) == "c: needs b, which run again"
    assert set(reuse.results) == {"a", "d"}
    with pytest.raises(ResumeRefused, match=r"(?s)- b: params.*changed.*- c: needs b") as info:
        reuse.refuse_changed(old.id)
    assert info.value.run_id == old.id and len(info.value.changes) == 2


def test_targets_when_and_needs_are_part_of_the_definition(
    engine: Engine, request_for: Make
) -> None:
    old = first_run(engine, request_for("chain", CHAIN))
    changed = [dict(s) for s in CHAIN]
    changed[3] = {**CHAIN[3], "when": True}
    changed[0] = {**CHAIN[0], "targets": {"group": "routers"}}
    reuse = reusable_results(old, replan(engine, request_for, "chain", changed))
    assert [c.step_id for c in reuse.changed] == ["a", "d", "b", "c"]
    assert reuse.results == {}


def test_a_template_change_reruns_the_steps_using_it_and_their_dependents(
    engine: Engine, request_for: Make, templates: Path
) -> None:
    old = first_run(engine, request_for("tpl", TEMPLATED))
    (templates / "one.j2").write_text("one {{ x }} changed\n")
    reuse = reusable_results(old, replan(engine, request_for, "tpl", TEMPLATED))
    assert [(c.step_id, c.kind) for c in reuse.changed] == [
        ("t1", "content"),
        ("after", "upstream"),
    ]
    assert reuse.changed[0].reason == "content file changed: templates/test/one.j2"
    assert set(reuse.results) == {"t2"}


def test_a_content_file_that_appears_changes_the_pin(
    engine: Engine, request_for: Make, templates: Path, root: Path
) -> None:
    old = first_run(engine, request_for("tpl", TEMPLATED))
    pin = StepPin.from_dict(old.plan[0]["pin"])
    assert pin is not None and pin.content is not None
    assert pin.content[f"{PACKAGE_PREFIX}templates/vmware/vm.yml.j2"]  # the package default
    own = root / "templates" / "vmware"
    own.mkdir()
    (own / "vm.yml.j2").write_text("name: {{ name }}\n")  # the root now overrides it
    reuse = reusable_results(old, replan(engine, request_for, "tpl", TEMPLATED))
    assert [c.step_id for c in reuse.changed] == ["t1", "t2", "after"]
    assert "templates/vmware/vm.yml.j2" in reuse.changed[0].reason


def test_a_changed_executor_or_output_model_is_named(
    engine: Engine, request_for: Make, registry: ExecutorRegistry, calls: Calls
) -> None:
    old = first_run(engine, request_for("chain", CHAIN))
    swapped = [dict(s) for s in CHAIN]
    swapped[3] = step("d", "core.noop")
    reuse = reusable_results(old, replan(engine, request_for, "chain", swapped))
    assert [(c.step_id, c.kind) for c in reuse.changed] == [("d", "executor")]
    assert "executor changed (test.record -> core.noop)" in reuse.changed[0].reason

    class MoreOutputs(RecordOutputs):
        extra: str = ""

    class Changed(RecordExecutor):
        info = replace(RecordExecutor.info, outputs=MoreOutputs)

    registry.register("test.record", lambda: Changed(calls), replace=True)
    reuse = reusable_results(old, replan(engine, request_for, "chain", CHAIN))
    assert {c.kind for c in reuse.changed if c.step_id in "ad"} == {"output_model"}
    assert [c.step_id for c in reuse.changed] == ["a", "d", "b", "c"]  # plan order
    assert reuse.changed[0].reason == "output model of test.record changed"


def test_a_record_without_fingerprints_reruns_everything_and_says_why(
    engine: Engine, request_for: Make
) -> None:
    old = first_run(engine, request_for("chain", CHAIN))
    older = replace(
        old,
        plan=tuple(
            {k: v for k, v in i.items() if k not in ("fingerprint", "pin")} for i in old.plan
        ),
    )
    reuse = reusable_results(older, replan(engine, request_for, "chain", CHAIN))
    assert reuse.results == {}
    assert [c.step_id for c in reuse.changed] == ["a", "d", "b", "c"]
    assert {c.kind for c in reuse.changed} == {"unpinned"}
    assert "no definition fingerprint" in reuse.changed[0].reason

    garbled = replace(old, plan=tuple({**i, "fingerprint": "x", "pin": "?"} for i in old.plan))
    reuse = reusable_results(garbled, replan(engine, request_for, "chain", CHAIN))
    assert {c.kind for c in reuse.changed} == {"unpinned"} and reuse.results == {}


def test_a_masked_output_is_recomputed_without_rerunning_dependents(
    engine: Engine, request_for: Make
) -> None:
    old = first_run(engine, request_for("chain", CHAIN))
    masked = replace(
        old,
        steps=tuple(
            replace(s, outputs={**s.outputs, "value": MASK}) if s.step_id == "a" else s
            for s in old.steps
        ),
    )
    reuse = reusable_results(masked, replan(engine, request_for, "chain", CHAIN))
    assert set(reuse.results) == {"b", "c", "d"} and reuse.changed == ()


def test_a_step_param_never_names_a_file_outside_the_root(
    engine: Engine, request_for: Make, templates: Path
) -> None:
    steps = [step("t1", "test.template", params={"template": "../../../../etc/passwd"})]
    pin = plan(engine, request_for("tpl", steps)).steps[0].pin
    assert pin is not None and pin.content is not None
    # the unusable value becomes a wildcard over the declared folder
    assert {p for p in pin.content if not p.startswith(PACKAGE_PREFIX)} == {
        "templates/test/one.j2",
        "templates/test/two.j2",
    }


def test_the_content_revision_names_catalog_files_and_git_commit(
    engine: Engine, request_for: Make, templates: Path, root: Path
) -> None:
    the_plan = plan(engine, request_for("tpl", TEMPLATED))
    assert content_revision(the_plan, root)["git"] is None  # tmp_path is no checkout
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "content"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    revision = content_revision(the_plan, root)
    catalog = root / "catalog" / "tpl.yml"
    assert revision["catalog"] == {
        "service": "tpl",
        "file": "catalog/tpl.yml",
        "sha256": hashlib.sha256(catalog.read_bytes()).hexdigest(),
    }
    one = hashlib.sha256((templates / "one.j2").read_bytes()).hexdigest()
    assert revision["files"]["templates/test/one.j2"] == one
    assert set(revision["files"]) == {
        "templates/test/one.j2",
        "templates/test/two.j2",
        f"{PACKAGE_PREFIX}templates/vmware/vm.yml.j2",
    }
    assert revision["git"] == {"commit": head.strip(), "dirty": False}
    (templates / "two.j2").write_text("edited\n")
    assert content_revision(the_plan, root, catalog_file=catalog)["git"]["dirty"] is True


def test_a_folder_pattern_pins_every_file_below_it(tmp_path: Path) -> None:
    (tmp_path / "playbooks" / "roles" / "web" / "tasks").mkdir(parents=True)
    (tmp_path / "playbooks" / "web.yml").write_text("- hosts: all\n")
    (tmp_path / "playbooks" / "roles" / "web" / "tasks" / "main.yml").write_text("[]\n")
    web = StepDef(id="web", executor="os.playbook", params={"playbook": "web.yml"})
    patterns = ("playbooks/{playbook}", "playbooks/roles/**", "playbooks/absent.yml")
    assert list(content_files(patterns, web, tmp_path).items()) == [
        ("playbooks/absent.yml", "missing"),
        ("playbooks/roles/web/tasks/main.yml", hashlib.sha256(b"[]\n").hexdigest()),
        ("playbooks/web.yml", hashlib.sha256(b"- hosts: all\n").hexdigest()),
    ]
