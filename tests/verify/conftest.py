"""Fixtures of the drift-webhook and scheduled-verify tests: a project root whose one service
writes files (``vtest.file``, tests/verify/data/plugins), the database on SQLite and
PostgreSQL (``INFRA_TEST_POSTGRES_URL``), a real local HTTP receiver that keeps every request
with its headers, and real ``infra worker --beat`` processes on real Redis
(``INFRA_TEST_REDIS_URL``; without it these tests fail, never skip), stopped by PID."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra_automation.config import load_plugins, load_settings
from infra_automation.engine import Engine

TESTS = Path(__file__).parents[1]
sys.path.insert(0, str(TESTS / "unit"))  # the shared helper db_backends
from db_backends import BACKENDS, database  # noqa: E402 - needs the path above

PLUGINS = Path(__file__).parent / "data" / "plugins"
sys.path.insert(0, str(PLUGINS))
REDIS_ENV = "INFRA_TEST_REDIS_URL"
PROJECT = "shop"
SERVICE = """\
name: files
description: Two files
owner: test-team
steps:
  - id: first
    executor: vtest.file
    params: {name: fa, content: alpha}
  - id: second
    executor: vtest.file
    needs: [first]
    params: {name: fb, content: "{{ steps.first.outputs.content }} beta"}
"""
DECOMMISSION = """\
name: files-decommission
description: Nothing left to verify
owner: test-team
steps:
  - id: gone
    executor: core.noop
"""


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """A local HTTP server that keeps what it is sent; answers ``status``."""

    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 204

    def events(self) -> list[str]:
        return [r.body["event"] for r in self.received]

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{count} posts expected, got {self.events()}"
            time.sleep(0.05)
        return self.received


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = json.loads(self.rfile.read(length))
            hook = holder[0]
            hook.received.append(Received(self.path, dict(self.headers.items()), body))
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(f"http://127.0.0.1:{server.server_port}/hooks/drift"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def token() -> str:
    return f"tok-{secrets.token_hex(12)}"


def write_root(base: Path, toml: str = "") -> Path:
    (base / "catalog").mkdir(parents=True)
    (base / "catalog" / "files.yml").write_text(SERVICE)
    (base / "catalog" / "files-decommission.yml").write_text(DECOMMISSION)
    (base / "inventories" / "lab").mkdir(parents=True)
    (base / "inventories" / "lab" / "inventory.yml").write_text("name: verify-test\n")
    (base / "infra.toml").write_text(toml)
    return base


def base_env(root: Path, database_url: str, token: str) -> dict[str, str]:
    return {
        "INFRA_ROOT": str(root),
        "INFRA_DATABASE_URL": database_url,
        "INFRA_PLUGINS": "infra_verify_plugin",
        "INFRA_SECRET_DRIFT_WEBHOOK_TOKEN": token,
        "INFRA_LEASE_TTL": "2",
    }


def make_engine(root: Path, env: Mapping[str, str], *, docs: bool = False) -> Engine:
    settings = load_settings(root, env=env)
    load_plugins(settings.plugins)
    return Engine(settings, load_observers=docs)


def apply(engine: Engine, project: str = PROJECT) -> str:
    request = engine.validate({"service": "files", "project": project, "requester": "tam"})
    result = engine.apply(request)
    assert not result.failed, result.steps
    return result.run_id


def live(root: Path, name: str) -> Path:
    return root / "live" / f"{name}.txt"


def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.fail(f'{REDIS_ENV} is not set: start Redis with eval "$(scripts/services.sh)"')
    return url


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Workers:
    """``python -m infra_automation.workers`` processes, started and stopped by PID."""

    env: dict[str, str]
    folder: Path
    started: list[Worker] = field(default_factory=list)

    def start(self, *args: str) -> Worker:
        log = self.folder / f"worker-{len(self.started)}.log"
        cmd = [sys.executable, "-m", "infra_automation.workers", *args]
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        worker = Worker(proc, log)
        self.started.append(worker)
        return worker

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A worker that is expected to refuse to start: its exit code and output."""
        cmd = [sys.executable, "-m", "infra_automation.workers", *args]
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.started:
            while " ready." not in worker.text():
                assert worker.proc.poll() is None, worker.text()
                assert time.monotonic() < deadline, worker.text()
                time.sleep(0.1)

    def stop(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        for worker in self.started:
            try:
                worker.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(worker.proc.pid, signal.SIGKILL)
                worker.proc.wait(timeout=10)


@pytest.fixture
def queue_tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def workers_for(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Workers]]:
    made: list[Workers] = []

    def factory(env: dict[str, str]) -> Workers:
        pool = Workers({**os.environ, **env, "PYTHONPATH": _pythonpath()}, tmp_path)
        made.append(pool)
        return pool

    try:
        yield factory
    finally:
        for pool in made:
            pool.stop()


def _pythonpath() -> str:
    return os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])
