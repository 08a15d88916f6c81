"""The change flow end to end with real dry runs: waiting, approvals bound to the hash,
voiding on a changed diff, emergencies, windows, conflicts, and the standard change whose
service's history no longer holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from change_helpers import INVENTORY, TUESDAY, write_root

from infra_automation.changes import ChangeService, ChangeType, Decision, State
from infra_automation.changes.model import canonical
from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.executors import ExecutorRegistry
from infra_automation.request import Request

Make = Callable[..., Request]


def approve_all(changes: ChangeService, change_id: str) -> None:
    for who in ("nina", "victor", "olga"):
        assert changes.approve(change_id, who).accepted


def test_a_normal_change_waits_for_one_approver_per_department(
    engine: Engine, changes: ChangeService, request_for: Make
) -> None:
    outcome = changes.gate(request_for())
    assert outcome.decision is Decision.WAITING and outcome.exit_code == 3
    assert outcome.change is not None and outcome.change.state is State.WAITING
    assert outcome.missing == ("department network", "department os", "department vmware")
    record = outcome.change.record
    assert record.change_type is ChangeType.NORMAL and record.risk.value == "high"
    assert {str(i) for i in record.items} == {"project:shop", "device:core", "vm:vm1"}
    assert "+vlan 100" in record.content["steps"]["network"]["diff"]
    assert [r.check for r in engine.store.list_runs()] == [True]  # only the dry run ran
    assert not (engine.settings.root / "devices").exists()


def test_the_requester_cannot_approve_her_own_change(
    changes: ChangeService, request_for: Make
) -> None:
    change = changes.gate(request_for()).change
    assert change is not None
    for who in ("jane", " JANE "):
        result = changes.approve(change.id, who)
        assert not result.accepted
        assert "requested change" in result.reason and "cannot approve" in result.reason
    assert changes.store.get(change.id).state is State.WAITING
    assert changes.store.get(change.id).approvals == ()


def test_an_approver_approves_only_her_departments(
    changes: ChangeService, request_for: Make
) -> None:
    change = changes.gate(request_for()).change
    assert change is not None
    refused = changes.approve(change.id, "victor", department="network")
    assert not refused.accepted and "department 'network'" in refused.reason
    first = changes.approve(change.id, "nina")
    assert first.accepted and first.change.state is State.WAITING
    assert first.missing == ("department os", "department vmware")
    assert not changes.approve(change.id, "mallory").accepted  # listed for no department


def test_approved_change_runs_and_is_implemented(
    engine: Engine, changes: ChangeService, request_for: Make
) -> None:
    change = changes.gate(request_for()).change
    assert change is not None
    approve_all(changes, change.id)
    assert changes.store.get(change.id).state is State.APPROVED
    outcome = changes.gate(request_for(), now=TUESDAY)
    assert outcome.decision is Decision.RUN and outcome.exit_code == 0
    assert outcome.change is not None and outcome.change.id == change.id
    assert outcome.plan is not None
    result = engine.run(outcome.plan)
    done = changes.finish(change.id, result)
    assert done.state is State.IMPLEMENTED and done.run_id == result.run_id
    assert (engine.settings.root / "devices" / "core.cfg").read_text() == "vlan 100\n"
    bound = {a.change_hash for a in done.approvals}
    assert bound == {change.id}


def test_a_changed_diff_voids_the_approvals_and_the_change_waits_again(
    engine: Engine, changes: ChangeService, request_for: Make
) -> None:
    first = changes.gate(request_for()).change
    assert first is not None
    approve_all(changes, first.id)
    device = engine.settings.root / "devices" / "core.cfg"
    device.parent.mkdir()
    device.write_text("vlan 7\n")  # an out-of-band change on the router
    outcome = changes.gate(request_for())
    assert outcome.decision is Decision.VOIDED and outcome.exit_code == 3
    assert outcome.voided == first.id
    assert outcome.change is not None and outcome.change.id != first.id
    assert outcome.change.state is State.WAITING and outcome.change.supersedes == first.id
    assert "-vlan 7" in outcome.change.record.content["steps"]["network"]["diff"]
    old = changes.store.get(first.id)
    assert old.state is State.VOIDED and old.superseded_by == outcome.change.id
    assert all(a.voided_at is not None for a in old.approvals)
    assert not any(a.counts(datetime.now(UTC)) for a in old.approvals)
    assert device.read_text() == "vlan 7\n"  # nothing ran


def test_the_named_change_is_voided_when_its_dry_run_differs(
    engine: Engine, changes: ChangeService, request_for: Make
) -> None:
    first = changes.gate(request_for()).change
    assert first is not None
    approve_all(changes, first.id)
    catalog = engine.settings.root / "catalog" / "landscape.yml"
    catalog.write_text(
        catalog.read_text().replace("vlan {{ params.vlan }}", "vlan {{ params.vlan }} ")
    )
    engine.reload()  # an edited catalog
    outcome = changes.gate(request_for(), change_id=first.id[:12])
    assert outcome.decision is Decision.VOIDED and outcome.voided == first.id


def test_an_emergency_change_runs_at_once_and_stays_flagged_until_approved(
    engine: Engine, request_for: Make
) -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)  # a Saturday: inside the weekend freeze
    changes = ChangeService(engine, clock=lambda: now)
    outcome = changes.gate(request_for("hotfix"))
    assert outcome.decision is Decision.RUN and outcome.plan is not None
    assert outcome.change is not None and outcome.change.flagged
    assert outcome.change.retrospective_due == now + timedelta(hours=12)
    done = changes.finish(outcome.change.id, engine.run(outcome.plan))
    assert done.state is State.IMPLEMENTED and done.flagged
    assert [v.id for v in changes.store.changes() if v.flagged] == [done.id]
    assert not done.overdue(now) and done.overdue(now + timedelta(hours=13))
    assert not changes.approve(done.id, "jane").accepted
    retro = changes.approve(done.id, "victor", comment="ok after the fact")
    assert retro.accepted and not retro.change.flagged
    assert retro.change.retrospective_by == "victor"


def test_a_change_in_a_blackout_window_is_refused_with_the_window_named(
    changes: ChangeService, request_for: Make
) -> None:
    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    outcome = changes.gate(request_for("quick"), now=saturday)
    assert outcome.decision is Decision.REFUSED and outcome.exit_code == 4
    assert "weekend freeze" in outcome.reason and "fri 18:00 - mon 06:00" in outcome.reason
    assert outcome.change is not None and outcome.change.state is State.REFUSED
    tuesday = TUESDAY
    again = changes.gate(request_for("quick"), now=tuesday)  # proposed again: reopened
    assert again.decision is Decision.RUN and again.change is not None
    assert again.change.id == outcome.change.id


def test_two_changes_on_the_same_vm_the_second_is_refused_naming_the_first(
    changes: ChangeService, request_for: Make
) -> None:
    first = changes.gate(request_for(project="shop", vm="web1", device="core")).change
    assert first is not None
    second = changes.gate(request_for(project="blog", vm="web1", device="edge"))
    assert second.decision is Decision.REFUSED and second.conflict == first.id
    assert first.id[:12] in second.reason and "vm:web1" in second.reason
    assert second.change is not None and second.change.state is State.REFUSED
    other = changes.gate(request_for(project="blog", vm="web2", device="edge"))
    assert other.decision is Decision.WAITING


def test_a_standard_change_below_the_success_threshold_is_treated_as_normal(
    engine: Engine, changes: ChangeService, request_for: Make
) -> None:
    tuesday = TUESDAY
    for fail in (False, False, True):
        engine.apply(request_for("quick", project="p1", fail=fail))
    assert changes.success_rate("quick", 20) == pytest.approx((2 / 3, 3))
    outcome = changes.gate(request_for("quick", project="p2"), now=tuesday)
    assert outcome.decision is Decision.WAITING
    assert outcome.change is not None
    record = outcome.change.record
    assert record.change_type is ChangeType.NORMAL
    assert "67% of its last 3 runs (below 95%)" in record.type_reason
    assert record.type_reason in (outcome.change.reason or "")
    assert outcome.missing == ("department vmware",)


def test_a_service_without_a_block_takes_the_site_defaults(
    tmp_path: Path, engine: Engine, changes: ChangeService, request_for: Make
) -> None:
    engine.apply(request_for("plain", project="p1", fail=True))
    outcome = changes.gate(request_for("plain", project="p2"))
    assert outcome.decision is Decision.RUN  # standard whatever its history: as before
    site = {**INVENTORY, "change": {"defaults": {"type": "normal"}}}
    other = Engine(
        load_settings(
            write_root(tmp_path / "gated", site),
            env={"INFRA_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}"},
        ),
        registry=engine.registry,
        load_observers=False,
    )
    waiting = ChangeService(other, clock=lambda: TUESDAY).gate(request_for("plain"))
    assert waiting.decision is Decision.WAITING and waiting.missing == ("department os",)
    other.close()


def test_a_cab_quorum_of_distinct_members(
    tmp_path: Path, registry: ExecutorRegistry, request_for: Make
) -> None:
    site = {
        **INVENTORY,
        "change": {"approval": {"mode": "cab", "cab": ["carol", "dave", "jane"], "quorum": 2}},
    }
    root = write_root(tmp_path / "cab", site)
    engine = Engine(
        load_settings(root, env={"INFRA_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}),
        registry=registry,
        load_observers=False,
    )
    changes = ChangeService(engine)
    data = {"service": "landscape", "project": "shop", "requester": "jane"}
    change = changes.gate(engine.validate(data)).change
    assert change is not None
    assert not changes.approve(change.id, "jane").accepted  # a CAB member, but the requester
    assert not changes.approve(change.id, "mallory").accepted  # not in the CAB
    assert changes.approve(change.id, "carol").missing == ("1 more of the CAB (carol, dave, jane)",)
    assert changes.approve(change.id, "Carol").missing  # the same person twice counts once
    assert changes.approve(change.id, "dave").change.state is State.APPROVED
    engine.close()


def test_a_standard_change_with_a_good_history_runs_at_once(
    engine: Engine, changes: ChangeService, request_for: Make
) -> None:
    engine.apply(request_for("quick", project="p1"))
    tuesday = TUESDAY
    outcome = changes.gate(request_for("quick", project="p2"), now=tuesday)
    assert outcome.decision is Decision.RUN
    assert outcome.change is not None and outcome.change.record.change_type is ChangeType.STANDARD


def test_a_type_override_needs_the_callers_permission(
    changes: ChangeService, request_for: Make
) -> None:
    refused = changes.gate(request_for(), change_type=ChangeType.EMERGENCY)
    assert refused.decision is Decision.REFUSED and refused.change is None
    assert "may not override the change type" in refused.reason
    allowed = changes.gate(request_for(), change_type=ChangeType.EMERGENCY, allowed=True)
    assert allowed.decision is Decision.RUN and allowed.change is not None
    assert allowed.change.record.change_type is ChangeType.EMERGENCY


def test_a_rejected_change_never_runs(changes: ChangeService, request_for: Make) -> None:
    change = changes.gate(request_for()).change
    assert change is not None
    assert not changes.reject(change.id, "somebody").accepted  # approves for no department
    assert changes.reject(change.id, "nina", comment="not now").accepted
    assert not changes.approve(change.id, "victor").accepted
    outcome = changes.gate(request_for())
    assert outcome.decision is Decision.REFUSED and "rejected by nina" in outcome.reason


def test_approvals_expire(engine: Engine, request_for: Make) -> None:
    now = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
    changes = ChangeService(engine, clock=lambda: now)
    change = changes.gate(request_for()).change
    assert change is not None
    approve_all(changes, change.id)
    assert changes.gate(request_for(), now=now + timedelta(hours=47)).decision is Decision.RUN
    later = changes.gate(request_for(), now=now + timedelta(hours=49))
    assert later.decision is Decision.WAITING and later.change is not None
    assert later.change.state is State.WAITING and "expired" in (later.change.reason or "")


def test_the_id_is_the_sha256_of_the_canonical_content_without_run_ids(
    changes: ChangeService, request_for: Make
) -> None:
    one, two = changes.gate(request_for()), changes.gate(request_for())
    first, again = one.change, two.change
    assert first is not None and again is not None and one.dry_run and two.dry_run
    assert first.id == again.id and one.dry_run.run_id != two.dry_run.run_id
    content = first.record.content
    assert hashlib.sha256(canonical(content).encode()).hexdigest() == first.id
    assert first.record.dry_run not in json.dumps(content)
    assert len(changes.store.changes()) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_flow_on_each_database(
    backend: str,
    root: Path,
    registry: ExecutorRegistry,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    url = f"sqlite:///{tmp_path / 'own.db'}"
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
    engine = Engine(
        load_settings(root, env={"INFRA_DATABASE_URL": url}),
        registry=registry,
        load_observers=False,
    )
    try:
        changes = ChangeService(engine)
        make = {"service": "landscape", "project": "shop", "requester": "jane"}
        first = changes.gate(engine.validate(make)).change
        assert first is not None and first.state is State.WAITING
        assert not changes.approve(first.id, "jane").accepted
        approve_all(changes, first.id)
        device = root / "devices" / "core.cfg"
        device.parent.mkdir()
        device.write_text("drift\n")
        voided = changes.gate(engine.validate(make))
        assert voided.decision is Decision.VOIDED and voided.change is not None
        approve_all(changes, voided.change.id)
        ready = changes.gate(engine.validate(make))
        assert ready.decision is Decision.RUN and ready.plan is not None
        done = changes.finish(voided.change.id, engine.run(ready.plan))
        assert done.state is State.IMPLEMENTED and device.read_text() == "vlan 100\n"
        assert engine.db.dialect.name == backend
    finally:
        engine.close()
