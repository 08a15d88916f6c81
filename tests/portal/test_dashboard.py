"""The dashboard over HTTP (no browser), against a real ``infra server``: its charts are drawn
from the record — what ``/api/v1/stats`` and ``/api/v1/runs`` say of the same runs — a TAM
sees only her project, and the page has no script and names no other host."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from infra_automation.identity import Role
from tests.portal.conftest import LiveServer

SVG = re.compile(r"<svg [^>]*class=\"chart\".*?</svg>", re.S)
SVG_NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - SVG our own code made, not untrusted input


def charts(page: str) -> dict[str, ET.Element]:
    """Every chart of the page, by id (each must be well-formed SVG)."""
    found = {}
    for text in SVG.findall(page):
        element = _parse(text)
        found[element.attrib["id"]] = element
    return found


def marks(chart: ET.Element) -> dict[str, ET.Element]:
    return {g.attrib["data-label"]: g for g in chart.iter(f"{SVG_NS}g") if "data-label" in g.attrib}


def submit(http: httpx.Client, live: LiveServer, service: str, project: str) -> dict[str, Any]:
    answer = http.post("/api/v1/requests/submit", json={"service": service, "project": project})
    assert answer.status_code == 202 or answer.status_code == 200, answer.text
    return live.wait_idle(answer.json()["run_id"])


@pytest.fixture(scope="module")
def history(portal: LiveServer) -> list[dict[str, Any]]:
    """Two deliveries of alpha (one done, one failed first and resumed), one of beta."""
    marker = portal.state.engine.settings.root / "flaky.marker"
    with portal.client(Role.ENGINEER) as http:
        done = [submit(http, portal, "lite", "alpha")]
        marker.write_text("fail")
        failed = submit(http, portal, "flaky", "alpha")
        marker.unlink()
        assert failed["status"] == "failed"
        resumed = http.post(f"/api/v1/runs/{failed['id']}/resume")
        assert resumed.status_code < 300, resumed.text
        done.append(portal.wait_idle(resumed.json()["run_id"]))
        done.append(submit(http, portal, "lite", "beta"))
        assert [r["status"] for r in done] == ["success"] * 3
        runs: list[dict[str, Any]] = http.get("/api/v1/runs", params={"limit": 100}).json()["runs"]
    return runs


def page_of(live: LiveServer, role: Role, **params: str) -> httpx.Response:
    with live.client(role) as http:
        return http.get("/dashboard", params=params)


def stats_of(live: LiveServer, role: Role, **params: str) -> dict[str, Any]:
    with live.client(role) as http:
        answer = http.get("/api/v1/stats", params=params)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


def test_the_charts_show_the_runs_of_the_record(
    portal: LiveServer, history: list[dict[str, Any]]
) -> None:
    response = page_of(portal, Role.ENGINEER, since="7d")
    assert response.status_code == 200, response.text
    found = charts(response.text)
    assert set(found) >= {
        "chart-deliveries", "chart-lead-time", "chart-steps", "chart-waiting",
        "chart-incidents", "chart-capacity",
    }  # fmt: skip
    stats = stats_of(portal, Role.ENGINEER, since="7d")
    # deliveries per day: today's column holds every applied run that ended today, by outcome
    today = datetime.now(UTC).date().isoformat()
    ended = [r for r in history if not r["check"] and r["status"] in ("success", "failed")]
    column = marks(found["chart-deliveries"])[today]
    assert float(column.attrib["data-value"]) == len(ended)
    parts = [rect.attrib["class"] for rect in column.iter(f"{SVG_NS}rect")]
    failed = sum(1 for r in ended if r["status"] == "failed")
    assert parts.count("bar part-failed") == (1 if failed else 0) and failed == 1
    # step durations and lead times: the API's p50 for each department and project
    steps = marks(found["chart-steps"])
    assert set(steps) == {d for d, f in stats["departments"].items() if f["step_duration"]["count"]}
    for department, mark in steps.items():
        p50 = stats["departments"][department]["step_duration"]["p50"]
        assert float(mark.attrib["data-value"]) == pytest.approx(p50)
    leads = marks(found["chart-lead-time"])
    assert set(leads) == {"alpha", "beta"}
    for project, mark in leads.items():
        p50 = stats["projects"][project]["lead_time"]["p50"]
        assert float(mark.attrib["data-value"]) == pytest.approx(p50)
    # the flaky step's failure is an incident of os, resolved by the resume
    incidents = marks(found["chart-incidents"])
    assert float(incidents["os"].attrib["data-value"]) == stats["departments"]["os"]["incidents"]
    assert stats["departments"]["os"]["incidents"] == 1
    totals = stats["totals"]
    kpi = re.search(r'id="kpi-done"><small>[^<]*</small><div[^>]*>([^<]*)<', response.text)
    assert kpi is not None and kpi.group(1) == f"{totals['done']} / {totals['deliveries']}"


def test_capacity_that_cannot_be_read_is_named_not_drawn_as_zero(
    portal: LiveServer, history: list[dict[str, Any]]
) -> None:
    response = page_of(portal, Role.VIEWER)
    assert response.status_code == 200
    assert marks(charts(response.text)["chart-capacity"]) == {}  # the test inventory has no pools
    unknown = re.search(r'id="capacity-unknown">(.*?)</p>', response.text, re.S)
    assert unknown is not None and "vcenter" in unknown.group(1)


def test_a_tam_sees_her_project_only(portal: LiveServer, history: list[dict[str, Any]]) -> None:
    mine = page_of(portal, Role.TAM)
    assert mine.status_code == 200
    assert "<h1>Service levels of alpha</h1>" in mine.text
    assert set(marks(charts(mine.text)["chart-lead-time"])) == {"alpha"}
    other = page_of(portal, Role.TAM, project="beta")
    assert other.status_code == 403


def test_a_bad_range_is_refused(portal: LiveServer) -> None:
    assert page_of(portal, Role.ENGINEER, since="yesterday-ish").status_code == 422


def test_the_page_has_no_script_of_its_own_and_names_no_other_host(
    portal: LiveServer, history: list[dict[str, Any]]
) -> None:
    text = page_of(portal, Role.ENGINEER).text
    main = text[text.index("<main>") :]
    assert "<script" not in main
    hosts = set(re.findall(r"(?:src|href)=\"(https?://[^/\"]+)", text))
    assert hosts <= {"http://www.w3.org"}, hosts
    assert 'href="/dashboard"' in text  # the nav link
