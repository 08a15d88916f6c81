"""What reading the record for the figures costs: only the columns the figures use (no
outputs, diffs, targets, artifacts, requests or plans; event payloads of verifications only),
the range and the project in the SQL, and the garbage collector paused meanwhile (restored
after, also when blocks nest or run in threads)."""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from history_fixture import SINCE, UNTIL
from sqlalchemy import Engine

from infra_automation.metrics import compute_stats, load_history
from infra_automation.metrics._gc import paused_gc

DOCUMENTS = ("outputs", "diff", "targets", "artifacts", "request", "plan", "error")


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: object, cursor: object, sql: str, *args: object) -> None:
        seen.append(" ".join(sql.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _selected(sql: str) -> set[str]:
    """The column names a SELECT reads (``table.column`` and ``column`` alike)."""
    head = sql.split(" FROM ", 1)[0].removeprefix("SELECT ")
    return {m.rsplit(".", 1)[-1] for m in re.findall(r"[\w.]+", head)}


def test_only_the_columns_the_figures_use_are_read(history_db: Engine) -> None:
    with statements(history_db) as seen:
        load_history(history_db, SINCE, UNTIL, project="beta")
    selects = [s for s in seen if s.startswith("SELECT ") and " FROM infra_" in s]
    assert len(selects) >= 6, seen  # runs, steps, queued, changes, approvals, verifications
    for sql in selects:
        assert not _selected(sql) & set(DOCUMENTS), sql
        table, _, where = sql.split(" FROM ", 1)[1].partition(" WHERE ")
        if table.startswith("infra_events "):  # by kind (the index), a payload only of verify.*
            assert "infra_events.kind" in where, sql
            assert "data" not in _selected(sql) or "infra_events.kind IN" in where, sql
    [runs] = [s for s in selects if s.startswith("SELECT infra_runs.id, infra_runs.service")]
    where = runs.split(" WHERE ", 1)[1]
    assert "infra_runs.started_at >=" in where and "infra_runs.project =" in where, runs


def test_the_gc_is_paused_while_reading_and_computing(history_db: Engine) -> None:
    states: list[bool] = []

    def watch(conn: object, *args: object) -> None:
        states.append(gc.isenabled())

    sa.event.listen(history_db, "before_cursor_execute", watch)
    try:
        history = load_history(history_db, SINCE, UNTIL)
    finally:
        sa.event.remove(history_db, "before_cursor_execute", watch)
    assert states and not any(states)
    assert gc.isenabled()
    compute_stats(history)
    assert gc.isenabled()


def test_paused_gc_restores_the_collector() -> None:
    assert gc.isenabled()
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()  # someone else's choice is kept
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_paused_gc_in_overlapping_threads() -> None:
    inside, leave = threading.Barrier(2), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with paused_gc():
            inside.wait()
            leave.wait()
        seen.append(gc.isenabled())  # the other thread is still in its block

    def second() -> None:
        with paused_gc():
            inside.wait()
            leave.set()
            worker.join()
            seen.append(gc.isenabled())

    worker = threading.Thread(target=first)
    worker.start()
    second()
    assert seen == [False, False]
    assert gc.isenabled()
