"""Fixtures of the worker tests: a project root, real Redis (``INFRA_TEST_REDIS_URL``, see
scripts/services.sh; without it these tests fail, never skip), the database on SQLite and
PostgreSQL, and real ``infra worker`` processes started and stopped by PID. Each test has
queues of its own (``[queues]`` of infra.toml), so tests running at once never share work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from infra_automation.config import load_plugins, load_settings
from infra_automation.engine import Engine
from infra_automation.events import Event

UNIT = Path(__file__).parents[1] / "unit"
sys.path.insert(0, str(UNIT))  # the shared helpers: db_backends, engine_helpers

from db_backends import BACKENDS, database  # noqa: E402 - needs the path above

PLUGINS = UNIT / "data" / "plugins"
REDIS_ENV = "INFRA_TEST_REDIS_URL"
TTL = 2.0  # seconds: a killed worker's leases expire fast


def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.fail(f'{REDIS_ENV} is not set: start Redis with eval "$(scripts/services.sh)"')
    return url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project root whose departments core and test have queues of this test only."""
    base = tmp_path / "project"
    (base / "catalog").mkdir(parents=True)
    (base / "requests").mkdir()
    (base / "inventories" / "lab").mkdir(parents=True)
    inventory = {"name": "workers", "groups": {}, "hosts": {}}
    (base / "inventories" / "lab" / "inventory.yml").write_text(yaml.safe_dump(inventory))
    tag = uuid.uuid4().hex[:8]
    (base / "infra.toml").write_text(
        f'scheduler_queue = "{tag}-runs"\n[queues]\ncore = "{tag}-core"\ntest = "{tag}-test"\n'
    )
    return base


def env_for(root: Path, database_url: str, ttl: float = TTL) -> dict[str, str]:
    return {
        **os.environ,
        "INFRA_ROOT": str(root),
        "INFRA_DATABASE_URL": database_url,
        "INFRA_BROKER_URL": redis_url(),
        "INFRA_LEASE_TTL": str(ttl),
        "INFRA_PLUGINS": "infra_test_plugin",
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
    }


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    queues: list[str]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@dataclass
class Workers:
    """Starts ``python -m infra_automation.workers`` processes; stops them by PID."""

    root: Path
    database_url: str
    folder: Path
    started: list[Worker] = field(default_factory=list)
    ttl: float = TTL  # the workers' lease TTL (short: a killed worker's leases expire fast)

    def queue(self, name: str) -> str:
        """This test's queue of department ``name`` (or 'runs')."""
        text = (self.root / "infra.toml").read_text()
        line = next(x for x in text.splitlines() if x.startswith("scheduler_queue"))
        return f"{line.split(chr(34))[1].rsplit('-', 1)[0]}-{name}"

    def start(self, *names: str, concurrency: int = 1) -> Worker:
        queues = [self.queue(n) for n in names]
        log = self.folder / f"worker-{len(self.started)}.log"
        cmd = [sys.executable, "-m", "infra_automation.workers", "--queues", ",".join(queues)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*cmd, "--concurrency", str(concurrency)],
                env=env_for(self.root, self.database_url, self.ttl),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, log, queues)
        self.started.append(worker)
        return worker

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.started:
            while b" ready." not in worker.log.read_bytes():
                assert worker.proc.poll() is None, worker.log.read_text()
                assert time.monotonic() < deadline, worker.log.read_text()
                time.sleep(0.1)

    def dump(self) -> str:
        """Every live worker's thread stacks (Celery logs them on SIGUSR1), and its log."""
        for worker in self.started:
            if worker.proc.poll() is None:
                os.kill(worker.proc.pid, signal.SIGUSR1)
        time.sleep(1)
        return "\n".join(f"--- {w.log.name} {w.queues}\n{w.log.read_text()}" for w in self.started)

    def stop(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        for worker in self.started:
            try:
                worker.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()


@pytest.fixture
def workers(root: Path, database_url: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(root, database_url, tmp_path)
    try:
        yield pool
    finally:
        pool.stop()


class Seen:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
def engine(root: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """The submitting side (what ``infra apply`` does with a broker), on this test's queues."""
    for key, value in env_for(root, database_url).items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(PLUGINS))
    settings = load_settings(root)
    load_plugins(settings.plugins)
    eng = Engine(settings, observers=[Seen()], load_observers=False)
    yield eng
    eng.close()
