"""Migration 0007, on SQLite and PostgreSQL: the index of the runs' status that the queue
sweep reads (``ix_infra_runs_status_started``) is there after an upgrade, the sweep's query
uses it on a record of many finished runs and a few queued ones, a downgrade to 0006 drops
it and an upgrade brings it back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from db_backends import BACKENDS, database

from infra_automation.record import (
    QUEUED,
    _alembic_config,
    current_revision,
    head_revision,
    open_database,
    runs,
    upgrade_database,
)
from infra_automation.server.runner import queued_runs

INDEX = "ix_infra_runs_status_started"
FINISHED, WAITING = 3000, 5


def indexes(db: sa.Engine) -> set[str]:
    return {str(i["name"]) for i in sa.inspect(db).get_indexes("infra_runs")}


def fill(db: sa.Engine) -> None:
    """Many finished runs and a few queued ones, and the planner's statistics of them."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "id": f"run-{i:05d}",
            "service": "svc",
            "project": f"p{i % 40}",
            "check_mode": False,
            "parallel": 4,
            "status": QUEUED if i >= FINISHED else "success",
            "changed": False,
            "started_at": start + timedelta(seconds=i),
            "request": {},
            "plan": [],
        }
        for i in range(FINISHED + WAITING)
    ]
    with db.begin() as conn:
        conn.execute(runs.insert(), rows)
        conn.execute(sa.text("ANALYZE"))


def sweep_plan(db: sa.Engine) -> str:
    """The database's plan of the sweep's query, as text."""
    query = queued_runs(50).compile(db, compile_kwargs={"literal_binds": True})
    explain = "EXPLAIN QUERY PLAN" if db.dialect.name == "sqlite" else "EXPLAIN"
    with db.connect() as conn:
        rows = conn.execute(sa.text(f"{explain} {query}")).all()
    return "\n".join(str(r[-1]) for r in rows)


def downgrade(db: sa.Engine, revision: str) -> None:
    with db.begin() as conn:
        command.downgrade(_alembic_config(conn), revision)
    db.dispose()  # SQLite: a pooled connection may answer EXPLAIN from a statement cached before


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_queue_sweep_reads_the_status_index(tmp_path: Path, kind: str) -> None:
    with database(kind, tmp_path, migrated=False) as url:
        db = open_database(url, upgrade=True)
        try:
            assert head_revision() == "0007" and current_revision(db) == "0007"
            assert INDEX in indexes(db)
            fill(db)
            plan = sweep_plan(db)
            assert INDEX in plan, plan
            with db.connect() as conn:
                found = list(conn.execute(queued_runs(50)).scalars())
            assert found == [f"run-{i:05d}" for i in range(FINISHED, FINISHED + WAITING)]

            downgrade(db, "0006")
            assert current_revision(db) == "0006" and INDEX not in indexes(db)
            assert INDEX not in sweep_plan(db)  # without it the sweep reads the whole table
            assert upgrade_database(db) == ("0006", "0007")
            assert INDEX in indexes(db) and INDEX in sweep_plan(db)
        finally:
            db.dispose()
