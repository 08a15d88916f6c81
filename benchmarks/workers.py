"""Workers: throughput with 1, 2 and 4 worker processes, and dispatch overhead per step.

40 runs (40 projects) of a 10-step chain of ``core.sleep`` steps (200 ms each) are queued
at once; one scheduler process (queue ``runs``) and N worker processes (queue ``core``,
concurrency 1) run them. Prints runs/min for each N and the speed-up from 1 to 4 (goal >=
3.2x), then the dispatch overhead per step: one run at a time through one worker against
the same run in-process (goal <= 20 ms).

    eval "$(scripts/services.sh)"
    python benchmarks/workers.py [--runs 40] [--steps 10] [--seconds 0.2] [--workers 1,2,4]

Needs Redis (``INFRA_BROKER_URL`` or ``INFRA_TEST_REDIS_URL``); the database is a fresh
schema of ``INFRA_TEST_POSTGRES_URL`` when set, else a SQLite file.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
import yaml

from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.planner import Plan
from infra_automation.record import runs, scratch_schema
from infra_automation.workers import client


def write_project(root: Path, steps: int, seconds: float, projects: int, tag: str) -> None:
    (root / "catalog").mkdir(parents=True)
    (root / "requests").mkdir()
    (root / "inventories" / "lab").mkdir(parents=True)
    inventory = {"name": "bench", "groups": {}, "hosts": {}}
    (root / "inventories" / "lab" / "inventory.yml").write_text(yaml.safe_dump(inventory))
    chain = [
        {
            "id": f"s{i}",
            "executor": "core.sleep",
            "needs": [f"s{i - 1}"] if i else [],
            "params": {"seconds": seconds},
        }
        for i in range(steps)
    ]
    service = {"name": "sleeps", "description": "bench", "owner": "bench", "params": {}}
    (root / "catalog" / "sleeps.yml").write_text(yaml.safe_dump({**service, "steps": chain}))
    for n in range(projects):
        request = {"service": "sleeps", "project": f"p{n:02d}", "requester": "bench"}
        (root / "requests" / f"p{n:02d}.yml").write_text(yaml.safe_dump({**request, "params": {}}))
    (root / "infra.toml").write_text(
        f'scheduler_queue = "{tag}-runs"\n[queues]\ncore = "{tag}-core"\n'
    )


@contextmanager
def database(folder: Path) -> Iterator[str]:
    base = os.environ.get("INFRA_TEST_POSTGRES_URL")
    if not base:
        yield f"sqlite:///{folder / 'runs.db'}"
        return
    with scratch_schema(base, "bench") as url:
        yield url


class Processes:
    """Worker processes of one measurement, stopped by PID."""

    def __init__(self, env: dict[str, str], folder: Path, tag: str) -> None:
        self.env, self.folder, self.tag = env, folder, tag
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, queue: str, concurrency: int = 1) -> None:
        log = self.folder / f"worker-{uuid.uuid4().hex[:6]}.log"
        cmd = [sys.executable, "-m", "infra_automation.workers", "-Q", f"{self.tag}-{queue}"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*cmd, "-c", str(concurrency)], env=self.env, stdout=out, stderr=out
            )
        self.procs.append((proc, log))

    def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for proc, log in self.procs:
            while b" ready." not in log.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"worker did not start:\n{log.read_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        for proc, _ in self.procs:
            proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []


def plans(engine: Engine, root: Path, count: int) -> list[Plan]:
    return [
        engine.plan(engine.load_request(root / "requests" / f"p{n:02d}.yml")) for n in range(count)
    ]


def wait_all(engine: Engine, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    query = sa.select(sa.func.count()).where(
        runs.c.id.in_(ids), runs.c.status.in_(("success", "failed"))
    )
    while True:
        with engine.db.connect() as conn:
            if conn.execute(query).scalar_one() == len(ids):
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"the runs did not finish in {timeout:.0f} s")
        time.sleep(0.05)


def throughput(engine: Engine, procs: Processes, batch: list[Plan], workers: int) -> float:
    procs.start("runs", concurrency=1)
    for _ in range(workers):
        procs.start("core", concurrency=1)
    procs.ready()
    try:
        started = time.monotonic()
        ids = [client.submit(engine, plan, docs=False) for plan in batch]
        wait_all(engine, ids, timeout=600)
        elapsed = time.monotonic() - started
    finally:
        procs.stop()
    failed = [r for r in ids if engine.store.get_run(r).status != "success"]
    if failed:
        raise SystemExit(f"runs failed: {failed}")
    return len(batch) / elapsed * 60


def overhead(
    engine: Engine, procs: Processes, batch: list[Plan], rounds: int
) -> tuple[float, float]:
    """Seconds per run: in-process, and through one worker (one run at a time)."""
    local = [_timed(lambda p=p: engine.run(p)) for p in batch[:rounds]]
    procs.start("runs")
    procs.start("core")
    procs.ready()
    try:
        ids: list[str] = []
        remote = [
            _timed(lambda p=p: ids.append(_follow(engine, p))) for p in batch[rounds : 2 * rounds]
        ]
    finally:
        procs.stop()
    return (
        statistics.median(local),
        statistics.median(remote),
        statistics.median(_gaps(engine, ids)),
    )


def _follow(engine: Engine, plan: Plan) -> str:
    run_id = client.submit(engine, plan, docs=False)
    client.follow(engine, run_id, poll=0.005)
    return run_id


def _gaps(engine: Engine, ids: list[str]) -> list[float]:
    gaps: list[float] = []
    for run_id in ids:
        ordered = engine.store.get_run(run_id).steps
        for before, after in itertools.pairwise(ordered):
            if before.finished_at and after.started_at:
                gaps.append((after.started_at - before.finished_at).total_seconds())
    return gaps


def _timed(fn: object) -> float:
    started = time.monotonic()
    fn()  # type: ignore[operator]
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=5, help="runs for the overhead medians")
    args = parser.parse_args()
    broker = os.environ.get("INFRA_BROKER_URL") or os.environ.get("INFRA_TEST_REDIS_URL")
    if not broker:
        raise SystemExit('no broker: eval "$(scripts/services.sh)" or set INFRA_BROKER_URL')
    tag = f"bench{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="infra-bench-workers-") as tmp:
        root = Path(tmp) / "project"
        write_project(root, args.steps, args.seconds, max(args.runs, 2 * args.rounds), tag)
        with database(Path(tmp)) as url:
            env = {**os.environ, "INFRA_ROOT": str(root), "INFRA_DATABASE_URL": url}
            env |= {"INFRA_BROKER_URL": broker, "INFRA_LEASE_TTL": "10"}
            os.environ.update({k: env[k] for k in ("INFRA_DATABASE_URL", "INFRA_BROKER_URL")})
            engine = Engine(load_settings(root), load_observers=False)
            procs = Processes(env, Path(tmp), tag)
            batch = plans(engine, root, max(args.runs, 2 * args.rounds))
            print(
                f"{args.runs} runs x {args.steps} steps of {args.seconds * 1000:.0f} ms, "
                f"database {engine.db.dialect.name}"
            )
            rates: dict[int, float] = {}
            for n in (int(x) for x in args.workers.split(",")):
                rates[n] = throughput(engine, procs, batch[: args.runs], n)
                ideal = n * 60 / (args.steps * args.seconds)
                print(f"{n} worker(s): {rates[n]:6.1f} runs/min (ideal {ideal:.1f})")
            if 1 in rates and 4 in rates:
                print(f"speed-up 1 -> 4 workers: {rates[4] / rates[1]:.2f}x (goal >= 3.2x)")
            local, remote, gap = overhead(engine, procs, batch, args.rounds)
            per_step = (remote - local) / args.steps * 1000
            print(
                f"one run: in-process {local:.3f} s, through a worker {remote:.3f} s: "
                f"dispatch overhead {per_step:.1f} ms per step (goal <= 20 ms); "
                f"median gap step end -> next step start {gap * 1000:.1f} ms"
            )
            engine.close()


if __name__ == "__main__":
    main()
