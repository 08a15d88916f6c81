"""Change records: list, show, approve, reject, export; and the change gate of a submission.

::

    GET  /api/v1/changes?status=waiting&project=shop&flagged=true&cursor=...&limit=50
    GET  /api/v1/changes/{id}               # the diff by department, approvals, history
    POST /api/v1/changes/{id}/approve       # {"department": "network", "comment": "..."}
    POST /api/v1/changes/{id}/reject        # {"comment": "..."}
    GET  /api/v1/changes/{id}/export        # the ITSM document (infra changes export)

``{id}`` is a change's SHA-256 or a unique prefix of 8+ characters. The roles are the
portal's: readers see changes (a tam those of her projects), approvers approve and reject;
the approver is the authenticated user, who can never approve a change she requested.
An approval that completes a normal change queues its run at once, as in the portal (one
implementation: :func:`infra_automation.server.flow.approve`): the request is dry-run again
first, and a dry run that differs from the approved one voids the approvals (the answer then
says so, with the new change that waits). Refusals are 409 with the reason.

:func:`submit_request` is ``POST /requests/submit``: where a change policy governs the
service, 202 ``running`` with the run (standard, emergency, or an approved normal change:
queued, it claims the change when it starts), 202 ``awaiting approval`` with the change
(normal; also after a void), 409 ``refused`` naming why (rejected, a conflicting open
change, a blackout or change window).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from infra_automation.changes import (
    ChangeFilter,
    ChangeService,
    ChangeType,
    ChangeView,
    Decision,
    GateOutcome,
    Risk,
    State,
    export_document,
)
from infra_automation.changes.store import Approval
from infra_automation.events import utcnow
from infra_automation.identity import Role
from infra_automation.record import QUEUED
from infra_automation.request import Request
from infra_automation.secrets import redact
from infra_automation.server import flow, queries
from infra_automation.server.auth import Principal, problem
from infra_automation.server.policy import API
from infra_automation.server.schemas import Parallel, RequestIn
from infra_automation.server.state import Caller, ServerState, StateDep

router = APIRouter(prefix=API, tags=["changes"])
ChangeId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{8,64}$", description="SHA-256 or a unique prefix (8+)")
]
Text = Annotated[str | None, Query(max_length=200)]
Comment = Annotated[
    str | None, Field(default=None, max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")
]
OVERRIDE_ROLES = frozenset({Role.ENGINEER})  # may override a service's change type
AWAITING = "awaiting approval"


# --- bodies -----------------------------------------------------------------------------------


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitIn(RequestIn):
    """A request to run, with the options of ``infra apply``: ``check`` (a dry run: no
    change), ``parallel`` (steps at once). ``change_type`` overrides the service's change
    type (engineers only); ``change`` names the approved change this submission means to
    run."""

    check: bool = Field(default=False, strict=True, description="a dry run (infra apply --check)")
    parallel: Parallel = None
    change_type: ChangeType | None = None
    change: str | None = Field(default=None, pattern=r"^[0-9a-f]{8,64}$")


class ApproveIn(_In):
    department: str | None = Field(
        default=None, max_length=100, pattern=r"^[a-z][a-z0-9_-]*$", description="only this one"
    )
    comment: Comment = None


class RejectIn(_In):
    comment: Comment = None


class ChangeSummaryOut(BaseModel):
    id: str
    url: str
    state: State
    state_reason: str | None
    type: ChangeType
    type_reason: str | None
    risk: Risk
    service: str
    project: str
    requester: str
    flagged: bool  # an emergency change still waiting for its retrospective approval
    overdue: bool
    run_id: str | None
    created_at: datetime | None
    updated_at: datetime
    items: list[str]


class ChangeStepOut(BaseModel):
    step: str
    department: str
    executor: str
    needs: list[str]
    changed: bool
    diff: str


class ApprovalOut(BaseModel):
    approver: str
    decision: str
    department: str | None
    sha256: str  # the hash approved
    at: datetime
    expires_at: datetime | None
    voided_at: datetime | None
    void_reason: str | None
    comment: str | None
    counts: bool  # not voided, not expired


class StateChangeOut(BaseModel):
    at: datetime
    previous: str | None
    state: str
    actor: str | None
    reason: str | None


class ChangeDetailOut(ChangeSummaryOut):
    departments: list[str]
    missing: list[str]  # approvals a waiting change still needs
    steps: list[ChangeStepOut]
    approvals: list[ApprovalOut]
    history: list[StateChangeOut]
    request: dict[str, Any]
    dry_run: str
    supersedes: str | None
    superseded_by: str | None
    retrospective_due: datetime | None
    retrospective_by: str | None
    retrospective_at: datetime | None


class ChangePageOut(BaseModel):
    changes: list[ChangeSummaryOut]
    next_cursor: str | None


class GateOut(BaseModel):
    """What the change gate decided for a submission."""

    decision: Decision
    reason: str
    change: ChangeSummaryOut | None
    missing: list[str]
    voided: str | None  # the change this one voided (its dry run differed)
    conflict: str | None  # the open change this one overlaps
    dry_run: str | None


class SubmitAccepted(BaseModel):
    """``queued``: the run is accepted and recorded ``queued`` (``run_id``) until a worker
    takes it (``GET run_url`` follows it); ``awaiting approval``: the change waits."""

    status: Literal["queued", "awaiting approval"]
    run_id: str | None
    check: bool = False
    run_url: str | None
    stream_url: str | None
    change_url: str | None = None
    change: GateOut | None = None  # None: no change policy governs the service


class ChangeDecisionOut(BaseModel):
    """An accepted approval or rejection. ``gate``: when the approval completed a normal
    change, what the gate then decided (run, voided: waits again, refused: a window);
    ``run_id``: the run it started."""

    accepted: bool
    reason: str
    change: ChangeSummaryOut
    missing: list[str]
    gate: GateOut | None = None
    run_id: str | None = None
    run_url: str | None = None


class ExportApproval(BaseModel):
    approver: str
    decision: str
    department: str | None
    sha256: str
    at: str | None
    expires_at: str | None
    voided_at: str | None
    void_reason: str | None
    comment: str | None


class ExportNote(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    at: str | None
    from_: str | None = Field(alias="from")
    to: str
    by: str | None
    reason: str | None


class ExportStep(BaseModel):
    step: str
    department: str
    executor: str
    needs: list[str]
    fingerprint: str | None
    changed: bool
    diff: str


class ExportItem(BaseModel):
    kind: str
    name: str


class ChangeExportOut(BaseModel):
    """The change as an ITSM tool imports it; ``content`` is the hashed record itself."""

    schema_: str = Field(alias="schema")
    number: str
    sha256: str
    short_description: str
    type: str
    type_reason: str | None
    risk: str
    state: str
    state_reason: str | None
    requested_by: str
    opened_at: str | None
    updated_at: str | None
    cmdb_ci: list[ExportItem]
    assignment_groups: list[str]
    implementation_plan: list[ExportStep]
    dry_run: str
    run_id: str | None
    supersedes: str | None
    superseded_by: str | None
    emergency: dict[str, Any]
    approvals: list[ExportApproval]
    work_notes: list[ExportNote]
    git: dict[str, Any] | None
    content: dict[str, Any]


# --- reading ----------------------------------------------------------------------------------


@router.get("/changes", response_model=ChangePageOut)
def list_changes(
    caller: Caller,
    state: StateDep,
    status: State | None = None,
    project: Text = None,
    flagged: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> ChangePageOut:
    """Newest first; ``next_cursor`` fetches the next page."""
    try:
        before = queries.decode_cursor(cursor) if cursor else None
    except queries.CursorError as exc:
        fields = [{"field": "cursor", "message": str(exc)}]
        raise problem(422, "invalid", f"cursor: {exc}", fields=fields) from None
    where = ChangeFilter(
        project=project,
        states=(status,) if status is not None else (),
        flagged=flagged,
        projects=caller.projects_filter(),
    )
    service = _service(state)
    views, following = service.store.page(where, before=before, limit=limit)
    now = utcnow()
    return ChangePageOut(
        changes=[summary(v, now) for v in views],
        next_cursor=queries.encode_cursor(*following) if following else None,
    )


@router.get("/changes/{change_id}", response_model=ChangeDetailOut)
def show_change(change_id: ChangeId, caller: Caller, state: StateDep) -> ChangeDetailOut:
    service = _service(state)
    view = visible(service, change_id, caller)
    return detail(service, view)


@router.get("/changes/{change_id}/export", response_model=ChangeExportOut)
def export_change(change_id: ChangeId, caller: Caller, state: StateDep) -> dict[str, Any]:
    """The document of ``infra changes export``: ``sha256(content)`` is the change's id."""
    return export_document(visible(_service(state), change_id, caller))


