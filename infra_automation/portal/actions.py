"""What the portal's posts do beyond the API's calls, with the API's own implementation
(:mod:`infra_automation.server.flow`): a submission passes the change gate where a change
policy governs the service (as ``infra apply`` does) and its run is queued, and an approval
that completes a change queues its run.

::

    submitted = submit(state, request)     # -> run id, or the change it waits as
    outcome = approve(state, change_id, "carol")
    new_id = resume(state, run_id, plan)
"""

from __future__ import annotations

from dataclasses import dataclass

from infra_automation.changes import ApprovalResult, ChangeType
from infra_automation.changes.policy import ApprovalMode
from infra_automation.planner import Plan
from infra_automation.request import Request
from infra_automation.server import flow
from infra_automation.server.state import ServerState, queued


@dataclass(frozen=True)
class Submitted:
    """A run queued (``run_id``), or a change that waits or was refused (``message``)."""

    run_id: str | None = None
    change_id: str | None = None
    message: str = ""
    refused: bool = False


def submit(state: ServerState, request: Request) -> Submitted:
    """Queue ``request``'s run, or gate it as a change first where a policy governs it."""
    return _shown(flow.submit(state, request))


def _shown(submitted: flow.Submitted) -> Submitted:
    gate = submitted.gate
    if gate is None:
        return Submitted(run_id=submitted.run_id)
    return Submitted(
        run_id=submitted.run_id,
        change_id=submitted.change_id,
        message=gate.reason,
        refused=submitted.refused,
    )


def resume(state: ServerState, run_id: str, plan: Plan | None = None) -> str:
    """Queue a resume of ``run_id``; the new run's id (429 if the queue is full)."""
    return queued(state, state.runs.resume(run_id, plan))


def approve(state: ServerState, change_id: str, approver: str) -> tuple[ApprovalResult, Submitted]:
    """Approve as ``approver``; once nothing is missing, the change's run is queued (gated
    again: its dry run must still give the approved hash)."""
    approved = flow.approve(state, change_id, approver)
    result = approved.result
    if approved.submitted is None:
        return result, Submitted(change_id=result.change.id, message=result.reason)
    return result, _shown(approved.submitted)


def reject(state: ServerState, change_id: str, actor: str) -> ApprovalResult:
    return state.changes.reject(change_id, actor)


def approval_needed(state: ServerState, plan: Plan) -> str | None:
    """The approval a submission of ``plan`` will wait for (None: no change policy)."""
    changes = state.changes
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
