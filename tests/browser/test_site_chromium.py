"""The built docs site in headless Chromium at 1,280 px, with no internet.

The site is built (``mkdocs build --strict``) from a real landscape's ledger
(``data/shop-ledger.json``, recorded from the lab) plus a verification that found drift.
On each project page: the pictures are SVG elements that were drawn (boxes with text), no
request leaves 127.0.0.1, and no table is wider than its column.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra_automation.docs.ledger import LedgerStore, ProjectLedger, apply_event
from infra_automation.docs.site import build_site
from infra_automation.docs.writer import DocsWriter
from infra_automation.events import Event
from tests.browser.conftest import Requests, serve

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
WIDTH = 1280
PAGES = ("index", "verification", "plan", "history", "failures", "appendix")
OVERFLOWING_TABLES = """() => [...document.querySelectorAll('table')]
  .filter(t => {
    const box = t.getBoundingClientRect(), col = t.parentElement.getBoundingClientRect();
    return t.scrollWidth > t.parentElement.clientWidth + 1 || box.right > col.right + 1
      || box.right > window.innerWidth;
  })
  .map(t => t.innerText.split('\\n')[0].slice(0, 80))"""
PICTURES = """() => [...document.querySelectorAll('figure.infra-figure > svg')].map(s => ({
  width: s.getBoundingClientRect().width, boxes: s.querySelectorAll('rect').length,
  texts: [...s.querySelectorAll('text')].map(t => t.textContent)}))"""

DRIFT = {
    "project": "shop",
    "state": "drifted",
    "counts": {"in-sync": 20, "drifted": 1, "unverifiable": 0},
    "based_on": ["20261201T100642-e6f00506"],
    "steps": {"web": "drifted", "network": "in-sync"},
    "open": [
        {
            "step_id": "web",
            "department": "web",
            "resource": "service nginx",
            "target": "shop-web-02",
            "state": "drifted",
            "reason": "nginx is stopped",
            "diff": "--- expected\n+++ found\n@@ -1 +1 @@\n-running\n+stopped\n",
        }
    ],
    "started_at": "2026-12-01T10:30:00+00:00",
    "finished_at": "2026-12-01T10:30:04+00:00",
    "duration": 4.2,
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("site")
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", root / "docs", ignore=shutil.ignore_patterns("projects"))
    ledger = ProjectLedger.model_validate_json((DATA / "shop-ledger.json").read_bytes())
    apply_event(ledger, Event("verify-20261201-103000-abcdef", "verify.finished", data=DRIFT))
    store = LedgerStore.for_root(root)
    store.save(ledger)
    writer = DocsWriter(root)
    writer.write_project(ledger)
    writer.write_index(store.all())
    folder = build_site(root)
    url, server = serve(folder)
    yield url
    server.shutdown()


def open_page(browser: Any, url: str) -> tuple[Any, Requests]:
    requests = Requests()
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    context.route("**/*", requests.handle)
    page = context.new_page()
    page.goto(url, wait_until="networkidle")
    return page, requests


def test_project_page_pictures_are_drawn_svg(browser: Any, site: str) -> None:
    page, requests = open_page(browser, f"{site}/projects/shop/")
    pictures = page.evaluate(PICTURES)
    assert len(pictures) == 2, pictures  # topology and plan
    topology, plan = pictures
    assert {"core", "edge", "VLAN 100", "shop-web-01", "nginx"} <= set(topology["texts"])
    assert plan["boxes"] == 10 and "ipam" in plan["texts"]
    assert all(0 < p["width"] <= WIDTH for p in pictures)
    assert page.locator("code.language-mermaid").count() == 0  # no diagram left as text
    assert requests.outside == []
    page.context.close()


@pytest.mark.parametrize("name", PAGES)
def test_pages_stay_on_127_0_0_1_and_tables_fit(browser: Any, site: str, name: str) -> None:
    path = "" if name == "index" else f"{name}/"
    page, requests = open_page(browser, f"{site}/projects/shop/{path}")
    assert page.locator("h1").count() >= 1
    assert requests.outside == [], requests.outside
    assert any(u.startswith(site) for u in requests.seen)
    assert page.evaluate(OVERFLOWING_TABLES) == []
    page.context.close()


def test_summary_shows_drift_and_the_handover_facts(browser: Any, site: str) -> None:
    page, _ = open_page(browser, f"{site}/projects/shop/")
    text = page.inner_text("body")
    for fact in ("10.20.0.0/24", "shop-web-02", "1.22.1-9+deb12u9", "30 2 * * *", "10.89.4.2:9100"):
        assert fact in text
    assert "drifted" in text and "nginx is stopped" in text
    assert "vm-72" not in text and "ok=" not in text  # MoIDs and Ansible stats: appendix only
    page.context.close()


def test_the_guard_sees_a_request_that_leaves_the_machine(browser: Any, site: str) -> None:
    """The check above can fail: a page loading from the internet is caught."""
    requests = Requests()
    context = browser.new_context()
    context.route("**/*", requests.handle)
    page = context.new_page()
    page.set_content('<img src="https://cdn.jsdelivr.net/npm/mermaid@10/x.png">')
    page.wait_for_timeout(300)
    assert requests.outside == ["https://cdn.jsdelivr.net/npm/mermaid@10/x.png"]
    context.close()
