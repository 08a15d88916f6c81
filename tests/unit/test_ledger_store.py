"""The projects' as-built state (docs ledgers) in the run database, on SQLite and PostgreSQL:
saved and read back, listed, a run found by id, a broken document named without hiding the
others, and a ledger file written before the move read until the project is saved again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from db_backends import database_url  # noqa: F401 - the fixture, over both backends
from sqlalchemy import Engine

from infra_automation.docs.ledger import (
    DatabaseLedgerStore,
    LedgerStore,
    ProjectLedger,
    Resource,
    RunRecord,
)
from infra_automation.record import open_database, project_states


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:  # noqa: F811 - the fixture above
    engine = open_database(database_url)
    yield engine
    engine.dispose()


def _ledger(project: str, run_id: str) -> ProjectLedger:
    return ProjectLedger(
        project=project,
        service="landscape",
        runs=[RunRecord(run_id=run_id, service="landscape", status="success")],
        state={"vms": Resource(step_id="vms", executor="vmware.vms", outputs={"count": 2})},
    )


def test_ledgers_are_saved_listed_and_found_by_run(db: Engine, tmp_path: Path) -> None:
    store = DatabaseLedgerStore(db, files=LedgerStore.for_root(tmp_path))
    assert store.load("shop") == ProjectLedger(project="shop") and not store.has("shop")
    store.save(_ledger("shop", "run-1"))
    store.save(_ledger("bank", "run-2"))
    changed = _ledger("shop", "run-3")
    store.save(changed)  # replaced, not duplicated
    assert store.load("shop") == changed and store.has("shop")
    assert store.projects() == ["bank", "shop"]
    assert store.find_run("run-2") == "bank" and store.find_run("nope") is None
    assert not (tmp_path / ".infra" / "docs").exists()  # nothing on disk


def test_a_broken_ledger_is_named_and_the_others_are_kept(db: Engine) -> None:
    store = DatabaseLedgerStore(db)
    store.save(_ledger("shop", "run-1"))
    with db.begin() as conn:
        conn.execute(
            sa.insert(project_states).values(
                project="bank", ledger={"project": "bank", "runs": "x"}, updated_at=sa.func.now()
            )
        )
    assert [x.project for x in store.all()] == ["shop"]
    [(where, reason)] = store.broken()
    assert where == "bank" and "project 'bank' is not readable: runs" in reason


def test_a_ledger_file_is_read_until_the_project_is_saved(db: Engine, tmp_path: Path) -> None:
    files = LedgerStore.for_root(tmp_path)
    files.save(_ledger("old", "run-0"))
    store = DatabaseLedgerStore(db, files=files)
    assert store.has("old") and store.load("old").runs[0].run_id == "run-0"
    assert store.projects() == ["old"] and store.find_run("run-0") == "old"
    moved = store.load("old")
    moved.runs.append(RunRecord(run_id="run-1", service="landscape", status="success"))
    store.save(moved)
    assert DatabaseLedgerStore(db).load("old") == moved  # now in the database
    assert store.projects() == ["old"]  # once, from the database
