"""Portal / API benchmark: a real ``infra server`` (uvicorn on a free loopback port) of a
temporary project root.

    .venv/bin/python benchmarks/portal.py [--runs 10000] [--submits 200] [--workers 8]
    eval "$(scripts/services.sh)"; .venv/bin/python benchmarks/portal.py --postgres

- **Run list**: ``--runs`` runs recorded (inserted in bulk), then pages of 50 through the API:
  the first page, 20 pages deep by cursor, and filtered by project, requester and status;
  goal < 200 ms per page (p95).
- **Event-to-client latency over SSE**: a run of sleeping steps followed live; for every
  event, the time it reached the client minus its recorded time; goal p95 < 1 s.
- **Submit throughput**: ``--submits`` no-op runs of distinct projects submitted from 4 client
  threads, each with one keep-alive connection (a new client per submission spent more of
  this process's CPU setting up TLS contexts than the server spent accepting); accepted runs
  per second (a 429 "busy" of a full queue is retried, and counted); goal >= 20/s. A
  submission is answered once its run is recorded ``queued``; the server's worker threads
  run it meanwhile, so the rate is measured with the docs writer (the default server) and
  without observers, and so is the time until every accepted run has ended.

Everything is removed at the end: the temp root, and the PostgreSQL schema with --postgres.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
import yaml

from infra_automation.client import parse_sse
from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.events import utcnow
from infra_automation.identity import Role
from infra_automation.record import runs, scratch_schema
from infra_automation.server import create_app

API = "/api/v1"
GOALS = {"page_ms": 200.0, "sse_p95_s": 1.0, "submits_per_s": 20.0}
QUICK = {
    "name": "quick",
    "steps": [{"id": "only", "executor": "core.noop"}],
}
SLOW = {
    "name": "slow",
    "steps": [
        {
            "id": f"s{i}",
            "executor": "core.sleep",
            "needs": [f"s{i - 1}"] if i else [],
            "params": {"seconds": 0.2},
        }
        for i in range(10)
    ],
}
INVENTORY = {"name": "bench", "hosts": {"debian1": {}}}


def make_root(base: Path) -> Path:
    (base / "catalog").mkdir(parents=True)
    (base / "inventories" / "lab").mkdir(parents=True)
    (base / "inventories" / "lab" / "inventory.yml").write_text(yaml.safe_dump(INVENTORY))
    for service in (QUICK, SLOW):
        (base / "catalog" / f"{service['name']}.yml").write_text(yaml.safe_dump(service))
    return base


@contextmanager
def serving(
    root: Path, env: dict[str, str], workers: int, docs: bool = True
) -> Iterator[tuple[str, str, Engine]]:
    """(base URL, an engineer's token, the engine) of a server running in a thread."""
    engine = Engine(load_settings(root, env=env), load_observers=docs)
    app = create_app(engine, workers=workers)
    identity = app.state.infra.identity
    if identity.get_user("bench") is None:
        identity.add_user("bench", Role.ENGINEER, "benchmark password")
    token = identity.create_token("bench", "benchmark").value
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # uvicorn sets none on it
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    host, port = sock.getsockname()
    try:
        yield f"http://{host}:{port}", token, engine
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def record_runs(engine: Engine, count: int) -> None:
    """``count`` finished runs over 100 projects and 20 requesters, in bulk."""
    start = utcnow() - timedelta(days=30)
    rows = [
        {
            "id": f"bench-{i:06d}",
            "service": "quick",
            "project": f"proj-{i % 100:03d}",
            "requester": f"user-{i % 20:02d}",
            "check_mode": i % 3 == 0,
            "parallel": 4,
            "status": "failed" if i % 10 == 0 else "success",
            "changed": True,
            "started_at": start + timedelta(seconds=i * 60),
            "finished_at": start + timedelta(seconds=i * 60 + 30),
            "request": {"service": "quick", "project": f"proj-{i % 100:03d}", "params": {}},
            "plan": [{"id": "only", "department": "core", "executor": "core.noop"}],
        }
        for i in range(count)
    ]
    with engine.db.begin() as conn:
        for chunk in range(0, len(rows), 1000):
            conn.execute(runs.insert(), rows[chunk : chunk + 1000])


def timed_get(http: httpx.Client, params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    response = http.get(f"{API}/runs", params=params)
    elapsed = (time.perf_counter() - t0) * 1000
    response.raise_for_status()
    return elapsed, response.json()


def bench_run_list(http: httpx.Client) -> dict[str, float]:
    times: dict[str, list[float]] = {"first": [], "deep": [], "filtered": []}
    for _ in range(5):
        times["first"].append(timed_get(http, {"limit": 50})[0])
    cursor = None
    for _ in range(20):
        ms, page = timed_get(http, {"limit": 50, **({"cursor": cursor} if cursor else {})})
        times["deep"].append(ms)
        cursor = page["next_cursor"]
    for params in ({"project": "proj-042"}, {"requester": "user-07"}, {"status": "failed"}):
        for _ in range(3):
            ms, page = timed_get(http, {"limit": 50, **params})
            assert page["runs"], params
            times["filtered"].append(ms)
    return {k: percentile(v, 95) for k, v in times.items()}


def bench_sse(http: httpx.Client) -> tuple[float, float, int]:
    accepted = http.post(f"{API}/requests/submit", json={"service": "slow", "project": "sse"})
    accepted.raise_for_status()
    run_id = accepted.json()["run_id"]
    latencies: list[float] = []
    with http.stream("GET", f"{API}/runs/{run_id}/stream", timeout=None) as response:
        for sse in parse_sse(response.iter_lines()):
            now = datetime.now().astimezone()
            event = json.loads("\n".join(sse.data))
            latencies.append((now - datetime.fromisoformat(event["at"])).total_seconds())
            if event["kind"] == "run.finished":
                break
    live = [x for x in latencies[1:]]  # the first may predate the connection
    return percentile(live, 50), percentile(live, 95), len(latencies)


@dataclass(frozen=True)
class Submits:
    rate: float  # runs accepted per second
    busy: int  # 429 answers retried
    unique: int  # distinct run ids accepted
    drained: float  # seconds from the first submission until every accepted run ended
    succeeded: int


def bench_submits(url: str, token: str, count: int, tag: str, engine: Engine) -> Submits:
    busy = 0
    lock = threading.Lock()
    local = threading.local()  # one keep-alive client per client thread, as a pipeline has
    clients: list[httpx.Client] = []

    def client() -> httpx.Client:
        if not hasattr(local, "http"):
            local.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})
            with lock:
                clients.append(local.http)
        http: httpx.Client = local.http
        return http

    def one(i: int) -> str:
        nonlocal busy
        body = {"service": "quick", "project": f"sub-{tag}-{i:04d}"}
        http = client()
        while True:
            response = http.post(f"{API}/requests/submit", json=body, timeout=60)
            if response.status_code != 429:
                response.raise_for_status()
                run_id: str = response.json()["run_id"]
                return run_id
            with lock:
                busy += 1
            time.sleep(float(response.headers.get("retry-after", "1")))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - t0
    for http in clients:
        http.close()
    succeeded = wait_ended(engine, ids)
    drained = time.perf_counter() - t0
    return Submits(count / elapsed, busy, len(set(ids)), drained, succeeded)


