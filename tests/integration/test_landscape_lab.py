"""The "new project landscape" end to end on the lab, through the CLI as a pipeline calls it.

request -> plan -> apply: the edge router learns the project prefix over BGP, vcsim shows the
VMs powered on the project's portgroup, every web host serves the PHP page naming the
project, the docs describe it all; a second apply changes nothing; decommission removes it.
Everything is read back from the targets themselves (netmiko, pyVmomi, HTTP), not from our
own outputs.
"""

from __future__ import annotations

import json
import os
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from landscape_root import infra, make_root, write_request

from infra_automation.config import load_settings
from infra_automation.departments.vmware import vcenter_config
from infra_automation.engine import Engine
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab

pytestmark = pytest.mark.lab

PROJECT = "e2eshop"
REQUEST = f"""\
service: project-landscape
project: {PROJECT}
requester: ci-pipeline
params:
  web_vms: 2
  vm_size: medium
  site_title: End to end
"""
DECOMMISSION = f"""\
service: project-decommission
project: {PROJECT}
requester: ci-pipeline
"""


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("landscape") / "root", lab.inventory_path)
    yield path
    infra(path, "apply", str(path / "decommission.yml"), "--output", "json")  # best effort


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


def running_configs(inventory: Inventory) -> dict[str, str]:
    from netmiko import ConnectHandler

    configs = {}
    for name in ("core", "edge"):
        host = inventory.host(name)
        conn = ConnectHandler(
            device_type="cisco_ios", host=host.hostname, port=host.port, username=host.username,
            key_file=host.ssh_key_file, use_keys=True, allow_agent=False, timeout=30,
        )  # fmt: skip
        try:
            configs[name] = conn.send_command("show running-config")
        finally:
            conn.disconnect()
    return configs


def test_one_dry_run_across_network_vmware_and_os_changes_nothing(
    root: Path, inventory: Inventory, lab: Lab
) -> None:
    """Runs first (file order): the dry run of a landscape that does not exist yet."""
    request = write_request(root, "request", REQUEST)
    before = running_configs(inventory)
    run = infra(root, "apply", str(request), "--check", "--output", "json")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(run.stdout)
    assert result["check"] is True and result["status"] == "success"
    steps = result["steps"]
    would_change = [sid for sid, s in steps.items() if s["changed"]]
    assert set(would_change) >= {"ipam", "network", "vm_folder", "portgroup", "vms", "web"}
    subnet = steps["ipam"]["outputs"]["subnet"]
    assert subnet in steps["network"]["diff"]  # the routers' config diff names the subnet
    assert steps["vms"]["outputs"]["names"] == [f"{PROJECT}-web-01", f"{PROJECT}-web-02"]
    assert "nginx" in steps["web"]["diff"] or "index.php" in steps["web"]["diff"]
    # ... and nothing changed anywhere
    assert running_configs(inventory) == before
    assert vcenter_vms(inventory) == {}
    bound = load_inventory(lab.inventory_path).bound_hosts()  # the dry run bound nothing
    assert not [vm for vm in bound if vm.startswith(PROJECT)], bound


@pytest.fixture(scope="module")
def applied(root: Path) -> dict[str, Any]:
    request = write_request(root, "request", REQUEST)
    write_request(root, "decommission", DECOMMISSION)
    plan = infra(root, "plan", str(request), "--output", "json")
    assert plan.returncode == 0, plan.stderr
    steps = {s["id"]: s for s in json.loads(plan.stdout)["steps"]}
    assert steps["network"]["needs"] == ["ipam"]
    assert set(steps["docs"]["needs"]) == {"web", "backup", "monitoring"}
    run = infra(root, "apply", str(request), "--output", "json", "--junit", str(root / "j.xml"))
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = dict(json.loads(run.stdout))
    assert result["steps"]["ipam"]["changed"]  # the dry run before allocated nothing
    return result


def edge_bgp_prefixes(inventory: Inventory) -> set[str]:
    from netmiko import ConnectHandler

    edge = inventory.host("edge")
    conn = ConnectHandler(
        device_type="cisco_ios", host=edge.hostname, port=edge.port, username=edge.username,
        key_file=edge.ssh_key_file, use_keys=True, allow_agent=False, timeout=30,
    )  # fmt: skip
    try:
        data = json.loads(conn.send_command("show ip bgp json"))
    finally:
        conn.disconnect()
    return set(data.get("routes", {}))


def vcenter_vms(inventory: Inventory) -> dict[str, dict[str, Any]]:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    vc = vcenter_config(inventory)
    pwd = inventory.secrets.get(vc.password_secret)
    si = SmartConnect(host=vc.host, port=vc.port, user=vc.username, pwd=pwd, protocol="http")
    try:
        view = si.content.viewManager.CreateContainerView(
            si.content.rootFolder, [vim.VirtualMachine], True
        )
        found = {}
        for vm in view.view:
            if vm.name.startswith(f"{PROJECT}-"):
                nets = [n.name for n in vm.network]
                found[vm.name] = {
                    "cpu": vm.config.hardware.numCPU,
                    "memory_mb": vm.config.hardware.memoryMB,
                    "networks": nets,
                    "power": str(vm.runtime.powerState),
                    "folder": vm.parent.name,
                }
        return found
    finally:
        Disconnect(si)


def page(url: str) -> str:
    assert url.startswith("http://127.0.0.1:"), url  # lab targets only
    with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback lab URL
        return str(response.read().decode())


