"""Change management on the lab, through a real ``infra server`` (API and portal) and the CLI.

One landscape is built in this module (project ``chg``, one web VM): its normal change waits;
the requester's own approval is refused; a second change on the same VM is refused naming the
first; an approver approves it in the portal (Chromium) and it runs, and its record and
approvals are in the project's docs history. The other scenarios use small services of the
repository's executors on the same lab: a router change approved, then re-planned after an
out-of-band change on the router, is voided and waits again; an emergency change runs and
stays flagged until its retrospective approval; a change in a blackout window is refused
naming the window; a standard change whose service's success rate fell below its threshold
is treated as normal with the reason shown. Only the landscape is dry-run (twice) and built.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infra_automation.identity import Role
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab
from infra_automation.server.policy import API
from tests.integration.landscape_root import ROOT, make_root
from tests.portal.conftest import login
from tests.server.conftest import LiveServer, live_server

pytestmark = pytest.mark.lab

PROJECT = "chg"
VM = f"{PROJECT}-web-01"
LANDSCAPE = {
    "service": "project-landscape",
    "project": PROJECT,
    "params": {"web_vms": 1, "backup": False, "monitoring": False, "site_title": "Changes"},
}
ROUTE_VLAN, ROUTE_SUBNET = 190, "10.20.190.0/24"  # outside what IPAM hands out first
SLOW = 240.0  # seconds: a landscape dry run is ~40 s, its run about a minute more

SERVICES: dict[str, dict[str, Any]] = {
    # a router change (no IPAM: literal values), normal through the inventory's defaults
    "chg-route": {
        "name": "chg-route",
        "description": "A VLAN interface and route on the routers",
        "owner": "network",
        "steps": [
            {
                "id": "network",
                "department": "network",
                "executor": "network.configure",
                "targets": {"group": "routers"},
                "params": {
                    "vlan_id": ROUTE_VLAN,
                    "subnet": ROUTE_SUBNET,
                    "gateway": "10.20.190.1",
                    "description": "change lab",
                    "bgp_wait": 0,
                },
            }
        ],
    },
    # the project's VM folder again (idempotent): cheap, real, no change block of its own
    "chg-folder": {
        "name": "chg-folder",
        "description": "The VM folder of project chg",
        "owner": "vmware",
        "steps": [
            {
                "id": "folder",
                "department": "vmware",
                "executor": "vmware.folder",
                "params": {"project": PROJECT},
            }
        ],
    },
    # a standard change while its history holds: the folder, and a failure on demand
    "chg-std": {
        "name": "chg-std",
        "description": "Pre-approved: the VM folder of project chg",
        "owner": "vmware",
        "params": {"fail": {"type": "boolean", "default": False}},
        "steps": [
            {
                "id": "folder",
                "department": "vmware",
                "executor": "vmware.folder",
                "params": {"project": PROJECT},
            },
            {"id": "boom", "executor": "core.fail", "when": "params.fail", "needs": ["folder"]},
        ],
        "change": {"type": "standard", "risk": "low", "success_threshold": 0.9, "history": 5},
    },
    # a resize of the landscape's VM, previewed by vmware.vms: it names VM chg-web-01
    "chg-vm": {
        "name": "chg-vm",
        "description": "The web VM of project chg, larger",
        "owner": "vmware",
        "steps": [
            {
                "id": "vms",
                "department": "vmware",
                "executor": "vmware.vms",
                "params": {
                    "project": PROJECT,
                    "role": "web",
                    "count": 1,
                    "size": "large",
                    "folder": PROJECT,
                    "portgroup": PROJECT,
                    "addresses": ["10.20.0.2/24"],
                },
            }
        ],
    },
}


def infra(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(root), *args]
    env = {**os.environ, "ANSIBLE_HOME": str(root / ".infra" / "ansible-home")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, check=False)


def inventory_dir(root: Path, lab: Lab, name: str, change: dict[str, Any] | None) -> Path:
    """``inventories/<name>``: the lab's inventory with a ``change:`` block, its generated
    connection details and secrets shared (a symlink)."""
    folder = root / "inventories" / name
    folder.mkdir(parents=True)
    data = yaml.safe_load((lab.inventory_path / "inventory.yml").read_text())
    if change is not None:
        data["change"] = change
    (folder / "inventory.yml").write_text(yaml.safe_dump(data))
    (folder / "generated").symlink_to(lab.inventory_path / "generated", target_is_directory=True)
    return folder


def change_root(base: Path, lab: Lab) -> Path:
    root = make_root(base, lab.inventory_path)
    (root / "catalog").unlink()  # the repository's services, and the small ones above
    (root / "catalog").mkdir()
    for source in (ROOT / "catalog").glob("*.yml"):
        (root / "catalog" / source.name).symlink_to(source)
    for name, service in SERVICES.items():
        (root / "catalog" / f"{name}.yml").write_text(yaml.safe_dump(service))
    now = datetime.now(UTC)
    freeze = {
        "name": "lab freeze",
        "start": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
        "end": (now + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M"),
    }
    approval = {"mode": "departments"}  # any approver but the requester, per department
    inventory_dir(root, lab, "changes", {"defaults": {"type": "normal"}, "approval": approval})
    inventory_dir(root, lab, "freeze", {"approval": approval, "blackouts": [freeze]})
    inventory_dir(root, lab, "plain", None)  # no change policy: the cleanup runs at once
    (root / "infra.toml").write_text(f'inventory = "{root / "inventories" / "changes"}"\n')
    return root


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


@pytest.fixture(scope="module")
def server(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = change_root(tmp_path_factory.mktemp("changes-lab") / "root", lab)
    decommission = root / "decommission.yml"
    decommission.write_text(
        yaml.safe_dump(
            {
                "service": "project-decommission",
                "project": PROJECT,
                "inventory": "inventories/plain",
            }
        )
    )
    with live_server(root) as live:
        yield live
    infra(root, "apply", str(decommission), "--output", "json")  # best effort


@pytest.fixture(scope="module")
def flow() -> dict[str, Any]:
    """What the tests of the landscape's change hand on (they run in file order)."""
    return {}


