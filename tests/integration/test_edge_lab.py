"""Executors' edges against the lab: derived names, host promises in a dry run, error kinds.

- The longest valid project name plans and dry-runs through the real catalog
  (``project-landscape``) with valid VM names; nothing changes.
- A dry run promises each pool host once: two VMs get two hosts; more VMs than hosts fail
  the dry run as the apply would.
- Error kinds read from the real targets: a wrong router password or vCenter password is
  ``auth`` (the secret comes from ``INFRA_SECRET_<NAME>`` through the step context), a
  stopped vCenter ``unreachable``. (Stopped router, rejected line, failed save:
  test_network_lab.py.)
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from landscape_root import infra, make_root, write_request
from pyVim.connect import Disconnect, SmartConnect

from infra_automation.departments import network, vmware
from infra_automation.departments.vmware import VCenter, vcenter_config
from infra_automation.executors.base import RunResources, StepContext
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab
from infra_automation.lab.base import LabContext
from infra_automation.lab.vcenter import VCenterSim
from infra_automation.results import ErrorKind, Status
from infra_automation.secrets import Secrets
from infra_automation.validation import NAME_MAX

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
TAG = uuid.uuid4().hex[:6]
LONGEST = f"e{TAG}" + "x" * (NAME_MAX - 1 - len(TAG))  # a valid project of the greatest length
MY_STEPS = ("ipam", "network", "vm_folder", "portgroup", "vms")


def landscape(project: str, web_vms: int) -> str:
    return f"service: project-landscape\nproject: {project}\nrequester: ci\nparams:\n" \
           f"  web_vms: {web_vms}\n  backup: false\n  monitoring: false\n"  # fmt: skip


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("edge") / "root", lab.inventory_path)


def steps_of(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert run.stdout.strip(), run.stderr
    steps: dict[str, Any] = json.loads(run.stdout)["steps"]
    return steps


def vcenter_folder_exists(inventory: Inventory, name: str) -> bool:
    vc = vcenter_config(inventory)
    password = inventory.secrets.get(vc.password_secret)
    si = SmartConnect(
        host=vc.host, port=vc.port, user=vc.username, pwd=password, protocol=vc.protocol
    )
    try:
        return si.content.searchIndex.FindByInventoryPath(f"DC0/vm/{name}") is not None
    finally:
        Disconnect(si)


# --- item: names derived from the longest project -----------------------------------------


@pytest.fixture(scope="module")
def longest_check(root: Path) -> dict[str, Any]:
    request = write_request(root, "longest", landscape(LONGEST, 2))
    plan = infra(root, "plan", str(request))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    return steps_of(infra(root, "apply", "--check", str(request), "--output", "json"))


def test_the_longest_project_dry_runs_its_network_and_vmware_steps(
    longest_check: dict[str, Any], inventory: Inventory, lab: Lab
) -> None:
    for sid in MY_STEPS:
        assert longest_check[sid]["status"] == "success", longest_check[sid]
    names = longest_check["vms"]["outputs"]["names"]
    assert names == [f"{LONGEST}-web-01", f"{LONGEST}-web-02"]
    assert not vcenter_folder_exists(inventory, LONGEST)  # a dry run: nothing changed
    bindings = lab.inventory_path / "generated" / "bindings.json"
    assert not bindings.exists() or LONGEST not in bindings.read_text()


def test_the_longest_project_dry_runs_end_to_end(longest_check: dict[str, Any]) -> None:
    assert {s["status"] for s in longest_check.values()} == {"success"}


# --- item: the dry run promises each pool host once -------------------------------------------


def test_a_dry_run_binds_two_vms_to_two_hosts(root: Path, inventory: Inventory) -> None:
    project = f"b{TAG}two"
    run = infra(root, "apply", "--check", str(write_request(root, project, landscape(project, 2))),
                "--output", "json")  # fmt: skip
    steps = steps_of(run)
    assert steps["os_baseline"]["status"] == "success", steps["os_baseline"]
    hosts = steps["os_baseline"]["outputs"]["hosts"]
    bound = {hosts[f"{project}-web-0{i}"]["bound_to"] for i in (1, 2)}
    assert len(bound) == 2 and bound <= set(inventory.select(group="vm-pool"))


def test_a_dry_run_with_more_vms_than_pool_hosts_fails_like_the_apply(
    root: Path, inventory: Inventory
) -> None:
    pool = len(inventory.select(group="vm-pool"))
    project = f"b{TAG}many"
    request = write_request(root, project, landscape(project, pool + 1))
    run = infra(root, "apply", "--check", str(request), "--output", "json")
    assert run.returncode != 0
    step = steps_of(run)["os_baseline"]
    assert step["status"] == "failed" and step["error_kind"] == "rejected", step
    assert "no free host in group 'vm-pool'" in step["error"]


# --- item: error kinds from the real targets -----------------------------------------------------


def test_a_wrong_router_password_is_auth(
    inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFRA_SECRET_EDGE_ROUTER_PASSWORD", "not-the-password-42")
    spec = inventory.spec.model_copy(deep=True)  # core without its key, with a password
    spec.hosts["core"] = spec.hosts["core"].model_copy(
        update={"ssh_key_file": None, "password_secret": "edge_router_password"}
    )
    wrong = Inventory(spec, inventory.path)
    ctx = StepContext(
        run_id="edge-auth", project=f"a{TAG}", step_id="network", department="network",
        params=network.ConfigureParams(vlan_id=3999, subnet="10.79.9.0/24", gateway="10.79.9.1",
                                       devices=["core"]),
        inventory=wrong, check=True, secrets=Secrets(), resources=RunResources(), root=ROOT,
    )  # fmt: skip
    try:
        result = network.ConfigureExecutor().preview(ctx)
    finally:
        ctx.resources.close()
    assert result.status is Status.FAILED and result.error_kind is ErrorKind.AUTH
    (target,) = result.targets
    assert target.error_kind is ErrorKind.AUTH
    assert "authentication refused" in (target.error or "")
    assert "not-the-password-42" not in repr(result)


def _folder_ctx(inventory: Inventory, secrets: Secrets, resources: RunResources) -> StepContext:
    return StepContext(
        run_id="edge-vc", project=f"v{TAG}", step_id="vm_folder", department="vmware",
        params=vmware.FolderParams(project=f"v{TAG}"), inventory=inventory, check=True,
        secrets=secrets, resources=resources, root=ROOT,
    )  # fmt: skip


def test_a_wrong_vcenter_password_is_auth(
    inventory: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFRA_SECRET_VCENTER_PASSWORD", "not-the-password-42")
    files = (inventory.path / "generated" / "secrets.yml",) if inventory.path else ()
    result = vmware.FolderExecutor().preview(
        _folder_ctx(inventory, Secrets(files=files), RunResources())
    )
    assert result.status is Status.FAILED and result.error_kind is ErrorKind.AUTH
    assert "login as 'user' refused" in (result.error or "")


@pytest.fixture
def own_vcenter(tmp_path: Path) -> Iterator[tuple[VCenterSim, LabContext, Inventory, Secrets]]:
    """A vCenter simulator of this test alone (the shared lab's keeps running)."""
    component = VCenterSim()
    ctx = LabContext(name="edgevc", root=ROOT, state_dir=tmp_path / "state")
    fragment = component.up(ctx)
    try:
        vc = VCenter.model_validate(
            {**fragment.inventory["vcenter"], "template": "debian12-template"}
        )
        inv = Inventory(load_inventory(ROOT / "inventories" / "lab").spec.model_copy(
            update={"vcenter": vc}))  # fmt: skip
        secrets = Secrets(env={"INFRA_SECRET_VCENTER_PASSWORD":
                               fragment.secrets["vcenter_password"]})  # fmt: skip
        yield component, ctx, inv, secrets
    finally:
        component.down(ctx)


def test_a_stopped_vcenter_is_unreachable(
    own_vcenter: tuple[VCenterSim, LabContext, Inventory, Secrets],
) -> None:
    component, lab_ctx, inv, secrets = own_vcenter
    run = RunResources()  # one run: its session is opened while vCenter is up
    try:
        up = vmware.FolderExecutor().preview(_folder_ctx(inv, secrets, run))
        assert up.status is Status.SUCCESS, up.error
        component.down(lab_ctx)  # vcsim stopped by its PID
        during = vmware.FolderExecutor().preview(_folder_ctx(inv, secrets, run))
        assert during.status is Status.FAILED and during.error_kind is ErrorKind.UNREACHABLE
        assert "unreachable" in (during.error or "")
    finally:
        run.close()
    later = vmware.FolderExecutor().preview(_folder_ctx(inv, secrets, RunResources()))
    assert later.status is Status.FAILED and later.error_kind is ErrorKind.UNREACHABLE
    assert "cannot connect" in (later.error or "")
