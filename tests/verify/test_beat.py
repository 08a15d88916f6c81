"""Scheduled verify: real Redis, real ``infra worker --beat`` processes (started and stopped
by PID), the database on SQLite and PostgreSQL, a real local receiver for the drift webhook.

The schedule and its parsing are checked on their own first (no broker needed)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from infra_automation.config import load_settings
from infra_automation.exceptions import ConfigurationError
from infra_automation.record import events as events_table
from infra_automation.verify import latest_verifications
from infra_automation.verify_webhook import TOKEN_HEADER
from infra_automation.workers.app import make_app
from infra_automation.workers.beat import (
    SCHEDULE_ENTRY,
    VERIFY_DUE,
    VERIFY_PROJECT,
    beat_schedule,
    is_due,
    parse_duration,
    tick,
)
from tests.verify.conftest import (
    PROJECT,
    Receiver,
    Workers,
    apply,
    base_env,
    live,
    make_engine,
    redis_url,
    write_root,
)

# --------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "1 h", "1x", "-1h", "1h 30m", "1.5h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="verify_every"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0s", "1 h", "soon", "1.5h"])
def test_infra_toml_refuses_a_bad_verify_every(tmp_path: Path, text: str) -> None:
    (tmp_path / "infra.toml").write_text(f'verify_every = "{text}"\n')
    with pytest.raises(ConfigurationError, match="verify_every"):
        load_settings(tmp_path, env={})


def test_the_beat_schedule_is_off_by_default_and_follows_verify_every(tmp_path: Path) -> None:
    env = {"INFRA_BROKER_URL": "redis://127.0.0.1:1/0"}  # never connected to: config only
    assert make_app(load_settings(tmp_path, env=env)).conf.beat_schedule == {}
    (tmp_path / "infra.toml").write_text('verify_every = "1h"\nscheduler_queue = "sched"\n')
    app = make_app(load_settings(tmp_path, env=env))
    entry = app.conf.beat_schedule[SCHEDULE_ENTRY]
    assert entry["task"] == VERIFY_DUE
    assert entry["schedule"] == timedelta(minutes=1)  # asks each minute which projects are due
    assert entry["options"] == {"queue": "sched", "expires": 60.0}
    assert beat_schedule(load_settings(tmp_path, env={}))[SCHEDULE_ENTRY]["schedule"] == (
        timedelta(minutes=1)
    )


def test_due_after_the_interval_less_half_a_tick() -> None:
    now = datetime(2025, 1, 1, 12, tzinfo=UTC)
    hour = 3600.0
    assert tick(hour) == 60 and tick(5) == 5
    assert is_due(None, hour, now)
    assert not is_due(now - timedelta(minutes=59), hour, now)
    assert is_due(now - timedelta(minutes=59, seconds=30), hour, now)
    assert not is_due(now - timedelta(seconds=2), 5, now)
    assert is_due(now - timedelta(seconds=2.5), 5, now)


# --------------------------------------------------------------------------- the worker


def _verifications(engine_env: dict[str, str]) -> list[dict[str, object]]:
    engine = make_engine(Path(engine_env["INFRA_ROOT"]), engine_env)
    try:
        return list(reversed(latest_verifications(engine, PROJECT, limit=1000)))  # oldest first
    finally:
        engine.close()


def _wait(
    env: dict[str, str], workers: Workers, done: Callable[[list[dict[str, object]]], bool]
) -> list[dict[str, object]]:
    deadline = time.monotonic() + 60
    while True:
        found = _verifications(env)
        if done(found):
            return found
        for worker in workers.started:
            assert worker.proc.poll() is None, worker.text()
        assert time.monotonic() < deadline, [v["state"] for v in found] + [
            w.text()[-3000:] for w in workers.started
        ]
        time.sleep(0.2)


def _states(found: list[dict[str, object]]) -> list[object]:
    return [v["state"] for v in found]


def test_two_beats_verify_each_project_on_schedule_and_post_drift(
    tmp_path: Path,
    database_url: str,
    token: str,
    receiver: Receiver,
    queue_tag: str,
    workers_for: Callable[[dict[str, str]], Workers],
) -> None:
    every = 2.0
    root = write_root(
        tmp_path / "project",
        f'scheduler_queue = "{queue_tag}-runs"\nverify_every = "2s"\n'
        f'drift_webhook = "{receiver.url}"\n',
    )
    env = base_env(root, database_url, token)
    engine = make_engine(root, env, docs=True)  # the docs writer: pages to update later
    try:
        apply(engine)
        apply(engine, "old")  # then decommissioned: no recorded state, never verified
        request = engine.validate(
            {"service": "files-decommission", "project": "old", "requester": "tam"}
        )
        assert not engine.apply(request).failed
    finally:
        engine.close()

    workers = workers_for({**env, "INFRA_BROKER_URL": redis_url()})
    for _ in range(2):  # two beats: a project is still verified once per interval
        workers.start("--queues", f"{queue_tag}-runs", "--beat", "--concurrency", "2")
    workers.wait_ready()

    found = _wait(env, workers, lambda v: len(v) >= 2)
    assert set(_states(found)) == {"in-sync"}
    assert receiver.received == []  # in sync from the start: nothing posted

    live(root, "fa").write_text("tampered by hand\n")
    found = _wait(env, workers, lambda v: _states(v)[-3:] == ["drifted"] * 3)
    [posted] = receiver.wait_for(1)
    assert posted.body["event"] == "drift.detected" and posted.headers[TOKEN_HEADER] == token
    assert posted.body["drifted"][0]["resource"] == "file fa"
    assert "+tampered by hand" in posted.body["drifted"][0]["diff"]
    index = (root / "docs" / "projects" / PROJECT / "index.md").read_text()
    assert "| Drift | drifted, verified" in index  # the scheduled verify updates the pages

    live(root, "fa").write_text("alpha\n")  # repaired
    found = _wait(
        env, workers, lambda v: _states(v)[-1] == "in-sync" and len(receiver.received) > 1
    )
    assert receiver.events() == ["drift.detected", "drift.resolved"]  # the same drift: once

    finished = [datetime.fromisoformat(str(v["finished_at"])) for v in found]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(finished)]
    assert min(gaps) >= every - tick(every) / 2 - 0.25, gaps  # two beats, never twice at once
    assert max(gaps) < every * 3, gaps  # and never forgotten

    engine = make_engine(root, env)
    try:
        with engine.db.connect() as conn:
            rows = conn.execute(
                sa.select(events_table.c.data).where(events_table.c.kind == "verify.started")
            ).scalars()
            verified = {data["project"] for data in rows}
    finally:
        engine.close()
    assert verified == {PROJECT}  # the decommissioned project is not verified
    for worker in workers.started:
        assert token not in worker.text()
        assert "beat: Starting" in worker.text() and "infra.verify_due" in worker.text()


def test_beat_without_verify_every_or_broker_is_refused(
    tmp_path: Path,
    database_url: str,
    token: str,
    queue_tag: str,
    workers_for: Callable[[dict[str, str]], Workers],
) -> None:
    root = write_root(tmp_path / "project", f'scheduler_queue = "{queue_tag}-runs"\n')
    env = base_env(root, database_url, token)
    workers = workers_for({**env, "INFRA_BROKER_URL": redis_url()})
    done = workers.run("--queues", f"{queue_tag}-runs", "--beat")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "set verify_every in infra.toml" in " ".join((done.stdout + done.stderr).split())

    (root / "infra.toml").write_text('verify_every = "1h"\n')
    nobroker = workers_for({**env, "INFRA_BROKER_URL": ""})
    done = nobroker.run("--beat")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "broker_url: not set" in " ".join((done.stdout + done.stderr).split())


SLOW = """\
name: slow
description: A file whose verify takes a while
owner: test-team
steps:
  - id: slow
    executor: vtest.file
    params: {name: slow, content: alpha, verify_seconds: 1.5}
