"""The docs observer, fed synthetic run events (outputs differ from the request on purpose)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra_automation.docs.executor import DocsExecutor, DocsOutputs, DocsParams
from infra_automation.docs.ledger import LedgerStore
from infra_automation.docs.observer import DocsObserver
from infra_automation.docs.sections import SECTIONS, Section
from infra_automation.docs.site import build_site, mkdocs_available
from infra_automation.events import Event
from infra_automation.exceptions import RenderError
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.secrets import Secrets

T0 = datetime(2025, 11, 21, 10, 0, tzinfo=UTC)
PLAN = [
    {"id": "ipam", "department": "network", "executor": "ipam.allocate", "needs": []},
    {"id": "gateway", "department": "network", "executor": "network.configure", "needs": ["ipam"]},
    {"id": "vms", "department": "vmware", "executor": "vmware.vms", "needs": ["ipam"]},
    {"id": "web", "department": "os", "executor": "os.playbook", "needs": ["vms"]},
    {"id": "docs", "department": "docs", "executor": "docs.build", "needs": ["gateway", "web"]},
]
# What the request asked for; the outputs below (read back from the targets) differ.
REQUEST_PARAMS = {"vlan_id": 100, "vm_cpu": 2, "vm_memory_mb": 2048}
OUTPUTS: dict[str, dict[str, Any]] = {
    "ipam": {
        "vlan_id": 231,
        "subnet": "10.77.31.0/24",
        "prefix_length": 24,
        "netmask": "255.255.255.0",
        "gateway": "10.77.31.1",
        "hosts": ["10.77.31.10", "10.77.31.11"],
        "pool": "default",
    },
    "gateway": {},
    "vms": {
        "folder": "shop",
        "vms": [
            {
                "name": "shop-web1",
                "moid": "vm-4711",
                "cpu": 4,
                "memory_mb": 6144,
                "portgroup": "pg-shop-231",
                "power_state": "poweredOn",
                "ip": "10.77.31.10",
            }
        ],
    },
    "web": {
        "stats": {"debian1": {"ok": 9, "changed": 3, "failed": 0}},
        "packages": {"debian1": {"nginx": "1.22.1-9", "php8.2-fpm": "8.2.29-1"}},
        "site_url": "http://127.0.0.1:40123/",
    },
    "docs": {"docs_path": "docs/projects/shop", "pages": [], "site_path": None},
}
GATEWAY_TARGETS = [
    {
        "target": "core",
        "status": "success",
        "changed": True,
        "diff": "+ip route 10.77.31.0/24 Null0\n",
        "error": None,
        "details": {"applied": ["ip route 10.77.31.0/24 Null0", "router bgp 65001"]},
    },
    {
        "target": "edge",
        "status": "success",
        "changed": False,
        "diff": "",
        "error": None,
        "details": {"bgp_prefix_learned": "10.77.31.0/24"},
    },
]


class Stream:
    """Builds the events of one run the way the engine emits them."""

    def __init__(self, run_id: str, *, start: int = 0, check: bool = False, **run: Any) -> None:
        self.run_id = run_id
        self.at = T0 + timedelta(minutes=start)
        self.check = check
        self.run = {"service": "web-landscape", "requester": "Alice Admin", **run}
        self.results: dict[str, str] = {}

    def _event(self, kind: str, step: str | None = None, **data: Any) -> Event:
        self.at += timedelta(seconds=1)
        return Event(run_id=self.run_id, kind=kind, step_id=step, data=data, at=self.at)

    def started(self, plan: list[dict[str, Any]] = PLAN, resumed_from: str | None = None) -> Event:
        service, requester = self.run["service"], self.run["requester"]
        request = {
            "service": service,
            "project": "shop",
            "requester": requester,
            "params": REQUEST_PARAMS,
        }
        return self._event(
            "run.started",
            service=service,
            project="shop",
            requester=requester,
            check=self.check,
            parallel=4,
            resumed_from=resumed_from,
            request=request,
            plan=[{**p, "description": f"step {p['id']}"} for p in plan],
        )

    def step(
        self,
        step_id: str,
        status: str = "success",
        *,
        outputs: Mapping[str, Any] | None = None,
        error: str | None = None,
        diff: str = "",
        targets: list[dict[str, Any]] | None = None,
        reused: bool = False,
        changed: bool = True,
    ) -> Event:
        spec = next(p for p in PLAN if p["id"] == step_id)
        self.results[step_id] = status
        if targets is None and step_id == "gateway":
            targets = GATEWAY_TARGETS
        return self._event(
            "step.finished",
            step_id,
            department=spec["department"],
            executor=spec["executor"],
            status=status,
            changed=changed and status == "success",
            error=error,
            diff=diff,
            outputs=dict(OUTPUTS[step_id] if outputs is None else outputs),
            targets=targets or [],
            artifacts={},
            started_at=self.at.isoformat(),
            finished_at=(self.at + timedelta(seconds=1)).isoformat(),
            duration=1.0,
            reused=reused,
        )

    def finished(self) -> Event:
        failed = [s for s, st in self.results.items() if st == "failed"]
        skipped = [s for s, st in self.results.items() if st == "skipped"]
        return self._event(
            "run.finished",
            status="failed" if failed or skipped else "success",
            failed_steps=failed,
            skipped_steps=skipped,
            changed=True,
            started_at=T0.isoformat(),
            finished_at=self.at.isoformat(),
        )

    def full(self, *, fail: str | None = None) -> Iterator[Event]:
        """A whole run; ``fail`` names a step that fails (its dependents are skipped)."""
        yield self.started()
        down: set[str] = set()
        for spec in PLAN:
            sid = spec["id"]
            if sid == fail:
                down.add(sid)
                yield self.step(sid, "failed", outputs={}, error=f"{sid}: target refused")
            elif down & set(spec["needs"]):
                down.add(sid)
                yield self.step(sid, "skipped", outputs={}, changed=False)
            else:
                yield self.step(sid, diff=f"+ {sid} change\n")
        yield self.finished()


def feed(observer: DocsObserver, events: Iterator[Event] | list[Event]) -> None:
    for event in events:
        observer.on_event(event)


def page(root: Path, name: str) -> str:
    return (root / "docs" / "projects" / "shop" / name).read_text()


def all_docs_text(root: Path) -> str:
    files = [p for p in (root / "docs").rglob("*") if p.is_file()]
    files += list((root / ".infra").rglob("*.json"))
    return "\n".join(p.read_text() for p in files)


@pytest.fixture()
def observer(tmp_path: Path) -> DocsObserver:
    return DocsObserver(tmp_path)


def test_docs_show_values_read_back_from_targets(tmp_path: Path, observer: DocsObserver) -> None:
    feed(observer, Stream("run-1").full())
    network = page(tmp_path, "appendix.md")
    assert "| VLAN | 231 |" in network  # the request asked for VLAN 100
    assert "| Subnet | 10.77.31.0/24 |" in network
    assert "| Gateway | 10.77.31.1 |" in network
    assert "ip route 10.77.31.0/24 Null0" in network  # applied on core, read back
    assert "| BGP prefix learned | 10.77.31.0/24 |" in network  # learned by edge
    vms = page(tmp_path, "appendix.md")
    assert "| shop-web1 | 4 | 6144 | pg-shop-231 | poweredOn | 10.77.31.10 | vm-4711 |" in vms
    hosts = page(tmp_path, "appendix.md")
    assert "[http://127.0.0.1:40123/](http://127.0.0.1:40123/)" in hosts
    assert "| debian1 | 1.22.1-9 | 8.2.29-1 |" in hosts
    overview = page(tmp_path, "index.md")
    assert "| Service | web-landscape |" in overview
    assert "| Requester | Alice Admin |" in overview
    assert "| Owning departments | docs, network, os, vmware |" in overview
    assert "| State | built |" in overview
    plan = page(tmp_path, "plan.md")
    assert '<figure class="infra-figure"><svg' in plan and "```mermaid" not in plan
    assert '<g class="node success"><rect' in plan and ">vms</text>" in plan
    assert "No open failures" in page(tmp_path, "failures.md")
    index = (tmp_path / "docs" / "projects" / "index.md").read_text()
    assert "[shop](shop/index.md)" in index


def test_second_run_appends_history_and_replay_never_duplicates(
    tmp_path: Path, observer: DocsObserver
) -> None:
    first = list(Stream("run-1").full())
    feed(observer, first)
    second = Stream("run-2", start=10, requester="Bob Builder")
    feed(
        observer,
        [second.started(), second.step("ipam", outputs={**OUTPUTS["ipam"], "vlan_id": 232})],
    )
    feed(observer, [second.finished()])
    feed(observer, first)  # the same run processed again (e.g. `infra docs` replay)
    feed(DocsObserver(tmp_path), first)  # and by a new observer (another process)
    history = page(tmp_path, "history.md")
    assert history.count("## Run run-1:") == 1
    assert history.count("## Run run-2:") == 1
    assert history.index("## Run run-2:") < history.index("## Run run-1:")  # newest first
    assert "| Who | Bob Builder |" in history
    assert "+ ipam change" in history  # the diff of run-1
    ledger = LedgerStore.for_root(tmp_path).load("shop")
    assert [r.run_id for r in ledger.runs] == ["run-1", "run-2"]
    # The replay of the older run did not roll the current state back.
    assert ledger.state["ipam"].outputs["vlan_id"] == 232
    assert "| VLAN | 232 |" in page(tmp_path, "appendix.md")


def test_hand_written_notes_survive_regeneration(tmp_path: Path, observer: DocsObserver) -> None:
    feed(observer, Stream("run-1").full())
    overview = tmp_path / "docs" / "projects" / "shop" / "index.md"
    notes = tmp_path / "docs" / "projects" / "shop" / "notes.md"
    edited = overview.read_text().replace(
        "<!-- BEGIN MANUAL -->", "<!-- BEGIN MANUAL -->\nOwner on call: Carol (ext. 4711)\n"
    )
    overview.write_text(edited)
    notes.write_text("# Notes\n\nFirewall change ticket CHG-991.\n")
    feed(observer, Stream("run-2", start=10).full())
    text = overview.read_text()
    assert "Owner on call: Carol (ext. 4711)" in text
    assert text.count("<!-- BEGIN MANUAL -->") == 1
    assert "run-2" in text  # regenerated around the note
    assert notes.read_text() == "# Notes\n\nFirewall change ticket CHG-991.\n"
    assert "[notes](notes.md)" in text


def test_failed_run_shows_failure_skipped_steps_and_resume(
    tmp_path: Path, observer: DocsObserver
) -> None:
    feed(observer, Stream("run-1").full(fail="vms"))
    failures = page(tmp_path, "failures.md")
    assert "## Run run-1: failed" in failures
    assert "**vms** (`vmware.vms`): vms: target refused" in failures
    assert "Not run because a step they depend on failed: web, docs." in failures
    assert "infra resume run-1" in failures
    assert "failed (run run-1)" in page(tmp_path, "index.md")
    plan = page(tmp_path, "plan.md")
    assert '<g class="node failed">' in plan
    assert '<g class="node skipped">' in plan
    assert "| web | os | `os.playbook` | vms | skipped |" in plan

    # The resume reuses what succeeded and finishes the rest: the failure is closed.
    resume = Stream("run-2", start=10)
    events = [resume.started(resumed_from="run-1")]
    events += [resume.step(s, reused=True, outputs=OUTPUTS[s]) for s in ("ipam", "gateway")]
    events += [resume.step(s) for s in ("vms", "web", "docs")]
    feed(observer, [*events, resume.finished()])
    assert "No open failures" in page(tmp_path, "failures.md")
    assert "| Resumed from | `run-1` |" in page(tmp_path, "history.md")
    assert "| ipam | network | `ipam.allocate` |   | success (reused) |" in page(
        tmp_path, "plan.md"
    )
    assert "| VLAN | 231 |" in page(tmp_path, "appendix.md")


def test_reused_step_without_outputs_keeps_the_current_state(
    tmp_path: Path, observer: DocsObserver
) -> None:
    feed(observer, Stream("run-1").full())
    resume = Stream("run-2", start=10)
    feed(observer, [resume.started(), resume.step("ipam", outputs={}, reused=True)])
    assert LedgerStore.for_root(tmp_path).load("shop").state["ipam"].outputs["vlan_id"] == 231


def test_crash_mid_run_leaves_docs_current(tmp_path: Path, observer: DocsObserver) -> None:
    run = Stream("run-1")
    feed(observer, [run.started(), run.step("ipam")])  # no run.finished: the process died
    assert "| VLAN | 231 |" in page(tmp_path, "appendix.md")
    failures = page(tmp_path, "failures.md")
    assert "did not finish" in failures
    assert "gateway, vms, web, docs" in failures
    assert "infra resume run-1" in failures
    assert "unfinished" in page(tmp_path, "history.md")


def test_dry_run_goes_to_history_but_not_to_the_state(
    tmp_path: Path, observer: DocsObserver
) -> None:
    feed(observer, Stream("run-1").full())
    dry = Stream("run-2", start=10, check=True)
    planned = {**OUTPUTS["ipam"], "vlan_id": 999}
    feed(observer, [dry.started(), dry.step("ipam", outputs=planned, diff="+ vlan 999\n")])
    feed(observer, [dry.step("vms", "failed", outputs={}, error="no such template")])
    feed(observer, [dry.finished()])
    history = page(tmp_path, "history.md")
    assert "## Run run-2: failed (dry run)" in history
    assert "| Mode | dry run (check mode) |" in history
    assert "+ vlan 999" in history
    assert "| VLAN | 231 |" in page(tmp_path, "appendix.md")
    assert '<g class="node failed">' not in page(tmp_path, "plan.md")
    failures = page(tmp_path, "failures.md")
    assert "No open failures" in failures
    assert "Last dry run run-2 failed" in failures


def test_decommission_clears_what_it_removed(tmp_path: Path, observer: DocsObserver) -> None:
    feed(observer, Stream("run-1").full())
    plan = [{"id": "remove_vms", "department": "vmware", "executor": "vmware.decommission"}]
    gone = Stream("run-2", start=10, service="web-landscape-decommission")
    feed(observer, [gone.started(plan=[{**p, "needs": []} for p in plan])])
    removal = gone._event(
        "step.finished",
        "remove_vms",
        department="vmware",
        executor="vmware.decommission",
        status="success",
        changed=True,
        error=None,
        diff="- shop-web1\n",
        outputs={"removed": ["shop-web1"]},
        targets=[],
        artifacts={},
        reused=False,
    )
    feed(observer, [removal])
    state = LedgerStore.for_root(tmp_path).load("shop").state
    assert "vms" not in state
    assert "ipam" in state  # the network was not touched by this step
    assert "shop-web1" not in page(tmp_path, "appendix.md")
    feed(
        observer, [gone._event("run.finished", status="success", failed_steps=[], skipped_steps=[])]
    )
    ledger = LedgerStore.for_root(tmp_path).load("shop")
    assert ledger.state == {}
    assert ledger.decommissioned
    overview = page(tmp_path, "index.md")
    assert "| State | decommissioned |" in overview
    assert "| Service | web-landscape |" in overview
    assert "## Removed resources" in overview


def test_secrets_never_reach_docs_or_ledger(tmp_path: Path, observer: DocsObserver) -> None:
    known = "Sup3r-Secret-Router-Pw"
    Secrets(env={"INFRA_SECRET_ROUTER_PASSWORD": known}).get("router_password")
    unknown = "tok-only-by-key-42xz"
    run = Stream("run-1")
    outputs = {**OUTPUTS["ipam"], "api_token": unknown, "note": f"login with {known}"}
    targets = [
        {
            "target": "core",
            "status": "failed",
            "changed": False,
            "diff": f"+username admin password {known}\n",
            "error": f"auth failed for {known}",
            "details": {"enable_password": unknown, "banner": known},
        }
    ]
    feed(observer, [run.started(), run.step("ipam", outputs=outputs, diff=f"+ secret {known}\n")])
    feed(observer, [run.step("gateway", "failed", error=f"rejected {known}", targets=targets)])
    feed(observer, [run.finished()])
    text = all_docs_text(tmp_path)
    assert "gateway" in text and "auth failed for" in text
    assert known not in text
    assert unknown not in text
    assert "api_token" not in text


def test_unknown_executor_outputs_render_as_tables(tmp_path: Path, observer: DocsObserver) -> None:
    run = Stream("run-1")
    plan = [{"id": "backup", "department": "backup", "executor": "backup.policy", "needs": []}]
    event = run._event(
        "step.finished",
        "backup",
        department="backup",
        executor="backup.policy",
        status="success",
        changed=True,
        outputs={
            "policy": "gold|daily",
            "retention_days": 30,
            "jobs": [{"vm": "shop-web1", "next_run": "02:00"}, {"vm": "shop-db1", "extra": "x\ny"}],
        },
        targets=[],
        reused=False,
    )
    feed(observer, [run.started(plan=plan), event, run.finished()])
    resources = page(tmp_path, "appendix.md")
    assert "## backup (backup)" in resources
    assert "| Policy | gold\\|daily |" in resources
    assert "| Retention days | 30 |" in resources
    assert "| VM | Next run | Extra |" in resources
    assert "| shop-db1 |   | x<br>y |" in resources


def test_custom_section_renderer_from_the_registry(tmp_path: Path, observer: DocsObserver) -> None:
    class Firewall:
        def sections(self, resource: Any) -> list[Section]:
            rules = resource.outputs.get("rules", [])
            return [Section(page="network", title=f"Firewall: {len(rules)} rules")]

    SECTIONS.register("firewall.rules", Firewall())
    try:
        run = Stream("run-1")
        plan = [{"id": "fw", "department": "network", "executor": "firewall.rules", "needs": []}]
        event = run._event(
            "step.finished",
            "fw",
            department="network",
            executor="firewall.rules",
            status="success",
            outputs={"rules": ["a", "b"]},
        )
        feed(observer, [run.started(plan=plan), event, run.finished()])
        assert "### Firewall: 2 rules" in page(tmp_path, "appendix.md")
    finally:
        SECTIONS.unregister("firewall.rules")


def test_ledger_is_json_and_written_atomically(tmp_path: Path, observer: DocsObserver) -> None:
    feed(observer, Stream("run-1").full())
    folder = tmp_path / ".infra" / "docs"
    assert [p.name for p in folder.iterdir()] == ["shop.json"]  # no temp files left behind
    data = json.loads((folder / "shop.json").read_text())
    assert data["project"] == "shop"
    assert data["runs"][0]["steps"]["vms"]["status"] == "success"


def test_observer_never_raises_on_bad_input(tmp_path: Path, observer: DocsObserver) -> None:
    (tmp_path / ".infra" / "docs").mkdir(parents=True)
    (tmp_path / ".infra" / "docs" / "shop.json").write_text("{not json")
    feed(observer, Stream("run-1").full())  # logged, not raised
    observer.on_event(Event(run_id="nobody", kind="step.finished", step_id="x"))


# --------------------------------------------------------------------------- site, executor, CLI

REPO = Path(__file__).resolve().parents[2]
needs_mkdocs = pytest.mark.skipif(not mkdocs_available(), reason="mkdocs is not installed")


def landscape(root: Path) -> None:
    """A tree with every kind of page: built, failed + resumed, dry run, odd characters."""
    observer = DocsObserver(root)
    feed(observer, Stream("run-1").full(fail="web"))
    odd = Stream("run-2", start=10, requester="Eve | <b>")
    feed(observer, [odd.started(), odd.step("ipam", diff="+ ``` | <x>\n\n\n- `a`\n")])
    feed(observer, [odd.step("web", outputs={"site_url": "http://127.0.0.1:1/a_b?x=1&y=2"})])
    feed(observer, [odd.finished()])
    feed(observer, Stream("run-3", start=20, check=True).full())


@needs_mkdocs
def test_mkdocs_build_strict_passes_on_a_generated_tree(tmp_path: Path) -> None:
    landscape(tmp_path)
    site = build_site(tmp_path)  # writes a default mkdocs.yml: the root had none
    assert (tmp_path / "mkdocs.yml").is_file()
    html = (site / "projects" / "shop" / "history" / "index.html").read_text()
    assert "Eve | &lt;b&gt;" in html  # escaped, and the pipe did not split the cell
    assert "<b>" not in html.split("Eve", 1)[1][:20]
    assert (site / "projects" / "shop" / "plan" / "index.html").is_file()
    plan_html = (site / "projects" / "shop" / "plan" / "index.html").read_text()
    assert "<svg" in plan_html and "language-mermaid" not in plan_html


@needs_mkdocs
def test_repo_mkdocs_config_builds_strict_with_generated_projects(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    landscape(root)
    site = build_site(root, site_dir=tmp_path / "site")
    assert (site / "projects" / "shop" / "index.html").is_file()
    assert (site / "css" / "infra.css").is_file()
    assert "cdn" not in (site / "projects" / "shop" / "index.html").read_text().lower()


@needs_mkdocs
def test_mkdocs_strict_failure_is_a_render_error(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[broken](missing.md)\n")
    with pytest.raises(RenderError, match="mkdocs build failed"):
        build_site(tmp_path)


def _ctx(root: Path, *, check: bool = False, site: bool = True) -> StepContext:
    return StepContext(
        run_id="run-9",
        project="shop",
        step_id="docs",
        department="docs",
        params=DocsParams(site=site),
        inventory=Inventory(InventoryFile()),
        check=check,
        root=root,
    )


@needs_mkdocs
def test_docs_build_executor_writes_pages_and_site(tmp_path: Path) -> None:
    feed(DocsObserver(tmp_path), Stream("run-1").full())
    shutil.rmtree(tmp_path / "docs" / "projects")
    executor = DocsExecutor()
    preview = executor.preview(_ctx(tmp_path, check=True))
    assert preview.status.value == "success"
    assert not (tmp_path / "docs" / "projects").exists()  # check mode writes nothing
    result = executor.apply(_ctx(tmp_path))
    assert result.status.value == "success", result.error
    assert result.changed
    outputs = DocsOutputs.model_validate(result.outputs)
    assert outputs.site_path == str(tmp_path / "site")
    assert (tmp_path / "site" / "projects" / "shop" / "appendix" / "index.html").is_file()
    assert str(tmp_path / "docs" / "projects" / "shop" / "appendix.md") in outputs.pages
    assert "| VLAN | 231 |" in page(tmp_path, "appendix.md")
    again = executor.apply(_ctx(tmp_path, site=False))
    assert not again.changed  # idempotent
    assert again.outputs["site_path"] is None


def test_infra_docs_build_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from infra_automation.cli import app

    feed(DocsObserver(tmp_path), Stream("run-1").full())
    network = tmp_path / "docs" / "projects" / "shop" / "appendix.md"
    network.unlink()
    runner = CliRunner()
    done = runner.invoke(app, ["--root", str(tmp_path), "docs", "build", "--project", "shop"])
    assert done.exit_code == 0, done.output
    assert "| VLAN | 231 |" in network.read_text()
    missing = runner.invoke(app, ["--root", str(tmp_path), "docs", "build", "-p", "nope"])
    assert missing.exit_code == 2
    assert "no docs ledger for 'nope'" in missing.output


def test_unchanged_device_keeps_the_configuration_last_applied(
    tmp_path: Path, observer: DocsObserver
) -> None:
    feed(observer, Stream("run-1").full())
    again = Stream("run-2", start=10)
    quiet = [{**t, "diff": "", "changed": False} for t in GATEWAY_TARGETS]
    feed(observer, [again.started(), again.step("gateway", targets=quiet, changed=False)])
    network = page(tmp_path, "appendix.md")
    assert "##### Configuration applied (run run-1)" in network
    assert "+ip route 10.77.31.0/24 Null0" in network


def test_one_corrupt_ledger_does_not_break_the_index_of_the_others(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from infra_automation.cli import app

    feed(DocsObserver(tmp_path), Stream("run-1").full())
    store = LedgerStore.for_root(tmp_path)
    broken = store.folder / "broken.json"
    broken.write_text('{"project": "broken", "runs": [')
    assert [ledger.project for ledger in store.all()] == ["shop"]
    assert [path for path, _ in store.broken()] == [broken]
    assert store.find_run("run-1") == "shop"
    done = CliRunner().invoke(app, ["--root", str(tmp_path), "docs", "build"])
    assert done.exit_code == 1, done.output
    assert "shop: " in done.stdout and "index: " in done.stdout
    assert f"{broken}: not a readable docs ledger" in done.stderr.replace("\n", "")
    index = (tmp_path / "docs" / "projects" / "index.md").read_text()
    assert "shop" in index


def test_an_operational_change_keeps_the_build_as_the_project(tmp_path: Path) -> None:
    """A run of a service that ``modifies`` the build (scale, resize): in the history, but the
    project stays the build's service and plan, with the param values the change set."""
    observer = DocsObserver(tmp_path)
    feed(observer, Stream("run-1", service="web-landscape").full())
    change = Stream("run-2", start=5, service="web-scale")
    started = change.started(plan=[PLAN[0]])
    started.data["modifies"] = {"service": "web-landscape", "params": ["web_vms"]}
    started.data["request"]["params"] = {"web_vms": 3, "site_title": "not taken"}
    feed(observer, [started, change.step(PLAN[0]["id"]), change.finished()])
    ledger = LedgerStore.for_root(tmp_path).load("shop")
    assert ledger.service == "web-landscape" and ledger.plan_run_id == "run-1"
    assert [s.id for s in ledger.plan] == [p["id"] for p in PLAN]
    assert ledger.params == {**REQUEST_PARAMS, "web_vms": 3}
    assert [r.run_id for r in ledger.runs] == ["run-1", "run-2"]
    assert "web-scale" in page(tmp_path, "history.md")
