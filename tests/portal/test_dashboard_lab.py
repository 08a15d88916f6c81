"""The dashboard and ``/metrics`` of a real ``infra server`` running a landscape on the lab.

One small landscape (1 web VM, no backup or monitoring) is submitted through the API; while
it runs, the server's Prometheus endpoint is scraped and shows its steps running by
department; then headless Chromium (Debian's ``chromium``) opens the dashboard and its SVG
charts are drawn from that run: today's deliveries, the departments whose steps ran, the
cluster memory the VM takes. The project is decommissioned at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra_automation.identity import Role
from infra_automation.lab import Lab
from tests.browser.conftest import Requests
from tests.integration.landscape_root import make_root
from tests.portal.conftest import LiveServer, login
from tests.server.conftest import live_server

pytestmark = pytest.mark.lab
PROJECT = "dashlab"
ARTIFACTS = Path(os.environ.get("INFRA_TEST_ARTIFACTS", "build/test-artifacts")) / "portal"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(http: Any) -> Samples:
    answer = http.get("/api/v1/metrics")
    assert answer.status_code == 200, answer.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def submit(live: LiveServer, http: Any, service: str, params: dict[str, Any]) -> str:
    body = {"service": service, "project": PROJECT, "params": params}
    answer = http.post("/api/v1/requests/submit", json=body)
    assert answer.status_code < 300, answer.text
    run_id: str = answer.json()["run_id"]
    return run_id


@pytest.fixture(scope="module")
def live(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = make_root(tmp_path_factory.mktemp("dashboard") / "root", lab.inventory_path)
    with live_server(root) as server:
        yield server
        with server.client(Role.ENGINEER) as http:  # best effort: leave the lab as found
            run_id = submit(server, http, "project-decommission", {})
        server.wait_idle(run_id, timeout=600)


@pytest.fixture(scope="module")
def landscape(live: LiveServer) -> dict[str, Any]:
    """The run, and every scrape of /metrics taken while it ran."""
    params = {"web_vms": 1, "vm_size": "small", "backup": False, "monitoring": False}
    scrapes: list[Samples] = []
    with live.client(Role.VIEWER) as viewer, live.client(Role.ENGINEER) as http:
        run_id = submit(live, http, "project-landscape", params)
        deadline = time.monotonic() + 600
        # accepted `queued`, then `running` once a server thread takes it
        while http.get(f"/api/v1/runs/{run_id}").json()["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"run {run_id} still running"
            scrapes.append(scrape(viewer))  # a Prometheus token is a viewer's
            time.sleep(0.5)
        run = live.wait_idle(run_id, timeout=60)
        after = scrape(viewer)
    assert run["status"] == "success", run
    return {"run": run, "scrapes": scrapes, "after": after}


def test_metrics_scraped_during_the_run_show_its_steps(landscape: dict[str, Any]) -> None:
    run, scrapes = landscape["run"], landscape["scrapes"]
    departments = {s["department"] for s in run["steps"]}
    running = {
        dict(labels)["department"]
        for samples in scrapes
        for (name, labels), value in samples.items()
        if name == "infra_steps" and dict(labels)["status"] == "running" and value >= 1
    }
    assert running, "no scrape saw a step running"
    assert running <= departments
    assert any(s.get(("infra_runs", (("check", "false"), ("status", "running"))), 0) == 1
               for s in scrapes)  # fmt: skip
    after: Samples = landscape["after"]
    for department in departments:  # the record's one run: each department's steps succeeded
        count = sum(1 for s in run["steps"] if s["department"] == department)
        labels = (("department", department), ("status", "success"))
        assert after[("infra_steps", labels)] == count, department
    vmware = (("department", "vmware"),)
    assert after[("infra_step_duration_seconds_count", vmware)] >= 1


def test_the_dashboard_draws_the_lab_run(
    browser: Any, live: LiveServer, landscape: dict[str, Any]
) -> None:
    requests = Requests()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", requests.handle)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        login(page, live, "engineer-user")
        page.click("header nav a[href='/dashboard']")
        page.wait_for_selector("svg#chart-deliveries")
        charts = page.eval_on_selector_all(
            "svg.chart",
            "els => Object.fromEntries(els.map(e => [e.id, [...e.querySelectorAll('g.mark')]"
            ".map(g => [g.dataset.label, Number(g.dataset.value)])]))",
        )
        today = page.evaluate("new Date().toISOString().slice(0, 10)")
        assert dict(charts["chart-deliveries"]).get(today) == 1  # the one applied run
        ran = {s["department"] for s in landscape["run"]["steps"] if not s.get("reused")}
        assert {label for label, _ in charts["chart-steps"]} == ran
        assert {label for label, _ in charts["chart-lead-time"]} == {PROJECT}
        memory = dict(charts["chart-capacity"])["vcenter:DC0_C0:memory"]
        assert memory >= 1024  # the small VM, powered on in vcsim
        bars = page.locator("svg#chart-steps rect.bar")
        assert bars.count() == len(ran) and all(
            float(bars.nth(i).get_attribute("width") or 0) > 0 for i in range(bars.count())
        )
        assert page.evaluate("document.documentElement.scrollWidth") <= 1280
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-lab.png"), full_page=True)
    finally:
        context.close()
    assert requests.outside == [], requests.outside