"""


def test_a_repeated_verify_message_verifies_once(
    tmp_path: Path,
    database_url: str,
    token: str,
    queue_tag: str,
    workers_for: Callable[[dict[str, str]], Workers],
) -> None:
    """Two messages for one project taken at once by two workers (two beats, a message sent
    again): one verification, under the project's verify lease."""
    root = write_root(
        tmp_path / "project", f'scheduler_queue = "{queue_tag}-runs"\nverify_every = "1h"\n'
    )
    (root / "catalog" / "slow.yml").write_text(SLOW)
    env = {**base_env(root, database_url, token), "INFRA_BROKER_URL": redis_url()}
    engine = make_engine(root, env)
    try:
        request = engine.validate({"service": "slow", "project": PROJECT, "requester": "tam"})
        assert not engine.apply(request).failed
    finally:
        engine.close()
    workers = workers_for(env)
    for _ in range(2):
        workers.start("--queues", f"{queue_tag}-runs", "--concurrency", "2")
    workers.wait_ready()

    app = make_app(load_settings(root, env=env))
    for _ in range(4):
        app.send_task(VERIFY_PROJECT, args=(PROJECT,), queue=f"{queue_tag}-runs")
    _wait(env, workers, lambda v: len(v) >= 1)
    deadline = time.monotonic() + 5  # every message taken, and any second verify finished
    while time.monotonic() < deadline:
        taken = sum(w.text().count(f"{VERIFY_PROJECT}[") for w in workers.started)
        if taken >= 8:  # received + succeeded lines of the 4 messages
            break
        time.sleep(0.2)
    time.sleep(2)
    assert len(_verifications(env)) == 1, [w.text()[-2000:] for w in workers.started]
