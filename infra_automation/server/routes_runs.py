"""Runs: list, show, events, live events (SSE with Last-Event-ID replay), resume."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Query
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse, ServerSentEvent

from infra_automation.record import EventRecord, RunRecord
from infra_automation.secrets import redact
from infra_automation.server import outputs, queries
from infra_automation.server.auth import problem
from infra_automation.server.policy import API
from infra_automation.server.routes_catalog import accepted
from infra_automation.server.schemas import EventOut, EventsOut, RunAccepted, RunDetail, RunPageOut
from infra_automation.server.state import Caller, ServerState, StateDep

router = APIRouter(prefix=API, tags=["runs"])
RunId = Annotated[str, Query(max_length=64)]
Text = Annotated[str | None, Query(max_length=200)]


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@router.get("/runs", response_model=RunPageOut)
def list_runs(
    caller: Caller,
    state: StateDep,
    project: Text = None,
    status: RunStatus | None = None,
    requester: Text = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Newest first; ``next_cursor`` fetches the next page."""
    where = queries.RunFilter(project, status, requester, caller.projects_filter())
    try:
        page = queries.list_runs(state.engine.db, where, cursor=cursor, limit=limit)
    except queries.CursorError as exc:
        raise problem(422, "invalid", f"cursor: {exc}", fields=[_field("cursor", exc)]) from None
    return {"runs": page.runs, "next_cursor": page.next_cursor}


def _field(name: str, exc: Exception) -> dict[str, str]:
    return {"field": name, "message": str(exc)}


def visible_run(run_id: str, caller: Caller, state: StateDep) -> str:
    """The project of ``run_id`` if the caller may see it (404 / 403 otherwise)."""
    found = queries.run_project(state.engine.db, run_id)
    if found is None:
        raise problem(404, "not_found", f"no run {run_id!r} in the record")
    caller.require_project(found[0])
    return found[0]


VisibleRun = Annotated[str, Depends(visible_run)]


@router.get("/runs/{run_id}", response_model=RunDetail)
def show_run(run_id: str, project: VisibleRun, state: StateDep) -> dict[str, Any]:
    run = state.engine.store.get_run(run_id)
    return run_detail(run, outputs.of_run(state.engine, run))


def run_detail(run: RunRecord, service_outputs: dict[str, Any] | None = None) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    data["request"] = redact(dict(run.request), keys=False)
    data["outputs"] = redact(service_outputs or {}, keys=False)
    return data


@router.get("/runs/{run_id}/events", response_model=EventsOut)
def run_events(
    run_id: str,
    project: VisibleRun,
    state: StateDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> dict[str, Any]:
    """Events with ``seq > after``, in order; page on with ``after=last_seq``."""
    found = queries.events_after(state.engine.db, run_id, after, limit)
    return {"events": [event_body(e) for e in found], "last_seq": found[-1].seq if found else after}


def event_body(event: EventRecord) -> dict[str, Any]:
    body: dict[str, Any] = jsonable_encoder(EventOut(**dataclasses.asdict(event)))
    return body


def start_after(
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=30)] = None,
) -> int:
    """Where a stream starts: after ``Last-Event-ID`` (a reconnect), else after ``?after=``."""
    if last_event_id is None:
        return after or 0
    try:
        value = int(last_event_id)
    except ValueError:
        value = -1
    if not 0 <= value <= 2**62:
        raise problem(
            422,
            "invalid",
            "Last-Event-ID: must be the id of an event of this stream",
            fields=[{"field": "Last-Event-ID", "message": "not an event id"}],
        )
    return value


@router.get("/runs/{run_id}/stream", response_class=EventSourceResponse)
async def stream_events(
    run_id: str,
    project: VisibleRun,
    state: StateDep,
    last: Annotated[int, Depends(start_after)],
) -> AsyncIterator[ServerSentEvent]:
    """Live events as Server-Sent Events (``id`` = the event's ``seq``); reconnecting with
    ``Last-Event-ID`` (or ``?after=``) replays what came after it. Ends after ``run.finished``."""
    async for event in _follow(state, run_id, last):
        yield ServerSentEvent(data=redact(event_body(event)), event=event.kind, id=str(event.seq))


async def _follow(state: ServerState, run_id: str, last: int) -> AsyncIterator[EventRecord]:
    db = state.engine.db
    while True:
        batch = await anyio.to_thread.run_sync(queries.events_after, db, run_id, last)
        for event in batch:
            last = event.seq
            yield event
            if event.kind == "run.finished":
                return
        if batch:
            continue
        if not await anyio.to_thread.run_sync(queries.run_is_live, db, run_id):
            for event in await anyio.to_thread.run_sync(queries.events_after, db, run_id, last):
                yield event  # written with the final state, read after it
            return
        await asyncio.sleep(state.poll_interval)


@router.post(
    "/runs/{run_id}/resume",
    response_model=RunAccepted,
    status_code=202,
    responses={429: {"description": "too many runs wait for a worker (Retry-After)"}},
)
def resume_run(run_id: str, project: VisibleRun, state: StateDep) -> RunAccepted:
    """Queue a new run of the run's request that reuses its successful steps."""
    engine = state.engine
    plan = engine.resume_plan(run_id)
    check = engine.store.get_run(run_id).check
    return accepted(state, state.runs.resume(run_id, plan), check)
