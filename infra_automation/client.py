"""A client of the infra server's REST API (httpx), for the CLI as a client and pipelines.

::

    client = InfraClient.from_env()             # INFRA_SERVER + INFRA_TOKEN
    accepted = client.check(read_request("requests/example-landscape.yml"))
    for event in client.stream(accepted["run_id"]):   # reconnects with Last-Event-ID
        print(event["kind"])
    run = client.run(accepted["run_id"])

Errors are our exception tree: a 422 is a :class:`RequestValidationError` naming the fields,
404 on a run :class:`RunNotFound`, 409 :class:`RunLocked`, 503 ``unavailable`` (the server's
run record failed) :class:`RecordError`, 429 ``busy`` (its run queue is full) :class:`Busy`
(a :class:`ServiceError` with ``retry_after``; starting a run retries it), anything else a
:class:`ServiceError` with the status; a server that cannot be reached, or that answers
something that is not the API, is a :class:`ServiceError` with status 0. The token is sent
only as a bearer header.

The API's JSON turns back into the objects the CLI renders locally (:func:`plan_from_api`,
:func:`run_from_api`, :func:`result_from_api`, :func:`event_from_api`), so ``infra --server``
prints what a local run prints.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from infra_automation.events import Event
from infra_automation.exceptions import (
    ConfigurationError,
    FieldError,
    RecordError,
    RequestValidationError,
    RunLocked,
    RunNotFound,
    ServiceError,
)
from infra_automation.planner import Plan, PlannedStep
from infra_automation.record import EventRecord, RunRecord, StepRecord, recorded_result
from infra_automation.request import Request
from infra_automation.results import RunResult

API = "/api/v1"
SERVER_VARIABLE = "INFRA_SERVER"
TOKEN_VARIABLE = "INFRA_TOKEN"  # noqa: S105 - the name of the variable, not a token
RECONNECT_DELAY = 0.5
MAX_RECONNECTS = 20
PAGE_MAX = 200  # the largest page GET /runs hands out


def request_body(data: Mapping[str, Any]) -> dict[str, Any]:
    """A request file's mapping as the API takes it: the server sets the requester."""
    return {k: v for k, v in data.items() if k != "requester"}