# --- deciding ---------------------------------------------------------------------------------


@router.post(
    "/changes/{change_id}/approve",
    response_model=ChangeDecisionOut,
    responses={409: {"description": "refused: own change, not an approver of it, not open"}},
)
def approve_change(
    change_id: ChangeId, caller: Caller, state: StateDep, body: ApproveIn | None = None
) -> ChangeDecisionOut:
    """Approve as the caller (for each department she approves for, or ``department``), or
    give an emergency change its retrospective approval. An approval that completes a
    normal change runs it (dry-run again first: a different dry run voids the approvals)."""
    body = body or ApproveIn()
    service = _service(state)
    view = visible(service, change_id, caller)
    approved = flow.approve(
        state, view.id, caller.name, department=body.department, comment=body.comment
    )
    result = approved.result
    if not result.accepted:
        raise _refused(result.reason, result.change, list(result.missing))
    decided = ChangeDecisionOut(
        accepted=True,
        reason=result.reason,
        change=summary(result.change, utcnow()),
        missing=list(result.missing),
    )
    submitted = approved.submitted
    if submitted is None or submitted.gate is None:
        return decided
    decided.gate = gate_out(submitted.gate)
    if submitted.run_id is not None:
        decided.run_id, decided.run_url = submitted.run_id, f"{API}/runs/{submitted.run_id}"
    decided.change = summary(service.store.get(view.id), utcnow())
    return decided


