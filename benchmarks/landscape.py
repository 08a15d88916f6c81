"""Landscape benchmark: the project-landscape service on the running lab, timed from the record.

    .venv/bin/infra lab up
    .venv/bin/python benchmarks/landscape.py [--web-vms 2] [--parallel 4]

Prints, from the run record of one fresh apply (then decommissions it):
- wall time of the run (first step start to last step end, and run start to run end),
- the critical path: the longest chain of step durations through the plan's dependencies,
- the sum of all step durations (what a strictly one-after-another run would take),
and the ratios wall/critical path (target <= 1.15) and wall/sum. A second apply on the now
built landscape (idempotent: nothing to change) is reported the same way.
Runs in a throwaway project root (the repository's catalog, templates, playbooks linked in).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.lab import Lab
from infra_automation.record import RunRecord
from infra_automation.request import Request

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from landscape_root import make_root

PROJECT = "benchland"


def critical_path(run: RunRecord) -> float:
    """Longest path through the steps' needs, weighted by each step's duration."""
    steps = {s.step_id: s for s in run.steps}
    memo: dict[str, float] = {}

    def finish(sid: str) -> float:
        if sid not in memo:
            step = steps[sid]
            before = max((finish(n) for n in step.needs if n in steps), default=0.0)
            memo[sid] = before + (step.duration or 0.0)
        return memo[sid]

    return max(finish(s) for s in steps)


def span(run: RunRecord) -> float:
    starts = [s.started_at for s in run.steps if s.started_at]
    ends = [s.finished_at for s in run.steps if s.finished_at]
    return (max(ends) - min(starts)).total_seconds()


def report(label: str, run: RunRecord) -> None:
    wall = span(run)
    assert run.finished_at is not None and run.started_at is not None
    total = (run.finished_at - run.started_at).total_seconds()
    cp = critical_path(run)
    work = sum(s.duration or 0.0 for s in run.steps)
    print(f"{label}: status={run.status} steps={len(run.steps)}")
    print(f"  wall (steps)      {wall:8.2f} s   (run incl. setup/teardown {total:.2f} s)")
    print(f"  critical path     {cp:8.2f} s   wall/critical = {wall / cp:.3f}  (target <= 1.15)")
    print(f"  sum of all steps  {work:8.2f} s   wall/sum      = {wall / work:.3f}")
    slow = sorted(run.steps, key=lambda s: -(s.duration or 0))[:4]
    print("  slowest: " + ", ".join(f"{s.step_id} {s.duration or 0:.1f}s" for s in slow))


def run_once(engine: Engine, request: Request, parallel: int) -> RunRecord:
    result = engine.apply(request, parallel=parallel)
    return engine.store.get_run(result.run_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--web-vms", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    lab = Lab(Path(__file__).resolve().parents[1])
    if not lab.status().up:
        print("the lab is not up: run `infra lab up` first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-landscape-") as tmp:
        root = make_root(Path(tmp) / "root", lab.inventory_path)
        engine = Engine(load_settings(root))
        params = {"web_vms": args.web_vms}
        request = engine.validate(
            {"service": "project-landscape", "project": PROJECT, "params": params}, "bench"
        )
        started = datetime.now()
        try:
            report("first apply (builds everything)", run_once(engine, request, args.parallel))
            report("second apply (nothing to change)", run_once(engine, request, args.parallel))
        finally:
            gone = engine.validate(
                {"service": "project-decommission", "project": PROJECT, "params": {}}, "bench"
            )
            engine.apply(gone)
        print(f"total benchmark time {(datetime.now() - started).total_seconds():.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