@dataclass
class SseEvent:
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Events of a ``text/event-stream`` (comments and ``retry`` are skipped)."""
    current = SseEvent()
    for line in lines:
        if not line:
            if current.data or current.event:
                yield current
            current = SseEvent()
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            current.data.append(value)
        elif name == "id":
            current.id = value
        elif name == "event":
            current.event = value


class InfraClient:
    """The API of one server, as one user (her token)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> InfraClient:
        env = os.environ if env is None else env
        url = env.get(SERVER_VARIABLE)
        if not url:
            raise ConfigurationError(f"{SERVER_VARIABLE}: not set (the server's URL)")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{SERVER_VARIABLE}: must be an http:// or https:// URL")
        return cls(url, env.get(TOKEN_VARIABLE))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> InfraClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- calls --------------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of a call to ``/api/v1/<path>``; errors raised as described above."""
        try:
            response = self.http.request(method, f"{API}/{path.lstrip('/')}", **kwargs)
        except httpx.TransportError as exc:
            raise ServiceError(0, "unreachable", f"{self.base_url}: {exc}") from exc
        raise_for(response, path)
        if response.status_code == 204:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            try:
                return response.json()
            except ValueError as exc:
                raise ServiceError(0, "bad_response", f"{self.base_url}: not JSON") from exc
        return response.text

    def me(self) -> dict[str, Any]:
        return dict(self.call("GET", "me"))

    def services(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "services"))

    def service(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"services/{name}"))

    def validate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "requests/validate", json=request_body(request)))

    def plan(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "requests/plan", json=request_body(request)))

    def check(self, request: Mapping[str, Any], *, parallel: int | None = None) -> dict[str, Any]:
        return self._start("requests/check", _with(request_body(request), parallel=parallel))

    def submit(
        self, request: Mapping[str, Any], *, check: bool = False, parallel: int | None = None
    ) -> dict[str, Any]:
        """Queue a run (``check``: a dry run); the answer has its ``run_id`` at once."""
        body = _with(request_body(request), check=check or None, parallel=parallel)
        return self._start("requests/submit", body)

    def resume(self, run_id: str) -> dict[str, Any]:
        return self._start(f"runs/{run_id}/resume", None)

    def _start(self, path: str, body: dict[str, Any] | None, wait: float = 30.0) -> dict[str, Any]:
        """Queue a run; while the server's queue is full (429 ``busy``) retry after its
        ``Retry-After`` for up to ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            try:
                return dict(self.call("POST", path, json=body))
            except ServiceError as exc:
                if exc.error != "busy" or time.monotonic() >= deadline:
                    raise
                pause = exc.retry_after if isinstance(exc, Busy) else RECONNECT_DELAY
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))

    def runs(
        self,
        *,
        project: str | None = None,
        status: str | None = None,
        requester: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        given = {"project": project, "status": status, "requester": requester, "cursor": cursor}
        params = {k: v for k, v in given.items() if v is not None}
        return dict(self.call("GET", "runs", params={**params, "limit": limit}))

    def latest_runs(self, *, project: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` runs (paging through the list as needed)."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(found) < limit:
            size = min(limit - len(found), PAGE_MAX)
            page = self.runs(project=project, cursor=cursor, limit=size)
            found += page["runs"]
            cursor = page["next_cursor"]
            if not cursor:
                break
        return found

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"runs/{run_id}"))

    def events(self, run_id: str, after: int = 0) -> list[dict[str, Any]]:
        """Every event of the run after ``after`` (paging through them)."""
        found: list[dict[str, Any]] = []
        while True:
            page = self.call("GET", f"runs/{run_id}/events", params={"after": after})
            found += page["events"]
            if not page["events"]:
                return found
            after = page["last_seq"]

    def projects(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "projects"))

    def project(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"projects/{name}"))

    def docs_page(self, project: str, page: str) -> str:
        return str(self.call("GET", f"projects/{project}/docs/{page}"))

    # --- live events --------------------------------------------------------------------

    def stream(self, run_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """The run's events as they happen, each once: a dropped connection is resumed with
        ``Last-Event-ID``. Ends after ``run.finished`` (or when the server ends the stream)."""
        last = after
        reconnects = 0
        while True:
            headers = {"Last-Event-ID": str(last), "Accept": "text/event-stream"}
            try:
                with self.http.stream(
                    "GET", f"{API}/runs/{run_id}/stream", headers=headers, timeout=None
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        raise_for(response, f"runs/{run_id}/stream")
                    for sse in parse_sse(response.iter_lines()):
                        event = _event_json(sse)
                        last = int(sse.id or event["seq"])
                        reconnects = 0
                        yield event
                        if event["kind"] == "run.finished":
                            return
                return  # the server ended the stream: the run is over
            except httpx.TransportError as exc:
                reconnects += 1
                if reconnects > MAX_RECONNECTS:
                    raise ServiceError(0, "unreachable", f"{self.base_url}: {exc}") from exc
                time.sleep(RECONNECT_DELAY)


def _with(body: dict[str, Any], **options: Any) -> dict[str, Any]:
    """``body`` with the options that are set (None: the server's default)."""
    return {**body, **{k: v for k, v in options.items() if v is not None}}


class Busy(ServiceError):
    """429 ``busy``: the server's run queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(429, "busy", message)
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.1, float(response.headers.get("retry-after", RECONNECT_DELAY)))
    except ValueError:
        return RECONNECT_DELAY


def _event_json(sse: SseEvent) -> dict[str, Any]:
    try:
        event = json.loads("\n".join(sse.data))
    except ValueError as exc:
        raise ServiceError(0, "bad_response", "an event of the stream is not JSON") from exc
    if not isinstance(event, dict) or "kind" not in event or "seq" not in event:
        raise ServiceError(0, "bad_response", "an event of the stream has no kind or seq")
    return event


def raise_for(response: httpx.Response, path: str) -> None:
    """Our exception for an error response of the API."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    error = str(body.get("error", "error"))
    message = str(body.get("message", response.reason_phrase))
    status = response.status_code
    if status == 422 and body.get("fields"):
        fields = [FieldError(str(f["field"]), str(f["message"])) for f in body["fields"]]
        raise RequestValidationError(fields, "request")
    if status == 404 and path.startswith("runs/"):
        raise RunNotFound(message)
    if status == 409 and error == "locked":
        raise RunLocked(message)
    if status == 503 and error == "unavailable":
        raise RecordError(message)
    if status == 429 and error == "busy":
        raise Busy(message, _retry_after(response))
    raise ServiceError(status, error, message)


# --- the API's JSON as the objects a local run has ------------------------------------------


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _started(value: Any) -> datetime:
    at = _time(value)
    if at is None:
        raise ServiceError(0, "bad_response", "a run or event without a time")
    return at


def _request(data: Mapping[str, Any]) -> Request:
    return Request(
        service=str(data.get("service", "")),
        project=str(data.get("project", "")),
        params=dict(data.get("params") or {}),
        requester=data.get("requester"),
        inventory=data.get("inventory"),
    )


def plan_from_api(body: Mapping[str, Any]) -> Plan:
    """The plan of ``POST /requests/plan`` (``Plan.to_dict`` form), for tables and mermaid."""
    steps = tuple(
        PlannedStep(
            id=str(s["id"]),
            department=str(s.get("department", "")),
            executor=str(s.get("executor", "")),
            needs=tuple(s.get("needs", ())),
            wave=int(s.get("wave", 0)),
            params=dict(s.get("params") or {}),
            targets=s.get("targets"),
            description=str(s.get("description", "")),
        )
        for s in body.get("steps", ())
    )
    return Plan(_request(body.get("request") or {}), steps, tuple(body.get("left_out", ())))


def plan_of_run(run: RunRecord) -> Plan:
    """The plan a recorded run ran (its steps in order), for the result table and JUnit."""
    steps = tuple(
        PlannedStep(
            id=str(s["id"]),
            department=str(s.get("department", "")),
            executor=str(s.get("executor", "")),
            needs=tuple(s.get("needs", ())),
            wave=0,
            params={},
            description=str(s.get("description", "")),
        )
        for s in run.plan
    )
    return Plan(_request(run.request), steps)


def _step(body: Mapping[str, Any]) -> StepRecord:
    return StepRecord(
        step_id=str(body["step_id"]),
        position=int(body.get("position", 0)),
        department=str(body.get("department", "")),
        executor=str(body.get("executor", "")),
        needs=tuple(body.get("needs", ())),
        status=str(body["status"]),
        changed=bool(body.get("changed")),
        reused=bool(body.get("reused")),
        error=body.get("error"),
        error_kind=body.get("error_kind"),
        diff=str(body.get("diff") or ""),
        outputs=dict(body.get("outputs") or {}),
        targets=tuple(dict(t) for t in body.get("targets", ())),
        artifacts=dict(body.get("artifacts") or {}),
        started_at=_time(body.get("started_at")),
        finished_at=_time(body.get("finished_at")),
        duration=body.get("duration"),
    )


def run_from_api(body: Mapping[str, Any]) -> RunRecord:
    """A run of ``GET /runs/{id}`` (with steps) or of a run list (without)."""
    try:
        return RunRecord(
            id=str(body["id"]),
            service=str(body["service"]),
            project=str(body["project"]),
            requester=body.get("requester"),
            check=bool(body.get("check")),
            parallel=int(body.get("parallel") or 0),
            status=str(body["status"]),
            resumed_from=body.get("resumed_from"),
            pid=None,
            host=None,
            changed=bool(body.get("changed")),
            started_at=_started(body.get("started_at")),
            finished_at=_time(body.get("finished_at")),
            request=dict(body.get("request") or {}),
            plan=tuple(dict(p) for p in body.get("plan", ())),
            steps=tuple(_step(s) for s in body.get("steps", ())),
            error=body.get("error"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ServiceError(0, "bad_response", f"not a run of this API: {exc}") from exc


def result_from_api(run: RunRecord) -> RunResult:
    """The :class:`RunResult` of a recorded run, step by step in plan order."""
    steps = {s.step_id: recorded_result(s) for s in run.steps}
    return RunResult(run_id=run.id, project=run.project, check=run.check, steps=steps)


def event_from_api(body: Mapping[str, Any]) -> Event:
    """An event of the stream or of ``GET /runs/{id}/events``, for the progress views."""
    return Event(
        run_id=str(body.get("run_id", "")),
        kind=str(body["kind"]),
        step_id=body.get("step_id"),
        data=dict(body.get("data") or {}),
        at=_started(body.get("at")),
    )


def event_record_from_api(body: Mapping[str, Any]) -> EventRecord:
    event = event_from_api(body)
    return EventRecord(
        seq=int(body["seq"]),
        run_id=event.run_id,
        step_id=event.step_id,
        kind=event.kind,
        at=event.at,
        data=event.data,
    )
