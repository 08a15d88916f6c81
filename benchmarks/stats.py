"""``infra stats`` on 10,000 recorded runs, on SQLite and PostgreSQL: goal < 1 s.

    eval "$(scripts/services.sh)"    # PostgreSQL on 127.0.0.1 (INFRA_TEST_POSTGRES_URL)
    .venv/bin/python benchmarks/stats.py [--runs 10000] [--repeat 3]

The record is written in bulk, in the shape the run recorder writes: runs with their request
and plan documents, six steps each with outputs, diff and targets, and every run's events
(``run.queued``, ``run.started`` with the plan, ``step.started``, ``--logs`` ``step.log``
lines and ``step.finished`` with its payload per step, ``run.finished``); one run in ten fails
at a random step and is resumed an hour later; a verification per day and tenth project, one
in five finding drift; spread over the last 30 days. Timed: the ``stats`` command itself
(open the database, read, compute, print json) through Typer, best of ``--repeat``, with
its CPU time, and its parts (read, compute). PostgreSQL runs in a schema of its own, dropped
at the end; SQLite in a temp dir.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from infra_automation.cli import stats as stats_cli
from infra_automation.metrics import compute_stats, load_history
from infra_automation.record import events, open_database, runs, scratch_schema, steps

PLAN = [("ipam", "network", []), ("network", "network", ["ipam"]), ("vms", "vmware", ["network"]),
        ("os", "os", ["vms"]), ("web", "web", ["os"]), ("backup", "backup", ["os"])]  # fmt: skip
DAY, NONE = timedelta(days=1), timedelta(0)
Event = tuple[str, str | None, str, datetime, dict[str, Any]]  # run_id, step_id, kind, at, data


REQUEST = {
    "service": "project-landscape",
    "requester": "tam",
    "params": {"vlan_name": "shop", "vm_count": 3, "os": "debian12", "php": "8.2"},
}
STEP_PAYLOAD = ("department", "executor", "status", "changed", "diff", "outputs", "targets",
                "artifacts", "duration", "reused")  # fmt: skip
DIFF = "".join(f"+ interface vlan{i}\n+  description shop web tier {i}\n" for i in range(12))


def _run_row(
    rid: str, project: str, start: datetime, status: str, resumed: str | None
) -> dict[str, Any]:
    plan = [{"id": sid, "department": d, "executor": "core.noop", "needs": n}
            for sid, d, n in PLAN]  # fmt: skip
    return {"id": rid, "service": "project-landscape", "project": project, "requester": "tam",
            "check_mode": False, "parallel": 4, "status": status, "resumed_from": resumed,
            "pid": 1, "host": "bench", "changed": True, "started_at": start,
            "finished_at": start + timedelta(minutes=len(PLAN) * 5),
            "request": {**REQUEST, "project": project}, "plan": plan}  # fmt: skip


def _step_rows(
    rid: str, start: datetime, fail_at: int | None, reuse: int = 0
) -> list[dict[str, Any]]:
    """The steps of a run; the first ``reuse`` were done by the run it resumes (an hour
    earlier) and are recorded as reused, as the engine records them."""
    rows = []
    for i, (sid, department, needs) in enumerate(PLAN):
        begin = start + timedelta(minutes=5 * i) - (timedelta(hours=1) if i < reuse else NONE)
        status = (
            "success"
            if fail_at is None or i < fail_at
            else ("failed" if i == fail_at else "skipped")
        )
        ran = status != "skipped"
        outputs = {"vlan": 100 + i, "gateway": f"10.0.{i}.1", "hosts": [f"web{i}", f"db{i}"]}
        rows.append({"run_id": rid, "step_id": sid, "position": i, "department": department,
                     "executor": "core.noop", "needs": needs, "status": status, "changed": ran,
                     "reused": i < reuse, "diff": DIFF if ran else "",
                     "outputs": outputs if ran else {},
                     "targets": [{"target": f"{sid}-1", "status": status, "diff": DIFF}],
                     "artifacts": {"log": f"artifacts/{rid}/{sid}.log"},
                     "started_at": begin if ran else None,
                     "finished_at": begin + timedelta(minutes=4) if ran else None,
                     "duration": 240.0 if ran else None})  # fmt: skip
    return rows


def _events(run: dict[str, Any], step_rows: list[dict[str, Any]], logs: int) -> Iterator[Event]:
    """The events the recorder writes for ``run`` (run.queued only for a first run)."""
    rid, start = run["id"], run["started_at"]
    if run["resumed_from"] is None:
        yield (rid, None, "run.queued", start - timedelta(minutes=1), {"project": run["project"]})
    head = {k: run[k] for k in ("service", "project", "requester", "resumed_from", "plan")}
    yield rid, None, "run.started", start, {**head, "request": run["request"], "check": False}
    for step in step_rows:
        sid, begin, end = step["step_id"], step["started_at"], step["finished_at"]
        payload = {k: step[k] for k in STEP_PAYLOAD}
        payload |= {"started_at": _iso(begin), "finished_at": _iso(end), "error": None}
        if begin is not None and not step["reused"]:
            yield rid, sid, "step.started", begin, {"department": step["department"]}
            for n in range(logs):
                line = f"TASK [web : template nginx site] changed: [web{n}] ({n} of {logs})"
                yield rid, sid, "step.log", begin + timedelta(seconds=n + 1), {"line": line}
        yield rid, sid, "step.finished", end or start, payload
    yield rid, None, "run.finished", run["finished_at"], {"status": run["status"]}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def write_record(url: str, count: int, now: datetime, logs: int = 2) -> None:
    rng = random.Random(18)
    run_rows: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    event_rows: list[Event] = []

    def add(run: dict[str, Any], its_steps: list[dict[str, Any]]) -> None:
        run_rows.append(run)
        step_rows.extend(its_steps)
        event_rows.extend(_events(run, its_steps, logs))

    made = 0
    while made < count:
        start = now - timedelta(seconds=rng.uniform(3600, 30 * 86400 - 7200))
        project = f"p{rng.randrange(200)}"
        rid = f"r{made}"
        fail_at = rng.randrange(len(PLAN)) if rng.random() < 0.1 else None
        status = "failed" if fail_at is not None else "success"
        add(_run_row(rid, project, start, status, None), _step_rows(rid, start, fail_at))
        made += 1
        if fail_at is not None and made < count:
            again = start + timedelta(hours=1)
            resume = _run_row(f"r{made}", project, again, "success", rid)
            add(resume, _step_rows(f"r{made}", again, None, reuse=fail_at))
            made += 1
    for day in range(30):
        at = now - day * DAY
        for p in range(0, 200, 20):
            state = "drifted" if rng.random() < 0.2 else "in-sync"
            vid = f"verify-{day}-{p}"
            resource = {"department": "vmware", "state": state, "diff": DIFF}
            event_rows.append((vid, "vms", "verify.resource", at, resource))
            outcome = {"project": f"p{p}", "state": state}
            event_rows.append((vid, None, "verify.finished", at, outcome))
    columns = ("run_id", "step_id", "kind", "at", "data")
    engine = open_database(url)
    with engine.begin() as conn:
        conn.execute(runs.insert(), run_rows)
        conn.execute(steps.insert(), step_rows)
        for chunk in range(0, len(event_rows), 20_000):
            rows = event_rows[chunk : chunk + 20_000]
            conn.execute(events.insert(), [dict(zip(columns, row, strict=True)) for row in rows])
    engine.dispose()


def best(action: Callable[[], Any], repeat: int) -> float:
    """Best wall time of ``repeat`` calls; the CPU time of that call goes to CPU_TIMES."""
    times = []
    for _ in range(repeat):
        began, cpu = time.perf_counter(), time.process_time()
        action()
        times.append((time.perf_counter() - began, time.process_time() - cpu))
    wall, used = min(times)
    CPU_TIMES.append(used)
    return wall


CPU_TIMES: list[float] = []


def measure(label: str, url: str, count: int, repeat: int, logs: int) -> None:
    now = datetime.now(UTC)
    write_record(url, count, now, logs)
    engine = open_database(url)
    since = now - 30 * DAY
    history = load_history(engine, since, now)
    read = best(lambda: load_history(engine, since, now), repeat)
    read_cpu = CPU_TIMES[-1]
    compute = best(lambda: compute_stats(history), repeat)
    compute_cpu = CPU_TIMES[-1]
    engine.dispose()
    app = typer.Typer()
    app.add_typer(stats_cli.stats_app, name="stats")  # as the main CLI wires it
    app.command("noop")(lambda: None)
    root = tempfile.mkdtemp(prefix="stats-bench-")
    env = {"INFRA_DATABASE_URL": url}
    args = ["stats", "--since", "30d", "--output", "json", "--root", root]

    def command() -> None:
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output

    whole = best(command, repeat)
    figures = compute_stats(history).totals
    step_count = sum(len(r.steps) for r in history.runs)
    print(f"{label:10} runs {len(history.runs):6}  steps {step_count:6}  "
          f"read {read:.3f} s (cpu {read_cpu:.3f})  "
          f"compute {compute:.3f} s (cpu {compute_cpu:.3f})  `infra stats` {whole:.3f} s  "
          f"(cpu {CPU_TIMES[-1]:.3f} s) {'OK' if whole < 1 else 'OVER'} (goal < 1 s); "
          f"load {os.getloadavg()[0]:.1f}; deployments {figures.dora.deployments}, "
          f"incidents {figures.incidents}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--logs", type=int, default=2, help="step.log events per step")
    options = parser.parse_args()
    sizes = (options.runs, options.repeat, options.logs)
    with tempfile.TemporaryDirectory() as folder:
        measure("sqlite", f"sqlite:///{Path(folder) / 'runs.db'}", *sizes)
    if os.environ.get("INFRA_TEST_POSTGRES_URL"):
        with scratch_schema(os.environ["INFRA_TEST_POSTGRES_URL"], "bench") as url:
            measure("postgresql", url, *sizes)
    else:
        print(
            'postgresql: skipped, INFRA_TEST_POSTGRES_URL not set (eval "$(scripts/services.sh)")'
        )


if __name__ == "__main__":
    main()
