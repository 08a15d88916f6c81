"""Engine benchmark: planning time and scheduling overhead on a synthetic 10,000-step plan,
and wall time against the critical path of a plan of sleeping steps.

    /work/venv/bin/python benchmarks/engine.py [--steps 10000] [--parallel 4]

Overhead per step = (engine wall time - time spent inside the executors) / steps, measured
with the real run record (SQLite, WAL, one transaction per event) and no progress view or
docs observer. The baseline is the same no-op executor called directly in this process.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from infra_automation.catalog import Service
from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.executors import ExecutorRegistry, StepContext
from infra_automation.executors.builtin import NoopExecutor, SleepExecutor
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.planner import Plan, build_plan
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


def make_engine(root: Path, registry: ExecutorRegistry) -> Engine:
    (root / "inventories" / "lab").mkdir(parents=True)
    (root / "inventories" / "lab" / "inventory.yml").write_text("name: bench\n")
    return Engine(load_settings(root, env={}), registry=registry, load_observers=False)


def bench_overhead(n: int, parallel: int, registry: ExecutorRegistry, root: Path) -> None:
    request = Request(service="bench", project="bench", params={})
    service = synthetic_service(n, "core.noop")
    t0 = time.perf_counter()
    plan = build_plan(service, request, registry)
    planning = time.perf_counter() - t0
    print(
        f"plan: {n} steps, {len(plan.waves)} waves, planned in {planning * 1000:.0f} ms "
        f"({planning / n * 1e6:.0f} us/step)"
    )

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

    engine = make_engine(root, registry)
    TimedNoop.spent = 0.0
    t0 = time.perf_counter()
    result = engine.run(plan, parallel=parallel)
    wall = time.perf_counter() - t0
    assert not result.failed and len(result.steps) == n
    overhead = (wall - TimedNoop.spent) / n
    print(
        f"engine: {n} steps with --parallel {parallel} (record included): wall {wall:.2f} s, "
        f"overhead {overhead * 1000:.3f} ms/step (target <= 2 ms), "
        f"{wall / baseline:.0f}x the direct calls"
    )
    events = len(engine.store.events(result.run_id))
    print(f"record: {events} events written, one transaction each")
    engine.close()


def bench_critical_path(registry: ExecutorRegistry, root: Path, parallel: int) -> None:
    n, seconds = 200, 0.02
    request = Request(service="bench", project="sleepy", params={})
    plan = build_plan(
        synthetic_service(n, "core.sleep", seed=3, seconds=seconds), request, registry
    )
    cp = critical_path(plan, seconds)
    bound = max(cp, n * seconds / parallel)
    engine = make_engine(root, registry)
    t0 = time.perf_counter()
    result = engine.run(plan, parallel=parallel)
    wall = time.perf_counter() - t0
    assert not result.failed
    print(
        f"sleepy plan: {n} steps x {seconds * 1000:.0f} ms, --parallel {parallel}: "
        f"critical path {cp:.2f} s, lower bound max(cp, work/parallel) {bound:.2f} s, "
        f"wall {wall:.2f} s = {wall / bound:.2f}x the bound, {wall / cp:.2f}x the critical path"
    )
    engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    registry = ExecutorRegistry(use_entry_points=False)
    registry.register("core.noop", TimedNoop)
    registry.register("core.sleep", SleepExecutor)
    with tempfile.TemporaryDirectory() as tmp:
        bench_overhead(args.steps, args.parallel, registry, Path(tmp) / "a")
        bench_critical_path(registry, Path(tmp) / "b", parallel=8)


if __name__ == "__main__":
    main()
