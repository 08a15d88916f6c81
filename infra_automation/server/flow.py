"""What a submission and an approval do, for the API and the portal alike (one
implementation): the change gate where a change policy governs the service (as ``infra
apply``), then the run queued (:class:`~infra_automation.server.runner.RunQueue`).

::

    submitted = submit(state, request, parallel=2)   # -> run id and/or the gate's outcome
    approved = approve(state, change_id, "carol")     # -> the approval; its run if it completed

A change the gate lets run is queued with its id: its run claims it when it starts (approved
-> implementing), so one rejected or voided meanwhile never runs. An approval that completes
a normal change dry-runs the recorded request again first (the gate): a dry run that differs
from the approved one voids the approvals and the change waits again. A full queue is 429.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra_automation.changes import (
    ApprovalResult,
    ChangeType,
    Decision,
    GateOutcome,
    State,
)
from infra_automation.request import Request
from infra_automation.server.state import ServerState, queued
from infra_automation.workers.queues import departments_of, require_mapped


@dataclass(frozen=True)
class Submitted:
    """A queued run (``run_id``) and/or what the change gate decided (``gate``; None where
    no change policy governs the service, or for a dry run)."""

    run_id: str | None = None
    gate: GateOutcome | None = None

    @property
    def refused(self) -> bool:
        return self.gate is not None and self.gate.decision is Decision.REFUSED

    @property
    def change_id(self) -> str | None:
        view = self.gate.change if self.gate is not None else None
        return view.id if view is not None else None


@dataclass(frozen=True)
class Approved:
    """An approval (accepted or why not) and, when it completed a normal change, what its
    gate decided and the run it queued (``submitted``)."""

    result: ApprovalResult
    submitted: Submitted | None = None


def submit(
    state: ServerState,
    request: Request,
    *,
    check: bool = False,
    parallel: int | None = None,
    change_type: ChangeType | None = None,
    allowed: bool = False,
    change_id: str | None = None,
) -> Submitted:
    """Queue ``request``'s run, through the change gate where a policy governs its service
    (or ``change_type`` / ``change_id`` name a change). A dry run (``check``) is no change.
    With a broker, ConfigurationError (422) before anything is recorded if a department of
    the service has no queue (:mod:`infra_automation.workers.queues`)."""
    engine = state.engine
    if state.runs.broker:
        service = engine.catalog().get(request.service)
        require_mapped(engine.settings, departments_of([service]))
    changes = state.changes
    explicit = change_type is not None or change_id is not None
    if check or (not explicit and not changes.managed(request.service, request.inventory)):
        plan = engine.plan(request)
        return Submitted(queued(state, state.runs.submit(plan, check=check, parallel=parallel)))
    outcome = changes.gate(
        request,
        requester=request.requester,
        change_type=change_type,
        allowed=allowed,
        change_id=change_id,
    )
    return run_gated(state, outcome, parallel)


def run_gated(state: ServerState, outcome: GateOutcome, parallel: int | None = None) -> Submitted:
    """Queue the run of a change the gate lets run (claimed when it starts)."""
    view = outcome.change
    if outcome.decision is not Decision.RUN or outcome.plan is None or view is None:
        return Submitted(None, outcome)
    run_id = state.runs.submit(outcome.plan, parallel=parallel, change=view.id)
    return Submitted(queued(state, run_id), outcome)


def approve(
    state: ServerState,
    change_id: str,
    approver: str,
    *,
    department: str | None = None,
    comment: str | None = None,
) -> Approved:
    """Approve as ``approver``; an approval that completes a normal change runs it (gated
    again on its recorded request)."""
    changes = state.changes
    result = changes.approve(change_id, approver, department=department, comment=comment)
    done = result.change
    complete = result.accepted and not result.missing and done.state is State.APPROVED
    if not complete or done.record.change_type is not ChangeType.NORMAL:
        return Approved(result)
    content = done.record.content
    data = {**content["request"], "requester": content["requester"]}
    request = state.engine.validate(data, source=f"change {done.id[:12]}")
    outcome = changes.gate(request, requester=content["requester"], change_id=done.id)
    return Approved(result, run_gated(state, outcome))
