"""The drift webhook, against a real local HTTP receiver, on SQLite and PostgreSQL: drift
that appears or changes is posted once, the return to in sync is posted, the token travels
only in its header, and a receiver that is down never fails a verification."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from infra_automation.cli import verify as verify_cli
from infra_automation.record import events as events_table
from infra_automation.secrets import MASK, remember
from infra_automation.verify import SyncState, Verification, VerifyReport
from infra_automation.verify_webhook import TOKEN_HEADER
from tests.verify.conftest import (
    PROJECT,
    Receiver,
    apply,
    base_env,
    live,
    make_engine,
    write_root,
)


@pytest.fixture
def env(
    tmp_path: Path,
    database_url: str,
    token: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    root = write_root(tmp_path / "project", f'drift_webhook = "{receiver.url}?team=infra"\n')
    env = base_env(root, database_url, token)
    monkeypatch.setenv("INFRA_SECRET_DRIFT_WEBHOOK_TOKEN", token)  # the secrets backend's env
    engine = make_engine(root, env)
    try:
        apply(engine)
    finally:
        engine.close()
    return env


def verify(env: dict[str, str]) -> VerifyReport:
    engine = make_engine(Path(env["INFRA_ROOT"]), env)
    try:
        return Verification(engine).run(PROJECT)
    finally:
        engine.close()


def test_drift_detected_once_changed_then_resolved(
    env: dict[str, str], receiver: Receiver, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore too: the token must not be there
    root = Path(env["INFRA_ROOT"])
    assert verify(env).state is SyncState.IN_SYNC
    assert receiver.received == []  # in sync from the start: nothing to say

    live(root, "fa").write_text("tampered\n")
    first = verify(env)
    assert first.state is SyncState.DRIFTED
    [posted] = receiver.wait_for(1)
    assert posted.path == "/hooks/drift?team=infra"
    assert posted.headers[TOKEN_HEADER] == token
    body = posted.body
    assert body["event"] == "drift.detected" and body["project"] == PROJECT
    assert body["state"] == "drifted" and body["previous_state"] == "in-sync"
    assert body["verify_id"] == first.verify_id
    assert body["counts"] == {"in-sync": 1, "drifted": 1, "unverifiable": 0}
    [drift] = body["drifted"]
    assert drift["resource"] == "file fa" and drift["step_id"] == "first"
    assert "-alpha\n+tampered" in drift["diff"]

    assert verify(env).state is SyncState.DRIFTED  # the same drift: not posted again
    assert receiver.events() == ["drift.detected"]

    live(root, "fb").write_text("alpha gamma\n")  # more drift: posted
    verify(env)
    assert receiver.events() == ["drift.detected", "drift.detected"]
    assert {d["resource"] for d in receiver.received[-1].body["drifted"]} == {"file fa", "file fb"}
    assert receiver.received[-1].body["previous_state"] == "drifted"

    live(root, "fb").unlink()
    live(root, "fb").mkdir()  # unreadable: unverifiable tells nothing about drift
    live(root, "fa").write_text("alpha\n")
    assert verify(env).state is SyncState.UNVERIFIABLE
    assert len(receiver.received) == 2

    live(root, "fb").rmdir()
    live(root, "fb").write_text("alpha beta\n")  # repaired
    back = verify(env)
    assert back.state is SyncState.IN_SYNC
    resolved = receiver.received[-1].body
    assert resolved["event"] == "drift.resolved" and resolved["drifted"] == []
    assert resolved["previous_state"] == "drifted" and resolved["verify_id"] == back.verify_id
    assert verify(env).state is SyncState.IN_SYNC  # in sync again: nothing new
    assert receiver.events() == ["drift.detected", "drift.detected", "drift.resolved"]

    every_body = json.dumps([r.body for r in receiver.received])
    assert token not in every_body and token not in caplog.text
    assert "drift webhook" not in caplog.text  # every post was taken: no warning


def test_a_secret_in_the_drift_is_masked_in_the_body(
    env: dict[str, str], receiver: Receiver, token: str
) -> None:
    root = Path(env["INFRA_ROOT"])
    leaked = "s3cr3t-value-of-a-router"
    remember(leaked)  # as reading it from the secrets backend does
    live(root, "fa").write_text(f"password {leaked}\n")
    verify(env)
    [posted] = receiver.wait_for(1)
    text = json.dumps(posted.body)
    assert leaked not in text and MASK in text and token not in text


def test_receiver_down_or_failing_is_logged_and_verify_goes_on(
    env: dict[str, str], receiver: Receiver, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = Path(env["INFRA_ROOT"])
    receiver.status = 500
    live(root, "fa").write_text("tampered\n")
    report = verify(env)
    assert report.state is SyncState.DRIFTED and report.error is None
    assert len(receiver.received) == 1  # it was tried
    assert "drift webhook http://127.0.0.1:" in caplog.text and "HTTPStatusError" in caplog.text
    assert "team=infra" not in caplog.text and token not in caplog.text

    toml = Path(env["INFRA_ROOT"]) / "infra.toml"
    toml.write_text('drift_webhook = "http://127.0.0.1:9/hook?key=abcdef"\n')  # nobody there
    live(root, "fb").write_text("other\n")
    caplog.clear()
    report = verify(env)
    assert report.state is SyncState.DRIFTED and report.exit_code() == 3
    assert "drift webhook http://127.0.0.1:9/hook: ConnectError" in caplog.text
    assert "abcdef" not in caplog.text and token not in caplog.text


def test_infra_verify_posts_and_the_token_is_in_no_record(
    env: dict[str, str], receiver: Receiver, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    root = Path(env["INFRA_ROOT"])
    live(root, "fa").unlink()
    result = CliRunner().invoke(verify_cli.app, ["--all", "--root", str(root), "--no-docs"])
    assert result.exit_code == 3, result.output
    [posted] = receiver.wait_for(1)
    assert posted.body["drifted"][0]["resource"] == "file fa"
    assert posted.headers[TOKEN_HEADER] == token
    assert token not in result.output
    engine = make_engine(root, env)
    try:
        with engine.db.connect() as conn:
            recorded = [str(d) for d in conn.execute(sa.select(events_table.c.data)).scalars()]
    finally:
        engine.close()
    assert recorded and not any(token in d for d in recorded)


def test_without_a_token_secret_no_header_is_sent(
    env: dict[str, str], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INFRA_SECRET_DRIFT_WEBHOOK_TOKEN")
    live(Path(env["INFRA_ROOT"]), "fa").write_text("x-tampered\n")
    verify(env)
    [posted] = receiver.wait_for(1)
    assert TOKEN_HEADER not in posted.headers
