"""Planner: waves, refusals naming the offending steps, references, when:, outputs forms."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import step

from infra_automation.exceptions import (
    CycleError,
    ExecutorNotFound,
    PlanningError,
    ReferenceError_,
    UnknownStepError,
)
from infra_automation.planner import Plan

MakePlan = Callable[..., Plan]


@pytest.fixture
def plan_of(engine: Any, request_for: Callable[..., Any]) -> MakePlan:
    def make(steps: list[dict[str, Any]], **kwargs: Any) -> Plan:
        return engine.plan(request_for("svc", steps, **kwargs))  # type: ignore[no-any-return]

    return make


def test_chain_is_one_step_per_wave(plan_of: MakePlan) -> None:
    plan = plan_of([step("c", needs=["b"]), step("a"), step("b", needs=["a"])])
    assert plan.waves == [["a"], ["b"], ["c"]]
    assert [s.id for s in plan.steps] == ["a", "b", "c"]


def test_diamond_waves_and_owners(plan_of: MakePlan) -> None:
    plan = plan_of(
        [
            step("a", department="network"),
            step("b", needs=["a"], department="vmware"),
            step("c", needs=["a"], department="os"),
            step("d", needs=["b", "c"]),
        ]
    )
    assert plan.waves == [["a"], ["b", "c"], ["d"]]
    assert {s.id: s.department for s in plan.steps} == {
        "a": "network",
        "b": "vmware",
        "c": "os",
        "d": "core",
    }
    assert plan.step("d").needs == ("b", "c")


def test_cycle_is_refused_naming_the_loop(plan_of: MakePlan) -> None:
    with pytest.raises(CycleError) as info:
        plan_of([step("a", needs=["c"]), step("b", needs=["a"]), step("c", needs=["b"]), step("z")])
    assert set(info.value.cycle) == {"a", "b", "c"}
    assert info.value.cycle[0] == info.value.cycle[-1]
    assert "->" in str(info.value)


def test_self_dependency_is_a_cycle(plan_of: MakePlan) -> None:
    with pytest.raises(CycleError, match="a -> a"):
        plan_of([step("a", needs=["a"])])


def test_unknown_dependency(plan_of: MakePlan) -> None:
    with pytest.raises(UnknownStepError, match="step 'b' needs unknown step 'ghost'"):
        plan_of([step("a"), step("b", needs=["ghost"])])


def test_unknown_executor(plan_of: MakePlan) -> None:
    with pytest.raises(ExecutorNotFound, match=r"step 'a': no executor 'network\.teleport'"):
        plan_of([step("a", executor="network.teleport")])


def test_reference_to_a_step_that_is_not_upstream(plan_of: MakePlan) -> None:
    steps = [
        step("a", "test.record"),
        step("b", "test.record"),
        step("c", "test.record", needs=["b"], params={"value": "{{ steps.a.outputs.value }}"}),
    ]
    with pytest.raises(ReferenceError_, match=r"step 'c' params\.value.*step 'a'.*not upstream"):
        plan_of(steps)


def test_transitive_upstream_reference_is_allowed(plan_of: MakePlan) -> None:
    plan = plan_of(
        [
            step("a", "test.record"),
            step("b", needs=["a"]),
            step(
                "c",
                "test.record",
                needs=["b"],
                params={"value": "{{ steps['a'].outputs['value'] }}-x"},
            ),
        ]
    )
    assert plan.waves == [["a"], ["b"], ["c"]]


def test_reference_to_unknown_step_and_unknown_field(plan_of: MakePlan) -> None:
    with pytest.raises(UnknownStepError, match="unknown step 'nope'"):
        plan_of([step("a", params={"echo": {"x": "{{ steps.nope.outputs.x }}"}})])
    with pytest.raises(ReferenceError_, match=r"has no output 'vlan'.*outputs: value, count"):
        plan_of(
            [
                step("a", "test.record"),
                step("b", needs=["a"], params={"echo": {"x": "{{ steps.a.outputs.vlan }}"}}),
            ]
        )


def test_free_form_outputs_accept_any_field(plan_of: MakePlan) -> None:
    plan = plan_of(
        [step("a"), step("b", needs=["a"], params={"echo": {"x": "{{ steps.a.outputs.any }}"}})]
    )
    assert len(plan.steps) == 2


def test_steps_must_be_read_through_outputs(plan_of: MakePlan) -> None:
    with pytest.raises(ReferenceError_, match=r"only steps\.a\.outputs"):
        plan_of([step("a"), step("b", needs=["a"], params={"echo": {"x": "{{ steps.a.status }}"}})])
    with pytest.raises(ReferenceError_, match="must be read as"):
        plan_of([step("a"), step("b", needs=["a"], params={"echo": {"x": "{{ steps[project] }}"}})])


def test_targets_expressions_are_checked_too(plan_of: MakePlan) -> None:
    with pytest.raises(ReferenceError_, match="targets"):
        plan_of([step("a"), step("b", targets="{{ steps.a.outputs.names }}")])


def test_unknown_request_parameter(plan_of: MakePlan) -> None:
    with pytest.raises(PlanningError, match=r"unknown parameter 'params\.size'"):
        plan_of([step("a", params={"echo": {"x": "{{ params.size }}"}})])


def test_invalid_expression_syntax(plan_of: MakePlan) -> None:
    with pytest.raises(PlanningError, match="invalid expression"):
        plan_of([step("a", params={"echo": {"x": "{{ params. }}"}})])


def test_static_params_are_validated_at_plan_time(plan_of: MakePlan) -> None:
    with pytest.raises(PlanningError, match=r"step 'a' \(core.sleep\).*params\.seconds"):
        plan_of([step("a", "core.sleep", params={"seconds": -1})])
    with pytest.raises(PlanningError, match=r"params\.colour.*Extra inputs"):
        plan_of([step("a", "core.noop", params={"colour": "red"})])
    # a templated value is checked when the step runs, not now
    plan = plan_of(
        [step("a", "core.sleep", params={"seconds": "{{ params.pause }}"})],
        params={"pause": {"type": "string", "default": "soon"}},
    )
    assert plan.steps[0].params == {"seconds": "{{ params.pause }}"}


OPTIONAL = [
    step("vms"),
    step("backup", needs=["vms"], when="params.backup"),
    step("monitoring", needs=["backup"], when="{{ params.monitoring }}"),
    step("docs", needs=["backup", "monitoring"]),
]
FLAGS = {
    "backup": {"type": "boolean", "default": False},
    "monitoring": {"type": "boolean", "default": True},
}


def test_when_leaves_steps_out_and_keeps_order(plan_of: MakePlan) -> None:
    plan = plan_of(OPTIONAL, params=FLAGS)
    assert plan.left_out == ("backup",)
    assert plan.waves == [["vms"], ["monitoring"], ["docs"]]
    assert plan.step("monitoring").needs == ("vms",)  # inherited from the left-out step
    plan = plan_of(OPTIONAL, params=FLAGS, values={"backup": True, "monitoring": False})
    assert plan.left_out == ("monitoring",)
    assert plan.step("docs").needs == ("backup",)


def test_reading_outputs_of_a_left_out_step_is_refused(plan_of: MakePlan) -> None:
    steps = [
        step("a", when=False),
        step("b", needs=["a"], params={"echo": {"x": "{{ steps.a.outputs.x }}"}}),
    ]
    with pytest.raises(ReferenceError_, match="'a', which is left out"):
        plan_of(steps)


def test_when_must_be_boolean(plan_of: MakePlan) -> None:
    with pytest.raises(PlanningError, match="'when' must be true or false"):
        plan_of([step("a", when="params.name")], params={"name": {"default": "x"}})
    with pytest.raises(PlanningError, match="cannot evaluate 'when'"):
        plan_of([step("a", when="steps.b.outputs")])


def test_json_and_mermaid(plan_of: MakePlan) -> None:
    plan = plan_of([step("a", department="network"), step("b", needs=["a"])])
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["waves"] == [["a"], ["b"]]
    assert data["steps"][1] == {
        "id": "b",
        "department": "core",
        "executor": "core.noop",
        "needs": ["a"],
        "wave": 1,
        "description": "",
        "params": {},
        "targets": None,
        "fingerprint": plan.step("b").fingerprint,
    }
    assert len(plan.step("b").fingerprint) == 64
    assert data["request"]["project"] == "shop"
    mermaid = plan.to_mermaid()
    assert mermaid.startswith("flowchart LR\n")
    assert '  subgraph dept_network["network"]\n    step_a["a<br/>core.noop"]\n  end' in mermaid
    assert "  step_a --> step_b\n" in mermaid


def test_planning_a_big_plan_is_linear(plan_of: MakePlan) -> None:
    steps = [step(f"s{i}", needs=[f"s{i - 1}"] if i else []) for i in range(2000)]
    plan = plan_of(steps)
    assert len(plan.waves) == 2000


# Runs in a fresh interpreter where importing pyVmomi/pyVim fails, as in an API process
# installed without the vmware extra.
_PLAN_WITHOUT_VMWARE_SDK = """
import sys
from pathlib import Path


class RefuseVmwareSdk:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("pyVmomi", "pyVim"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, RefuseVmwareSdk())
from infra_automation.catalog import load_catalog
from infra_automation.executors import REGISTRY
from infra_automation.planner import build_plan
from infra_automation.request import load_request

root = Path(sys.argv[1])
catalog = load_catalog(root / "catalog")
request = load_request(root / "requests" / "example-landscape.yml", catalog)
plan = build_plan(catalog.get(request.service), request, REGISTRY)
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ("pyVmomi", "pyVim"))
print(" ".join(s.id for s in plan.steps), "|", ",".join(loaded))
"""


def test_the_landscape_plans_without_the_vmware_sdk() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _PLAN_WITHOUT_VMWARE_SDK, str(root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    steps, _, loaded = proc.stdout.strip().partition(" | ")
    assert "vms" in steps.split() and "portgroup" in steps.split()
    assert loaded == ""  # nothing of the SDK was imported, not even partly
