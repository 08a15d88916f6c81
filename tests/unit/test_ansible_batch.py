"""Steps of one run started together on the same hosts share one ansible-playbook.

Real ``ansible-playbook`` runs here, on two inventory hosts with Ansible's ``local``
connection (no lab needed); the lab's landscapes run batched in every lab test.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from infra_automation.departments import ansible_batch
from infra_automation.departments.ansible import MITOGEN_ENV, PlaybookExecutor, PlaybookParams
from infra_automation.departments.ansible_batch import BATCH_ENV, Router, Slot
from infra_automation.executors.base import RunResources, StepContext
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.results import Status, StepResult

# a play of step {step}: `fail_on_<step>` fails it on those hosts
HEAD = """\
- name: Play of {step}
  hosts: all
  gather_facts: false
  tasks:
    - name: Fail where asked
      ansible.builtin.fail:
        msg: "{step} fails on {{{{ inventory_hostname }}}}"
      when: inventory_hostname in (fail_on_{step} | default([]))
"""
# ... that reports the step id it saw and its own variable
PLAY = (
    HEAD
    + """\
    - name: Report
      ansible.builtin.set_stats:
        data:
          infra_report: "{{{{ {{inventory_hostname: {{'facts': {{'step': infra_step_id,
            'department': infra_department, 'value': shared | default('')}}}}}} }}}}"
