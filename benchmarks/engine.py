"""Engine benchmark, on SQLite and PostgreSQL in one run: planning time, scheduling overhead
per step on a synthetic 10,000-step plan, events ingested per second by the run record, and
wall time against the critical path of a plan of sleeping steps.

    eval "$(scripts/services.sh)"    # PostgreSQL on 127.0.0.1 (INFRA_TEST_POSTGRES_URL)
    .venv/bin/python benchmarks/engine.py [--steps 10000] [--parallel 4] [--events 20000]

Overhead per step = (engine wall time - time spent inside the executors) / steps, measured
with the real run record (batched events, step boundaries written at once) and no progress
view or docs observer; goals: <= 1 ms on SQLite, <= 2 ms on PostgreSQL. Events per second:
step logs emitted through the engine's event bus (redaction included) from 4 threads until
all are committed; goal >= 5,000/s. The baseline is the no-op executor called directly.
The PostgreSQL part runs in a schema of its own, dropped at the end; SQLite in a temp dir.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from infra_automation.catalog import Service
from infra_automation.config import load_settings
from infra_automation.engine import Engine, EventBus
from infra_automation.events import Event
from infra_automation.executors import ExecutorRegistry, StepContext
from infra_automation.executors.builtin import NoopExecutor, SleepExecutor
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.planner import Plan, build_plan
from infra_automation.record import RunRecorder, RunStore, open_database, scratch_schema
from infra_automation.request import Request
from infra_automation.results import StepResult


class TimedNoop(NoopExecutor):
    """core.noop that adds up the time spent inside it (to subtract it from wall time)."""

    spent = 0.0
    lock = threading.Lock()

    def apply(self, ctx: StepContext) -> StepResult:
        t0 = time.perf_counter()
        result = super().apply(ctx)
        with TimedNoop.lock:
            TimedNoop.spent += time.perf_counter() - t0
        return result


def synthetic_service(n: int, executor: str, seed: int = 7, **params: Any) -> Service:
    """A random DAG: each step needs up to 3 of the 50 steps before it."""
    rng = random.Random(seed)
    steps = []
    for i in range(n):
        window = range(max(0, i - 50), i)
        needs = sorted(rng.sample(window, k=min(len(window), rng.randint(0, 3))))
        steps.append(
            {
                "id": f"s{i}",
                "executor": executor,
                "needs": [f"s{j}" for j in needs],
                "params": dict(params),
            }
        )
    return Service.model_validate({"name": "bench", "steps": steps})


def critical_path(plan: Plan, cost: float) -> float:
    longest: dict[str, float] = {}
    for step in plan.steps:  # topological order
        longest[step.id] = cost + max((longest[n] for n in step.needs), default=0.0)
    return max(longest.values())


GOALS = {"sqlite": 1.0, "postgresql": 2.0}  # ms of overhead per step
EVENTS_GOAL = 5000.0


def make_engine(root: Path, registry: ExecutorRegistry, url: str) -> Engine:
    (root / "inventories" / "lab").mkdir(parents=True)
    (root / "inventories" / "lab" / "inventory.yml").write_text("name: bench\n")
    settings = load_settings(root, env={"INFRA_DATABASE_URL": url})
    return Engine(settings, registry=registry, load_observers=False)


def bench_planning(n: int, registry: ExecutorRegistry) -> Plan:
    request = Request(service="bench", project="bench", params={})
    service = synthetic_service(n, "core.noop")
    t0 = time.perf_counter()
    plan = build_plan(service, request, registry)
    planning = time.perf_counter() - t0
    print(
        f"plan: {n} steps, {len(plan.waves)} waves, planned in {planning * 1000:.0f} ms "
        f"({planning / n * 1e6:.0f} us/step)"
    )
    return plan


def bench_baseline(n: int) -> float:
    ctx = StepContext(
        run_id="x",
        project="bench",
        step_id="s",
        department="core",
        params=NoopExecutor.info.params(),
        inventory=Inventory(InventoryFile()),
    )
    t0 = time.perf_counter()
    for _ in range(n):
        NoopExecutor().apply(ctx)
    baseline = time.perf_counter() - t0
    print(
        f"baseline: executor called directly {n} times: {baseline * 1000:.0f} ms "
        f"({baseline / n * 1e6:.1f} us/step)"
    )
    return baseline


def bench_overhead(
    backend: str, plan: Plan, parallel: int, registry: ExecutorRegistry, root: Path, url: str
) -> None:
    n = len(plan.steps)
    engine = make_engine(root, registry, url)
    TimedNoop.spent = 0.0
    t0 = time.perf_counter()
    result = engine.run(plan, parallel=parallel)
    wall = time.perf_counter() - t0
    assert not result.failed and len(result.steps) == n
    overhead = (wall - TimedNoop.spent) / n * 1000
    goal = GOALS[backend]
    events = len(engine.store.events(result.run_id))
    print(
        f"{backend}: {n} steps with --parallel {parallel} (record included): wall {wall:.2f} s, "
        f"overhead {overhead:.3f} ms/step = {overhead / goal:.2f}x the goal of {goal:g} ms "
        f"({events} events recorded)"
    )
    engine.close()


def bench_events(backend: str, url: str, count: int, threads: int = 4) -> None:
    """Step logs through the event bus from ``threads`` threads, until all are committed."""
    db = open_database(url)
    recorder = RunRecorder(db)
    bus = EventBus(recorder=recorder)
    step = {"department": "bench", "executor": "core.noop", "needs": []}
    plan = [{**step, "id": f"t{i}"} for i in range(threads)]
    bus.emit(Event("bench-events", "run.started", data={"project": "bench", "plan": plan}))
    per_thread = count // threads

    def produce(i: int) -> None:
        bus.emit(Event("bench-events", "step.started", step_id=f"t{i}"))
        for n in range(per_thread):
            data = {"kind": "task", "host": f"h{n % 7}", "task": "bench", "status": "ok", "n": n}
            bus.emit(Event("bench-events", "step.log", step_id=f"t{i}", data=data))
        bus.emit(Event("bench-events", "step.finished", step_id=f"t{i}", data={"status": "ok"}))

    t0 = time.perf_counter()
    workers = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    recorder.flush()
    elapsed = time.perf_counter() - t0
    recorder.close()
    written = len(RunStore(db).events("bench-events", kind="step.log"))
    assert written == per_thread * threads, written
    rate = written / elapsed
    print(
        f"{backend}: {written} step logs from {threads} threads ingested in {elapsed:.2f} s: "
        f"{rate:,.0f} events/s = {rate / EVENTS_GOAL:.1f}x the goal of {EVENTS_GOAL:,.0f}/s"
    )
    db.dispose()


def bench_critical_path(registry: ExecutorRegistry, root: Path, parallel: int, url: str) -> None:
    n, seconds = 200, 0.02
    request = Request(service="bench", project="sleepy", params={})
    plan = build_plan(
        synthetic_service(n, "core.sleep", seed=3, seconds=seconds), request, registry
    )
    cp = critical_path(plan, seconds)
    bound = max(cp, n * seconds / parallel)
    engine = make_engine(root, registry, url)
    t0 = time.perf_counter()
    result = engine.run(plan, parallel=parallel)
    wall = time.perf_counter() - t0
    assert not result.failed
    print(
        f"sqlite, sleepy plan: {n} steps x {seconds * 1000:.0f} ms, --parallel {parallel}: "
        f"critical path {cp:.2f} s, lower bound max(cp, work/parallel) {bound:.2f} s, "
        f"wall {wall:.2f} s = {wall / bound:.2f}x the bound, {wall / cp:.2f}x the critical path"
    )
    engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("INFRA_TEST_POSTGRES_URL"),
        help="PostgreSQL URL (default: $INFRA_TEST_POSTGRES_URL from scripts/services.sh)",
    )
    args = parser.parse_args()
    if not args.postgres:
        parser.error('no PostgreSQL: eval "$(scripts/services.sh)" or pass --postgres URL')
    registry = ExecutorRegistry(use_entry_points=False)
    registry.register("core.noop", TimedNoop)
    registry.register("core.sleep", SleepExecutor)
    plan = bench_planning(args.steps, registry)
    bench_baseline(args.steps)
    with tempfile.TemporaryDirectory() as tmp, scratch_schema(args.postgres, "bench") as pg:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'runs.db'}", "postgresql": pg}
        for backend, url in urls.items():
            bench_overhead(backend, plan, args.parallel, registry, Path(tmp) / backend, url)
        for backend, url in urls.items():
            bench_events(backend, url, args.events)
        bench_critical_path(registry, Path(tmp) / "sleepy", 8, urls["sqlite"])


if __name__ == "__main__":
    main()
