"""Fixtures of the API tests: a project root with a small catalog of core executors, an
``infra server`` application served by a real uvicorn on a free loopback port (in a thread),
and one user with an API token per role."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.identity import IdentityStore, Role
from infra_automation.record import live_runs
from infra_automation.server import create_app
from infra_automation.server.state import ServerState

PASSWORD = "correct horse battery"
TAM_PROJECTS = ("alpha",)

INVENTORY = {
    "name": "api-tests",
    "groups": {"debian": {"platform": "linux"}},
    "hosts": {"debian1": {"groups": ["debian"]}},
}

QUICK = {
    "name": "quick",
    "description": "Two no-op steps",
    "owner": "tests",
    "params": {
        "note": {"type": "string", "default": "hello", "description": "echoed"},
        "count": {"type": "integer", "default": 1, "minimum": 1, "maximum": 5},
    },
    "steps": [
        {"id": "first", "executor": "core.noop", "params": {"echo": {"note": "{{ params.note }}"}}},
        {"id": "second", "executor": "core.noop", "needs": ["first"]},
    ],
    "outputs": {"greeting": "{{ steps.first.outputs.note }} from {{ project }}"},
}

SLOW = {
    "name": "slow",
    "description": "Sleeping steps one after the other (a run of a second or two)",
    "owner": "tests",
    "params": {"pause": {"type": "number", "default": 0.3, "minimum": 0, "maximum": 5}},
    "steps": [
        {
            "id": f"s{i}",
            "executor": "core.sleep",
            "needs": [f"s{i - 1}"] if i else [],
            "params": {"seconds": "{{ params.pause }}", "echo": {"step": i}},
        }
        for i in range(5)
    ],
}


def make_root(base: Path) -> Path:
    (base / "catalog").mkdir(parents=True)
    (base / "requests").mkdir()
    inventory = base / "inventories" / "lab"
    inventory.mkdir(parents=True)
    (inventory / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    for service in (QUICK, SLOW):
        (base / "catalog" / f"{service['name']}.yml").write_text(yaml.safe_dump(service))
    return base


@dataclass
class LiveServer:
    url: str
    state: ServerState
    app: Any
    tokens: dict[Role, str]

    def client(self, role: Role | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def user(self, role: Role) -> str:
        return f"{role.value}-user"

    def wait_idle(self, run_id: str, timeout: float = 30) -> dict[str, Any]:
        """The run once it is no longer queued or running."""
        deadline = time.monotonic() + timeout
        with self.client(Role.ENGINEER) as http:
            while True:
                run: dict[str, Any] = http.get(f"/api/v1/runs/{run_id}").json()
                ended = run["status"] not in ("queued", "running")
                if ended and not self._holds_lease(run_id):
                    return run
                assert time.monotonic() < deadline, f"run {run_id} still running"
                time.sleep(0.05)

    def _holds_lease(self, run_id: str) -> bool:
        """The run's process still holds its leases (the project lock) for a moment after
        the record says it finished: the next run of the project must wait for that."""
        with self.state.engine.db.connect() as conn:
            return run_id in live_runs(conn)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn sets no TCP_NODELAY on sockets it is handed; accepted ones inherit this
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@dataclass
class _Running:
    server: uvicorn.Server
    thread: threading.Thread


def _serve(app: Any) -> tuple[str, _Running]:
    sock = _free_socket()
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    host, port = sock.getsockname()
    return f"http://{host}:{port}", _Running(server, thread)


def _stop(running: _Running) -> None:
    running.server.should_exit = True
    running.thread.join(timeout=30)


def add_users(identity: IdentityStore) -> dict[Role, str]:
    tokens: dict[Role, str] = {}
    for role in Role:
        projects = TAM_PROJECTS if role is Role.TAM else ()
        if identity.get_user(f"{role.value}-user") is None:  # a restarted server has them
            identity.add_user(f"{role.value}-user", role, PASSWORD, projects)
        tokens[role] = identity.create_token(f"{role.value}-user", "tests").value
    return tokens


@contextmanager
def live_server(
    root: Path, *, env: dict[str, str] | None = None, workers: int = 4
) -> Iterator[LiveServer]:
    """``infra server`` of ``root`` on a free loopback port, with a user and token per role."""
    engine = Engine(load_settings(root, env=env or {}), load_observers=True)
    app = create_app(engine, workers=workers)
    state: ServerState = app.state.infra
    tokens = add_users(state.identity)
    url, running = _serve(app)
    try:
        yield LiveServer(url, state, app, tokens)
    finally:
        _stop(running)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = make_root(tmp_path_factory.mktemp("api") / "project")
    with live_server(root) as live:
        yield live


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(make_root(tmp_path / "project")) as live:
        yield live