"""
)


@pytest.fixture(autouse=True)
def _stock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MITOGEN_ENV, "0")  # local connection; the lab tests run mitogen
    monkeypatch.delenv(BATCH_ENV, raising=False)


def _inventory(root: Path, hosts: tuple[str, ...] = ("h1", "h2")) -> Inventory:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    spec = InventoryFile.model_validate(
        {"name": "t", "hosts": {h: {"hostname": "127.0.0.1", "data": local} for h in hosts}}
    )
    return Inventory(spec, root)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "playbooks").mkdir()
    for step in ("a", "b", "c"):
        (tmp_path / "playbooks" / f"{step}.yml").write_text(PLAY.format(step=step))
    return tmp_path


@pytest.fixture
def resources() -> Iterator[RunResources]:
    res = RunResources()
    yield res
    assert res.close() == []


def _ctx(
    root: Path, resources: RunResources, step: str, inventory: Inventory, **vars: Any
) -> StepContext:
    return StepContext(
        run_id="r1",
        project="p",
        step_id=step,
        department=f"dept-{step}",
        params=PlaybookParams(playbook=f"{step}.yml", vars=vars),
        inventory=inventory,
        targets=tuple(inventory.hosts),
        resources=resources,
        root=root,
    )


def _together(ctxs: list[StepContext], stagger: float = 0.0) -> dict[str, StepResult]:
    """Run the steps as the scheduler does: each in its thread, started at once (or
    ``stagger`` seconds apart, so they join in this order), each told the others started
    with it (its peers)."""
    results: dict[str, StepResult] = {}
    ids = [c.step_id for c in ctxs]
    ctxs = [replace(c, peers=tuple(i for i in ids if i != c.step_id)) for c in ctxs]

    def one(ctx: StepContext) -> None:
        results[ctx.step_id] = PlaybookExecutor().apply(ctx)

    threads = [threading.Thread(target=one, args=(c,)) for c in ctxs]
    for t in threads:
        t.start()
        time.sleep(stagger)
    for t in threads:
        t.join(timeout=300)
    return results


def _log(root: Path, step: str) -> str:
    return (root / ".infra" / "ansible" / "r1" / f"{step}.log").read_text()


def _facts(result: StepResult, host: str) -> Mapping[str, Any]:
    return result.outputs["hosts"][host]["facts"]  # type: ignore[no-any-return]


def test_steps_started_together_share_one_playbook_each_with_its_own_result(
    root: Path, resources: RunResources
) -> None:
    inv = _inventory(root)
    ctxs = [_ctx(root, resources, s, inv, shared="same") for s in ("a", "b", "c")]
    results = _together(ctxs)
    assert {s: r.status for s, r in results.items()} == dict.fromkeys("abc", Status.SUCCESS)
    for step, result in results.items():
        log = _log(root, step)
        assert "batch: one ansible-playbook for the steps" in log
        assert f"PLAY [Play of {step}]" in log
        assert {f"PLAY [Play of {o}]" in log for o in "abc" if o != step} == {False}
        for host in ("h1", "h2"):
            assert _facts(result, host) == {
                "step": step,
                "department": f"dept-{step}",
                "value": "same",
            }
            # its own tasks only: one skipped (fail), one ok (report); no marker, no recap
            assert result.outputs["hosts"][host]["stats"] == {
                "ok": 1,
                "changed": 0,
                "failed": 0,
                "unreachable": 0,
                "skipped": 1,
            }


def test_a_host_that_failed_one_step_still_gets_the_others(
    root: Path, resources: RunResources
) -> None:
    inv = _inventory(root)
    ctxs = [_ctx(root, resources, "a", inv, fail_on_a=["h1"])]
    ctxs += [_ctx(root, resources, s, inv) for s in ("b", "c")]
    results = _together(ctxs)
    assert results["a"].status is Status.FAILED
    failed = {t.target: t.status for t in results["a"].targets}
    assert failed == {"h1": Status.FAILED, "h2": Status.SUCCESS}
    assert "a fails on h1" in str(next(t.error for t in results["a"].targets if t.error))
    for step in ("b", "c"):
        assert results[step].status is Status.SUCCESS, results[step].error
        assert _facts(results[step], "h1")["step"] == step
        assert "batch: one ansible-playbook" in _log(root, step)


def test_steps_after_a_play_that_failed_everywhere_run_alone(
    root: Path, resources: RunResources
) -> None:
    """Ansible stops a playbook whose play failed on every host: the steps it did not reach
    run again, each alone, and only their own outcome counts."""
    inv = _inventory(root)
    ctxs = [_ctx(root, resources, "a", inv, fail_on_a=["h1", "h2"])]
    ctxs += [_ctx(root, resources, s, inv) for s in ("b", "c")]
    results = _together(ctxs, stagger=0.3)  # a first in the playbook
    assert results["a"].status is Status.FAILED
    assert {t.status for t in results["a"].targets} == {Status.FAILED}
    assert results["b"].status is results["c"].status is Status.SUCCESS
    for step in ("b", "c"):
        assert _facts(results[step], "h2")["step"] == step
    assert "alone now" in _log(root, "b") + _log(root, "c")


def test_steps_whose_variables_disagree_or_hosts_differ_run_apart(
    root: Path, resources: RunResources
) -> None:
    inv = _inventory(root)
    other = _inventory(root, ("h3",))
    ctxs = [
        _ctx(root, resources, "a", inv, shared="one"),
        _ctx(root, resources, "b", inv, shared="two"),
        _ctx(root, resources, "c", other, shared="one"),
    ]
    results = _together(ctxs)
    assert {r.status for r in results.values()} == {Status.SUCCESS}
    assert _facts(results["a"], "h1")["value"] == "one"
    assert _facts(results["b"], "h1")["value"] == "two"
    assert _facts(results["c"], "h3")["value"] == "one"
    assert {"batch:" in _log(root, s) for s in "abc"} == {False}


def test_batching_switched_off_or_misconfigured(
    root: Path, resources: RunResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = _inventory(root)
    monkeypatch.setenv(BATCH_ENV, "0")
    results = _together([_ctx(root, resources, s, inv) for s in ("a", "b")])
    assert {r.status for r in results.values()} == {Status.SUCCESS}
    assert {"batch:" in _log(root, s) for s in "ab"} == {False}
    monkeypatch.setenv(BATCH_ENV, "on")
    result = PlaybookExecutor().apply(_ctx(root, resources, "c", inv))
    assert result.status is Status.FAILED
    assert "INFRA_ANSIBLE_BATCH='on': expected 0 or 1" in str(result.error)


def _play(name: str) -> dict[str, Any]:
    return {"event": "playbook_on_play_start", "event_data": {"play": name}}


class _Job:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.output: list[str] = []

    def on_event(self, event: Mapping[str, Any]) -> bool:
        self.events.append(str(event["event"]))
        return False


class _Member:
    def __init__(self, step: str) -> None:
        self.step_id = step
        self.job = _Job()


def test_the_router_hands_events_to_the_step_of_the_last_marker() -> None:
    a, b, c = (Slot(i, _Member(s)) for i, s in enumerate("abc"))  # type: ignore[arg-type]
    router = Router([a, b, c])
    task = {"event": "runner_on_ok", "event_data": {"host": "h1"}}
    for event in (
        {"event": "playbook_on_start"},
        _play(a.marker),
        task,  # the marker's own task: no step's
        _play("Play of a"),
        task,
        _play(b.marker),
    ):
        router(event)
    assert a.ended.is_set() and a.finished  # its part ended when the next marker started
    assert not b.ended.is_set()
    for event in (_play("Play of b"), task, {"event": "playbook_on_stats", "stdout": "RECAP"}):
        router(event)
    assert a.member.job.events == ["playbook_on_play_start", "runner_on_ok"]  # type: ignore[attr-defined]
    assert b.member.job.events == ["playbook_on_play_start", "runner_on_ok"]  # type: ignore[attr-defined]
    assert c.member.job.events == []  # type: ignore[attr-defined]
    assert "RECAP\n" in b.member.job.output
    assert b.finished and not c.finished and not c.ended.is_set()  # c: at the process's end


# ... that records, on each host, when it ran (the followers' tests)
MARK = (
    HEAD
    + """\
    - name: Mark when it ran
      ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.pipe', 'date +%s.%N') }}}}"
        dest: "{{{{ marks }}}}/{step}-{{{{ inventory_hostname }}}}"
        mode: "0600"
