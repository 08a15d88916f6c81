"""Claiming a change for its run: approved -> implementing, after which it can be neither
rejected nor voided; a run that cannot start gives the claim back; a claim left by a process
that died is recorded failed by the next gate, and the change can be proposed again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from infra_automation.changes import ChangeRefused, ChangeService, Decision, State
from infra_automation.changes.store import changes as change_table
from infra_automation.engine import Engine
from infra_automation.events import utcnow
from infra_automation.exceptions import RunLocked
from infra_automation.request import Request
from infra_automation.scheduler import ProjectLock
from infra_automation.server.runner import change_job

Make = Callable[..., Request]


def ready(changes: ChangeService, request_for: Make) -> tuple[str, object]:
    outcome = changes.gate(request_for("quick", project="p1"))
    assert outcome.decision is Decision.RUN and outcome.change is not None
    return outcome.change.id, outcome.plan


def test_a_claimed_change_can_no_longer_be_rejected(
    changes: ChangeService, request_for: Make
) -> None:
    change_id, _ = ready(changes, request_for)
    assert changes.claim(change_id).state is State.IMPLEMENTING
    refused = changes.reject(change_id, "jane")
    assert not refused.accepted and "implementing" in refused.reason
    with pytest.raises(ChangeRefused, match="implementing"):
        changes.claim(change_id)  # a second run cannot take it either
    again = changes.gate(request_for("quick", project="p1"))
    assert again.decision is Decision.REFUSED and "being implemented" in again.reason


def test_a_run_that_cannot_start_gives_the_claim_back(
    engine: Engine, changes: ChangeService, request_for: Make
) -> None:
    change_id, plan = ready(changes, request_for)
    job = change_job(engine, changes, plan, change_id)  # type: ignore[arg-type]
    with ProjectLock(engine.db, "p1", "someone-else", ttl=30), pytest.raises(RunLocked):
        job()
    view = changes.store.get(change_id)
    assert view.state is State.APPROVED and "could not start" in (view.reason or "")
    assert job().run_id  # the lock is gone: the same approved change runs now
    assert changes.store.get(change_id).state is State.IMPLEMENTED


def test_a_claim_left_by_a_dead_process_is_failed_by_the_next_gate(
    engine: Engine, changes: ChangeService, request_for: Make
) -> None:
    change_id, _ = ready(changes, request_for)
    changes.claim(change_id)
    assert changes.recover_interrupted() == []  # fresh: its run may be starting
    with engine.db.begin() as conn:  # claimed long ago, and no run of p1 holds a lease
        old = utcnow() - timedelta(minutes=10)
        conn.execute(sa.update(change_table).values(updated_at=old))
    outcome = changes.gate(request_for("quick", project="p1"))
    history = [h.state for h in changes.store.get(change_id).history]
    assert history[-3:] == ["implementing", "failed", "approved"]  # failed, proposed again
    assert outcome.decision is Decision.RUN and outcome.change is not None
    assert "interrupted" in (changes.store.get(change_id).history[-2].reason or "")
