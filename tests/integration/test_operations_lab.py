"""Operational changes of a running project on the lab: scale up, scale down, resize, decommission.

One project is built with two web VMs (project-landscape), scaled to three (project-scale:
the new VM serves the page, is a monitoring target and has a backup schedule; the first two
are left unchanged), scaled back to two (the removed VM is gone from vCenter, monitoring and
backup, its address free in IPAM and its pool host free), resized small -> medium
(project-resize: vCenter reports the new CPU/memory) and decommissioned (nothing left in
vCenter, on the routers, in IPAM, in monitoring or backup); a second decommission changes
nothing and says so. Then a project with a database tier behind its firewall is scaled up
(the new web VM gets a free address, never the db VM's, and the firewall; the db VM admits
5432 from it) and down (the removed VM's host is refused 5432 and loses its firewall).
Everything is read back from the targets (pyVmomi, netmiko, SSH, HTTP, the controller's
registration files, the IPAM tables, real connections between the lab's containers).

Needs a lab with four pool hosts: ``infra lab up --name po --hosts 4`` and INFRA_LAB_NAME=po.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from landscape_root import infra, make_root, write_request

from infra_automation.config import load_settings
from infra_automation.departments.ipam import Ipam
from infra_automation.departments.ipam_addresses import project_addresses
from infra_automation.departments.vmware import vcenter_config
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab
from infra_automation.record import open_database

pytestmark = pytest.mark.lab

PROJECT = "opsshop"
TITLE = "Operations shop"
WEB = [f"{PROJECT}-web-{i:02d}" for i in (1, 2, 3)]
BUILD = f"""\
service: project-landscape
project: {PROJECT}
requester: ci-pipeline
params: {{web_vms: 2, vm_size: small, site_title: {TITLE}}}
"""


def scale(count: int) -> str:
    return f"""\
