"""``infra stats`` on 10,000 recorded runs, on SQLite and PostgreSQL: goal < 1 s.

    eval "$(scripts/services.sh)"    # PostgreSQL on 127.0.0.1 (INFRA_TEST_POSTGRES_URL)
    .venv/bin/python benchmarks/stats.py [--runs 10000] [--repeat 3]

The record is written in bulk, in the shape the run recorder writes (runs, six steps each,
``run.queued`` events; one run in ten fails at a random step and is resumed an hour later;
a verification per day, one in five finding drift), spread over the last 30 days. Timed:
the ``stats`` command itself (open the database, read, compute, print json) through Typer,
best of ``--repeat``, and its parts (read, compute). PostgreSQL runs in a schema of its own,
dropped at the end; SQLite in a temp dir.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import typer
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from infra_automation.cli import stats as stats_cli
from infra_automation.metrics import compute_stats, load_history
from infra_automation.record import events, open_database, runs, steps

PLAN = [("ipam", "network", []), ("network", "network", ["ipam"]), ("vms", "vmware", ["network"]),
        ("os", "os", ["vms"]), ("web", "web", ["os"]), ("backup", "backup", ["os"])]  # fmt: skip
DAY = timedelta(days=1)


def _run_row(
    rid: str, project: str, start: datetime, status: str, resumed: str | None
) -> dict[str, Any]:
    return {"id": rid, "service": "project-landscape", "project": project, "requester": "tam",
            "check_mode": False, "parallel": 4, "status": status, "resumed_from": resumed,
            "pid": 1, "host": "bench", "changed": True, "started_at": start,
            "finished_at": start + timedelta(minutes=len(PLAN) * 5),
            "request": {}, "plan": []}  # fmt: skip


def _step_rows(rid: str, start: datetime, fail_at: int | None) -> list[dict[str, Any]]:
    rows = []
    for i, (sid, department, needs) in enumerate(PLAN):
        begin = start + timedelta(minutes=5 * i)
        status = (
            "success"
            if fail_at is None or i < fail_at
            else ("failed" if i == fail_at else "skipped")
        )
        ran = status != "skipped"
        rows.append({"run_id": rid, "step_id": sid, "position": i, "department": department,
                     "executor": "core.noop", "needs": needs, "status": status, "changed": ran,
                     "reused": False, "diff": "", "outputs": {}, "targets": [], "artifacts": {},
                     "started_at": begin if ran else None,
                     "finished_at": begin + timedelta(minutes=4) if ran else None,
                     "duration": 240.0 if ran else None})  # fmt: skip
    return rows


def write_record(url: str, count: int, now: datetime) -> None:
    rng = random.Random(18)
    run_rows: list[dict[str, Any]] = []
    step_rows: list[dict[str, Any]] = []
    event_rows: list[dict[str, Any]] = []
    made = 0
    while made < count:
        start = now - timedelta(seconds=rng.uniform(3600, 30 * 86400 - 7200))
        project = f"p{rng.randrange(200)}"
        rid = f"r{made}"
        fail_at = rng.randrange(len(PLAN)) if rng.random() < 0.1 else None
        run_rows.append(
            _run_row(rid, project, start, "failed" if fail_at is not None else "success", None)
        )
        step_rows += _step_rows(rid, start, fail_at)
        event_rows.append(
            {
                "run_id": rid,
                "step_id": None,
                "kind": "run.queued",
                "at": start - timedelta(minutes=1),
                "data": {},
            }
        )
        made += 1
        if fail_at is not None and made < count:
            again = start + timedelta(hours=1)
            run_rows.append(_run_row(f"r{made}", project, again, "success", rid))
            step_rows += _step_rows(f"r{made}", again, None)
            made += 1
    for day in range(30):
        at = now - day * DAY
        for p in range(0, 200, 20):
            state = "drifted" if rng.random() < 0.2 else "in-sync"
            vid = f"verify-{day}-{p}"
            event_rows.append(
                {
                    "run_id": vid,
                    "step_id": "vms",
                    "kind": "verify.resource",
                    "at": at,
                    "data": {"department": "vmware", "state": state},
                }
            )
            event_rows.append(
                {
                    "run_id": vid,
                    "step_id": None,
                    "kind": "verify.finished",
                    "at": at,
                    "data": {"project": f"p{p}", "state": state},
                }
            )
    engine = open_database(url)
    with engine.begin() as conn:
        conn.execute(runs.insert(), run_rows)
        conn.execute(steps.insert(), step_rows)
        conn.execute(events.insert(), event_rows)
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


def measure(label: str, url: str, count: int, repeat: int) -> None:
    now = datetime.now(UTC)
    write_record(url, count, now)
    engine = open_database(url)
    since = now - 30 * DAY
    history = load_history(engine, since, now)
    read = best(lambda: load_history(engine, since, now), repeat)
    compute = best(lambda: compute_stats(history), repeat)
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
    print(f"{label:10} runs {len(history.runs):6}  steps {sum(len(r.steps) for r in history.runs):6}  "  # noqa: E501
          f"read {read:.3f} s  compute {compute:.3f} s  `infra stats` {whole:.3f} s  "
          f"(cpu {CPU_TIMES[-1]:.3f} s) {'OK' if whole < 1 else 'OVER'} (goal < 1 s); "
          f"load {os.getloadavg()[0]:.1f}; deployments {figures.dora.deployments}, "
          f"incidents {figures.incidents}")  # fmt: skip


@contextmanager
def postgres_schema() -> Iterator[str]:
    base = sa.engine.make_url(os.environ["INFRA_TEST_POSTGRES_URL"])
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        text = url.render_as_string(hide_password=False)
        open_database(text, upgrade=True).dispose()
        yield text
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        measure("sqlite", f"sqlite:///{Path(folder) / 'runs.db'}", options.runs, options.repeat)
    if os.environ.get("INFRA_TEST_POSTGRES_URL"):
        with postgres_schema() as url:
            measure("postgresql", url, options.runs, options.repeat)
    else:
        print(
            'postgresql: skipped, INFRA_TEST_POSTGRES_URL not set (eval "$(scripts/services.sh)")'
        )


if __name__ == "__main__":
    main()