"""
)


@pytest.fixture
def marks(root: Path) -> Path:
    for step in ("a", "b", "c"):
        (root / "playbooks" / f"{step}.yml").write_text(MARK.format(step=step))
    (root / "marks").mkdir()
    return root / "marks"


def _with_followers(
    root: Path, resources: RunResources, marks: Path, **lead_vars: Any
) -> tuple[StepContext, StepContext, StepContext]:
    """a, and b and c waiting for a only, prepared when a starts (as the scheduler does)."""
    inv = _inventory(root)
    b, c = (_ctx(root, resources, s, inv, marks=str(marks)) for s in ("b", "c"))
    a = replace(_ctx(root, resources, "a", inv, marks=str(marks), **lead_vars))
    return replace(a, followers=lambda: (b, c)), b, c


def _mark(marks: Path, step: str, host: str = "h1") -> float:
    return float((marks / f"{step}-{host}").read_text())


def test_followers_run_in_the_process_of_their_need_once_they_start(
    root: Path, resources: RunResources, marks: Path
) -> None:
    """a's result comes while its process waits at b's gate; b's and c's plays run in that
    process, each only after its step started, each with its own result and log."""
    a, b, c = _with_followers(root, resources, marks)
    first = PlaybookExecutor().apply(a)
    assert first.status is Status.SUCCESS, first.error
    time.sleep(1.0)  # the scheduler is slow to start b: its play waits for it
    assert not (marks / "b-h1").exists()
    started = time.time()
    results = _together([b, c])
    assert {s: r.status for s, r in results.items()} == {"b": Status.SUCCESS, "c": Status.SUCCESS}
    assert _mark(marks, "b") >= started and _mark(marks, "c") >= started
    assert _mark(marks, "a") < started - 0.9
    for step in "abc":
        log = _log(root, step)
        assert "batch: one ansible-playbook for the steps a, b, c" in log
        assert f"PLAY [Play of {step}]" in log
        assert {f"PLAY [Play of {o}]" in log for o in "abc" if o != step} == {False}
        assert "alone now" not in log
    assert resources.close() == []


def test_followers_of_a_step_that_failed_never_run_there(
    root: Path, resources: RunResources, marks: Path
) -> None:
    """a failed on one host: the scheduler will not start b and c, and the process ends
    at b's gate without running them."""
    a, _, _ = _with_followers(root, resources, marks, fail_on_a=["h1"])
    started = time.monotonic()
    result = PlaybookExecutor().apply(a)
    assert result.status is Status.FAILED
    assert resources.close() == []  # waits for the process: it ended at the gate
    assert time.monotonic() - started < 30
    assert (marks / "a-h2").exists() and not (marks / "a-h1").exists()
    assert sorted(p.name for p in marks.iterdir()) == ["a-h2"]


