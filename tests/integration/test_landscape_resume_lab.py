"""Resume a failed landscape without redoing finished steps, on the lab.

The edge router is down when the landscape is applied: IPAM succeeds, the network step fails
for edge (core completes), every step after it is skipped. With the router back, `infra
resume RUN_ID` reuses IPAM's allocation (not run again), runs the rest, and the landscape is
complete; the docs show the failure, then the resumed run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from landscape_root import make_root, write_request
from test_landscape_lab import edge_bgp_prefixes, infra, page

from infra_automation.inventory import load_inventory
from infra_automation.lab import Lab

pytestmark = pytest.mark.lab

PROJECT = "e2eresume"
REQUEST = f"""\
service: project-landscape
project: {PROJECT}
requester: ci-pipeline
params: {{web_vms: 1, backup: false, monitoring: false}}
"""
DECOMMISSION = f"service: project-decommission\nproject: {PROJECT}\n"


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("resume") / "root", lab.inventory_path)
    write_request(path, "decommission", DECOMMISSION)
    yield path
    lab.start_router("edge")  # idempotent
    infra(path, "apply", str(path / "decommission.yml"), "--output", "json")


def test_a_failed_landscape_resumes_without_redoing_finished_steps(lab: Lab, root: Path) -> None:
    request = write_request(root, "request", REQUEST)
    lab.stop_router("edge")
    try:
        failed = infra(root, "apply", str(request), "--output", "json")
    finally:
        lab.start_router("edge")
    assert failed.returncode == 1, failed.stderr[-3000:]
    first = json.loads(failed.stdout)
    assert first["steps"]["ipam"]["status"] == "success"
    assert first["steps"]["network"]["status"] == "failed"
    assert "edge" in first["steps"]["network"]["error"]
    assert {"vms", "web", "docs"} <= set(first["skipped_steps"])
    failures = (root / "docs" / "projects" / PROJECT / "failures.md").read_text()
    assert f"infra resume {first['run_id']}" in failures

    resumed = infra(root, "resume", first["run_id"], "--output", "json")
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-3000:]
    second = json.loads(resumed.stdout)
    assert second["status"] == "success"
    urls = second["steps"]["web"]["outputs"]["urls"]
    assert urls
    for url in urls:  # read back from the host (a pool host may have served another project)
        body = page(url)
        assert f'<strong id="project">{PROJECT}</strong>' in body and "(fpm-fcgi)" in body
    record = json.loads(infra(root, "runs", "show", second["run_id"], "--output", "json").stdout)
    reused = {s["id"] for s in record["steps"] if s["reused"]}
    assert reused == {"ipam"}  # finished before: not run again, its allocation flowed on
    assert second["steps"]["ipam"]["outputs"] == first["steps"]["ipam"]["outputs"]
    inventory = load_inventory(lab.inventory_path)
    assert first["steps"]["ipam"]["outputs"]["subnet"] in edge_bgp_prefixes(inventory)
    history = (root / "docs" / "projects" / PROJECT / "history.md").read_text()
    assert first["run_id"] in history and second["run_id"] in history
