"""Run record on SQLite and PostgreSQL: step boundaries readable at once from another
connection, step logs within 100 ms, liveness from the project lease, migrations, WAL,
configurable location, read API; plus the settings that decide where the record lives."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from db_backends import database_url  # noqa: F401 - the fixture, over both backends

from infra_automation.config import load_settings
from infra_automation.events import Event
from infra_automation.exceptions import ConfigurationError, RecordError, RunNotFound
from infra_automation.leases import Leases
from infra_automation.record import (
    RunRecorder,
    RunStore,
    current_revision,
    head_revision,
    open_database,
    safe_url,
)

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


def test_each_boundary_is_readable_at_once_from_another_connection(
    database_url: str,  # noqa: F811 - the fixture
) -> None:
    url = database_url
    recorder = RunRecorder(open_database(url))
    reader = RunStore(open_database(url))  # a separate engine, as another process would
    lease = Leases(recorder.engine, run_id="run-1", ttl=30)
    assert lease.try_acquire("project:shop") is None
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
    assert reader.get_run("run-1").status == "running"  # its lease is held
    lease.close()
    assert reader.get_run("run-1").status == "interrupted"  # recorded running, no lease
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
    recorder.engine.dispose()
    reader.engine.dispose()


def test_step_logs_are_batched_and_written_within_100_ms(
    database_url: str,  # noqa: F811 - the fixture
) -> None:
    db = open_database(database_url)
    recorder = RunRecorder(db)
    reader = RunStore(db)
    recorder.on_event(_started())
    recorder.on_event(Event("run-1", "step.started", step_id="a"))
    for i in range(50):
        recorder.on_event(Event("run-1", "step.log", step_id="a", data={"line": i}))
    assert [e.kind for e in reader.events("run-1")] == ["run.started", "step.started"]
    deadline = time.monotonic() + 2
    while len(reader.events("run-1")) < 52 and time.monotonic() < deadline:
        time.sleep(0.02)
    logs = reader.events("run-1", kind="step.log")
    assert [e.data["line"] for e in logs] == list(range(50))  # in order, none lost
    recorder.on_event(Event("run-1", "step.log", step_id="a", data={"line": 50}))
    recorder.on_event(Event("run-1", "step.finished", step_id="a", data={"status": "success"}))
    kinds = [e.kind for e in reader.events("run-1")]  # the boundary flushed the log before it
    assert kinds[-2:] == ["step.log", "step.finished"] and len(kinds) == 54
    recorder.close()
    db.dispose()


def test_timestamps_and_documents_keep_their_values(
    database_url: str,  # noqa: F811 - the fixture
) -> None:
    db = open_database(database_url)
    recorder = RunRecorder(db)
    recorder.on_event(_started())
    data = {"status": "success", "outputs": {"nested": {"list": [1, "two", None]}, "n": 1.5}}
    data |= {"started_at": "2025-01-01T00:00:00+02:00", "duration": 0.25}
    recorder.on_event(Event("run-1", "step.finished", step_id="a", data=data))
    a = RunStore(db).get_run("run-1").step("a")
    assert a.outputs == data["outputs"]
    assert a.started_at is not None and a.started_at.isoformat() == "2024-12-31T22:00:00+00:00"
    recorder.close()
    db.dispose()


def test_a_failed_write_is_sticky_and_named(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'runs.db'}")
    recorder = RunRecorder(db)
    recorder.on_event(_started())
    with db.begin() as conn:
        conn.execute(sa.text("DROP TABLE infra_events"))  # every write fails from now on
    with pytest.raises(RecordError, match=r"cannot write to the run record .*no such table"):
        recorder.on_event(Event("run-1", "step.started", step_id="a"))
    assert recorder.error is not None
    with pytest.raises(RecordError):
        recorder.on_event(Event("run-1", "step.finished", step_id="a"))
    recorder.close()


def test_migrations_make_the_schema_of_the_code(
    database_url: str,  # noqa: F811 - the fixture
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from infra_automation.departments.ipam import metadata as ipam_metadata
    from infra_automation.record import metadata

    db = open_database(database_url)
    assert current_revision(db) == head_revision()
    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        for meta in (metadata, ipam_metadata):
            diffs = [d for d in compare_metadata(context, meta) if _relevant(d, meta)]
            assert diffs == []
    db.dispose()


def _relevant(diff: object, meta: sa.MetaData) -> bool:
    """Differences about the tables of ``meta`` (the others belong to the other metadata)."""
    if isinstance(diff, tuple) and diff and diff[0] == "remove_table":
        return str(diff[1].name) in meta.tables
    if isinstance(diff, tuple) and diff and diff[0] == "remove_index":
        return str(diff[1].table.name) in meta.tables
    return True


OLD_RUNS = (
    "CREATE TABLE infra_runs (id VARCHAR(64) PRIMARY KEY, service VARCHAR(100) NOT NULL, "
    "project VARCHAR(100) NOT NULL, requester VARCHAR(200), check_mode BOOLEAN NOT NULL, "
    "parallel INTEGER NOT NULL, status VARCHAR(20) NOT NULL, resumed_from VARCHAR(64), "
    "pid INTEGER, host VARCHAR(255), changed BOOLEAN NOT NULL, started_at VARCHAR(40) NOT NULL, "
    "finished_at VARCHAR(40), request TEXT NOT NULL, plan TEXT NOT NULL)"
)


def test_an_old_sqlite_record_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sa.create_engine(f"sqlite:///{path}")
    with old.begin() as conn:  # the runs table as created before Alembic, with a run
        conn.execute(sa.text(OLD_RUNS))
        conn.execute(
            sa.text(
                "INSERT INTO infra_runs VALUES ('r0', 'svc', 'shop', NULL, 0, 1, 'success', "
                "NULL, 1, 'h', 1, '2025-01-01T00:00:00+00:00', NULL, '{}', '[]')"
            )
        )
    old.dispose()
    db = open_database(f"sqlite:///{path}")
    assert current_revision(db) == head_revision()
    kept = RunStore(db).get_run("r0")
    assert (kept.status, kept.project, kept.error) == ("success", "shop", None)
    columns = {c["name"] for c in sa.inspect(db).get_columns("infra_runs")}
    assert "error" in columns
    assert {"infra_leases", "infra_host_bindings", "infra_steps"} <= set(
        sa.inspect(db).get_table_names()
    )
    db.dispose()


def test_postgresql_is_not_migrated_behind_the_users_back() -> None:
    from db_backends import database

    with database("postgresql", Path("/nonexistent"), migrated=False) as url:
        with pytest.raises(ConfigurationError, match=r"revision none.*infra db upgrade") as info:
            open_database(url)
        assert "infra-test-pw" not in str(info.value)
        db = open_database(url, upgrade=True)
        assert current_revision(db) == head_revision()
        with db.connect() as conn:
            kinds = dict(
                conn.execute(
                    sa.text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = 'infra_steps' AND table_schema = current_schema()"
                    )
                ).all()
            )
        assert kinds["outputs"] == "jsonb"
        assert kinds["started_at"] == "timestamp with time zone"
        db.dispose()


def test_passwords_never_appear_in_errors() -> None:
    url = "postgresql+psycopg://infra:s3cr3t-pw@127.0.0.1:1/nodb"
    assert "s3cr3t-pw" not in safe_url(url)
    with pytest.raises(ConfigurationError) as info:
        open_database(url, timeout=1)
    assert "s3cr3t-pw" not in str(info.value) and "***" in str(info.value)
    with pytest.raises(ConfigurationError) as bad:
        open_database("nosuchdb://user:s3cr3t-pw@host/x")
    assert "s3cr3t-pw" not in str(bad.value)


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


def test_lease_ttl_and_database_timeout_settings(tmp_path: Path) -> None:
    default = load_settings(tmp_path, env={})
    assert (default.lease_ttl, default.database_timeout) == (30.0, 30.0)
    (tmp_path / "infra.toml").write_text("lease_ttl = 10\ndatabase_timeout = 5\n")
    s = load_settings(tmp_path, env={})
    assert (s.lease_ttl, s.database_timeout) == (10.0, 5.0)
    s = load_settings(tmp_path, env={"INFRA_LEASE_TTL": "2.5", "INFRA_DATABASE_TIMEOUT": "0.2"})
    assert (s.lease_ttl, s.database_timeout) == (2.5, 0.2)
    with pytest.raises(ConfigurationError, match=r"environment: INFRA_LEASE_TTL: .*number"):
        load_settings(tmp_path, env={"INFRA_LEASE_TTL": "soon"})
    (tmp_path / "infra.toml").write_text("lease_ttl = 60\n")
    with pytest.raises(ConfigurationError, match=r"lease_ttl: .*less than or equal to 30"):
        load_settings(tmp_path, env={})