def test_a_follower_started_too_late_runs_alone(
    root: Path, resources: RunResources, marks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate waits ``GATHER_MAX`` for its step, then closes: the playbook ends there, and
    a follower that starts later runs alone; one that never starts never runs."""
    monkeypatch.setattr(ansible_batch, "GATHER_MAX", 0.5)
    a, _, c = _with_followers(root, resources, marks)
    assert PlaybookExecutor().apply(a).status is Status.SUCCESS
    time.sleep(3.0)
    result = PlaybookExecutor().apply(c)
    assert result.status is Status.SUCCESS, result.error
    assert sorted(p.name for p in marks.iterdir()) == ["a-h1", "a-h2", "c-h1", "c-h2"]
    assert "batch:" not in _log(root, "c")


def test_a_batch_waits_for_its_peers_only_never_for_a_step_started_alone(
    root: Path, resources: RunResources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step without peers starts at once; a peer that fails before its play (no such
    playbook) does not hold the others back for ``GATHER_MAX``."""

    monkeypatch.setattr(ansible_batch, "GATHER_MAX", 120.0)
    inv = _inventory(root)
    started = time.monotonic()
    alone = PlaybookExecutor().apply(_ctx(root, resources, "a", inv))
    assert alone.status is Status.SUCCESS
    assert "batch:" not in _log(root, "a")
    missing = replace(_ctx(root, resources, "x", inv), params=PlaybookParams(playbook="no.yml"))
    results = _together([_ctx(root, resources, "b", inv), _ctx(root, resources, "c", inv), missing])
    assert results["x"].status is Status.FAILED and "no playbook" in str(results["x"].error)
    assert results["b"].status is results["c"].status is Status.SUCCESS
    assert "batch: one ansible-playbook for the steps" in _log(root, "b")
    assert time.monotonic() - started < 60  # neither waited GATHER_MAX


def test_a_follower_that_fails_before_its_play_closes_its_gate_at_once(
    root: Path, resources: RunResources, marks: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b was prepared, but fails when it starts, before its play (here: its playbook went
    away): its gate closes then, not after ``GATHER_MAX``; c, behind it, runs alone."""
    monkeypatch.setattr(ansible_batch, "GATHER_MAX", 60.0)
    a, b, c = _with_followers(root, resources, marks)
    assert PlaybookExecutor().apply(a).status is Status.SUCCESS
    started = time.monotonic()
    (root / "playbooks" / "b.yml").unlink()
    failed = PlaybookExecutor().apply(b)
    assert failed.status is Status.FAILED and "no playbook" in str(failed.error)
    result = PlaybookExecutor().apply(c)
    assert result.status is Status.SUCCESS, result.error
    assert time.monotonic() - started < 30  # no gate held for GATHER_MAX
    assert sorted(p.name for p in marks.iterdir()) == ["a-h1", "a-h2", "c-h1", "c-h2"]
    assert resources.close() == []


def test_a_follower_whose_play_changed_runs_alone_never_as_prepared(
    root: Path, resources: RunResources, marks: Path
) -> None:
    """b started with other variables than prepared: its gate closes, the prepared play
    never runs, b runs alone with what it started with."""
    a, b, _ = _with_followers(root, resources, marks)
    assert PlaybookExecutor().apply(a).status is Status.SUCCESS
    other = root / "other-marks"
    other.mkdir()
    changed = replace(b, params=PlaybookParams(playbook="b.yml", vars={"marks": str(other)}))
    result = PlaybookExecutor().apply(changed)
    assert result.status is Status.SUCCESS, result.error
    assert sorted(p.name for p in other.iterdir()) == ["b-h1", "b-h2"]
    assert sorted(p.name for p in marks.iterdir()) == ["a-h1", "a-h2"]
    assert "the play prepared for this step changed: alone" in _log(root, "b")
    assert resources.close() == []
