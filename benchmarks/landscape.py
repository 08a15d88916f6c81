"""Landscape benchmark: the project-landscape service on the running lab, tuned against stock.

    .venv/bin/infra lab up [--name NAME]
    INFRA_LAB_NAME=NAME .venv/bin/python benchmarks/landscape.py [--web-vms 2] [--parallel 4]
        [--repeat N] [--param NAME=VALUE ...]

In one process, on the same hosts, back to back, for each Ansible mode:

- ``tuned``: what the engine does by default (mitogen when installed and supported, SSH
  masters and facts shared by the Ansible steps of a run, one ``ansible-playbook`` for the
  steps that start together on the same hosts, and for the steps that wait for them only);
- ``stock``: Ansible's own ``linear`` strategy, every play its own process, connections and
  facts (``INFRA_ANSIBLE_MITOGEN=0 INFRA_ANSIBLE_SESSION=0 INFRA_ANSIBLE_BATCH=0``);

it times a fresh build, a no-op re-apply and a dry run (check mode, on the built landscape),
each ``--repeat`` times (a fresh build after a decommission each time; the median is
reported, with the range), then decommissions the landscape. Tuned runs first, so stock gets
hosts whose packages the tuned build already installed: the comparison errs in stock's
favour. Prints each phase's wall time (first step start to last step end), tuned next to
stock, their ratio, and the tuned run's ratio to its critical path (the longest chain of
step durations), and the CPU seconds the phase cost on the controller (this process and
every process it started: the engine, ansible-playbook, its workers, mitogen) with the load
average when it ended: on a machine shared with other work the wall times follow the load,
the CPU seconds much less. Runs in a throwaway project root (the repository's catalog,
templates, playbooks linked in); the landscape is decommissioned at the end unless
``--keep`` (then only the last mode's stays).

``--param`` sets another parameter of the request (a YAML value): ``--param backup=false``
measures the landscape without its backup step, whose ``restic`` key derivation is host CPU
that no Ansible setting changes (restic calibrates it to take about 0.5 s per use).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.lab import DEFAULT_NAME, Lab
from infra_automation.record import RunRecord
from infra_automation.request import Request

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from landscape_root import make_root

PROJECT = "benchland"
MODES = {
    "tuned": {},
    "stock": {
        "INFRA_ANSIBLE_MITOGEN": "0",
        "INFRA_ANSIBLE_SESSION": "0",
        "INFRA_ANSIBLE_BATCH": "0",
    },
}
PHASES = ("fresh build", "no-op re-apply", "dry run")
GOALS = {"fresh build": 30.0, "no-op re-apply": 15.0, "dry run": 20.0}  # tuned, seconds


@dataclass(frozen=True)
class Timing:
    status: str
    wall: float  # first step start to last step end
    critical: float  # the longest chain of step durations through the plan's needs
    changed: int  # steps that changed something
    slowest: str
    cpu: float = 0.0  # CPU seconds of this process and its children during the phase
    load: float = 0.0  # the 1-minute load average when the phase ended


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


def timing(run: RunRecord) -> Timing:
    starts = [s.started_at for s in run.steps if s.started_at]
    ends = [s.finished_at for s in run.steps if s.finished_at]
    slow = sorted(run.steps, key=lambda s: -(s.duration or 0))[:3]
    return Timing(
        status=str(run.status),
        wall=(max(ends) - min(starts)).total_seconds(),
        critical=critical_path(run),
        changed=sum(1 for s in run.steps if getattr(s, "changed", False)),
        slowest=", ".join(f"{s.step_id} {s.duration or 0:.1f}s" for s in slow),
    )


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (ansible-playbook and its
    workers end with their play)."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_mode(
    engine: Engine, request: Request, gone: Request, args: argparse.Namespace
) -> dict[str, list[Timing]]:
    timings: dict[str, list[Timing]] = {}
    try:
        for phase in PHASES:
            for round_ in range(args.repeat):
                if phase == "fresh build" and round_:
                    engine.apply(gone)  # fresh again
                t = measure(engine, request, check=phase == "dry run", parallel=args.parallel)
                timings.setdefault(phase, []).append(t)
                print(
                    f"    {phase:15s} {t.wall:6.1f} s  cpu {t.cpu:5.1f} s  load {t.load:4.1f}"
                    f"  {t.status}",
                    flush=True,
                )
    finally:
        if not args.keep:
            engine.apply(gone)
    return timings


def measure(engine: Engine, request: Request, *, check: bool, parallel: int) -> Timing:
    used = cpu_seconds()
    result = engine.apply(request, parallel=parallel, check=check)
    measured = timing(engine.store.get_run(result.run_id))
    return replace(measured, cpu=cpu_seconds() - used, load=os.getloadavg()[0])


def median(timings: list[Timing]) -> Timing:
    """The run of median wall time (the lower middle one of an even count)."""
    return sorted(timings, key=lambda t: t.wall)[(len(timings) - 1) // 2]


def report(results: dict[str, dict[str, list[Timing]]]) -> None:
    tuned = {p: median(ts) for p, ts in results["tuned"].items()}
    stock = {p: median(ts) for p, ts in results["stock"].items()}
    rounds = len(results["tuned"][PHASES[0]])
    print()
    if rounds > 1:
        print(f"medians of {rounds} rounds (range: fastest-slowest)")
    print(f"{'phase':16s} {'tuned':>8s} {'stock':>8s} {'stock/tuned':>12s} "
          f"{'tuned/critical':>15s} {'goal':>7s}     "
          f"{'cpu tuned':>9s} {'cpu stock':>9s}")  # fmt: skip
    for phase in PHASES:
        t, s = tuned[phase], stock[phase]
        ok = "ok" if t.wall <= GOALS[phase] else "MISSED"
        print(
            f"{phase:16s} {t.wall:7.1f}s {s.wall:7.1f}s {s.wall / t.wall:11.2f}x "
            f"{t.wall / t.critical:15.3f} {GOALS[phase]:5.0f}s {ok:6s} {t.cpu:8.1f}s {s.cpu:8.1f}s"
        )
        if rounds > 1:
            spans = [
                f"{min(x.wall for x in ts):.1f}-{max(x.wall for x in ts):.1f}s"
                for ts in (results["tuned"][phase], results["stock"][phase])
            ]
            print(f"{'':16s} range: tuned {spans[0]}, stock {spans[1]}")
    for mode, timings in results.items():
        for phase, ts in timings.items():
            t = median(ts)
            print(f"  {mode} {phase}: {t.status}; slowest: {t.slowest}")


def request_param(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` from the command line: a YAML scalar (``false``, ``3``) is read as
    such, anything else (``Shop: new``, empty) stays the text given."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError:
        return name, value
    return name, loaded if isinstance(loaded, bool | int | float | str) else value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--web-vms", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--modes", default="tuned,stock", help="comma-separated: tuned, stock")
    parser.add_argument("--keep", action="store_true", help="leave the landscape built")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of each phase; the median is reported"
    )
    parser.add_argument(
        "--param",
        type=request_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another request parameter, e.g. backup=false",
    )
    args = parser.parse_args()
    lab = Lab(Path(__file__).resolve().parents[1], os.environ.get("INFRA_LAB_NAME", DEFAULT_NAME))
    if not lab.status().up:
        print(f"the lab {lab.name!r} is not up: run `infra lab up` first", file=sys.stderr)
        return 2
    started = time.monotonic()
    results: dict[str, dict[str, list[Timing]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-landscape-") as tmp:
        root = make_root(Path(tmp) / "root", lab.inventory_path)
        engine = Engine(load_settings(root))
        params = {"web_vms": args.web_vms, **dict(args.param)}
        request = engine.validate(
            {"service": "project-landscape", "project": PROJECT, "params": params}, "bench"
        )
        gone = engine.validate(
            {"service": "project-decommission", "project": PROJECT, "params": {}}, "bench"
        )
        for mode in args.modes.split(","):
            print(f"{mode}:", flush=True)
            with environment(MODES[mode]):
                results[mode] = run_mode(engine, request, gone, args)
        engine.close()
    if set(results) == set(MODES):
        report(results)
    print(f"total benchmark time {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
