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
from infra_automation.docs.observer import DocsObserver
from infra_automation.events import utcnow
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


def _index(root: Path) -> str:
    return (root / "docs" / "projects" / "index.md").read_text()


def _write(observer: DocsObserver, ledger: ProjectLedger) -> None:
    observer.store.save(ledger)
    observer.write(ledger)


class _Counting(DatabaseLedgerStore):
    loads: list[str]

    def load(self, project: str) -> ProjectLedger:
        self.loads.append(project)
        return super().load(project)

    def all(self) -> Iterator[ProjectLedger]:
        raise AssertionError("the index must not read every ledger")


def test_the_index_reads_only_ledgers_saved_elsewhere_since_its_last_write(
    db: Engine, tmp_path: Path
) -> None:
    """Two observers (two processes) on one database: each one's index shows the other's
    projects at their latest state, and a step boundary re-reads only what changed."""
    one, other = tmp_path / "one", tmp_path / "other"
    store = _Counting(db)
    store.loads = []
    first = DocsObserver(one, store=store)
    second = DocsObserver(other, db)
    _write(second, _ledger("bank", "run-1"))
    _write(first, _ledger("shop", "run-2"))
    assert store.loads == ["bank"] and "bank" in _index(one) and "shop" in _index(one)
    _write(first, _ledger("shop", "run-3"))
    assert store.loads == ["bank"]  # bank unchanged: its row kept, shop's from the ledger
    failed = _ledger("bank", "run-4")
    failed.runs[0].status = "failed"
    _write(second, failed)
    _write(first, _ledger("shop", "run-5"))
    assert store.loads == ["bank", "bank"]
    bank_row = next(line for line in _index(one).splitlines() if "bank" in line)
    assert "failed" in bank_row.lower(), bank_row
    with db.begin() as conn:  # a broken document: left out, the others still listed
        conn.execute(project_states.delete().where(project_states.c.project == "bank"))
        conn.execute(
            project_states.insert().values(project="bank", ledger={"runs": 3}, updated_at=utcnow())
        )
    _write(first, _ledger("shop", "run-6"))
    assert "shop" in _index(one) and "bank" not in _index(one)
