"""Fixtures of the metrics tests: a database on SQLite and on the real PostgreSQL
(``INFRA_TEST_POSTGRES_URL``: without it the PostgreSQL tests fail, never skip), and the
hand-made history of :mod:`history_fixture` written into it through the run recorder."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))  # db_backends
sys.path.insert(0, str(Path(__file__).parent))  # history_fixture

from db_backends import BACKENDS, database
from history_fixture import write_history

from infra_automation.record import open_database


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with database(request.param, tmp_path) as url:
        engine = open_database(url)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def history_db(db: Engine) -> Engine:
    write_history(db)
    return db
