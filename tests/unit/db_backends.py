"""The databases the record and engine tests run on: SQLite (a file in tmp_path) and the
real PostgreSQL of ``INFRA_TEST_POSTGRES_URL`` (``eval "$(scripts/services.sh)"``), each
test in a schema of its own, dropped afterwards. Without the variable the PostgreSQL tests
fail: they are never skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from infra_automation.record import scratch_schema

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
    with scratch_schema(postgres_url(), migrated=migrated) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url
