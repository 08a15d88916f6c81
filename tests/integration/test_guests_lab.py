"""Lab guests on demand: three projects side by side on one `infra lab up`, a guest per VM.

The lab as `infra lab up` makes it by default (guests, no pool hosts). Three
project-landscape builds (the catalog's defaults, web_vms 1, 2 and 1) run at once on it,
their VMs on their own guest containers (host_binding ``lab-guests``): every VM has its own
container (``podman ps`` shows it, labelled with its VM), each web page answers with its
project's title from that guest's HTTP port, ``ansible-inventory --list`` lists the guests.
A dry run that needs more guests than ``lab_guests.max_guests`` allows fails naming the
limit, and nothing changes (no container, no stored guest). Decommissioning one project
removes its guests' firewalls (security finds its guest-bound VMs) and containers, and leaves
the others serving.

Runs on a lab instance of its own (``INFRA_GUESTS_LAB_NAME``, default ``guests``;
``infra lab up --name guests`` beforehand to keep it between runs), beside the session's
(which binds VMs to a pool: tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from landscape_root import make_root, write_request
from test_speed_inventory_lab import ansible_tool, plain

from infra_automation.exceptions import InfraError
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab
from infra_automation.lab.base import LabContext, LabOptions
from infra_automation.lab.guests import (
    GUEST_LABEL,
    VM_LABEL,
    GuestBinder,
    GuestStore,
    LabGuests,
    LabGuestsConfig,
    guest_container,
    guest_containers,
    store_file,
)
from infra_automation.lab.hosts import network_name, podman
from infra_automation.lab.orchestrator import GUEST_HOSTS

pytestmark = pytest.mark.lab

PROJECTS = {"gsa": (1, "Guests Alpha"), "gsb": (2, "Guests Bravo"), "gsc": (1, "Guests Charlie")}


def vms_of(project: str) -> list[str]:
    return [f"{project}-web-{i:02d}" for i in range(1, PROJECTS[project][0] + 1)]


def build(project: str) -> str:
    count, title = PROJECTS[project]
    return (
        f"service: project-landscape\nproject: {project}\nrequester: ci-pipeline\n"
        f"params: {{web_vms: {count}, site_title: {title}}}\n"
    )


def decommission(project: str) -> str:
    return f"service: project-decommission\nproject: {project}\nrequester: ci-pipeline\n"


def infra(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(root), *args]
    env = {**os.environ, "ANSIBLE_HOME": str(root / ".infra" / "ansible-home")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, check=False)


def apply(root: Path, name: str, body: str, *extra: str) -> subprocess.CompletedProcess[str]:
    request = write_request(root, name, body)
    return infra(root, "apply", str(request), "--output", "json", "--no-docs", *extra)


def ok(run: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        result = dict(json.loads(run.stdout))
    except ValueError:
        raise AssertionError(run.stdout[-3000:] + run.stderr[-3000:]) from None
    failed = {s: r["error"] for s, r in result["steps"].items() if r["status"] == "failed"}
    assert run.returncode == 0, f"run {result.get('run_id')} of {result['project']}: {failed}"
    return result


def containers(lab: Lab) -> dict[str, str]:
    """Running guest containers of the lab instance: name -> the VM label."""
    out = podman(
        lab.context,
        "ps",
        "--filter", f"label={GUEST_LABEL}={lab.name}",
        "--format", "{{.Names}} {{index .Labels \"" + VM_LABEL + "\"}}",
    ).stdout  # fmt: skip
    return dict(line.split() for line in out.splitlines() if line.strip())


def stored(lab: Lab) -> dict[str, dict[str, Any]]:
    path = lab.state_dir / "guests" / "guests.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def page(url: str) -> str:
    assert url.startswith("http://127.0.0.1:"), url  # lab targets only
    with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback lab URL
        return str(response.read().decode())


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """This module's own instance, as `infra lab up` makes it: guests, no pool hosts (the
    session's lab binds VMs to its pool)."""
    name = os.environ.get("INFRA_GUESTS_LAB_NAME", "guests")
    instance = Lab(ROOT, name, LabOptions(routers=2, hosts=GUEST_HOSTS, guests=True))
    try:
        lease = instance.acquire(cleanup_on_failure=os.environ.get("INFRA_LAB_KEEP") != "1")
    except InfraError as exc:
        pytest.fail(f"the lab {name!r} could not start: {exc}", pytrace=False)
    yield instance
    instance.release(lease, keep=os.environ.get("INFRA_LAB_KEEP") == "1")


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    inventory = load_inventory(lab.inventory_path)
    assert isinstance(inventory.binder(), GuestBinder), (
        f"lab {lab.name!r} binds VMs with {inventory.spec.host_binding.kind!r}: bring it up "
        f"with guests (infra lab up --name {lab.name})"
    )
    assert inventory.select(group="vm-pool") == []  # no pool: the guests are the VMs' hosts
    return inventory


@pytest.fixture(scope="module")
def root(
    lab: Lab, inventory: Inventory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("guests") / "root", lab.inventory_path)
    with (path / "infra.toml").open("a") as toml:
        toml.write("database_timeout = 120\n")  # three runs write one SQLite record at once
    yield path
    with ThreadPoolExecutor(len(PROJECTS)) as pool:
        list(pool.map(lambda p: apply(path, f"cleanup-{p}", decommission(p)), PROJECTS))
    left = [vm for vm in stored(lab) if vm.split("-")[0] in PROJECTS]
    assert left == [], f"guests left after decommission: {left}"


