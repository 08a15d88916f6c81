"""Fixtures of the change-management tests: a project root in tmp_path whose catalog and
inventory carry ``change:`` blocks (:mod:`change_helpers`), a private registry with the core
executors and ``testchg.file``, and databases: SQLite, and the real PostgreSQL of
``INFRA_TEST_POSTGRES_URL`` (the test fails, never skips, without it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from change_helpers import TUESDAY, FileExecutor, write_root

from infra_automation.changes import ChangeService
from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.executors import ExecutorRegistry
from infra_automation.executors.builtin import FailExecutor, NoopExecutor, SleepExecutor
from infra_automation.request import Request
from tests.unit.db_backends import database


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_root(tmp_path / "project")


@pytest.fixture
def registry() -> ExecutorRegistry:
    reg = ExecutorRegistry(use_entry_points=False)
    reg.register("core.noop", NoopExecutor)
    reg.register("core.sleep", SleepExecutor)
    reg.register("core.fail", FailExecutor)
    reg.register("testchg.file", FileExecutor)
    return reg


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


@pytest.fixture
def engine(root: Path, registry: ExecutorRegistry, database_url: str) -> Iterator[Engine]:
    settings = load_settings(root, env={"INFRA_DATABASE_URL": database_url})
    eng = Engine(settings, registry=registry, load_observers=False)
    yield eng
    eng.close()


@pytest.fixture
def changes(engine: Engine) -> ChangeService:
    """The change service at a fixed Tuesday noon (outside the weekend freeze)."""
    return ChangeService(engine, clock=lambda: TUESDAY)


@pytest.fixture
def request_for(engine: Engine) -> Callable[..., Request]:
    def make(service: str = "landscape", project: str = "shop", **params: Any) -> Request:
        data = {"service": service, "project": project, "requester": "jane", "params": params}
        return engine.validate(data)

    return make


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    """A fresh schema of the real PostgreSQL, migrated; dropped afterwards."""
    with database("postgresql", tmp_path) as url:
        yield url
