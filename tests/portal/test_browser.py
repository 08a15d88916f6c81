"""The portal in headless Chromium (Debian's ``chromium``), 1,280 px wide, against a real
``infra server``: a TAM requests a landscape from the form (a bad value shows the field
error), previews its dry run by department, submits and watches the run page's picture
change colour live (SSE) to success; a viewer cannot submit; an approver approves a waiting
change and it runs; an engineer resumes a failed run. No request leaves 127.0.0.1 (the
``page`` fixture checks every URL). Screenshots go to ``$INFRA_TEST_ARTIFACTS`` (default
``build/test-artifacts/portal``)."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from tests.portal.conftest import LiveServer, login

ARTIFACTS = Path(os.environ.get("INFRA_TEST_ARTIFACTS", "build/test-artifacts")) / "portal"
RECORD_STATUSES = """() => {
  window.__seen = [];
  const note = () => document.querySelectorAll('svg.dag g.node').forEach(
    n => window.__seen.push(n.id + '=' + n.dataset.status));
  note();
  const all = {childList: true, subtree: true, attributes: true};
  new MutationObserver(note).observe(document.body, all);
}"""


def shot(page: Any, name: str) -> None:
    """A screenshot artifact; the page must fit the 1,280-px wide screen."""
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280, name
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def fill_and_preview(page: Any, live: LiveServer, service: str) -> None:
    page.goto(f"{live.url}/")
    page.click(f"#service-{service} h2 a")
    page.wait_for_selector("#request-form")
    page.click("#preview")
    page.wait_for_selector("#dry-run-status")


def test_tam_requests_a_landscape_and_watches_it_live(page: Any, portal: LiveServer) -> None:
    login(page, portal, "tam-user")
    page.click("#service-lite h2 a")
    assert page.locator("#in-size").evaluate("e => e.tagName") == "SELECT"
    assert page.locator("#in-backup").get_attribute("role") == "switch"
    assert page.locator("#in-vms").get_attribute("max") is not None
    page.select_option("#in-size", "medium")
    page.fill("#in-vms", "3")
    page.fill("#in-title", "Shop {{ 7*7 }}")
    page.click("#preview")
    error = page.locator("#field-title .field-error")
    assert error.is_visible() and "not allowed" in error.inner_text()
    shot(page, "form-field-error")
    page.fill("#in-title", "Shop")
    page.click("#preview")
    assert page.inner_text("#dry-run-status") == "success"
    diff = page.inner_text("#dept-network pre.diff")
    assert "+ ip route 10.9.0.0/24 Null0" in diff and "+ ! medium" in diff
    assert page.locator("svg.dag g.node").count() == 4
    assert page.locator("#dept-vmware, #dept-os, #dept-backup").count() == 3
    shot(page, "preview")
    page.click("#submit")
    page.wait_for_selector("#run-panel")
    page.evaluate(RECORD_STATUSES)
    page.wait_for_function("document.querySelector('#run-status').textContent == 'success'")
    seen: list[str] = page.evaluate("window.__seen")
    assert "node-os=success" in seen
    assert any(s.startswith("node-os=") and not s.endswith("success") for s in seen), seen
    # htmx settles the swapped nodes' classes a moment after the swap
    page.wait_for_function("document.querySelectorAll('svg.dag g.status-success').length == 4")
    shot(page, "run-success")
    page.click("main p a[href^='/projects/']")
    page.wait_for_selector("h1:has-text('Project alpha')")
    assert page.locator("table.runs tbody tr").count() >= 2  # the dry run and the run
    shot(page, "project")


def test_a_viewer_sees_the_form_but_cannot_submit(page: Any, portal: LiveServer) -> None:
    login(page, portal, "viewer-user")
    page.goto(f"{portal.url}/services/lite")
    assert page.locator("#preview").count() == 0
    assert page.locator("#not-allowed").is_visible()
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    form = {"csrf_token": token, "project": "alpha"}
    for action in ("preview", "submit"):
        response = page.request.post(f"{portal.url}/services/lite/{action}", form=form)
        assert response.status == 403
        assert "role 'viewer' may not" in html.unescape(response.text())


def test_a_tam_gets_403_on_another_project(page: Any, portal: LiveServer) -> None:
    login(page, portal, "tam-user")
    response = page.goto(f"{portal.url}/projects/beta")
    assert response.status == 403
    assert "not assigned to project 'beta'" in page.inner_text("#error-message")


def test_an_approver_approves_a_waiting_change_and_it_runs(
    browser: Any, page: Any, portal: LiveServer
) -> None:
    login(page, portal, "tam-user")
    fill_and_preview(page, portal, "lite-change")
    assert "waits for an approval of each department" in page.inner_text("#approval")
    page.click("#submit")
    page.wait_for_selector("#change-state")
    assert page.inner_text("#change-state") == "waiting"
    assert page.locator("#approve").count() == 0  # a tam approves nothing
    change_url = page.url

    approver = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = approver.new_page()
        login(tab, portal, "approver-user")
        tab.click("a[href='/approvals']")
        tab.click("table.runs tbody a[href^='/changes/']")
        assert "+ ip route 10.9.0.0/24 Null0" in tab.inner_text("#dept-network pre.diff")
        shot(tab, "approval")
        tab.click("#approve")
        tab.wait_for_selector("#run-panel")
        tab.wait_for_function("document.querySelector('#run-status').textContent == 'success'")
    finally:
        approver.close()
    page.goto(change_url)
    assert page.inner_text("#change-state") == "implemented"


def test_an_engineer_resumes_a_failed_run(page: Any, portal: LiveServer) -> None:
    marker = portal.state.engine.settings.root / "flaky.marker"
    marker.write_text("down")
    login(page, portal, "engineer-user")
    page.goto(f"{portal.url}/services/flaky")
    page.fill("#in-project", "gamma")
    page.click("#preview")
    page.click("#submit")
    page.wait_for_selector("#resume")
    assert "[unreachable]" in page.inner_text("#failure-host")
    shot(page, "run-failed")
    marker.unlink()
    page.click("#resume")
    page.wait_for_function(
        "document.querySelector('#run-status') && "
        "document.querySelector('#run-status').textContent == 'success'"
    )
    assert "resumes" in page.inner_text("main")