service: project-scale
project: {PROJECT}
requester: ci-pipeline
params: {{web_vms: {count}, site_title: {TITLE}}}
"""


RESIZE = f"""\
service: project-resize
project: {PROJECT}
requester: ci-pipeline
params: {{vm_size: medium}}
"""
DECOMMISSION = f"""\
service: project-decommission
project: {PROJECT}
requester: ci-pipeline
"""


def verify(root: Path, project: str = PROJECT) -> list[dict[str, Any]]:
    """``infra verify`` of the project: the checks that are not in sync (none expected)."""
    return [c for c in verify_checks(root, project) if c["state"] != "in-sync"]


def verify_checks(root: Path, project: str) -> list[dict[str, Any]]:
    """Every check of ``infra verify`` of the project."""
    run = infra(root, "verify", "-p", project, "--output", "json", "--no-docs")
    assert run.returncode in (0, 1, 3), run.stdout[-3000:] + run.stderr[-3000:]
    (report,) = json.loads(run.stdout)["projects"]
    checks = [c for step in report["steps"] for c in step["checks"]]
    assert checks, report
    return checks


def firewall_verified(root: Path, project: str) -> dict[str, set[str]]:
    """Verify's firewall checks: VM -> the states of its table's checks (no other drift)."""
    checks = verify_checks(root, project)
    assert [c for c in checks if c["state"] == "drifted"] == []
    found: dict[str, set[str]] = {}
    for check in checks:
        if check["resource"] == "firewall inet infra_firewall":
            found.setdefault(check["target"], set()).add(check["state"])
    return found


def apply(root: Path, name: str, body: str, *extra: str) -> dict[str, Any]:
    request = write_request(root, name, body)
    run = infra(root, "apply", str(request), "--output", "json", "--no-docs", *extra)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-4000:]
    return dict(json.loads(run.stdout))


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    inventory = load_inventory(lab.inventory_path)
    pool = inventory.select(group="vm-pool")
    assert len(pool) >= 4, f"needs 4 pool hosts (infra lab up --name po --hosts 4), has {pool}"
    return inventory


@pytest.fixture(scope="module")
def root(
    lab: Lab, inventory: Inventory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("operations") / "root", lab.inventory_path)
    yield path
    write_request(path, "cleanup", DECOMMISSION)
    infra(path, "apply", str(path / "cleanup.yml"), "--output", "json", "--no-docs")


@pytest.fixture(scope="module")
def built(root: Path) -> dict[str, Any]:
    result = apply(root, "build", BUILD)
    assert result["outputs"]["vms"] == WEB[:2]
    return result


# --- reading the targets --------------------------------------------------------------------


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
        return {
            vm.name: {
                "cpu": vm.config.hardware.numCPU,
                "memory_mb": vm.config.hardware.memoryMB,
                "power": str(vm.runtime.powerState),
                "folder": vm.parent.name,
                "moid": vm._moId,
            }
            for vm in view.view
            if vm.name.startswith(f"{PROJECT}-")
        }
    finally:
        Disconnect(si)


def vcenter_has(inventory: Inventory, *paths: str) -> list[str]:
    from pyVim.connect import Disconnect, SmartConnect

    vc = vcenter_config(inventory)
    pwd = inventory.secrets.get(vc.password_secret)
    si = SmartConnect(host=vc.host, port=vc.port, user=vc.username, pwd=pwd, protocol="http")
    try:
        return [p for p in paths if si.content.searchIndex.FindByInventoryPath(p) is not None]
    finally:
        Disconnect(si)


def on_host(inventory: Inventory, host: str, command: str) -> subprocess.CompletedProcess[str]:
    target = inventory.host(host)
    assert target.hostname == "127.0.0.1", target.hostname  # lab targets only
    argv = [
        "ssh", "-i", str(target.ssh_key_file), "-p", str(target.port),
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        f"{target.username}@{target.hostname}", command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def backup_scheduled(inventory: Inventory, host: str) -> bool:
    done = on_host(inventory, host, f"test -f /etc/cron.d/infra-backup-{PROJECT}")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def exporter_running(inventory: Inventory, host: str) -> bool:
    done = on_host(inventory, host, "pgrep -f '/usr/bin/[p]rometheus-node-exporter'")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def bindings(lab: Lab) -> dict[str, str]:
    path = lab.inventory_path / "generated" / "bindings.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def registrations(root: Path) -> set[str]:
    folder = root / ".infra" / "monitoring" / "targets"
    return {p.stem for p in folder.glob(f"{PROJECT}-*.json")}


def page(url: str) -> str:
    assert url.startswith("http://127.0.0.1:"), url  # lab targets only
    with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback lab URL
        return str(response.read().decode())


def ipam_state(root: Path) -> tuple[Any, dict[str, str]]:
    db = open_database(load_settings(root, env={}).database_url)
    try:
        return Ipam(db).find(PROJECT), project_addresses(db, PROJECT)
    finally:
        db.dispose()


def router_lines(inventory: Inventory, subnet: str) -> list[str]:
    from netmiko import ConnectHandler

    found = []
    for name in ("core", "edge"):
        host = inventory.host(name)
        conn = ConnectHandler(
            device_type="cisco_ios", host=host.hostname, port=host.port, username=host.username,
            key_file=host.ssh_key_file, use_keys=True, allow_agent=False, timeout=30,
        )  # fmt: skip
        try:
            config = conn.send_command("show running-config")
        finally:
            conn.disconnect()
        network = subnet.split("/")[0]
        found += [f"{name}: {line}" for line in config.splitlines() if network in line]
    return found


# --- the scenario (file order) --------------------------------------------------------------


def test_scale_up_adds_one_vm_into_every_department(
    built: dict[str, Any], root: Path, inventory: Inventory, lab: Lab
) -> None:
    before = vcenter_vms(inventory)
    assert sorted(before) == WEB[:2]
    result = apply(root, "scale3", scale(3))
    steps = result["steps"]
    assert steps["tier"]["outputs"]["added"] == [WEB[2]]
    assert steps["tier"]["outputs"]["removed"] == []
    # the tier's diff is the same in the dry run (one code path): what is added, what goes
    assert steps["tier"]["diff"] == f"+ vm {WEB[2]} (scale up)\n"
    # vCenter: one more VM at the tier's size; the first two untouched (same object, same size)
    after = vcenter_vms(inventory)
    assert sorted(after) == WEB
    for name in WEB[:2]:
        assert after[name] == before[name]
    assert (after[WEB[2]]["cpu"], after[WEB[2]]["memory_mb"]) == (1, 1024)
    # the vms step changed only the new VM (a diff per changed VM); the playbooks ran on it only
    assert f"--- {WEB[2]}\n+ clone" in steps["vms"]["diff"]
    assert not any(f"--- {name}" in steps["vms"]["diff"] for name in WEB[:2])
    for sid in ("new_baseline", "new_web", "new_backup", "new_monitoring"):
        assert set(steps[sid]["outputs"]["hosts"]) == {WEB[2]}, sid
    # IPAM: the new VM's address is the next one of the project's subnet
    allocation, addresses = ipam_state(root)
    hosts = list(allocation.subnet.hosts())
    assert addresses == {name: str(hosts[i + 1]) for i, name in enumerate(WEB)}
    # web, monitoring, backup on the new VM (its pool host)
    (url,) = result["outputs"]["site_urls"]
    body = page(url)
    assert PROJECT in body and TITLE in body
    assert registrations(root) == set(WEB)
    text = (root / ".infra" / "monitoring" / "targets" / f"{WEB[2]}.json").read_text()
    target, _ = json.JSONDecoder().raw_decode(text)  # the role ends the file with a literal \n
    assert target[0]["labels"] == {"project": PROJECT, "host": WEB[2]}
    assert all(backup_scheduled(inventory, bindings(lab)[name]) for name in WEB)
    # verify checks the build as scaled: three VMs, each in every department, all in sync
    assert verify(root) == []


def test_scale_down_dry_run_names_the_vm_and_changes_nothing(
    root: Path, inventory: Inventory
) -> None:
    before = vcenter_vms(inventory)
    request = write_request(root, "scale2", scale(2))
    run = infra(root, "apply", str(request), "--check", "--output", "json", "--no-docs")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-4000:]
    steps = json.loads(run.stdout)["steps"]
    assert steps["tier"]["outputs"]["removed"] == [WEB[2]]
    assert f"- vm {WEB[2]} (scale down)" in steps["tier"]["diff"]
    assert steps["destroy"]["diff"] == f"- vm DC0/vm/{PROJECT}/{WEB[2]}\n"
    assert "- address" in steps["release_addresses"]["diff"]
    assert vcenter_vms(inventory) == before
    assert registrations(root) == set(WEB)


def test_scale_down_removes_the_highest_vm_everywhere(
    root: Path, inventory: Inventory, lab: Lab
) -> None:
    before = vcenter_vms(inventory)
    host = bindings(lab)[WEB[2]]
    _, addresses = ipam_state(root)
    address = addresses[WEB[2]]
    result = apply(root, "scale2", scale(2))
    assert result["steps"]["destroy"]["outputs"]["destroyed"] == [WEB[2]]
    # vCenter: gone; the others untouched
    after = vcenter_vms(inventory)
    assert sorted(after) == WEB[:2]
    assert all(after[name] == before[name] for name in WEB[:2])
    # monitoring: unregistered; backup: the schedule is gone from the host it was on
    assert registrations(root) == set(WEB[:2])
    assert not backup_scheduled(inventory, host)
    assert not exporter_running(inventory, host)  # stopped, not only its pid file removed
    assert all(backup_scheduled(inventory, bindings(lab)[name]) for name in WEB[:2])
    # the pool host and the address are free
    assert WEB[2] not in bindings(lab) and host not in bindings(lab).values()
    _, addresses = ipam_state(root)
    assert WEB[2] not in addresses and address not in addresses.values()
    assert verify(root) == []  # the removed VM is not expected anywhere


def test_resize_reconfigures_cpu_and_memory_in_vcenter(root: Path, inventory: Inventory) -> None:
    before = vcenter_vms(inventory)
    assert {(v["cpu"], v["memory_mb"]) for v in before.values()} == {(1, 1024)}
    result = apply(root, "resize", RESIZE)
    after = vcenter_vms(inventory)
    assert sorted(after) == WEB[:2]
    for name in WEB[:2]:
        assert (after[name]["cpu"], after[name]["memory_mb"]) == (2, 4096), after[name]
        assert after[name]["power"] == "poweredOn" and after[name]["moid"] == before[name]["moid"]
    assert "~ cpu: 1 -> 2" in result["steps"]["resize"]["diff"]
    assert not result["steps"]["vms"]["changed"]  # the build executor reads the new size back
    assert verify(root) == []  # verified at the new size


def test_decommission_leaves_nothing_behind(
    built: dict[str, Any], root: Path, inventory: Inventory, lab: Lab
) -> None:
    hosts = [bindings(lab)[name] for name in WEB[:2]]
    subnet = built["outputs"]["subnet"]
    assert router_lines(inventory, subnet)
    apply(root, "decommission", DECOMMISSION)
    assert vcenter_vms(inventory) == {}
    assert vcenter_has(inventory, f"DC0/vm/{PROJECT}", f"DC0/network/{PROJECT}") == []
    assert router_lines(inventory, subnet) == []
    allocation, addresses = ipam_state(root)
    assert allocation is None and addresses == {}
    assert registrations(root) == set()
    assert not any(backup_scheduled(inventory, host) for host in hosts)
    assert not any(name.startswith(f"{PROJECT}-") for name in bindings(lab))


def test_a_second_decommission_changes_nothing_and_says_so(
    root: Path, inventory: Inventory
) -> None:
    again = apply(root, "decommission-again", DECOMMISSION)
    assert again["status"] == "success"
    # every department had nothing to do (the docs record each run, as after a re-applied build)
    changed = {
        sid: s["diff"] for sid, s in again["steps"].items() if s["changed"] and sid != "docs"
    }
    assert changed == {}
    assert again["steps"]["ipam_lookup"]["outputs"]["allocated"] is False
    assert again["outputs"]["decommissioned"] is False
    assert "nothing to decommission" in again["outputs"]["note"]
    assert vcenter_vms(inventory) == {}


def test_ipam_tables_hold_nothing_of_the_project(root: Path) -> None:
    db = open_database(load_settings(root, env={}).database_url)
    try:
        with db.connect() as conn:
            for table in ("ipam_allocations", "ipam_addresses"):
                query = sa.text(f"SELECT count(*) FROM {table} WHERE project = :p")  # noqa: S608
                assert conn.execute(query, {"p": PROJECT}).scalar() == 0, table
    finally:
        db.dispose()


# --- a database tier behind its firewall, scaled (project-landscape, database + firewall) ------

DB_PROJECT = "opsdb"
DB_WEB = [f"{DB_PROJECT}-web-{i:02d}" for i in (1, 2)]
DB_VM = f"{DB_PROJECT}-db-01"
DB_BUILD = f"""\
service: project-landscape
project: {DB_PROJECT}
requester: ci-pipeline
params: {{web_vms: 1, database: postgresql, firewall: true, backup: false, monitoring: false}}
"""
PROBE = """\
import socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("timeout" if isinstance(exc, TimeoutError) else f"error {exc}")
"""


def db_scale(count: int) -> str:
    return f"""\
