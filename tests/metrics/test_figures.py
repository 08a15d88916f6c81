"""Every metric on the hand-made history of history_fixture (known answers), on SQLite and
on the real PostgreSQL."""

from __future__ import annotations

import pytest
from history_fixture import SERVICE, SINCE, UNTIL, at
from sqlalchemy import Engine

from infra_automation.metrics import compute_stats, derive_incidents, load_history, parse_targets
from infra_automation.metrics.report import StatsReport

MIN, HOUR = 60.0, 3600.0
TARGETS = parse_targets(
    {
        "incidents": {"response": "15m", "resolution": "90m"},
        "services": {SERVICE: {"delivery": "2h"}},
        "departments": {"network": {"step": "30m"}, "vmware": {"incident_response": "2h"}},
    },
    "test",
)


def stats(engine: Engine, **options: str) -> StatsReport:
    project = options.pop("project", None)
    history = load_history(engine, SINCE, UNTIL, project=project)
    return compute_stats(history, TARGETS, **options)


def test_incidents_open_respond_and_resolve(history_db: Engine) -> None:
    incidents = {i.id: i for i in derive_incidents(load_history(history_db, SINCE, UNTIL))}
    assert sorted(incidents) == ["drift:verify-v1:vmware", "run:a1", "run:g1"]
    failed = incidents["run:a1"]
    assert (failed.department, failed.step_id, failed.opened_at) == (
        "network",
        "network",
        at(2, 10, 21),
    )
    # responded to (alice's acknowledgement) long before it was resolved (the resume's success)
    assert (failed.responded_at, failed.responded_by) == (at(2, 10, 30), "ack alice")
    assert (failed.resolved_at, failed.resolved_by) == (at(2, 12), "a2")
    assert (failed.response_time, failed.resolution_time) == (9 * MIN, 99 * MIN)
    drift = incidents["drift:verify-v1:vmware"]
    assert (drift.opened_at, drift.responded_by, drift.resolved_by) == (
        at(4, 8),
        "run b2",
        "verify-v2",
    )
    assert (drift.response_time, drift.resolution_time) == (HOUR, 2 * HOUR)
    open_one = incidents["run:g1"]
    assert (open_one.department, open_one.responded_at, open_one.resolved_at) == ("os", None, None)


def test_totals(history_db: Engine) -> None:
    totals = stats(history_db).totals
    assert (totals.deliveries, totals.done) == (4, 3)  # A, B, b2 done; g1 not
    # request -> done: A from its change record 09:00 to 12:00, B from its queueing 08:55 to
    # 09:52, b2 from the emergency change 08:30 to 09:10
    assert totals.lead_time.count == 3
    assert (totals.lead_time.p50, totals.lead_time.p95) == (57 * MIN, 3 * HOUR)
    assert totals.change_success_rate == pytest.approx(2 / 3)  # chg-a, chg-e of a, e, f
    assert totals.emergency_share == pytest.approx(1 / 3)  # chg-e of a, e, f (v is voided)
    assert (totals.incidents, totals.incidents_open) == (3, 1)
    assert (totals.incident_response.p50, totals.incident_response.p95) == (9 * MIN, HOUR)
    assert (totals.incident_resolution.p50, totals.incident_resolution.p95) == (99 * MIN, 2 * HOUR)


def test_dora(history_db: Engine) -> None:
    dora = stats(history_db).totals.dora
    assert dora.deployments == 5  # a1, a2, b1, b2, g1 (not the check run c0)
    assert dora.per_day == pytest.approx(5 / 7)
    assert (dora.change_lead_time.p50, dora.change_lead_time.p95) == (57 * MIN, 3 * HOUR)
    assert dora.change_fail_rate == pytest.approx(2 / 5)  # a1, g1
    recovery = dora.failed_deployment_recovery_time
    assert (recovery.count, recovery.p50) == (1, 99 * MIN)  # g1 has not recovered
    assert dora.rework_rate == pytest.approx(2 / 5)  # a2 (resume) and b2 (repair of drift)


