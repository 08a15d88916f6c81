"""Fixtures of the CLI-as-a-client tests: the API tests' live server (a real uvicorn on a
loopback port, tests/server/conftest.py), loaded by path so it is defined once (the lab
fixture is tests/conftest.py's)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TESTS = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


server_fixtures = _load("server_fixtures", TESTS / "server" / "conftest.py")
