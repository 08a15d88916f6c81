"""The workers' step watcher (pure logic, the record's reads replaced): a step seen running,
whose lease is gone when the leases are read next, is an orphan only if it still reads running
afterwards — a fast step finishes and releases its lease between the two reads."""

from __future__ import annotations

from typing import Any

from infra_automation.workers.dispatch import StepWatcher, _Wait


class Reads(StepWatcher):
    """States answered in turn (one mapping per read); no lease is live."""

    def __init__(self, *answers: dict[tuple[str, str], str]) -> None:
        super().__init__(db=None, resend_after=60.0)  # type: ignore[arg-type]
        self.answers = list(answers)

    def _states(self, run_ids: Any) -> dict[tuple[str, str], str]:
        return self.answers.pop(0)

    def _live_leases(self, waits: Any) -> set[str]:
        return set()


def _wait(step: str) -> _Wait:
    return _Wait("run-1", step, resend=lambda: None)


def test_a_step_that_finished_between_the_reads_is_finished_not_interrupted() -> None:
    watcher = Reads({("run-1", "a"): "running"}, {("run-1", "a"): "success"})
    a = _wait("a")
    watcher._look([a])
    assert a.outcome == "finished"


def test_a_step_still_running_without_its_lease_is_interrupted() -> None:
    watcher = Reads({("run-1", "a"): "running"}, {("run-1", "a"): "running"})
    a = _wait("a")
    watcher._look([a])
    assert a.outcome == "interrupted"


def test_a_pending_step_that_started_meanwhile_is_left_waiting() -> None:
    """Only the steps read running are read again: one that started after the first read
    (its lease not seen) is neither an orphan nor resent."""
    first = {("run-1", "a"): "running", ("run-1", "b"): "pending"}
    again = {("run-1", "a"): "success", ("run-1", "b"): "running"}
    watcher = Reads(first, again)
    a, b = _wait("a"), _wait("b")
    watcher._look([a, b])
    assert a.outcome == "finished" and b.outcome is None