@router.post(
    "/changes/{change_id}/reject",
    response_model=ChangeDecisionOut,
    responses={409: {"description": "refused: not an approver of it, not open"}},
)
def reject_change(
    change_id: ChangeId, caller: Caller, state: StateDep, body: RejectIn | None = None
) -> ChangeDecisionOut:
    """Reject an open change: it can never run."""
    body = body or RejectIn()
    service = _service(state)
    view = visible(service, change_id, caller)
    result = service.reject(view.id, caller.name, comment=body.comment)
    if not result.accepted:
        raise _refused(result.reason, result.change, [])
    return ChangeDecisionOut(
        accepted=True, reason=result.reason, change=summary(result.change, utcnow()), missing=[]
    )


# --- the gate of a submission -----------------------------------------------------------------


def submit_request(
    state: ServerState,
    request: Request,
    caller: Principal,
    *,
    change_type: ChangeType | None = None,
    change_id: str | None = None,
    check: bool = False,
    parallel: int | None = None,
) -> SubmitAccepted:
    """Queue ``request``'s run, or gate it as a change first where a policy governs it (the
    same gate as ``infra apply`` and the portal: :func:`infra_automation.server.flow.submit`)."""
    allowed = caller.user.role in OVERRIDE_ROLES
    if change_type is not None and not allowed:
        raise problem(
            403,
            "forbidden",
            f"change_type: role {caller.user.role.value!r} may not override the change type "
            f"of {request.service} (allowed: {', '.join(r.value for r in OVERRIDE_ROLES)})",
            fields=[{"field": "change_type", "message": "not allowed for this role"}],
        )
    if check and (change_type is not None or change_id is not None):
        message = "a dry run is not a change: drop change_type and change, or check"
        raise problem(
            422, "invalid", f"check: {message}", fields=[{"field": "check", "message": message}]
        )
    submitted = flow.submit(
        state,
        request,
        check=check,
        parallel=parallel,
        change_type=change_type,
        allowed=allowed,
        change_id=change_id,
    )
    return submit_answer(submitted, check)


