"""Capacity on the lab: the pools read from the real vcsim, IPAM and guest hosts; a landscape
asking for more VM memory than the simulated cluster has is refused by its dry run, naming
the pool and the shortfall, before anything runs (no run recorded, no VM in vCenter)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra_automation.departments._vsphere import VSphere
from infra_automation.departments.vmware import VCenter, vcenter_config
from infra_automation.inventory import load_inventory
from infra_automation.lab import Lab
from infra_automation.metrics.vcenter_capacity import read_vcenter
from tests.integration.landscape_root import make_root, write_request

pytestmark = pytest.mark.lab
PROJECT = "capbig"


def infra(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(root), *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("capacity") / "root", lab.inventory_path)


def too_many(root: Path) -> tuple[int, float]:
    """Large VMs (8 GiB each): enough of them to pass the cluster's free memory as
    ``infra stats capacity`` reads it from vcsim, and that free memory (MiB)."""
    pools = {
        p["id"]: p
        for p in json.loads(infra(root, "stats", "capacity", "-o", "json").stdout)["pools"]
    }
    free = float(pools["vcenter:DC0_C0:memory"]["free"])
    count = math.floor(free / 8192) + 1
    assert 1 <= count <= 8, f"the cluster has {free} MiB free: the catalog allows 8 VMs at most"
    return count, free


def test_a_landscape_over_the_cluster_memory_is_refused_by_its_dry_run(
    root: Path, lab: Lab
) -> None:
    count, free = too_many(root)
    body = {"service": "project-landscape", "project": PROJECT, "requester": "ci",
            "params": {"web_vms": count, "vm_size": "large", "backup": False}}  # fmt: skip
    request = write_request(root, "big", yaml.safe_dump(body))
    run = infra(root, "apply", "--check", str(request), "--output", "json")
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    message = " ".join(run.stderr.split())
    assert "CapacityExceeded" in message and "vcenter:DC0_C0:memory" in message, message
    needed, short = count * 8192, count * 8192 - free
    assert f"needs {needed} MiB" in message
    found = re.search(r"short by ([0-9.]+) MiB", message)
    assert found is not None and float(found.group(1)) == pytest.approx(short, abs=0.01)
    assert run.stdout == ""  # nothing ran: no result to print
    runs = infra(root, "runs", "list", "--output", "json")
    assert json.loads(runs.stdout) == []  # nothing recorded
    # what-if: the same request through `infra stats capacity --request`
    what_if = infra(root, "stats", "capacity", "--request", str(request), "--output", "json")
    assert what_if.returncode == 2, what_if.stderr
    report = json.loads(what_if.stdout)
    assert report["fits"] is False
    (refused,) = [s for s in report["shortfalls"] if s["enforced"]]
    assert refused["pool"] == "vcenter:DC0_C0:memory" and refused["needed"] == needed
    assert refused["short"] == pytest.approx(short)
    assert read_vcenter_names(lab).isdisjoint({f"{PROJECT}-web-{i:02d}" for i in range(1, 9)})


def test_a_landscape_that_fits_passes_the_pre_flight(root: Path, lab: Lab) -> None:
    params = {"web_vms": 1, "vm_size": "small", "backup": False, "monitoring": False}
    body = {
        "service": "project-landscape",
        "project": "capsmall",
        "requester": "ci",
        "params": params,
    }
    request = write_request(root, "small", yaml.safe_dump(body))
    report = infra(root, "stats", "capacity", "--request", str(request), "--output", "json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["fits"] is True
    assert data["needed"]["vcenter:DC0_C0:memory"] == 1024  # small: 1 GiB (vm.yml.j2)
    assert data["needed"]["ipam:default:vlans"] == 1
    pools = {p["id"]: p for p in data["pools"]}
    expected = {"ipam:default:vlans", "ipam:default:subnets", "vcenter:DC0_C0:cpu"}
    expected |= {"vcenter:DC0_C0:memory", "vcenter:LocalDS_0:space", "hosts:vm-pool"}
    assert expected <= set(pools)
    hosts = len(load_inventory(lab.inventory_path).select(group="vm-pool"))  # the lab's pool
    assert pools["hosts:vm-pool"]["capacity"] == hosts and not pools["hosts:vm-pool"]["enforced"]
    text = infra(root, "stats", "capacity")
    assert text.returncode == 0 and "vcenter:DC0_C0:memory" in text.stdout, text.stderr


def read_vcenter_names(lab: Lab) -> set[str]:
    inventory = load_inventory(lab.inventory_path)
    vc = vcenter_config(inventory)
    return {v.name for v in read_vcenter(vc, inventory.secrets.get(vc.password_secret)).vms}


def test_a_capacity_read_whose_connection_drops_is_read_again(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vcsim drops the connection when a request panics in it (here: an unset property read
    through pyVmomi's lazy accessor). The capacity read is tried again on the same session,
    and gives vCenter's figures."""
    from infra_automation.metrics import vcenter_capacity

    real = vcenter_capacity._read
    tries: list[int] = []

    def dropping_once(si: Any, vc: VCenter, vim: Any, vmodl: Any) -> Any:
        tries.append(1)
        if len(tries) == 1:
            path = VSphere(si=si, vc=vc).path("vm", vc.template)
            template = si.content.searchIndex.FindByInventoryPath(path)
            _ = template.resourcePool  # vcsim panics: the connection closes, no answer
        return real(si, vc, vim, vmodl)

    monkeypatch.setattr(vcenter_capacity, "_read", dropping_once)
    inventory = load_inventory(lab.inventory_path)
    vc = vcenter_config(inventory)
    facts = read_vcenter(vc, inventory.secrets.get(vc.password_secret))
    assert len(tries) == 2
    assert facts.cluster_threads > 0 and facts.template_disks.get(vc.template, 0) > 0