def test_apply_builds_the_landscape_on_every_target(
    applied: dict[str, Any], inventory: Inventory, root: Path
) -> None:
    assert applied["status"] == "success", applied
    outputs = applied["outputs"]
    subnet, vlan = outputs["subnet"], outputs["vlan_id"]
    # network: the core originates the project subnet, the edge learns it over BGP
    assert subnet in edge_bgp_prefixes(inventory)
    # VMware: two VMs of the medium size, powered on, on the project's portgroup, in its folder
    vms = vcenter_vms(inventory)
    assert sorted(vms) == [f"{PROJECT}-web-01", f"{PROJECT}-web-02"]
    portgroup = applied["steps"]["portgroup"]["outputs"]["name"]
    for vm in vms.values():
        assert vm["power"] == "poweredOn" and vm["folder"] == PROJECT
        assert vm["networks"] == [portgroup]
        assert (vm["cpu"], vm["memory_mb"]) == (2, 4096)
    assert applied["steps"]["portgroup"]["outputs"]["vlan_id"] == vlan
    # OS/web: each web host serves the PHP page naming the project
    urls = outputs["site_urls"]
    assert len(urls) == 2
    for url in urls:
        body = page(url)
        assert PROJECT in body and "End to end" in body
    # CI/CD: a JUnit report with one case per step
    cases = ET.parse(root / "j.xml").getroot().iter("testcase")  # noqa: S314 - our own file
    assert len(list(cases)) == len(applied["steps"])


def test_the_baseline_and_the_steps_after_it_shared_one_ansible_playbook(
    applied: dict[str, Any], root: Path
) -> None:
    """web, backup and monitoring wait for the baseline only, on the same VMs: one
    ansible-playbook ran the four playbooks (unless batching or the session is off), the
    three after the baseline only once the scheduler had started them, after the baseline
    had succeeded; each step kept its own result and its own part of the log."""
    off = "0" in (os.environ.get("INFRA_ANSIBLE_BATCH"), os.environ.get("INFRA_ANSIBLE_SESSION"))
    logs = root / ".infra" / "ansible" / applied["run_id"]
    wave = ("web", "backup", "monitoring")
    shared = ("os_baseline", *wave)
    for sid in shared:
        log = (logs / f"{sid}.log").read_text()
        line = next((x for x in log.splitlines() if x.startswith("batch: ")), "")
        assert bool(line) is not off, log[:2000]
        prefix = "batch: one ansible-playbook for the steps "
        assert off or line.removeprefix(prefix).split(", ") == list(shared), line
        assert "alone now" not in log
        for other in set(shared) - {sid}:
            assert f"TASK [{other} :" not in log  # another step's tasks are not in its log
    engine = Engine(load_settings(root))
    run = engine.store.get_run(applied["run_id"])
    engine.close()
    baseline = run.step("os_baseline")
    for sid in wave:
        step = run.step(sid)
        assert baseline.finished_at and step.started_at and baseline.finished_at <= step.started_at
    hosts = {sid: applied["steps"][sid]["outputs"]["hosts"] for sid in wave}
    for vm in (f"{PROJECT}-web-01", f"{PROJECT}-web-02"):
        assert hosts["web"][vm]["services"]["nginx"] == "running"
        assert set(hosts["backup"][vm]["services"]) == {"cron"}
        assert set(hosts["monitoring"][vm]["services"]) == {"prometheus-node-exporter"}
        assert hosts["web"][vm]["stats"]["failed"] == 0 and hosts["web"][vm]["stats"]["ok"] > 0


def test_docs_describe_what_was_built(applied: dict[str, Any], root: Path) -> None:
    docs = root / "docs" / "projects" / PROJECT
    text = "\n".join(p.read_text() for p in sorted(docs.glob("*.md")))
    outputs = applied["outputs"]
    assert outputs["subnet"] in text and f"{outputs['vlan_id']}" in text
    for name in (f"{PROJECT}-web-01", f"{PROJECT}-web-02"):
        assert name in text
    for url in outputs["site_urls"]:
        assert url in text
    assert "poweredOn" in text
    assert applied["run_id"] in (docs / "history.md").read_text()


def test_no_secret_reaches_docs_or_record(applied: dict[str, Any], lab: Lab, root: Path) -> None:
    secrets = yaml.safe_load((lab.inventory_path / "generated" / "secrets.yml").read_text())
    assert secrets.get("backup_password") and secrets.get("vcenter_password")
    written = [p for p in (root / "docs").rglob("*") if p.is_file()]
    written += [p for p in (root / ".infra").rglob("*") if p.is_file() and "ansible" not in p.parts]
    for path in written:
        data = path.read_bytes()
        for value in secrets.values():
            assert value.encode() not in data, f"a secret is in {path}"


def test_second_apply_changes_nothing(applied: dict[str, Any], root: Path) -> None:
    run = infra(root, "apply", str(root / "request.yml"), "--output", "json")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    again = json.loads(run.stdout)
    changed = [sid for sid, s in again["steps"].items() if s["changed"] and sid != "docs"]
    assert changed == []
    history = (root / "docs" / "projects" / PROJECT / "history.md").read_text()
    assert applied["run_id"] in history and again["run_id"] in history


def test_decommission_removes_the_landscape(
    applied: dict[str, Any], inventory: Inventory, root: Path, lab: Lab
) -> None:
    run = infra(root, "apply", str(root / "decommission.yml"), "--output", "json")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert applied["outputs"]["subnet"] not in edge_bgp_prefixes(inventory)
    assert vcenter_vms(inventory) == {}
    bound = load_inventory(lab.inventory_path).bound_hosts()  # whatever the binder
    assert not [vm for vm in bound if vm.startswith(PROJECT)], bound