def wait_ended(engine: Engine, run_ids: list[str], timeout: float = 600) -> int:
    """Wait until none of ``run_ids`` is queued or running; how many succeeded."""
    query = sa.select(runs.c.status).where(runs.c.id.in_(run_ids))
    deadline = time.monotonic() + timeout
    while True:
        with engine.db.connect() as conn:
            found = list(conn.execute(query).scalars())
        if not any(s in ("queued", "running") for s in found) or time.monotonic() > deadline:
            return found.count("success")
        time.sleep(0.2)


def percentile(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--submits", type=int, default=200)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--postgres", action="store_true", help="INFRA_TEST_POSTGRES_URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="infra-portal-") as tmp, _database(args) as url:
        env = {"INFRA_DATABASE_URL": url} if url else {}
        root = make_root(Path(tmp) / "project")
        with serving(root, env, args.workers) as (base, token, engine):
            print(f"database: {engine.db.dialect.name}; {args.runs} runs recorded")
            record_runs(engine, args.runs)
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
                report(bench_run_list(http), bench_sse(http))
            submits(base, token, args, "with the docs writer", engine)
        with serving(root, env, args.workers, docs=False) as (base, token, engine):
            submits(base, token, args, "without observers", engine)
    print(f"load average (1, 5, 15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def submits(base: str, token: str, args: argparse.Namespace, mode: str, engine: Engine) -> None:
    got = bench_submits(base, token, args.submits, mode.split()[0], engine)
    ok = got.rate >= GOALS["submits_per_s"] and got.unique == args.submits
    print(
        f"submit throughput {mode}: {got.rate:.1f} runs/s accepted ({args.submits} runs, "
        f"{got.busy} busy answers retried, {args.workers} workers; goal >= 20/s) {verdict(ok)}; "
        f"all ended {got.drained:.1f} s after the first ({got.succeeded} succeeded)"
    )


def report(pages: dict[str, float], sse: tuple[float, float, int]) -> None:
    for name, ms in pages.items():
        ok = ms < GOALS["page_ms"]
        print(f"run list, {name} page of 50: p95 {ms:.1f} ms (goal < 200 ms) {verdict(ok)}")
    p50, p95, count = sse
    ok = p95 < GOALS["sse_p95_s"]
    print(
        f"SSE event-to-client latency: p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms over "
        f"{count} events (goal p95 < 1 s) {verdict(ok)}"
    )


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[str | None]:
    if not args.postgres:
        yield None
        return
    base = os.environ.get("INFRA_TEST_POSTGRES_URL")
    if not base:
        raise SystemExit('INFRA_TEST_POSTGRES_URL is not set: eval "$(scripts/services.sh)"')
    with scratch_schema(base, "bench") as url:
        yield url


if __name__ == "__main__":
    main()