def http(live: LiveServer, role: Role) -> httpx.Client:
    headers = {"Authorization": f"Bearer {live.tokens[role]}"}
    return httpx.Client(base_url=live.url, headers=headers, timeout=SLOW)


def submit(live: LiveServer, body: dict[str, Any], role: Role = Role.ENGINEER) -> httpx.Response:
    with http(live, role) as client:
        return client.post(f"{API}/requests/submit", json=body)


def change(live: LiveServer, change_id: str) -> dict[str, Any]:
    with http(live, Role.VIEWER) as client:
        body: dict[str, Any] = client.get(f"{API}/changes/{change_id}").json()
        return body


def settled(live: LiveServer, change_id: str, timeout: float = 30) -> dict[str, Any]:
    """The change once its run has been recorded on it (just after the run ends)."""
    deadline = time.monotonic() + timeout
    while True:
        body = change(live, change_id)
        if body["state"] not in ("approved", "implementing"):
            return body
        assert time.monotonic() < deadline, f"change {change_id[:12]} is still {body['state']}"
        time.sleep(0.1)


def running_config(inventory: Inventory, name: str, *config: str) -> str:
    """The router's running config (after applying ``config`` lines, if any)."""
    from netmiko import ConnectHandler

    host = inventory.host(name)
    conn = ConnectHandler(
        device_type="cisco_ios", host=host.hostname, port=host.port, username=host.username,
        key_file=host.ssh_key_file, use_keys=True, allow_agent=False, timeout=30,
    )  # fmt: skip
    try:
        if config:
            conn.send_config_set(list(config), error_pattern=r"^%")
        return str(conn.send_command("show running-config"))
    finally:
        conn.disconnect()


# --- the landscape's change ---------------------------------------------------------------------


