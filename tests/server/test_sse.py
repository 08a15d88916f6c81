"""Live events over Server-Sent Events: a client that drops the connection mid-run and
reconnects with ``Last-Event-ID`` receives every event of the run exactly once, in order."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from infra_automation.client import InfraClient, parse_sse
from infra_automation.identity import Role
from tests.server.conftest import LiveServer

API = "/api/v1"


def _read(response: httpx.Response, count: int | None) -> list[dict[str, Any]]:
    """Up to ``count`` events of an open stream (all, when None), checking id == seq."""
    got: list[dict[str, Any]] = []
    for sse in parse_sse(response.iter_lines()):
        event = json.loads("\n".join(sse.data))
        assert sse.id == str(event["seq"]) and sse.event == event["kind"]
        got.append(event)
        if count is not None and len(got) == count:
            break
    return got


def test_reconnect_with_last_event_id_gets_every_event_once(server: LiveServer) -> None:
    body = {"service": "slow", "project": "streamed", "params": {"pause": 0.3}}
    with server.client(Role.VIEWER) as viewer, server.client(Role.ENGINEER) as engineer:
        run_id = engineer.post(f"{API}/requests/submit", json=body).json()["run_id"]
        url = f"{API}/runs/{run_id}/stream"
        with viewer.stream("GET", url) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            first = _read(response, 3)
        assert viewer.get(f"{API}/runs/{run_id}").json()["status"] == "running"
        time.sleep(0.7)  # events happen while the client is away
        missed = viewer.get(f"{API}/runs/{run_id}/events", params={"after": first[-1]["seq"]})
        assert missed.json()["events"], "no event happened while disconnected"
        headers = {"Last-Event-ID": str(first[-1]["seq"])}
        with viewer.stream("GET", url, headers=headers) as response:
            rest = _read(response, None)
        recorded = viewer.get(f"{API}/runs/{run_id}/events", params={"limit": 1000}).json()
    seqs = [e["seq"] for e in first + rest]
    assert len(seqs) == len(set(seqs)), "an event was delivered twice"
    assert seqs == [e["seq"] for e in recorded["events"]], "an event was lost"
    assert rest[-1]["kind"] == "run.finished"
    assert [e["step_id"] for e in first + rest if e["kind"] == "step.finished"] == [
        f"s{i}" for i in range(5)
    ]


def test_client_stream_follows_a_run_to_its_end(server: LiveServer) -> None:
    body = {"service": "slow", "project": "followed", "params": {"pause": 0.1}}
    with InfraClient(server.url, server.tokens[Role.ENGINEER]) as client:
        accepted = client.submit(body)
        kinds = [e["kind"] for e in client.stream(accepted["run_id"])]
        run = client.run(accepted["run_id"])
    assert kinds[:2] == ["run.queued", "run.started"] and kinds[-1] == "run.finished"
    assert kinds.count("step.finished") == 5
    assert run["status"] == "success"


def test_bad_last_event_id_is_a_named_422(server: LiveServer) -> None:
    with server.client(Role.ENGINEER) as http:
        run_id = http.post(
            f"{API}/requests/submit", json={"service": "quick", "project": "bad-id"}
        ).json()["run_id"]
        server.wait_idle(run_id)
        response = http.get(f"{API}/runs/{run_id}/stream", headers={"Last-Event-ID": "x"})
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "Last-Event-ID"
