"""The databases the record and engine tests run on: SQLite (a file in tmp_path) and the
real PostgreSQL of ``INFRA_TEST_POSTGRES_URL`` (``eval "$(scripts/services.sh)"``), each
test in a schema of its own, dropped afterwards. Without the variable the PostgreSQL tests
fail: they are never skipped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from infra_automation.record import open_database

PG_ENV = "INFRA_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]


def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.fail(
            f"{PG_ENV} is not set: the database tests also run on PostgreSQL; start it with "
            'eval "$(scripts/services.sh)" and run the tests again'
        )
    return url


@contextmanager
def database(kind: str, tmp_path: Path, *, migrated: bool = True) -> Iterator[str]:
    """The URL of a fresh database of ``kind``; PostgreSQL ``migrated`` as ``infra db
    upgrade`` does (SQLite migrates itself on first use)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared' / 'runs.db'}"
        return
    base = sa.engine.make_url(postgres_url())
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    text = url.render_as_string(hide_password=False)
    try:
        if migrated:
            open_database(text, upgrade=True).dispose()
        yield text
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url