@pytest.fixture(scope="module")
def built(root: Path) -> dict[str, dict[str, Any]]:
    """The three projects, built at the same time."""
    with ThreadPoolExecutor(len(PROJECTS)) as pool:
        runs = dict(
            zip(PROJECTS, pool.map(lambda p: apply(root, p, build(p)), PROJECTS), strict=True)
        )
    return {project: ok(run) for project, run in runs.items()}


def test_three_projects_each_vm_on_its_own_guest(
    built: dict[str, dict[str, Any]], lab: Lab
) -> None:
    running = containers(lab)
    guests = stored(lab)
    for project, result in built.items():
        assert result["status"] == "success"
        assert result["outputs"]["vms"] == vms_of(project)
        ports = set()
        for vm in vms_of(project):
            cname = guest_container(lab.context, vm)
            assert running.get(cname) == vm, f"{cname} is not running: {running}"
            assert guests[vm]["container"] == cname
            ports.add(guests[vm]["http"])
        urls = result["outputs"]["site_urls"]
        assert len(urls) == len(vms_of(project))
        assert {int(u.rsplit(":", 1)[1].split("/")[0]) for u in urls} == ports  # its own guests
        for url in urls:
            body = page(url)
            assert PROJECTS[project][1] in body and project in body
    all_vms = [vm for p in PROJECTS for vm in vms_of(p)]
    assert len({guests[vm]["container"] for vm in all_vms}) == len(all_vms) == 4
    listed = ansible_tool("ansible-inventory", "-i", str(lab.inventory_path), "--list")
    assert listed.returncode == 0 and "WARNING" not in listed.stderr, listed.stderr
    data = plain(json.loads(listed.stdout))  # through the project's inventory plugin
    hostvars = data["_meta"]["hostvars"]
    for vm in all_vms:
        assert hostvars[vm]["ansible_port"] == guests[vm]["ssh"]
        assert hostvars[vm]["bound_to"] == guests[vm]["container"]
    assert set(all_vms) <= set(data["vm_pool"]["hosts"]) and set(all_vms) <= set(
        data["debian"]["hosts"]
    )


def test_dry_run_beyond_max_guests_fails_and_changes_nothing(
    built: dict[str, dict[str, Any]], lab: Lab, tmp_path: Path
) -> None:
    """A copy of the lab's inventory with a limit one guest above what runs: a project of two
    web VMs is refused by its dry run, naming the limit, before anything is made."""
    limited = tmp_path / "inventory"
    shutil.copytree(lab.inventory_path, limited)
    limit = len(stored(lab)) + 1
    (limited / "generated" / "zz-limit.yml").write_text(f"lab_guests: {{max_guests: {limit}}}\n")
    other = make_root(tmp_path / "root", limited)
    before = (containers(lab), stored(lab))
    body = build("gsb").replace("project: gsb", "project: gsd")
    run = apply(other, "gsd", body, "--check")
    assert run.returncode != 0, run.stdout[-3000:]
    result = json.loads(run.stdout)
    errors = " ".join(str(s.get("error") or "") for s in result["steps"].values())
    assert f"lab_guests.max_guests is {limit}" in errors and "'gsd-web-02'" in errors, errors
    assert "'gsd-web-01'" not in errors  # the first VM fits; the second does not
    assert (containers(lab), stored(lab)) == before


def test_decommission_removes_its_guests_only(
    built: dict[str, dict[str, Any]], lab: Lab, root: Path
) -> None:
    removed = ok(apply(root, "down-gsb", decommission("gsb")))
    firewall = removed["steps"]["firewall_remove"]  # security found the guest-bound VMs
    assert sorted(firewall["outputs"]["hosts"]) == vms_of("gsb"), firewall
    running, guests = containers(lab), stored(lab)
    for vm in vms_of("gsb"):
        assert guest_container(lab.context, vm) not in running and vm not in guests
        gone = podman(
            lab.context, "container", "exists", guest_container(lab.context, vm), check=False
        )
        assert gone.returncode == 1
    for project in ("gsa", "gsc"):
        for vm in vms_of(project):
            assert running.get(guest_container(lab.context, vm)) == vm
        for url in built[project]["outputs"]["site_urls"]:
            assert PROJECTS[project][1] in page(url)


def test_same_vm_same_guest_and_lab_down_removes_every_guest(
    lab: Lab, inventory: Inventory
) -> None:
    """On an instance of its own (``pgd``: its network, its guests): binding twice gives the
    same container and ports; the guests component's ``down`` removes every guest by label,
    also one the store no longer knows."""
    config = inventory.section("lab_guests", LabGuestsConfig)
    own = LabGuestsConfig(instance="pgd", root=config.root, image=config.image, max_guests=3)
    ctx = own.context()
    binder = GuestBinder(inventory, own)
    try:
        first = binder.bind("gsz-web-01", None)
        again = GuestBinder(inventory, own).bind("gsz-web-01", None)
        assert (again.port, again.data["http_port"]) == (first.port, first.data["http_port"])
        binder.bind("gsz-web-02", None)
        with GuestStore(store_file(ctx)).transaction(write=True) as table:
            del table["gsz-web-02"]  # forgotten by the store: down still finds it by label
        assert sorted(guest_containers(ctx)) == ["pgd-guest-gsz-web-01", "pgd-guest-gsz-web-02"]
        LabGuests().down(ctx)
        assert guest_containers(ctx) == [] and stored_in(ctx) == {}
    finally:
        LabGuests().down(ctx)
        podman(ctx, "network", "rm", "--force", network_name(ctx), check=False)
        shutil.rmtree(ctx.state_dir, ignore_errors=True)  # .lab/pgd: made by this test


def stored_in(ctx: LabContext) -> dict[str, Any]:
    with GuestStore(store_file(ctx)).transaction(write=False) as table:
        return dict(table)
