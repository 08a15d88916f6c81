"""What the portal's posts do beyond the API's calls: a submission passes the change gate
where a change policy governs the service (as ``infra apply`` does), and an approval that
completes a change starts its run.

::

    submitted = submit(state, request)     # -> run id, or the change it waits as
    outcome = approve(state, change_id, "carol")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from infra_automation.changes import (
    ApprovalResult,
    ChangeService,
    ChangeType,
    Decision,
    GateOutcome,
    State,
)
from infra_automation.changes.policy import ApprovalMode
from infra_automation.planner import Plan
from infra_automation.request import Request
from infra_automation.results import RunResult
from infra_automation.server.auth import problem
from infra_automation.server.runner import change_job
from infra_automation.server.state import ServerState


@dataclass(frozen=True)
class Submitted:
    """A run started (``run_id``), or a change that waits or was refused (``message``)."""

    run_id: str | None = None
    change_id: str | None = None
    message: str = ""
    refused: bool = False


def start(state: ServerState, job: Callable[[], RunResult]) -> str:
    run_id = state.pool.start(job)
    if run_id is None:
        raise problem(503, "busy", f"all {state.pool.workers} run workers are busy: retry soon")
    return run_id


def submit(state: ServerState, request: Request) -> Submitted:
    """Run ``request`` now, or gate it as a change first where a policy governs it."""
    engine = state.engine
    changes = ChangeService(engine)
    if not changes.managed(request.service, request.inventory):
        plan = engine.plan(request)
        return Submitted(run_id=start(state, lambda: engine.run(plan)))
    return after_gate(state, changes, changes.gate(request, requester=request.requester))


def after_gate(state: ServerState, changes: ChangeService, outcome: GateOutcome) -> Submitted:
    change_id = outcome.change.id if outcome.change is not None else None
    if outcome.decision is Decision.RUN and outcome.plan is not None and change_id is not None:
        # claimed when its run starts: one rejected or voided since the gate never runs
        run_id = start(state, change_job(state.engine, changes, outcome.plan, change_id))
        return Submitted(run_id=run_id, change_id=change_id, message=outcome.reason)
    refused = outcome.decision is Decision.REFUSED
    return Submitted(change_id=change_id, message=outcome.reason, refused=refused)


def approve(state: ServerState, change_id: str, approver: str) -> tuple[ApprovalResult, Submitted]:
    """Approve as ``approver``; once nothing is missing, the change runs (gated again: its
    dry run must still give the approved hash)."""
    changes = ChangeService(state.engine)
    result = changes.approve(change_id, approver)
    if not result.accepted or result.missing or result.change.state is not State.APPROVED:
        return result, Submitted(change_id=result.change.id, message=result.reason)
    content = result.change.record.content
    request = state.engine.validate({**content["request"], "requester": content["requester"]})
    outcome = changes.gate(request, requester=content["requester"], change_id=result.change.id)
    return result, after_gate(state, changes, outcome)


def reject(state: ServerState, change_id: str, actor: str) -> ApprovalResult:
    return ChangeService(state.engine).reject(change_id, actor)


def approval_needed(state: ServerState, plan: Plan) -> str | None:
    """The approval a submission of ``plan`` will wait for (None: no change policy)."""
    changes = ChangeService(state.engine)
    request = plan.request
    if not changes.managed(request.service, request.inventory):
        return None
    policy = changes.policy(request.service, request.inventory)
    kind = policy.service.type
    if kind is not ChangeType.NORMAL:
        return f"{kind} change: recorded as a change, runs at once"
    rules = policy.site.approval
    if rules.mode is ApprovalMode.CAB:
        members = ", ".join(rules.cab) or "any approver"
        return f"normal change: waits for {rules.quorum} approvals of the CAB ({members})"
    departments = sorted({s.department for s in plan.steps})
    who = [f"{d} ({', '.join(rules.approvers.get(d) or ['any approver'])})" for d in departments]
    return "normal change: waits for an approval of each department: " + "; ".join(who)