def submit_answer(submitted: flow.Submitted, check: bool = False) -> SubmitAccepted:
    """The queued run, the change that waits; 409 if the gate refused it."""
    outcome = submitted.gate
    gate = gate_out(outcome) if outcome is not None else None
    view = outcome.change if outcome is not None else None
    if outcome is not None and (submitted.refused or view is None):
        extra = {"change": view.id if view else None, "conflict": outcome.conflict}
        raise problem(409, "refused", outcome.reason, **extra)
    if submitted.run_id is None:
        url = f"{API}/changes/{view.id}" if view else None
        return SubmitAccepted(
            status=AWAITING, run_id=None, run_url=None, stream_url=None, change_url=url, change=gate
        )
    run_id = submitted.run_id
    return SubmitAccepted(
        status=QUEUED,  # what the submission recorded (a worker may take it at any moment)
        run_id=run_id,
        check=check,
        run_url=f"{API}/runs/{run_id}",
        stream_url=f"{API}/runs/{run_id}/stream",
        change_url=f"{API}/changes/{view.id}" if view else None,
        change=gate,
    )


# --- shapes -----------------------------------------------------------------------------------


def _service(state: ServerState) -> ChangeService:
    return state.changes


def visible(service: ChangeService, change_id: str, caller: Principal) -> ChangeView:
    """The change (404 if unknown or ambiguous) if the caller may see its project (403)."""
    view = service.store.get(change_id)
    caller.require_project(view.record.project)
    return view


def _refused(reason: str, view: ChangeView, missing: list[str]) -> HTTPException:
    return problem(409, "refused", reason, change=view.id, state=view.state.value, missing=missing)


def summary(view: ChangeView, now: datetime) -> ChangeSummaryOut:
    record = view.record
    return ChangeSummaryOut(
        id=view.id,
        url=f"{API}/changes/{view.id}",
        state=view.state,
        state_reason=view.reason,
        type=record.change_type,
        type_reason=record.type_reason or None,
        risk=record.risk,
        service=record.service,
        project=record.project,
        requester=record.requester,
        flagged=view.flagged,
        overdue=view.overdue(now),
        run_id=view.run_id,
        created_at=record.created_at,
        updated_at=view.updated_at,
        items=[str(i) for i in record.items],
    )


def detail(service: ChangeService, view: ChangeView) -> ChangeDetailOut:
    record = view.record
    now = utcnow()
    policy = service.policy(record.service, record.content["request"].get("inventory"))
    steps = record.content["steps"]
    return ChangeDetailOut(
        **summary(view, now).model_dump(),
        departments=list(record.departments),
        missing=list(service.missing(view, policy, now)) if view.state is State.WAITING else [],
        steps=[
            ChangeStepOut(
                step=s["id"],
                department=s["department"],
                executor=s["executor"],
                needs=list(s["needs"]),
                changed=bool(steps.get(s["id"], {}).get("changed", False)),
                diff=str(steps.get(s["id"], {}).get("diff") or ""),
            )
            for s in record.content["plan"]
        ],
        approvals=[_approval(a, now) for a in view.approvals],
        history=[
            StateChangeOut(
                at=h.at, previous=h.previous, state=h.state, actor=h.actor, reason=h.reason
            )
            for h in view.history
        ],
        request=redact(dict(record.content["request"]), keys=False),
        dry_run=record.dry_run,
        supersedes=view.supersedes,
        superseded_by=view.superseded_by,
        retrospective_due=view.retrospective_due,
        retrospective_by=view.retrospective_by,
        retrospective_at=view.retrospective_at,
    )


def _approval(approval: Approval, now: datetime) -> ApprovalOut:
    return ApprovalOut(
        approver=approval.approver,
        decision=approval.decision,
        department=approval.department,
        sha256=approval.change_hash,
        at=approval.at,
        expires_at=approval.expires_at,
        voided_at=approval.voided_at,
        void_reason=approval.void_reason,
        comment=approval.comment,
        counts=approval.counts(now),
    )


def gate_out(outcome: GateOutcome) -> GateOut:
    view = outcome.change
    return GateOut(
        decision=outcome.decision,
        reason=outcome.reason,
        change=summary(view, utcnow()) if view is not None else None,
        missing=list(outcome.missing),
        voided=outcome.voided,
        conflict=outcome.conflict,
        dry_run=outcome.dry_run.run_id if outcome.dry_run is not None else None,
    )