def test_departments_and_the_ola_pause(history_db: Engine) -> None:
    report = stats(history_db)
    network = report.departments["network"]
    assert (network.steps, network.failed_steps) == (7, 1)
    # 60, 120, 120, 300, 600, 600, 900 s
    assert (network.step_duration.p50, network.step_duration.p95) == (300.0, 900.0)
    # A: ipam 10:00-10:05 + network 10:05-11:10 (its failure and the wait for the resume are
    # the network's); B 2 + 10 min; b2 1 + 2 min
    assert network.waiting.count == 3
    assert (network.waiting.p50, network.waiting.p95, network.waiting.total) == (
        12 * MIN,
        70 * MIN,
        85 * MIN,
    )
    vmware = report.departments["vmware"]
    # A's vms: ready at 11:10 when the network was done: its clock was paused from 10:00
    clocks = {(c.delivery_id, c.step_id): c for c in report.clocks}
    assert (clocks[("a1", "vms")].ready_at, clocks[("a1", "vms")].waited) == (
        at(2, 11, 10),
        30 * MIN,
    )
    assert (vmware.waiting.p50, vmware.waiting.p95, vmware.waiting.total) == (
        30 * MIN,
        30 * MIN,
        65 * MIN,
    )
    assert (vmware.incidents, vmware.incident_resolution.p50) == (1, 2 * HOUR)
    assert report.departments["os"].incidents_open == 1


def test_breaches(history_db: Engine) -> None:
    found = {(b.kind, b.incident_id or b.run_id): b for b in stats(history_db).breaches}
    assert sorted(found) == [
        ("delivery", "a2"),
        ("delivery", "g1"),  # not done by the end of the range: ongoing
        ("incident_resolution", "drift:verify-v1:vmware"),
        ("incident_resolution", "run:a1"),
        ("incident_resolution", "run:g1"),
        ("incident_response", "run:g1"),
        ("step", "a2"),
    ]
    assert found[("delivery", "a2")].actual == 150 * MIN  # approved 09:30, done 12:00
    assert found[("delivery", "g1")].ongoing
    step = found[("step", "a2")]
    assert (step.step_id, step.department, step.actual, step.target) == (
        "network",
        "network",
        65 * MIN,
        30 * MIN,
    )
    # the drift was answered within the vmware department's 2 h, not the default 15 min
    assert ("incident_response", "drift:verify-v1:vmware") not in found
    ongoing = found[("incident_response", "run:g1")]
    assert (ongoing.ongoing, ongoing.actual) == (True, (UNTIL - at(6, 10)).total_seconds())


def test_per_project_service_and_filters(history_db: Engine) -> None:
    report = stats(history_db)
    assert sorted(report.projects) == ["alpha", "beta", "gamma"]
    assert report.projects["alpha"].dora.change_fail_rate == pytest.approx(1 / 2)
    assert report.projects["beta"].dora.rework_rate == pytest.approx(1 / 2)
    assert report.projects["beta"].emergency_share == 1.0
    assert report.services[SERVICE].deliveries == 4
    beta = stats(history_db, project="beta")
    assert (beta.totals.deliveries, beta.totals.dora.deployments) == (2, 2)
    assert beta.totals.incidents == 1
    only_vmware = stats(history_db, department="vmware")
    assert sorted(only_vmware.departments) == ["vmware"]
    assert [i.id for i in only_vmware.incidents] == ["drift:verify-v1:vmware"]
    assert only_vmware.totals.dora.deployments == 4  # a1 (its vms step skipped), a2, b1, b2


def test_the_range_counts_what_started_in_it(history_db: Engine) -> None:
    history = load_history(history_db, at(3, 0), at(5, 0))
    totals = compute_stats(history, TARGETS).totals
    assert (totals.deliveries, totals.dora.deployments, totals.incidents) == (2, 2, 1)
    assert totals.dora.per_day == 1.0
