"""The summary page a TAM hands over, the Verification section and the offline pictures.

Built from a real landscape's ledger (``tests/browser/data/shop-ledger.json``, recorded from
the lab) so the page is checked against what the departments really report.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from infra_automation.docs.ledger import LedgerStore, ProjectLedger, apply_event
from infra_automation.docs.observer import DocsObserver
from infra_automation.docs.pictures import Graph, PlanBox, plan_picture
from infra_automation.docs.site import SITE_CSS
from infra_automation.docs.writer import BEGIN_MANUAL, DEFAULT_MANUAL, END_MANUAL, DocsWriter
from infra_automation.events import Event

REPO = Path(__file__).resolve().parents[2]
LEDGER = REPO / "tests" / "browser" / "data" / "shop-ledger.json"


def verified(state: str, at: str = "2026-12-01T10:30:04+00:00", open_: list[dict] | None = None):
    return Event(
        f"verify-{state}-{at[11:19]}",
        "verify.finished",
        data={
            "project": "shop",
            "state": state,
            "counts": {"in-sync": 5, "drifted": len(open_ or []), "unverifiable": 0},
            "steps": {"web": state},
            "open": open_ or [],
            "finished_at": at,
            "duration": 3.5,
        },
    )


NGINX = {
    "step_id": "web",
    "department": "web",
    "resource": "service nginx",
    "target": "shop-web-02",
    "state": "drifted",
    "reason": "nginx is stopped",
    "diff": "--- expected\n+++ found\n@@ -1 +1 @@\n-running\n+stopped\n",
}


@pytest.fixture
def ledger() -> ProjectLedger:
    return ProjectLedger.model_validate_json(LEDGER.read_bytes())


def write(root: Path, ledger: ProjectLedger) -> dict[str, str]:
    writer = DocsWriter(root)
    pages = writer.write_project(ledger)
    return {p.name: p.read_text() for p in pages}


def section(page: str, title: str) -> str:
    return page.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_summary_is_organised_by_what_the_client_has(tmp_path: Path, ledger: ProjectLedger) -> None:
    index = write(tmp_path, ledger)["index.md"]
    assert "[http://127.0.0.1:37569/](http://127.0.0.1:37569/)" in section(index, "Access")
    ip_plan = section(index, "IP plan")
    assert "| 100 | 10.20.0.0/24 | 10.20.0.1 | 255.255.255.0 | shop |" in ip_plan
    assert "| shop-web-02 | 10.20.0.3 |" in ip_plan
    assert "| edge | edge | config present, route learned | network |" in ip_plan
    vms = section(index, "Virtual machines")
    assert "| shop-web-01 | small | 1 | 1 GiB | 10.20.0.2 | poweredOn | debian1 |" in vms
    services = section(index, "Services per host")
    assert "| shop-web-01 | nginx | 1.22.1-9+deb12u9 | running | web |" in services
    assert "| shop-web-01 | php8.2-fpm | 8.2.32-1~deb12u1 | running | web |" in services
    assert "| shop-web-02 | cron, restic | `30 2 * * *` | 1 | /var/backups/restic/shop |" in (
        section(index, "Backup")
    )
    assert "| shop-web-01 | prometheus-node-exporter | 1.5.0 | 10.89.4.2:9100 |" in section(
        index, "Monitoring"
    )
    owners = section(index, "Owners")
    assert "| Backup agent (restic) and its nightly schedule | backup | backup | success | - |" in (
        owners
    )
    assert "never verified" in index
    for internal in ("vm-72", "dvportgroup-66", "| Stats |", "ok=16", "127.0.0.1:38541"):
        assert internal not in index  # tool internals: the appendix only
    appendix = write(tmp_path, ledger)["appendix.md"]
    assert "vm-72" in appendix and "127.0.0.1:38541" in appendix


def test_summary_tables_stay_narrow(tmp_path: Path, ledger: ProjectLedger) -> None:
    index = write(tmp_path, ledger)["index.md"]
    headers = [line for line in index.splitlines() if line.startswith("|---")]
    assert headers and max(line.count("|") - 1 for line in headers) <= 7


def test_pictures_are_inline_svg_with_escaped_text(tmp_path: Path, ledger: ProjectLedger) -> None:
    ledger.plan[0].description = "x"
    ledger.plan[0].id = "a<b>&"  # names are validated upstream; the SVG escapes anyway
    pages = write(tmp_path, ledger)
    figures = [
        part.split("</figure>", 1)[0]
        for part in pages["index.md"].split('<figure class="infra-figure">')[1:]
    ]
    assert len(figures) == 2
    for svg in figures:
        root = ET.fromstring(svg)  # noqa: S314 - our own output; well-formed XML
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "a&lt;b&gt;&amp;" in figures[1]
    texts = {t.text for t in ET.fromstring(figures[0]).iter("{http://www.w3.org/2000/svg}text")}  # noqa: S314
    assert {"core", "edge", "VLAN 100", "shop-web-01", "nginx", "php8.2-fpm"} <= texts
    assert "mermaid" not in pages["plan.md"] and "<svg" in pages["plan.md"]


def test_plan_picture_layers_follow_dependencies() -> None:
    steps = [
        PlanBox("a", "network", "x.a", (), "success"),
        PlanBox("b", "vmware", "x.b", ("a",), "failed"),
        PlanBox("c", "os", "x.c", ("a",), "skipped"),
        PlanBox("d", "docs", "x.d", ("b", "c"), "pending"),
    ]
    svg = ET.fromstring(plan_picture(steps))  # noqa: S314
    ns = "{http://www.w3.org/2000/svg}"
    tops = {g.find(f"{ns}text").text: int(g.find(f"{ns}rect").get("y")) for g in svg.iter(f"{ns}g")}  # type: ignore[union-attr]
    assert tops["a"] < tops["b"] == tops["c"] < tops["d"]
    assert len(list(svg.iter(f"{ns}path"))) == 4 + 1  # four edges and the arrow head
    assert Graph("empty").svg().startswith("<svg")


def test_verification_section_shows_drift_then_in_sync(
    tmp_path: Path, ledger: ProjectLedger
) -> None:
    apply_event(ledger, verified("drifted", open_=[NGINX]))
    pages = write(tmp_path, ledger)
    index = pages["index.md"]
    assert "| Drift | drifted, verified 2026-12-01 10:30:04 UTC |" in index
    verification = section(index, "Verification")
    assert "**drifted**" in verification
    assert "| service nginx | shop-web-02 | drifted | nginx is stopped |" in verification
    owner = "| nginx + php-fpm, the project's vhost, pool and landing page | web | web | success |"
    assert f"{owner} drifted |" in index
    detail = pages["verification.md"]
    assert "## service nginx on shop-web-02: drifted" in detail
    assert "-running\n+stopped" in detail
    apply_event(ledger, verified("in-sync", at="2026-12-01T10:40:00+00:00"))
    pages = write(tmp_path, ledger)
    assert "Every resource was found as recorded." in pages["index.md"]
    assert "## Earlier verifications" in pages["verification.md"]
    assert len(ledger.verifications) == 2


def test_verification_before_the_latest_run_is_marked_stale(
    tmp_path: Path, ledger: ProjectLedger
) -> None:
    apply_event(ledger, verified("drifted", at="2026-12-01T09:00:00+00:00", open_=[NGINX]))
    index = write(tmp_path, ledger)["index.md"]
    assert "(before the latest run)" in index
    assert "A run was applied after it" in index


def test_observer_folds_verify_finished_and_rewrites_pages(
    tmp_path: Path, ledger: ProjectLedger
) -> None:
    ledger.state.pop("docs")  # no site to rebuild here
    LedgerStore.for_root(tmp_path).save(ledger)
    observer = DocsObserver(tmp_path)
    observer.on_event(verified("drifted", open_=[NGINX]))
    index = (tmp_path / "docs" / "projects" / "shop" / "index.md").read_text()
    assert "nginx is stopped" in index
    stored = LedgerStore.for_root(tmp_path).load("shop")
    assert stored.verification is not None and stored.verification.state == "drifted"
    projects = (tmp_path / "docs" / "projects" / "index.md").read_text()
    assert "| drifted, 2026-12-01 10:30:04 UTC |" in projects
    observer.on_event(Event("verify-x", "verify.finished", data={"project": "other"}))
    assert not LedgerStore.for_root(tmp_path).path("other").exists()  # no docs: none made up


def test_pages_of_the_old_layout_are_removed_unless_written_in(
    tmp_path: Path, ledger: ProjectLedger
) -> None:
    folder = DocsWriter(tmp_path).project_dir("shop")
    folder.mkdir(parents=True)
    empty = f"{BEGIN_MANUAL}{DEFAULT_MANUAL}{END_MANUAL}\n"
    (folder / "network.md").write_text("# old\n" + empty)
    (folder / "hosts.md").write_text("# old\n<!-- BEGIN MANUAL -->Rack 7<!-- END MANUAL -->\n")
    write(tmp_path, ledger)
    assert not (folder / "network.md").exists()
    assert "Rack 7" in (folder / "hosts.md").read_text()


def test_site_stylesheet_is_the_one_the_package_writes() -> None:
    assert (REPO / "docs" / "css" / "infra.css").read_text() == SITE_CSS


def test_one_copy_of_the_docs_templates() -> None:
    assert not (REPO / "templates" / "docs").exists()  # the package's, unless a project overrides
    assert (REPO / "infra_automation" / "templates" / "docs" / "overview.md.j2").is_file()
