"""Scheduler, on SQLite and PostgreSQL: dependency order, real overlap (from the RECORD's
timestamps), failures skip only dependents, step boundary, typed params/outputs, check mode,
targets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from db_backends import database_url  # noqa: F401 - the fixture, over both backends
from engine_helpers import Calls, step

from infra_automation.config import Settings, load_settings
from infra_automation.engine import Engine
from infra_automation.record import RunRecord, StepRecord
from infra_automation.results import Status

Make = Callable[..., Any]


@pytest.fixture
def settings(root: Path, database_url: str) -> Settings:  # noqa: F811 - over both backends
    return load_settings(root, env={"INFRA_DATABASE_URL": database_url})


def _span(s: StepRecord) -> tuple[float, float]:
    assert s.started_at is not None and s.finished_at is not None
    return s.started_at.timestamp(), s.finished_at.timestamp()


def _before(run: RunRecord, first: str, then: str) -> bool:
    return _span(run.step(first))[1] <= _span(run.step(then))[0]


def _overlap(run: RunRecord, a: str, b: str) -> bool:
    (a0, a1), (b0, b1) = _span(run.step(a)), _span(run.step(b))
    return a0 < b1 and b0 < a1


def test_chain_runs_in_dependency_order(engine: Engine, request_for: Make) -> None:
    req = request_for(
        "chain",
        [
            step("c", "core.sleep", needs=["b"], params={"seconds": 0.02}),
            step("a", "core.sleep", params={"seconds": 0.02}),
            step("b", "core.sleep", needs=["a"], params={"seconds": 0.02}),
        ],
    )
    result = engine.apply(req, parallel=4)
    assert not result.failed
    run = engine.store.get_run(result.run_id)
    assert run.status == "success"
    assert _before(run, "a", "b") and _before(run, "b", "c")


def test_diamond_branches_overlap_in_the_record(engine: Engine, request_for: Make) -> None:
    sleepy = {"seconds": 0.4}
    req = request_for(
        "diamond",
        [
            step("a"),
            step("b", "core.sleep", needs=["a"], params=sleepy),
            step("c", "core.sleep", needs=["a"], params=sleepy),
            step("d", needs=["b", "c"]),
        ],
    )
    run = engine.store.get_run(engine.apply(req, parallel=2).run_id)
    assert _before(run, "a", "b") and _before(run, "a", "c")
    assert _before(run, "b", "d") and _before(run, "c", "d")
    assert _overlap(run, "b", "c")


def test_steps_started_together_know_their_peers_of_the_same_executor(
    engine: Engine, request_for: Make, calls: Calls
) -> None:
    """``StepContext.peers``: the steps started in the same round with the same executor
    (os.playbook batches them); a round is bounded by ``parallel``."""
    req = request_for(
        "peers",
        [
            step("a", "test.record"),
            step("b", "test.record", needs=["a"]),
            step("c", "test.record", needs=["a"]),
            step("d", "test.record", needs=["a"]),
            step("s", "core.sleep", needs=["a"], params={"seconds": 0.01}),  # another executor
            step("e", "test.record", needs=["b", "c", "d", "s"]),
        ],
    )
    assert not engine.apply(req, parallel=4).failed
    peers = {i["step"]: set(i["peers"]) for i in calls.items}
    assert peers == {"a": set(), "b": {"c", "d"}, "c": {"b", "d"}, "d": {"b", "c"}, "e": set()}
    calls.items.clear()
    assert not engine.apply(req, parallel=2).failed
    peers = {i["step"]: set(i["peers"]) for i in calls.items}
    assert peers["b"] == {"c"} and peers["c"] == {"b"}  # b, c start; d (with s) later
    assert peers["d"] == set() and peers["e"] == set()


def test_a_step_knows_its_followers_prepared_with_the_params_they_start_with(
    engine: Engine, request_for: Make, calls: Calls
) -> None:
    """``StepContext.followers``: the steps that wait for this one only, with its executor,
    whose params do not name it, rendered from the outputs known when it starts, as each
    of them later starts with."""
    req = request_for(
        "followers",
        [
            step("a", "test.record", params={"value": "A"}),
            step("x", "test.record", params={"value": "X", "sleep": 0.3}),
            step("b", "test.record", needs=["a"], params={"value": "b"}),
            step("n", "test.record", needs=["a"], params={"value": "{{ steps.a.outputs.value }}"}),
            step("w", "test.record", needs=["a", "x"], params={"value": "w"}),  # x still runs
            step("s", "core.sleep", needs=["a"], params={"seconds": 0.01}),  # another executor
        ],
    )
    assert not engine.apply(req, parallel=4).failed
    seen = {i["step"]: i for i in calls.items}
    assert seen["a"]["followers"] == {"b": "b"}
    assert seen["b"]["params"]["value"] == "b"  # as prepared
    assert seen["b"]["followers"] == seen["x"]["followers"] == {}


def test_parallel_one_runs_one_at_a_time(engine: Engine, request_for: Make) -> None:
    sleepy = {"seconds": 0.1}
    req = request_for("serial", [step(x, "core.sleep", params=sleepy) for x in "abc"])
    run = engine.store.get_run(engine.apply(req, parallel=1).run_id)
    assert not any(_overlap(run, x, y) for x, y in [("a", "b"), ("a", "c"), ("b", "c")])


def test_failure_skips_only_its_dependents(engine: Engine, request_for: Make) -> None:
    req = request_for(
        "branches",
        [
            step("root"),
            step("bad", "core.fail", needs=["root"], params={"message": "disk full"}),
            step("after_bad", needs=["bad"]),
            step("far", needs=["after_bad"]),
            step("good", "core.sleep", needs=["root"], params={"seconds": 0.05}),
            step("after_good", needs=["good"]),
        ],
    )
    result = engine.apply(req)
    assert result.failed_steps == ("bad",)
    assert set(result.skipped_steps) == {"after_bad", "far"}
    assert result.steps["after_good"].status is Status.SUCCESS
    run = engine.store.get_run(result.run_id)
    assert run.status == "failed"
    assert run.step("bad").error == "disk full"
    assert run.step("after_bad").error == "dependency 'bad' failed"
    assert run.step("far").error == "dependency 'after_bad' skipped"
    assert run.step("far").started_at is None


def test_exception_in_executor_is_a_failed_step(engine: Engine, request_for: Make) -> None:
    req = request_for("boom", [step("a", "test.boom"), step("b", needs=["a"]), step("c")])
    result = engine.apply(req)
    assert result.steps["a"].status is Status.FAILED
    assert result.steps["a"].error == "RuntimeError: boom in apply"
    assert result.steps["b"].status is Status.SKIPPED
    assert result.steps["c"].status is Status.SUCCESS


def test_outputs_flow_typed_to_downstream_steps(
    engine: Engine, request_for: Make, calls: Calls
) -> None:
    req = request_for(
        "flow",
        [
            step(
                "a",
                "test.record",
                params={"value": "{{ project }}-{{ params.size }}", "count": "{{ params.size }}"},
            ),
            step(
                "b",
                "test.record",
                needs=["a"],
                params={
                    "value": "got {{ steps.a.outputs.value }}",
                    "count": "{{ steps.a.outputs.count + 1 }}",
                },
            ),
        ],
        params={"size": {"type": "integer", "default": 3}},
    )
    result = engine.apply(req)
    assert result.steps["b"].outputs == {"value": "got shop-3", "count": 4}
    by_step = {c["step"]: c for c in calls.items}
    assert by_step["b"]["upstream"] == {"a": {"value": "shop-3", "count": 3}}


def test_rendered_params_are_validated_before_the_step_runs(
    engine: Engine, request_for: Make, calls: Calls
) -> None:
    req = request_for(
        "badparams",
        [step("a", "test.record", params={"count": "{{ params.word }}"})],
        params={"word": {"default": "many"}},
    )
    result = engine.apply(req)
    assert result.steps["a"].status is Status.FAILED
    assert result.steps["a"].error is not None
    assert result.steps["a"].error.startswith("invalid params: count:")
    assert calls.items == []  # the executor never ran


def test_invalid_outputs_fail_the_step(engine: Engine, request_for: Make) -> None:
    result = engine.apply(request_for("badout", [step("a", "test.badout")]))
    assert result.steps["a"].status is Status.FAILED
    assert "invalid outputs: count" in (result.steps["a"].error or "")


def test_check_mode_previews_and_changes_nothing(
    engine: Engine, request_for: Make, calls: Calls
) -> None:
    req = request_for(
        "check",
        [
            step("a", "test.record", params={"value": "v"}),
            step("b", "test.nocheck", needs=["a"]),
            step("c", needs=["b"]),
        ],
    )
    result = engine.apply(req, check=True)
    assert calls.steps("apply") == [] and calls.steps("preview") == ["a"]
    assert result.check
    assert result.steps["b"].status is Status.SKIPPED
    assert result.steps["b"].error == "test.nocheck does not support check mode"
    assert result.steps["c"].error == "dependency 'b' skipped"
    assert engine.store.get_run(result.run_id).check


def test_targets_group_hosts_and_expressions(
    engine: Engine, request_for: Make, calls: Calls
) -> None:
    req = request_for(
        "targets",
        [
            step("g", "test.record", targets={"group": "routers"}),
            step("h", "test.record", targets={"hosts": ["debian1", "{{ params.router }}"]}),
            step("names", "core.noop", params={"echo": {"vms": ["{{ project }}-web1", "x-db1"]}}),
            step("e", "test.record", needs=["names"], targets="{{ steps.names.outputs.vms }}"),
            step("bad", "test.record", targets={"group": "nope"}),
            step("evil", "test.record", targets="{{ ['a\\nb'] }}"),
        ],
        params={"router": {"default": "edge"}},
    )
    result = engine.apply(req)
    targets = {c["step"]: c["targets"] for c in calls.items}
    assert targets["g"] == ("core", "edge")
    assert targets["h"] == ("debian1", "edge")
    assert targets["e"] == ("shop-web1", "x-db1")
    assert "no group 'nope'" in (result.steps["bad"].error or "")
    assert "not allowed" in (result.steps["evil"].error or "")
    assert "bad" not in targets and "evil" not in targets


def test_step_events_are_recorded(engine: Engine, request_for: Make) -> None:
    result = engine.apply(request_for("logs", [step("a", "test.record", params={"value": "x"})]))
    logs = engine.store.events(result.run_id, kind="step.log")
    assert [e.data for e in logs] == [
        {"kind": "task", "host": "none", "task": "record x", "status": "ok"}
    ]
