"""Run record: written as events happen (readable mid-run from another connection), WAL,
configurable location, read API; plus the settings that decide where the record lives."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from infra_automation.config import load_settings
from infra_automation.events import Event
from infra_automation.exceptions import ConfigurationError, RunNotFound
from infra_automation.record import RunRecorder, RunStore, open_database

PLAN = [
    {"id": "a", "department": "network", "executor": "core.noop", "needs": [], "description": ""},
    {"id": "b", "department": "os", "executor": "core.noop", "needs": ["a"], "description": ""},
]


def _started() -> Event:
    return Event(
        "run-1",
        "run.started",
        data={
            "service": "svc",
            "project": "shop",
            "requester": "Jane",
            "check": False,
            "parallel": 2,
            "resumed_from": None,
            "plan": PLAN,
            "request": {"service": "svc", "project": "shop", "requester": "Jane", "params": {}},
        },
    )


def test_each_event_is_readable_at_once_from_another_connection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    recorder = RunRecorder(open_database(url))
    reader = RunStore(open_database(url))  # a separate engine, as another process would
    recorder.on_event(_started())
    run = reader.get_run("run-1")
    assert run.status == "running" and run.parallel == 2 and run.requester == "Jane"
    assert [(s.step_id, s.status) for s in run.steps] == [("a", "pending"), ("b", "pending")]
    assert run.steps[1].needs == ("a",)

    recorder.on_event(Event("run-1", "step.started", step_id="a"))
    assert reader.get_run("run-1").step("a").status == "running"
    recorder.on_event(
        Event(
            "run-1",
            "step.finished",
            step_id="a",
            data={
                "status": "success",
                "changed": True,
                "outputs": {"vlan": 101},
                "diff": "+vlan 101\n",
                "targets": [{"target": "core", "status": "success"}],
                "error": None,
                "started_at": "2025-01-01T00:00:00+00:00",
                "finished_at": "2025-01-01T00:00:01+00:00",
                "duration": 1.0,
                "reused": False,
                "artifacts": {},
            },
        )
    )
    a = reader.get_run("run-1").step("a")
    assert (a.status, a.changed, a.outputs, a.diff, a.duration) == (
        "success",
        True,
        {"vlan": 101},
        "+vlan 101\n",
        1.0,
    )
    assert a.targets[0]["target"] == "core"
    assert reader.get_run("run-1").status == "running"  # this process is alive
    recorder.on_event(Event("run-1", "run.finished", data={"status": "failed", "changed": True}))
    done = reader.get_run("run-1")
    assert done.status == "failed" and done.finished_at is not None and done.changed
    assert [e.kind for e in reader.events("run-1")] == [
        "run.started",
        "step.started",
        "step.finished",
        "run.finished",
    ]
    recorder.close()


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'x' / 'runs.db'}")
    with db.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def test_list_runs_filters_and_unknown_run(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'runs.db'}")
    recorder = RunRecorder(db)
    for run_id, project in [("r1", "shop"), ("r2", "blog"), ("r3", "shop")]:
        ev = _started()
        recorder.on_event(Event(run_id, ev.kind, data={**ev.data, "project": project}))
    store = RunStore(db)
    assert {r.id for r in store.list_runs(project="shop")} == {"r1", "r3"}
    assert len(store.list_runs(limit=2)) == 2
    assert store.list_runs()[0].steps == ()  # listings do not load steps
    with pytest.raises(RunNotFound):
        store.get_run("r9")


def test_bad_database_url() -> None:
    with pytest.raises(ConfigurationError, match="invalid database_url"):
        open_database("nosuchdb://x")


def test_settings_from_file_and_environment(tmp_path: Path) -> None:
    default = load_settings(tmp_path, env={})
    assert default.database_url == f"sqlite:///{tmp_path / '.infra' / 'runs.db'}"
    assert default.inventory == tmp_path / "inventories" / "lab"
    assert default.parallel == 4 and default.plugins == ()
    (tmp_path / "infra.toml").write_text(
        'database_url = "sqlite:////tmp/elsewhere.db"\ninventory = "inventories/prod"\n'
        'parallel = 8\nplugins = ["a.b"]\ndocs_dir = "/srv/docs"\n'
    )
    env = {"INFRA_PLUGINS": "c.d, a.b", "INFRA_ROOT": "/ignored-when-root-given"}
    s = load_settings(tmp_path, env=env)
    assert s.database_url == "sqlite:////tmp/elsewhere.db"
    assert (s.inventory, s.parallel, s.plugins) == (
        tmp_path / "inventories/prod",
        8,
        ("a.b", "c.d"),
    )
    assert s.docs_dir == Path("/srv/docs")
    s = load_settings(None, env={"INFRA_ROOT": str(tmp_path), "INFRA_DATABASE_URL": "sqlite://"})
    assert (s.root, s.database_url) == (tmp_path, "sqlite://")


def test_invalid_settings_file(tmp_path: Path) -> None:
    (tmp_path / "infra.toml").write_text("parallel = 0\ncolour = 'red'\n")
    with pytest.raises(ConfigurationError, match=r"parallel.*colour"):
        load_settings(tmp_path, env={})
    (tmp_path / "infra.toml").write_text("parallel = [\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_settings(tmp_path, env={})


def test_many_threads_open_a_new_database_at_once(tmp_path: Path) -> None:
    import threading

    from infra_automation.record import open_database

    url = f"sqlite:///{tmp_path / 'race.db'}"
    errors: list[Exception] = []

    def open_one() -> None:
        try:
            open_database(url).dispose()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
