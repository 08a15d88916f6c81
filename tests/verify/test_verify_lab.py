"""``infra verify`` against the real lab: a landscape applied, then changed by hand in every
department, reported as drift with the difference, repaired by ``infra apply``.

Out of band: the project's route removed on the core router, the VM powered off in vCenter,
nginx stopped on the host, the backup schedule removed. Then a router that does not answer
(its port closed in a copy of the inventory) makes its resources unverifiable, not in sync.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra_automation.departments.vmware import vcenter_config
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab
from tests.integration.landscape_root import as_built, make_root, write_request

pytestmark = pytest.mark.lab
PROJECT = f"vfy{random.randint(100, 999)}"
VM = f"{PROJECT}-web-01"
REQUEST = f"""\
service: project-landscape
project: {PROJECT}
requester: tam@example.com
params: {{web_vms: 1, vm_size: small, site_title: Verify, backup: true, monitoring: true}}
"""
DECOMMISSION = f"service: project-decommission\nproject: {PROJECT}\nrequester: tam@example.com\n"


def infra(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(root), *args]
    env = {**os.environ, "ANSIBLE_HOME": str(root / ".infra" / "ansible-home")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, check=False)


def verify(root: Path, *args: str) -> tuple[int, dict[str, Any]]:
    argv = [sys.executable, "-m", "infra_automation.cli.verify", "--root", str(root)]
    done = subprocess.run(
        [*argv, "-p", PROJECT, "--output", "json", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1, 3), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout)["projects"][0]


def checks(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["resource"], c["target"]): c for s in report["steps"] for c in s["checks"]}


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("verify") / "root", lab.inventory_path)
    request = write_request(path, "request", REQUEST)
    write_request(path, "decommission", DECOMMISSION)
    run = infra(path, "apply", str(request), "--output", "json")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    yield path
    infra(path, "apply", str(path / "decommission.yml"), "--output", "json")  # best effort


def router(inventory: Inventory, name: str, *config: str) -> None:
    from netmiko import ConnectHandler

    host = inventory.host(name)
    conn = ConnectHandler(
        device_type="cisco_ios", host=host.hostname, port=host.port, username=host.username,
        key_file=host.ssh_key_file, use_keys=True, allow_agent=False, timeout=30,
    )  # fmt: skip
    try:
        conn.send_config_set(list(config), error_pattern=r"^%")
    finally:
        conn.disconnect()


def power_off(inventory: Inventory, path: str) -> None:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVim.task import WaitForTask

    vc = vcenter_config(inventory)
    pwd = inventory.secrets.get(vc.password_secret)
    si = SmartConnect(host=vc.host, port=vc.port, user=vc.username, pwd=pwd, protocol="http")
    try:
        WaitForTask(si.content.searchIndex.FindByInventoryPath(path).PowerOffVM_Task())
    finally:
        Disconnect(si)


def on_host(inventory: Inventory, vm: str, command: str) -> None:
    """``command`` in the container the VM is bound to, whatever the binder (pool, guests)."""
    container = str(inventory.bound_hosts()[vm].data["container"])
    subprocess.run(["podman", "exec", container, "sh", "-c", command], check=True, timeout=60)


def test_fresh_landscape_is_in_sync(root: Path) -> None:
    code, report = verify(root)
    assert code == 0, [c for c in checks(report).values() if c["state"] != "in-sync"]
    found = checks(report)
    assert found[(f"VM {VM}", "vcenter")]["state"] == "in-sync"
    assert found[("service nginx", VM)]["state"] == "in-sync"
    assert found[("backup schedule", VM)]["state"] == "in-sync"
    assert report["duration"] < 10  # facts, not plays


def test_out_of_band_changes_are_drift_with_the_difference(
    root: Path, inventory: Inventory
) -> None:
    ledger = as_built(root, PROJECT).model_dump(mode="json")
    subnet = ledger["state"]["ipam"]["outputs"]["subnet"]
    vm = ledger["state"]["vms"]["outputs"]["vms"][0]
    bound = ledger["state"]["web"]["outputs"]["hosts"][VM]["bound_to"]
    router(inventory, "core", f"no ip route {subnet} Null0")
    power_off(inventory, vm["path"])
    assert inventory.bound_hosts()[VM].data["bound_to"] == bound  # the run's host, still bound
    on_host(inventory, VM, "service nginx stop")
    on_host(inventory, VM, f"rm -f /etc/cron.d/infra-backup-{PROJECT}")
    code, report = verify(root)
    assert code == 3
    found = checks(report)
    core = found[("configuration of core", "core")]
    assert core["state"] == "drifted" and f"-ip route {subnet} Null0" in core["diff"]
    machine = found[(f"VM {VM}", "vcenter")]
    assert machine["state"] == "drifted"
    assert "-power_state: poweredOn\n+power_state: poweredOff" in machine["diff"]
    nginx = found[("service nginx", VM)]
    assert nginx["state"] == "drifted" and "+stopped" in nginx["diff"]
    backup = found[("backup schedule", VM)]
    assert backup["state"] == "drifted" and "+(no cron line runs the backup)" in backup["diff"]
    assert f"infra-backup-{PROJECT}" in backup["expected"]
    site = next(c for (r, _), c in found.items() if r.startswith("site "))
    assert site["state"] == "drifted"
    index = (root / "docs" / "projects" / PROJECT / "index.md").read_text()
    assert "| Drift | drifted, verified" in index
    assert "| configuration of core | core | drifted |" in index
    assert (
        "-power_state: poweredOn"
        in (root / "docs" / "projects" / PROJECT / "verification.md").read_text()
    )


def test_apply_repairs_and_verify_is_in_sync_again(root: Path) -> None:
    run = infra(root, "apply", str(root / "request.yml"), "--output", "json")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    code, report = verify(root)
    assert code == 0, [c for c in checks(report).values() if c["state"] != "in-sync"]
    index = (root / "docs" / "projects" / PROJECT / "index.md").read_text()
    assert "| Drift | in-sync, verified" in index


def test_router_down_makes_its_resources_unverifiable(root: Path, lab: Lab) -> None:
    broken = root / "broken-inventory"
    shutil.copytree(lab.inventory_path, broken)
    generated = broken / "generated" / "lab.yml"
    data = yaml.safe_load(generated.read_text())
    data["hosts"]["core"]["port"] = 9  # discard: nothing listens
    generated.write_text(yaml.safe_dump(data))
    settings = root / "infra.toml"
    original = settings.read_text()
    settings.write_text(f'inventory = "{broken}"\n')
    try:
        code, report = verify(root, "--no-docs")
    finally:
        settings.write_text(original)
    found = checks(report)
    core = found[("configuration of core", "core")]
    assert core["state"] == "unverifiable" and core["error_kind"] == "unreachable"
    assert found[("configuration of edge", "edge")]["state"] == "in-sync"
    assert code == 1 and report["state"] == "unverifiable"
