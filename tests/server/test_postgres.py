"""The API on the real PostgreSQL of ``INFRA_TEST_POSTGRES_URL`` (started by
``eval "$(scripts/services.sh)"``): identities, a run submitted and followed live, the run
list. Fails, never skips, without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_automation.client import InfraClient
from infra_automation.identity import Role
from tests.server.conftest import LiveServer, live_server, make_root
from tests.unit.db_backends import database


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh schema of the test PostgreSQL, migrated, dropped afterwards."""
    with database("postgresql", tmp_path) as url:
        yield url


@pytest.fixture
def pg_server(tmp_path: Path, postgres_url: str) -> Iterator[LiveServer]:
    root = make_root(tmp_path / "project")
    with live_server(root, env={"INFRA_DATABASE_URL": postgres_url}) as live:
        yield live


def test_run_on_postgresql(pg_server: LiveServer) -> None:
    assert pg_server.state.engine.db.dialect.name == "postgresql"
    body = {"service": "slow", "project": "pg-alpha", "params": {"pause": 0.1}}
    with InfraClient(pg_server.url, pg_server.tokens[Role.ENGINEER]) as client:
        run_id = client.submit(body)["run_id"]
        seqs = [e["seq"] for e in client.stream(run_id)]
        run = client.run(run_id)
        page = client.runs(project="pg-alpha")
    assert run["status"] == "success" and run["requester"] == "engineer-user"
    assert seqs == sorted(set(seqs)) and len(seqs) >= 12
    assert [r["id"] for r in page["runs"]] == [run_id]
    with InfraClient(pg_server.url, pg_server.tokens[Role.VIEWER]) as viewer:
        assert viewer.me()["role"] == "viewer"
