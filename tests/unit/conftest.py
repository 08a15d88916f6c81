"""Fixtures of the engine's unit tests: a project root in tmp_path, a private executor
registry with the core executors and small test executors, and an engine without the
entry-point observers (the docs writer)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from engine_helpers import (
    INVENTORY,
    BadOutputsExecutor,
    BoomExecutor,
    Calls,
    Collector,
    NoCheckExecutor,
    RecordExecutor,
    write_request,
    write_service,
)

from infra_automation.config import Settings, load_settings
from infra_automation.engine import Engine
from infra_automation.executors import ExecutorRegistry
from infra_automation.executors.builtin import FailExecutor, NoopExecutor, SleepExecutor
from infra_automation.request import Request


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def registry(calls: Calls) -> ExecutorRegistry:
    reg = ExecutorRegistry(use_entry_points=False)
    reg.register("core.noop", NoopExecutor)
    reg.register("core.sleep", SleepExecutor)
    reg.register("core.fail", FailExecutor)
    reg.register("test.record", lambda: RecordExecutor(calls))
    reg.register("test.boom", BoomExecutor)
    reg.register("test.badout", BadOutputsExecutor)
    reg.register("test.nocheck", NoCheckExecutor)
    return reg


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project root: catalog/, requests/, inventories/lab/inventory.yml."""
    base = tmp_path / "project"
    (base / "catalog").mkdir(parents=True)
    (base / "requests").mkdir()
    inv = base / "inventories" / "lab"
    inv.mkdir(parents=True)
    (inv / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    return base


@pytest.fixture
def settings(root: Path) -> Settings:
    return load_settings(root, env={})


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def engine(
    settings: Settings, registry: ExecutorRegistry, collector: Collector
) -> Iterator[Engine]:
    eng = Engine(settings, registry=registry, observers=[collector], load_observers=False)
    yield eng
    eng.close()


@pytest.fixture
def request_for(engine: Engine, root: Path) -> Callable[..., Request]:
    """Write service + request files and return the validated request."""

    def make(
        name: str,
        steps: list[dict[str, Any]],
        params: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        project: str = "shop",
    ) -> Request:
        write_service(root, name, steps, params)
        engine.reload()
        return engine.load_request(write_request(root, name, project, values))

    return make
