"""A hand-made history with known answers, written through the real RunRecorder (events
with explicit ``at`` times), the change tables and the acknowledgements table.

Range: SINCE (2026-11-01 00:00 UTC) to UNTIL (2026-11-08 00:00), 7 days. Plan of the
landscape: ipam (network) -> network (network) -> vms (vmware) -> os (os).

- alpha, delivery A: change ``chg-a`` written 11-02 09:00, approved 09:30. Run a1 10:00:
  ipam 10:00-10:05, network 10:05-10:20 FAILED, run failed 10:21 (incident run:a1, network).
  alice acknowledges 10:30. Resume a2 requested 11:00: ipam reused, network 11:00-11:10,
  vms 11:10-11:40, os 11:40-12:00, success 12:00 (resolves run:a1). A check run c0 at 08:00.
- beta, delivery B: run b1 queued 11-03 08:55, started 09:00: ipam 09:00-09:02, network
  09:02-09:12, vms 09:12-09:42, os 09:42-09:52, success.
- beta drift: verification v1 11-04 08:00 finds vmware drifted (network in sync); emergency
  change ``chg-e`` written 08:30; repair run b2 requested 09:00: ipam 09:00-09:01, network
  09:01-09:03, vms 09:03-09:08, os 09:08-09:10, success; verification v2 10:00 all in sync.
- gamma: run g1 11-06 09:50, os 09:50-10:00 FAILED, run failed 10:00; nobody responds.
- changes also: ``chg-f`` (alpha, normal, failed, 11-05), ``chg-v`` (alpha, emergency, voided).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine

from infra_automation.changes.store import approvals, changes, create_change_tables
from infra_automation.events import Event
from infra_automation.metrics.store import add_acknowledgement
from infra_automation.record import RunRecorder

SINCE = datetime(2026, 11, 1, tzinfo=UTC)
UNTIL = datetime(2026, 11, 8, tzinfo=UTC)
SERVICE = "project-landscape"
LANDSCAPE = [("ipam", "network", []), ("network", "network", ["ipam"]),
             ("vms", "vmware", ["network"]), ("os", "os", ["vms"])]  # fmt: skip


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


class Writer:
    """Writes runs as the engine would: run.queued/started, step.*, run.finished."""

    def __init__(self, engine: Engine) -> None:
        self.recorder = RunRecorder(engine)

    def emit(
        self, run_id: str, kind: str, when: datetime, step: str | None = None, **data: object
    ) -> None:
        self.recorder.on_event(Event(run_id, kind, step_id=step, data=data, at=when))

    def run(
        self,
        run_id: str,
        project: str,
        started: datetime,
        steps: Sequence[tuple[str, str, datetime, datetime, str]],
        *,
        queued: datetime | None = None,
        resumed_from: str | None = None,
        check: bool = False,
        plan: Sequence[tuple[str, str, list[str]]] = LANDSCAPE,
        reused: Sequence[tuple[str, datetime, datetime]] = (),
        finished: datetime | None = None,
    ) -> None:
        """``steps``: (id, department, start, end, status); the run ends with the last."""
        described = [{"id": i, "department": d, "executor": "core.noop", "needs": n}
                     for i, d, n in plan]  # fmt: skip
        head = {"service": SERVICE, "project": project, "check": check, "plan": described,
                "resumed_from": resumed_from, "request": {}}  # fmt: skip
        if queued is not None:
            self.emit(run_id, "run.queued", queued, **head)
        self.emit(run_id, "run.started", started, **head)
        departments = {i: d for i, d, _ in plan}
        for sid, start, end in reused:
            self.emit(
                run_id,
                "step.finished",
                started,
                sid,
                **_finished(departments[sid], start, end, "success", reused=True),
            )
        for sid, department, start, end, status in steps:
            self.emit(run_id, "step.started", start, sid, department=department)
            self.emit(
                run_id, "step.finished", end, sid, **_finished(department, start, end, status)
            )
        ran = {s[0] for s in steps} | {r[0] for r in reused}
        for sid, department, _ in plan:
            if sid not in ran:
                self.emit(
                    run_id,
                    "step.finished",
                    steps[-1][3],
                    sid,
                    department=department,
                    status="skipped",
                )
        status = "failed" if any(s[4] == "failed" for s in steps) else "success"
        finish = finished or steps[-1][3]
        self.emit(run_id, "run.finished", finish, status=status, finished_at=finish.isoformat())

    def verification(self, verify_id: str, project: str, when: datetime, **states: str) -> None:
        for department, state in states.items():
            self.emit(
                verify_id,
                "verify.resource",
                when,
                f"{department}-step",
                department=department,
                state=state,
            )
        overall = "drifted" if "drifted" in states.values() else "in-sync"
        self.emit(verify_id, "verify.finished", when, project=project, state=overall)


def _finished(
    department: str, start: datetime, end: datetime, status: str, *, reused: bool = False
) -> dict[str, object]:
    return {
        "department": department,
        "status": status,
        "started_at": start.isoformat(),
        "finished_at": end.isoformat(),
        "duration": (end - start).total_seconds(),
        "reused": reused,
        "error": "boom" if status == "failed" else None,
    }


def _change(
    engine: Engine,
    cid: str,
    project: str,
    kind: str,
    state: str,
    created: datetime,
    run_id: str | None,
) -> None:
    row = {"id": cid, "service": SERVICE, "project": project, "requester": "tam",
           "change_type": kind, "risk": "low", "state": state, "request_digest": cid,
           "items": [], "content": {}, "created_at": created, "updated_at": created,
           "run_id": run_id}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(changes.insert(), row)


def _approve(engine: Engine, cid: str, approver: str, when: datetime) -> None:
    row = {"change_id": cid, "change_hash": cid, "approver": approver, "decision": "approved",
           "at": when}  # fmt: skip
    with engine.begin() as conn:
        conn.execute(approvals.insert(), row)


def write_history(engine: Engine) -> None:
    w = Writer(engine)
    w.run(
        "c0", "alpha", at(2, 8), [("ipam", "network", at(2, 8), at(2, 8, 1), "success")], check=True
    )
    w.run("a1", "alpha", at(2, 10), [
        ("ipam", "network", at(2, 10), at(2, 10, 5), "success"),
        ("network", "network", at(2, 10, 5), at(2, 10, 20), "failed"),
    ], queued=at(2, 10), finished=at(2, 10, 21))  # fmt: skip
    w.run("a2", "alpha", at(2, 11), [
        ("network", "network", at(2, 11), at(2, 11, 10), "success"),
        ("vms", "vmware", at(2, 11, 10), at(2, 11, 40), "success"),
        ("os", "os", at(2, 11, 40), at(2, 12), "success"),
    ], queued=at(2, 11), resumed_from="a1", reused=[("ipam", at(2, 10), at(2, 10, 5))])  # fmt: skip
    w.run("b1", "beta", at(3, 9), [
        ("ipam", "network", at(3, 9), at(3, 9, 2), "success"),
        ("network", "network", at(3, 9, 2), at(3, 9, 12), "success"),
        ("vms", "vmware", at(3, 9, 12), at(3, 9, 42), "success"),
        ("os", "os", at(3, 9, 42), at(3, 9, 52), "success"),
    ], queued=at(3, 8, 55))  # fmt: skip
    w.verification("verify-v1", "beta", at(4, 8), network="in-sync", vmware="drifted")
    w.run("b2", "beta", at(4, 9), [
        ("ipam", "network", at(4, 9), at(4, 9, 1), "success"),
        ("network", "network", at(4, 9, 1), at(4, 9, 3), "success"),
        ("vms", "vmware", at(4, 9, 3), at(4, 9, 8), "success"),
        ("os", "os", at(4, 9, 8), at(4, 9, 10), "success"),
    ])  # fmt: skip
    w.verification("verify-v2", "beta", at(4, 10), network="in-sync", vmware="in-sync")
    w.run("g1", "gamma", at(6, 9, 50), [("os", "os", at(6, 9, 50), at(6, 10), "failed")],
          plan=[("os", "os", [])])  # fmt: skip
    w.recorder.close()
    create_change_tables(engine)
    _change(engine, "chg-a", "alpha", "normal", "implemented", at(2, 9), "a1")
    _approve(engine, "chg-a", "bob", at(2, 9, 30))
    _change(engine, "chg-e", "beta", "emergency", "implemented", at(4, 8, 30), "b2")
    _change(engine, "chg-f", "alpha", "normal", "failed", at(5, 9), None)
    _change(engine, "chg-v", "alpha", "emergency", "voided", at(5, 10), None)
    add_acknowledgement(engine, "run:a1", "alice", at=at(2, 10, 30))
