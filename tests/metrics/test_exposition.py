"""``/metrics`` (Prometheus text format) and ``/api/v1/stats`` on the hand-made history, through
a FastAPI app that mounts the routers as the server will (authentication overridden: the
server's own tests cover it)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from history_fixture import Writer, at
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from infra_automation.identity import Role, User
from infra_automation.metrics import api
from infra_automation.metrics.prometheus import exposition
from infra_automation.server.auth import Principal
from infra_automation.server.policy import Scope
from infra_automation.server.state import guard

YEARS = timedelta(days=3650)


def samples(engine: Engine) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = exposition(engine, incident_window=YEARS)
    assert content_type.startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_metrics_show_steps_runs_and_incidents(history_db: Engine) -> None:
    w = Writer(history_db)  # a run in progress: its vms step is running
    w.emit("d1", "run.started", at(7, 9), service="s", project="delta", check=False,
           plan=[{"id": "vms", "department": "vmware", "needs": []}])  # fmt: skip
    w.emit("d1", "step.started", at(7, 9), "vms", department="vmware")
    w.recorder.close()
    found = samples(history_db)
    assert found[("infra_steps", (("department", "vmware"), ("status", "running")))] == 1
    assert found[("infra_steps", (("department", "network"), ("status", "failed")))] == 1
    # d1 holds no lease: its process is gone, it reads as interrupted
    assert found[("infra_runs", (("check", "false"), ("status", "interrupted")))] == 1
    assert found[("infra_runs", (("check", "false"), ("status", "success")))] == 3
    assert found[("infra_runs", (("check", "true"), ("status", "success")))] == 1
    assert found[("infra_incidents_open", (("department", "os"), ("source", "run")))] == 1
    # network durations 60, 120, 120, 300, 600, 600, 900 s
    network = (("department", "network"),)
    assert found[("infra_step_duration_seconds_count", network)] == 7
    assert found[("infra_step_duration_seconds_sum", network)] == 2700
    assert found[("infra_step_duration_seconds_bucket", (*network, ("le", "300.0")))] == 4
    assert found[("infra_queue_depth", ())] == 0


@pytest.fixture
def client(history_db: Engine, tmp_path: Path) -> TestClient:
    (tmp_path / "sla.yml").write_text("departments: {network: {step: 30m}}\n")
    app = FastAPI()
    app.include_router(api.router)
    app.include_router(api.metrics_router)
    tam = Principal(User("tina", Role.TAM, ("beta",)), Scope.ASSIGNED)
    app.dependency_overrides[guard] = lambda: tam
    app.dependency_overrides[api.record_engine] = lambda: history_db
    app.dependency_overrides[api.sla_path] = lambda: tmp_path / "sla.yml"
    return TestClient(app)


def test_stats_of_a_tam_are_her_project(client: TestClient) -> None:
    response = client.get("/api/v1/stats", params={"since": "2026-11-01", "until": "2026-11-08"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert list(data["projects"]) == ["beta"]
    assert data["totals"]["dora"]["rework_rate"] == 0.5
    forbidden = client.get("/api/v1/stats", params={"project": "alpha"})
    assert forbidden.status_code == 403


def test_bad_range_is_422(client: TestClient) -> None:
    response = client.get("/api/v1/stats", params={"since": "yesterday-ish"})
    assert response.status_code == 422
    assert "since" in response.json()["detail"]["message"]


def test_ack_through_the_api(client: TestClient, history_db: Engine) -> None:
    assert client.post("/api/v1/incidents/run:g1/ack").status_code == 403  # gamma: not hers
    done = client.post("/api/v1/incidents/drift:verify-v1:vmware/ack")
    assert done.status_code == 200
    assert done.json()["actor"] == "tina"
    listed = client.get("/api/v1/incidents", params={"since": "3650d"}).json()
    assert [i["id"] for i in listed] == ["drift:verify-v1:vmware"]
    metrics = client.get("/api/v1/metrics")
    assert metrics.status_code == 200
    assert "infra_steps" in metrics.text
