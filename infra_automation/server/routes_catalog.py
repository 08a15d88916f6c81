"""Catalog services and requests: validate, plan, dry run, submit (through the change gate
where a change policy governs the service: :func:`~infra_automation.server.routes_changes.
submit_request`)."""

from __future__ import annotations

from fastapi import APIRouter

from infra_automation.catalog import Service
from infra_automation.request import Request
from infra_automation.server.auth import Principal, problem
from infra_automation.server.policy import API
from infra_automation.server.responses import RedactedValuesJSON
from infra_automation.server.routes_changes import SubmitAccepted, SubmitIn, submit_request
from infra_automation.server.schemas import (
    CheckIn,
    RequestIn,
    RunAccepted,
    ServiceOut,
    ServiceStep,
    ServiceSummary,
    Validated,
    params_schema,
)
from infra_automation.server.state import Caller, ServerState, StateDep, queued

router = APIRouter(prefix=API, tags=["catalog"], default_response_class=RedactedValuesJSON)


@router.get("/services", response_model=list[ServiceSummary])
def list_services(caller: Caller, state: StateDep) -> list[ServiceSummary]:
    catalog = state.engine.catalog()
    return [_summary(catalog.get(n)) for n in catalog.names()]


@router.get("/services/{name}", response_model=ServiceOut)
def show_service(name: str, caller: Caller, state: StateDep) -> ServiceOut:
    catalog = state.engine.catalog()
    if name not in catalog.services:
        raise problem(404, "not_found", f"no service {name!r} in the catalog")
    service = catalog.get(name)
    steps = [
        ServiceStep(
            id=s.id,
            department=s.department or "",
            executor=s.executor,
            needs=list(s.needs),
            description=s.description,
        )
        for s in service.steps
    ]
    return ServiceOut(
        **_summary(service).model_dump(),
        params_schema=params_schema(service),
        steps=steps,
        outputs=sorted(service.outputs),
    )


def _summary(service: Service) -> ServiceSummary:
    return ServiceSummary(name=service.name, description=service.description, owner=service.owner)


def validated(body: RequestIn, caller: Principal, state: ServerState) -> Request:
    """The request, validated, with the caller as its requester (RequestValidationError)."""
    caller.require_project(body.project)
    fields = set(RequestIn.model_fields)  # a SubmitIn's change fields are not the request's
    data = {**body.model_dump(include=fields, exclude_none=True), "requester": caller.name}
    return state.engine.validate(data, source="request")


@router.post("/requests/validate", response_model=Validated)
def validate(body: RequestIn, caller: Caller, state: StateDep) -> Validated:
    """Nothing is recorded; 422 names every bad field."""
    return Validated(valid=True, request=validated(body, caller, state).to_dict())


@router.post("/requests/plan")
def plan(body: RequestIn, caller: Caller, state: StateDep) -> dict[str, object]:
    """The plan of the request (steps in waves); nothing is recorded."""
    return state.engine.plan(validated(body, caller, state)).to_dict()


@router.post(
    "/requests/check",
    response_model=RunAccepted,
    status_code=202,
    responses={429: {"description": "too many runs wait for a worker (Retry-After)"}},
)
def check(body: CheckIn, caller: Caller, state: StateDep) -> RunAccepted:
    """Queue a dry run: every step previews its change, nothing changes. Answered at once."""
    plan = state.engine.plan(validated(body, caller, state))
    return accepted(state, state.runs.submit(plan, check=True, parallel=body.parallel), True)


@router.post(
    "/requests/submit",
    response_model=SubmitAccepted,
    status_code=202,
    responses={
        409: {"description": "refused by the change policy (the reason is named)"},
        429: {"description": "too many runs wait for a worker (Retry-After)"},
    },
)
def submit(body: SubmitIn, caller: Caller, state: StateDep) -> SubmitAccepted:
    """Queue the run and return its id at once (``check``: a dry run, as ``/requests/check``;
    ``parallel``: steps at once). Where a change policy governs the service the request is
    a change: ``queued`` (standard, emergency, or an approved normal change: its run is
    queued, and claims the change when it starts), ``awaiting approval`` (a normal change:
    its id), or 409."""
    request = validated(body, caller, state)
    return submit_request(
        state,
        request,
        caller,
        change_type=body.change_type,
        change_id=body.change,
        check=body.check,
        parallel=body.parallel,
    )


def accepted(state: ServerState, run_id: str | None, check: bool) -> RunAccepted:
    """The answer for a queued run (429 if the queue was full)."""
    run_id = queued(state, run_id)
    return RunAccepted(
        run_id=run_id,
        check=check,
        run_url=f"{API}/runs/{run_id}",
        stream_url=f"{API}/runs/{run_id}/stream",
    )
