"""Fixtures of the database tests: several ``infra`` processes (and project roots) sharing one
database, on SQLite and on the real PostgreSQL (``INFRA_TEST_POSTGRES_URL``, see
scripts/services.sh; without it these tests fail, they are never skipped)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[1] / "unit"
sys.path.insert(0, str(UNIT))  # the shared helpers: db_backends, engine_helpers

from db_backends import BACKENDS, database  # noqa: E402 - needs the path above


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url