service: project-scale
project: {DB_PROJECT}
requester: ci-pipeline
params: {{web_vms: {count}, backup: false, monitoring: false}}
"""


def db_request(name: str) -> str:
    return f"service: {name}\nproject: {DB_PROJECT}\nrequester: ci-pipeline\n"


def podman(lab: Lab, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    from infra_automation.lab.hosts import podman_env

    return subprocess.run(
        ["podman", *args], input=stdin, capture_output=True, text=True, timeout=60,
        check=False, env={**os.environ, **podman_env(lab.context)},
    )  # fmt: skip


def container_of(inventory: Inventory, lab: Lab, vm: str) -> str:
    return str(inventory.host(bindings(lab)[vm]).data["container"])


def lab_address(lab: Lab, container: str) -> str:
    return podman(lab, "exec", container, "hostname", "-I").stdout.split()[0]


def probe(lab: Lab, source: str, target: str, port: int) -> str:
    """Connect from inside container ``source`` to ``target:port``: open, refused, timeout."""
    done = podman(lab, "exec", "-i", source, "python3", "-", target, str(port), stdin=PROBE)
    return done.stdout.strip() or f"error {done.stderr.strip()}"


def nft_table(lab: Lab, container: str) -> str:
    return podman(lab, "exec", container, "nft", "list", "table", "inet", "infra_firewall").stdout


@pytest.fixture(scope="module")
def db_root(
    lab: Lab, inventory: Inventory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("operations-db") / "root", lab.inventory_path)
    yield path
    write_request(path, "cleanup", db_request("project-decommission"))
    infra(path, "apply", str(path / "cleanup.yml"), "--output", "json", "--no-docs")


def db_ipam(root: Path) -> tuple[Any, dict[str, str]]:
    db = open_database(load_settings(root, env={}).database_url)
    try:
        return Ipam(db).find(DB_PROJECT), project_addresses(db, DB_PROJECT)
    finally:
        db.dispose()


def test_db_tier_scale_up_keeps_the_db_address_and_firewalls_the_new_vm(
    db_root: Path, inventory: Inventory, lab: Lab
) -> None:
    built = apply(db_root, "build", DB_BUILD)
    db_ip = built["steps"]["db_vm"]["outputs"]["vms"][0]["ip"]
    # the dry run reads the build and the tier as the apply will, and changes nothing
    request = write_request(db_root, "scale2", db_scale(2))
    dry = infra(db_root, "apply", str(request), "--check", "--output", "json", "--no-docs")
    assert dry.returncode == 0, dry.stdout[-6000:] + dry.stderr[-4000:]
    assert json.loads(dry.stdout)["steps"]["tier"]["outputs"]["added"] == [DB_WEB[1]]
    assert db_ipam(db_root)[1] == {} and DB_WEB[1] not in vcenter_vms_of(inventory, DB_PROJECT)
    result = apply(db_root, "scale2", db_scale(2))
    steps = result["steps"]
    assert steps["built"]["outputs"]["params"]["firewall"] is True  # read from the record
    # IPAM: the db VM keeps its address; the new web VM has a free one of the subnet
    allocation, addresses = db_ipam(db_root)
    assert addresses[DB_VM] == db_ip
    assert addresses[DB_WEB[1]] not in (db_ip, addresses[DB_WEB[0]])
    assert ipaddress.ip_address(addresses[DB_WEB[1]]) in allocation.subnet
    (new,) = [vm for vm in steps["vms"]["outputs"]["vms"] if vm["name"] == DB_WEB[1]]
    assert new["ip"] == addresses[DB_WEB[1]]  # what vCenter's guestinfo says the VM has
    # the firewall on the new VM's host, loaded before its site opened
    web2 = container_of(inventory, lab, DB_WEB[1])
    assert "tcp dport 80 accept" in nft_table(lab, web2)
    assert set(steps["firewall"]["outputs"]["hosts"]) == set(DB_WEB)
    facts = steps["db_firewall"]["outputs"]["hosts"][DB_VM]["facts"]["firewall"]
    assert facts["profile"] == "db"
    # real traffic: the db VM answers 5432 to the new web VM, not to a host outside the tier
    db_c, web1 = container_of(inventory, lab, DB_VM), container_of(inventory, lab, DB_WEB[0])
    db_lab_ip = lab_address(lab, db_c)
    assert probe(lab, web2, db_lab_ip, 5432) == "open"
    assert probe(lab, web1, db_lab_ip, 5432) == "open"
    taken = set(bindings(lab).values())
    outsider = next(h for h in inventory.select(group="vm-pool") if h not in taken)
    outsider_c = str(inventory.host(outsider).data["container"])
    assert probe(lab, outsider_c, db_lab_ip, 5432) == "refused"
    # the DBA department: the new VM's landing page reads its row from PostgreSQL
    (url,) = result["outputs"]["site_urls"]
    assert '<span id="db-status">connected</span>' in page(url)
    assert DB_WEB[1] in steps["database"]["outputs"]["client_hosts"]
    # verify reads the firewall tables of the tier as scaled, the new VM's included
    assert firewall_verified(db_root, DB_PROJECT) == {vm: {"in-sync"} for vm in [*DB_WEB, DB_VM]}


def test_db_tier_scale_down_drops_the_removed_vm_from_the_db_firewall(
    db_root: Path, inventory: Inventory, lab: Lab
) -> None:
    web2 = container_of(inventory, lab, DB_WEB[1])
    db_lab_ip = lab_address(lab, container_of(inventory, lab, DB_VM))
    _, before = db_ipam(db_root)
    result = apply(db_root, "scale1", db_scale(1))
    assert result["steps"]["destroy"]["outputs"]["destroyed"] == [DB_WEB[1]]
    assert probe(lab, web2, db_lab_ip, 5432) == "refused"  # its former host is out of the set
    assert nft_table(lab, web2) == ""  # and the reused pool host has no firewall left
    assert probe(lab, container_of(inventory, lab, DB_WEB[0]), db_lab_ip, 5432) == "open"
    _, after = db_ipam(db_root)
    assert after == {k: v for k, v in before.items() if k != DB_WEB[1]} and DB_VM in after
    assert firewall_verified(db_root, DB_PROJECT) == {vm: {"in-sync"} for vm in [DB_WEB[0], DB_VM]}


def test_db_tier_decommission_twice(db_root: Path, inventory: Inventory) -> None:
    first = apply(db_root, "decommission", db_request("project-decommission"))
    assert first["outputs"]["decommissioned"] is True
    assert not [name for name in vcenter_vms_of(inventory, DB_PROJECT)]
    second = apply(db_root, "decommission", db_request("project-decommission"))
    assert not [sid for sid, s in second["steps"].items() if s["changed"] and sid != "docs"]
    assert second["outputs"]["decommissioned"] is False
    assert db_ipam(db_root) == (None, {})


def vcenter_vms_of(inventory: Inventory, project: str) -> list[str]:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    vc = vcenter_config(inventory)
    pwd = inventory.secrets.get(vc.password_secret)
    si = SmartConnect(host=vc.host, port=vc.port, user=vc.username, pwd=pwd, protocol="http")
    try:
        view = si.content.viewManager.CreateContainerView(
            si.content.rootFolder, [vim.VirtualMachine], True
        )
        return [vm.name for vm in view.view if vm.name.startswith(f"{project}-")]
    finally:
        Disconnect(si)