def test_a_normal_change_of_the_landscape_waits(
    server: LiveServer, inventory: Inventory, flow: dict[str, Any]
) -> None:
    answer = submit(server, LANDSCAPE)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "awaiting approval" and body["run_id"] is None
    gate = body["change"]
    assert gate["decision"] == "waiting"
    assert "department network" in gate["missing"] and "department web" in gate["missing"]
    record = gate["change"]
    assert record["type"] == "normal" and record["requester"] == "engineer-user"
    assert {f"vm:{VM}", "device:core", "device:edge", f"project:{PROJECT}"} <= set(record["items"])
    shown = change(server, record["id"])
    network = next(s for s in shown["steps"] if s["step"] == "network")
    assert "ip route 10.20." in network["diff"] and network["changed"]
    with http(server, Role.VIEWER) as client:
        runs = client.get(f"{API}/runs", params={"project": PROJECT}).json()["runs"]
    assert [r["check"] for r in runs] == [True]  # only its dry run ran
    assert f"description project {PROJECT}" not in running_config(inventory, "core")
    flow["change"] = record["id"]


def test_the_requesters_own_approval_is_refused(server: LiveServer, flow: dict[str, Any]) -> None:
    root = server.state.engine.settings.root
    done = infra(
        root, "changes", "approve", flow["change"], "--as", "engineer-user", "--output", "json"
    )
    assert done.returncode == 4, done.stdout + done.stderr
    refused = json.loads(done.stdout)
    assert not refused["accepted"] and refused["state"] == "waiting"
    assert f"engineer-user requested change {flow['change'][:12]}" in refused["reason"]
    assert "cannot approve" in refused["reason"]
    assert change(server, flow["change"])["approvals"] == []


def test_a_second_change_on_the_same_vm_is_refused_naming_the_first(
    server: LiveServer, flow: dict[str, Any]
) -> None:
    answer = submit(server, {"service": "chg-vm", "project": "chg-resize"})
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert body["conflict"] == flow["change"]
    assert flow["change"][:12] in body["message"] and f"vm:{VM}" in body["message"]
    with http(server, Role.VIEWER) as client:
        refused = client.get(f"{API}/changes", params={"project": "chg-resize"}).json()
    assert [c["state"] for c in refused["changes"]] == ["refused"]


