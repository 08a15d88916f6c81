"""Admission is atomic: of changes proposed at the same moment that touch the same
configuration item, exactly one is admitted and every other one is refused naming it, on
SQLite and on the real PostgreSQL, from threads (one connection each) and from processes.

Each contender pauses between its overlap check and its write (``widen_the_race``): without
the change lock all of them would pass the check, so these tests fail if the lock goes."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from change_helpers import admit_in_process, contender, widen_the_race

from infra_automation.changes.store import ChangeStore, State
from infra_automation.record import open_database

CONTENDERS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def store(url: str) -> Iterator[ChangeStore]:
    db = open_database(url)
    yield ChangeStore(db)
    db.dispose()


def check_one_winner(results: list[tuple[str, str, str | None]]) -> None:
    admitted = [r for r in results if r[1] == "waiting"]
    assert len(admitted) == 1, results
    winner = admitted[0][0]
    refused = [r for r in results if r[0] != winner]
    assert len(refused) == len(results) - 1
    assert all(state == "refused" and conflict == winner for _, state, conflict in refused)


@pytest.mark.parametrize("round_", range(2))
def test_threads_proposing_the_same_vm(
    store: ChangeStore, round_: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra_automation.changes import store as module

    monkeypatch.setattr(module, "_overlap", module._overlap)  # restored afterwards
    widen_the_race()
    barrier = threading.Barrier(CONTENDERS)
    results: list[tuple[str, str, str | None]] = []
    errors: list[BaseException] = []

    def propose(n: int) -> None:
        try:
            record = contender(f"p{n}", f"vm{round_}")
            barrier.wait(timeout=30)
            done = store.admit(record, State.WAITING, reason="waits for approval")
            conflict = done.conflict.id if done.conflict is not None else None
            results.append((record.id, done.change.state.value, conflict))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=propose, args=(n,)) for n in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    check_one_winner(results)
    refused = store.get(next(r[0] for r in results if r[1] == "refused"))
    assert refused.reason is not None and f"vm:vm{round_}" in refused.reason


def test_processes_proposing_the_same_vm(url: str, store: ChangeStore) -> None:
    spawn = multiprocessing.get_context("spawn")
    for round_ in range(1):  # processes take seconds to spawn: one round
        barrier = spawn.Barrier(CONTENDERS)
        queue = spawn.Queue()
        processes = [
            spawn.Process(
                target=admit_in_process,
                args=(url, f"p{round_}-{n}", f"vm{round_}", barrier, queue),
            )
            for n in range(CONTENDERS)
        ]
        for process in processes:
            process.start()
        results = [queue.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
            assert process.exitcode == 0
        check_one_winner(results)
    assert len(store.changes(states=(State.WAITING,))) == 1


def test_changes_on_other_items_are_all_admitted(store: ChangeStore) -> None:
    barrier = threading.Barrier(CONTENDERS)
    states: list[State] = []

    def propose(n: int) -> None:
        record = contender(f"q{n}", f"own{n}")
        barrier.wait(timeout=30)
        states.append(store.admit(record, State.WAITING, reason="waits").change.state)

    threads = [threading.Thread(target=propose, args=(n,)) for n in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert states == [State.WAITING] * CONTENDERS


def test_a_refused_change_proposed_again_after_the_first_closed_is_admitted(
    store: ChangeStore,
) -> None:
    first, second = contender("a1", "shared"), contender("a2", "shared")
    assert store.admit(first, State.WAITING, reason="waits").conflict is None
    refused = store.admit(second, State.WAITING, reason="waits")
    assert refused.change.state is State.REFUSED and refused.conflict is not None
    assert refused.shared == ("vm:shared",)
    store.move(first.id, State.REJECTED, actor="nina", reason="rejected")
    again = store.admit(second, State.WAITING, reason="waits")
    assert again.change.state is State.WAITING and again.conflict is None
    assert (again.change.reason or "").startswith("proposed again")
