"""The docs observer behind the real engine (core executors, no lab): runs, failure, resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra_automation.config import load_settings
from infra_automation.docs.ledger import LedgerStore, ProjectLedger, ledger_store
from infra_automation.engine import Engine

SERVICE = """\
name: docs-demo
description: Core steps and the docs step
owner: platform-team
params:
  greeting: {{type: string, default: hello}}
steps:
  - id: prepare
    department: network
    executor: core.noop
    params:
      echo: {{vlan_id: 231, message: "{{{{ params.greeting }}}} {{{{ project }}}}"}}
  - id: configure
    department: vmware
    executor: {configure}
    needs: [prepare]
    params: {params}
  - id: finish
    department: os
    executor: core.noop
    needs: [configure]
    params:
      echo: {{site_url: "http://127.0.0.1:8080/"}}
  - id: docs
    executor: docs.build
    needs: [finish]
    params: {{site: false}}
"""
BROKEN = SERVICE.format(configure="core.fail", params="{message: 'portgroup pg-x is missing'}")
FIXED = SERVICE.format(configure="core.noop", params="{echo: {portgroup: pg-docs-231}}")


def write_root(root: Path, service: str) -> None:
    (root / "catalog").mkdir(exist_ok=True)
    (root / "catalog" / "docs-demo.yml").write_text(service)
    (root / "inventories" / "lab").mkdir(parents=True, exist_ok=True)
    (root / "inventories" / "lab" / "inventory.yml").write_text("name: docs-test\n")


def engine(root: Path) -> Engine:
    return Engine(load_settings(root, env={}), load_observers=True)


def ledger_of(root: Path, project: str = "shop") -> ProjectLedger:
    """The project's as-built state, from the run database (no ledger file is written)."""
    eng = engine(root)
    try:
        assert not LedgerStore.for_root(root).has(project)
        return ledger_store(root, eng.db).load(project)
    finally:
        eng.close()


def run(root: Path, *, check: bool = False) -> str:
    eng = engine(root)
    try:
        data = {"service": "docs-demo", "project": "shop", "requester": "Dana Ops"}
        request = eng.validate(data)
        return eng.apply(request, check=check).run_id
    finally:
        eng.close()


def read(root: Path, name: str) -> str:
    return (root / "docs" / "projects" / "shop" / name).read_text()


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    write_root(tmp_path, BROKEN)
    return tmp_path


def test_engine_run_failure_then_resume_is_documented(root: Path) -> None:
    failed = run(root)
    failures = read(root, "failures.md")
    assert "portgroup pg-x is missing" in failures
    assert "Not run because a step they depend on failed: finish, docs." in failures
    assert f"infra resume {failed}" in failures
    assert "| Requester | Dana Ops |" in read(root, "index.md")
    assert "hello shop" in read(root, "appendix.md")  # the output, rendered from the template

    write_root(root, FIXED)  # the cause is fixed; resume the failed run
    eng = engine(root)
    try:
        resumed = eng.resume(failed)
    finally:
        eng.close()
    assert not resumed.failed
    assert "No open failures" in read(root, "failures.md")
    history = read(root, "history.md")
    assert history.count(f"## Run {failed}:") == 1
    assert history.count(f"## Run {resumed.run_id}:") == 1
    assert f"| Resumed from | `{failed}` |" in history
    assert "pg-docs-231" in read(root, "appendix.md")
    assert "[http://127.0.0.1:8080/](http://127.0.0.1:8080/)" in read(root, "appendix.md")
    ledger = ledger_of(root)
    assert {s.id: s.status for s in ledger.plan} == dict.fromkeys(
        ["prepare", "configure", "finish", "docs"], "success"
    )
    assert ledger.state["prepare"].run_id == failed  # reused, kept from the first run


def test_engine_dry_run_is_history_only(root: Path) -> None:
    write_root(root, FIXED)
    applied = run(root)
    dry = run(root, check=True)
    history = read(root, "history.md")
    assert f"## Run {dry}: success (dry run)" in history
    assert f"## Run {applied}: success" in history
    ledger = ledger_of(root)
    assert ledger.plan_run_id == applied
    assert all(r.run_id == applied for r in ledger.state.values())


def test_the_site_built_by_the_docs_step_shows_the_finished_run(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")  # the dev extra installs it; `make test` always has it
    write_root(tmp_path, FIXED.replace("params: {site: false}", "params: {site: true}"))
    run_id = run(tmp_path)
    page = (tmp_path / "site" / "projects" / "shop" / "index.html").read_text()
    assert run_id in page
    assert "in progress" not in page.lower() and "running" not in page.lower()