def test_an_approver_approves_in_the_portal_and_it_runs(
    server: LiveServer, browser: Any, inventory: Inventory, flow: dict[str, Any]
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(SLOW * 1000)
        login(page, server, "approver-user")
        page.click("a[href='/approvals']")
        page.click(f"a[href='/changes/{flow['change']}']")
        assert page.inner_text("#change-state") == "waiting"
        assert "ip route 10.20." in page.inner_text("#dept-network")
        page.click("#approve")  # dry-run again (the same hash), then the run starts
        page.wait_for_selector("#run-panel")
        page.wait_for_function("document.querySelector('#run-status').textContent == 'success'")
    finally:
        context.close()
    done = settled(server, flow["change"])
    assert done["state"] == "implemented" and done["run_id"]
    approvers = {(a["approver"], a["sha256"], a["counts"]) for a in done["approvals"]}
    assert approvers == {("approver-user", flow["change"], True)}
    assert f"description project {PROJECT}" in running_config(inventory, "core")
    root = server.state.engine.settings.root
    history = (root / "docs" / "projects" / PROJECT / "history.md").read_text()
    section = history.split("<!-- BEGIN CHANGES -->")[1].split("<!-- END CHANGES -->")[0]
    assert f"### Change `{flow['change'][:12]}`: implemented" in section
    assert f"| Run | `{done['run_id']}` |" in section
    assert "| approver-user | approved |" in section


# --- small changes on the same lab ---------------------------------------------------------------


def test_an_approved_change_replanned_after_an_out_of_band_router_change_is_voided(
    server: LiveServer, inventory: Inventory
) -> None:
    request = {"service": "chg-route", "project": "chg-net"}
    first = submit(server, request).json()["change"]["change"]["id"]
    root = server.state.engine.settings.root
    approved = infra(root, "changes", "approve", first, "--as", "nina", "--output", "json")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert json.loads(approved.stdout)["state"] == "approved"
    try:
        running_config(inventory, "core", f"interface vlan{ROUTE_VLAN}", " description oob edit")
        again = submit(server, {**request, "change": first})  # re-plan before the run
        assert again.status_code == 202, again.text
        gate = again.json()["change"]
        assert gate["decision"] == "voided" and gate["voided"] == first
        assert again.json()["run_id"] is None and again.json()["status"] == "awaiting approval"
        assert gate["change"]["state"] == "waiting" and gate["missing"] == ["department network"]
        old = change(server, first)
        assert old["state"] == "voided" and old["superseded_by"] == gate["change"]["id"]
        assert all(a["voided_at"] and not a["counts"] for a in old["approvals"])
        with http(server, Role.APPROVER) as client:  # withdrawn: it would hold the routers
            path = f"{API}/changes/{gate['change']['id']}/reject"
            assert client.post(path, json={"comment": "lab done"}).status_code == 200
        assert ROUTE_SUBNET.split("/")[0] not in running_config(inventory, "edge")
    finally:
        running_config(inventory, "core", f"no interface vlan{ROUTE_VLAN}")


def test_an_emergency_change_runs_and_stays_flagged_until_approved(server: LiveServer) -> None:
    body = {"service": "chg-folder", "project": PROJECT, "change_type": "emergency"}
    answer = submit(server, body)
    assert answer.status_code == 202, answer.text
    started = answer.json()
    assert started["status"] == "queued" and started["change"]["change"]["flagged"]
    assert server.wait_idle(started["run_id"], timeout=SLOW)["status"] == "success"
    hotfix = started["change"]["change"]["id"]
    shown = settled(server, hotfix)
    assert shown["state"] == "implemented" and shown["flagged"]
    assert shown["retrospective_due"]
    with http(server, Role.VIEWER) as client:
        flagged = client.get(f"{API}/changes", params={"flagged": "true"}).json()["changes"]
    assert [c["id"] for c in flagged] == [hotfix]
    with http(server, Role.APPROVER) as client:
        retro = client.post(f"{API}/changes/{hotfix}/approve", json={"comment": "reviewed"})
    assert retro.status_code == 200 and not retro.json()["change"]["flagged"]
    assert change(server, hotfix)["retrospective_by"] == "approver-user"


def test_a_change_in_a_blackout_window_is_refused_naming_the_window(server: LiveServer) -> None:
    body = {"service": "chg-folder", "project": "chg-frozen", "inventory": "inventories/freeze"}
    answer = submit(server, body)
    assert answer.status_code == 409, answer.text
    message = answer.json()["message"]
    assert "inside the blackout window lab freeze" in message and "UTC" in message
    with http(server, Role.VIEWER) as client:
        runs = client.get(f"{API}/runs", params={"project": "chg-frozen"}).json()["runs"]
    assert [r["check"] for r in runs] == [True]  # its dry run, nothing else


def test_a_standard_change_below_its_success_threshold_is_treated_as_normal(
    server: LiveServer,
) -> None:
    for fail, status in ((False, "success"), (True, "failed")):
        answer = submit(
            server, {"service": "chg-std", "project": "chg-std", "params": {"fail": fail}}
        )
        assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text
        assert answer.json()["change"]["change"]["type"] == "standard"
        assert server.wait_idle(answer.json()["run_id"], timeout=SLOW)["status"] == status
    answer = submit(server, {"service": "chg-std", "project": "chg-std2"})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "awaiting approval"
    record = body["change"]["change"]
    assert record["type"] == "normal"
    reason = "standard change treated as normal: chg-std succeeded in 50% of its last 2 runs"
    assert record["type_reason"].startswith(reason) and "(below 90%)" in record["type_reason"]
    assert reason in body["change"]["reason"]
