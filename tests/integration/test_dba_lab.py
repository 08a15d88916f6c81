"""The landscape's database tier end to end on the lab, through the CLI as a pipeline calls it.

request (web_vms 1, database postgresql) -> apply: the web page shows a row it reads from the
project's PostgreSQL over the lab network (changed in the database, the page changes); the
owner connects from the web VM and is refused from elsewhere (another lab host, the db VM
itself); a re-apply changes nothing; the owner's password, kept as a secret, is in no file
under the project root, not in the record, the docs, the JSON output or the JUnit report;
decommission removes the db VM and forgets the password. Everything is read back from the
targets themselves (SSH to the guests, HTTP, pyVmomi), not from our own outputs.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from landscape_root import infra, make_root, write_request

from infra_automation.departments.vmware import vcenter_config
from infra_automation.inventory import Host, Inventory, load_inventory
from infra_automation.lab import Lab

pytestmark = pytest.mark.lab

PROJECT = "dbtier"
DATABASE = "dbtier"
OWNER = "dbtier_owner"
SECRET = "db_password_dbtier"
ROW = "Hello from the dbtier database"
REQUEST = f"""\
service: project-landscape
project: {PROJECT}
requester: ci-pipeline
params:
  web_vms: 1
  site_title: Database tier
  database: postgresql
  backup: false
  monitoring: false
"""
DECOMMISSION = f"""\
service: project-decommission
project: {PROJECT}
requester: ci-pipeline
"""


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("dba") / "root", lab.inventory_path)
    write_request(path, "decommission", DECOMMISSION)
    yield path
    infra(path, "apply", str(path / "decommission.yml"), "--output", "json")  # best effort


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


@pytest.fixture(scope="module")
def outputs() -> list[str]:
    """Everything the CLI printed in this module (searched for the password at the end)."""
    return []


@pytest.fixture(scope="module")
def applied(root: Path, outputs: list[str]) -> dict[str, Any]:
    request = write_request(root, "request", REQUEST)
    plan = infra(root, "plan", str(request), "--output", "json")
    assert plan.returncode == 0, plan.stderr
    steps = {s["id"]: s for s in json.loads(plan.stdout)["steps"]}
    assert {"db_vm", "db_baseline", "database"} <= set(steps)
    assert "database" in steps["web"]["needs"]
    run = infra(root, "apply", str(request), "--output", "json", "--junit", str(root / "j.xml"))
    outputs += [run.stdout, run.stderr]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return dict(json.loads(run.stdout))


def password(lab: Lab) -> str:
    kept = yaml.safe_load((lab.inventory_path / "generated" / "secrets.yml").read_text())
    value = kept.get(SECRET)
    assert isinstance(value, str) and len(value) >= 12, "the owner's password is not kept"
    return value


def guest(inventory: Inventory, applied: dict[str, Any], vm: str) -> Host:
    """The lab host a VM of the project is bound to."""
    bound = applied["steps"]["database"]["outputs"]["hosts"][vm]["bound_to"]
    return inventory.host(str(bound))


def ssh(host: Host, command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    assert host.hostname == "127.0.0.1", host  # lab targets only
    argv = [
        "ssh", "-i", str(host.ssh_key_file), "-p", str(host.port),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        f"{host.username}@{host.hostname}", command,
    ]  # fmt: skip
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def as_owner(host: Host, address: str, secret: str, sql: str) -> subprocess.CompletedProcess[str]:
    """``sql`` as the owner over TCP from ``host``; the password on stdin, never in argv."""
    command = (
        "PGPASSWORD=$(cat) PGCONNECT_TIMEOUT=5 psql -XAtq "
        f"-h {shlex.quote(address)} -U {OWNER} -d {DATABASE} -c {shlex.quote(sql)}"
    )
    return ssh(host, command, stdin=secret)


def as_postgres(host: Host, sql: str) -> subprocess.CompletedProcess[str]:
    return ssh(host, f"runuser -u postgres -- psql -XAtq -d {DATABASE} -c {shlex.quote(sql)}")


def page(url: str) -> str:
    assert url.startswith("http://127.0.0.1:"), url  # lab targets only
    with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback lab URL
        return str(response.read().decode())


def vcenter_vms(inventory: Inventory) -> list[str]:
    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    vc = vcenter_config(inventory)
    pwd = inventory.secrets.get(vc.password_secret)
    si = SmartConnect(host=vc.host, port=vc.port, user=vc.username, pwd=pwd, protocol="http")
    try:
        view = si.content.viewManager.CreateContainerView(
            si.content.rootFolder, [vim.VirtualMachine], True
        )
        return sorted(vm.name for vm in view.view if vm.name.startswith(f"{PROJECT}-"))
    finally:
        Disconnect(si)


def test_a_dry_run_plans_the_database_and_changes_nothing(
    root: Path, inventory: Inventory, lab: Lab, outputs: list[str]
) -> None:
    """Runs first (file order): the dry run of a database tier that does not exist yet."""
    request = write_request(root, "request", REQUEST)
    run = infra(root, "apply", str(request), "--check", "--output", "json")
    outputs += [run.stdout, run.stderr]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(run.stdout)
    assert result["check"] is True and result["status"] == "success"
    assert result["steps"]["db_vm"]["outputs"]["names"] == [f"{PROJECT}-db-01"]
    assert result["steps"]["database"]["changed"] is True  # a password to generate, at least
    assert vcenter_vms(inventory) == []
    kept = yaml.safe_load((lab.inventory_path / "generated" / "secrets.yml").read_text())
    assert SECRET not in kept  # a dry run keeps no password


def test_the_web_page_shows_the_row_it_reads_from_postgresql(
    applied: dict[str, Any], inventory: Inventory
) -> None:
    assert applied["status"] == "success", applied
    assert vcenter_vms(inventory) == [f"{PROJECT}-db-01", f"{PROJECT}-web-01"]
    (url,) = applied["outputs"]["site_urls"]
    body = page(url)
    assert '<span id="db-status">connected</span>' in body
    assert f'<strong id="db-value">{ROW}</strong>' in body
    # read live: a value changed in the database is on the page at the next request
    db = guest(inventory, applied, f"{PROJECT}-db-01")
    changed = as_postgres(db, "UPDATE landing SET message = 'Changed in the database' WHERE id = 1")
    assert changed.returncode == 0, changed.stderr
    try:
        assert '<strong id="db-value">Changed in the database</strong>' in page(url)
    finally:
        back = as_postgres(db, f"UPDATE landing SET message = '{ROW}' WHERE id = 1")  # noqa: S608 - our constant
        assert back.returncode == 0, back.stderr
    assert f'<strong id="db-value">{ROW}</strong>' in page(url)


def test_the_owner_connects_from_the_web_vm_and_is_refused_from_elsewhere(
    applied: dict[str, Any], inventory: Inventory, lab: Lab
) -> None:
    secret = password(lab)
    address = applied["steps"]["database"]["outputs"]["address"]
    db = guest(inventory, applied, f"{PROJECT}-db-01")
    web = guest(inventory, applied, f"{PROJECT}-web-01")
    # what the server itself says: listening on its address, the web VM's address admitted
    assert as_postgres(db, "SHOW listen_addresses").stdout.strip() == address
    rules = as_postgres(db, "SELECT address FROM pg_hba_file_rules WHERE type = 'host'")
    web_address = ssh(web, "hostname -I").stdout.split()[0]
    assert rules.stdout.split() == [web_address]
    # from the web VM: connected, the row
    ok = as_owner(web, address, secret, "SELECT message FROM landing WHERE id = 1")
    assert ok.returncode == 0 and ok.stdout.strip() == ROW, ok.stderr
    # from a lab host that is not the project's, and from the db VM itself: refused by pg_hba
    others = [n for n in ("debian1", "debian2", "debian3") if n not in (db.name, web.name)]
    for host in [inventory.host(n) for n in others[:1]] + [db]:
        refused = as_owner(host, address, secret, "SELECT 1")
        assert refused.returncode != 0, f"{host.name} connected"
        assert "no pg_hba.conf entry for host" in refused.stderr, refused.stderr
    # the wrong password from the web VM: refused as well
    wrong = as_owner(web, address, "a-wrong-owner-password", "SELECT 1")
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_docs_list_the_database_without_its_password(
    applied: dict[str, Any], root: Path, lab: Lab
) -> None:
    index = (root / "docs" / "projects" / PROJECT / "index.md").read_text()
    section = index.split("## Database", 1)[1].split("\n## ", 1)[0]
    assert f"| {DATABASE} | {OWNER.replace('_', chr(92) + '_')} | {PROJECT}-db-01 |" in section
    assert "| 5432 |" in section and f"{PROJECT}-web-01" in section
    assert password(lab) not in index


def test_verify_finds_it_in_sync_then_a_changed_row(
    applied: dict[str, Any], inventory: Inventory, root: Path, outputs: list[str]
) -> None:
    run = infra(root, "verify", "--project", PROJECT, "--output", "json")
    outputs += [run.stdout, run.stderr]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    db = guest(inventory, applied, f"{PROJECT}-db-01")
    changed = as_postgres(db, "UPDATE landing SET message = 'Changed behind our back' WHERE id = 1")
    assert changed.returncode == 0, changed.stderr
    try:
        run = infra(root, "verify", "--project", PROJECT, "--output", "json")
        outputs += [run.stdout, run.stderr]
        assert run.returncode == 3, run.stdout[-4000:] + run.stderr[-4000:]
        drifted = [c for c in _checks(json.loads(run.stdout)) if c["state"] == "drifted"]
        assert [(c["step_id"], c["resource"]) for c in drifted] == [("database", "landing row")]
        assert drifted[0]["found"] == "Changed behind our back"
    finally:
        back = as_postgres(db, f"UPDATE landing SET message = '{ROW}' WHERE id = 1")  # noqa: S608 - our constant
        assert back.returncode == 0, back.stderr


def _checks(report: Any) -> list[dict[str, Any]]:
    """Every resource check of ``infra verify --output json`` (whatever nests them)."""
    if isinstance(report, dict):
        if "resource" in report and "state" in report:
            return [report]
        return [c for v in report.values() for c in _checks(v)]
    if isinstance(report, list):
        return [c for v in report for c in _checks(v)]
    return []


def test_reapply_changes_nothing(applied: dict[str, Any], root: Path, outputs: list[str]) -> None:
    run = infra(root, "apply", str(root / "request.yml"), "--output", "json")
    outputs += [run.stdout, run.stderr]
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    again = json.loads(run.stdout)
    assert again["steps"]["database"]["status"] == "success"
    assert again["steps"]["database"]["changed"] is False
    changed = [sid for sid, s in again["steps"].items() if s["changed"] and sid != "docs"]
    assert changed == []
    # the same password: the web VM still connects with the one kept before
    (url,) = again["outputs"]["site_urls"]
    assert '<span id="db-status">connected</span>' in page(url)


def test_the_password_is_in_no_file_record_docs_or_output(
    applied: dict[str, Any], root: Path, lab: Lab, outputs: list[str]
) -> None:
    secret = password(lab).encode()
    found = []
    for folder, _dirs, files in os.walk(root):  # not into the linked content (not ours)
        for name in files:
            path = Path(folder, name)
            if path.is_file() and secret in path.read_bytes():
                found.append(str(path))
    assert found == []
    assert (root / ".infra" / "runs.db").is_file() and (root / "j.xml").is_file()  # searched
    assert not [text for text in outputs if secret.decode() in text]
    shown = infra(root, "runs", "show", applied["run_id"], "--events", "--output", "json")
    assert shown.returncode == 0 and secret.decode() not in shown.stdout + shown.stderr


def test_decommission_removes_the_db_vm_and_forgets_the_password(
    applied: dict[str, Any], inventory: Inventory, root: Path, lab: Lab
) -> None:
    run = infra(root, "apply", str(root / "decommission.yml"), "--output", "json")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(run.stdout)
    assert f"{PROJECT}-db-01" in result["steps"]["vmware"]["outputs"]["vms"]
    assert result["steps"]["db_password"]["changed"] is True
    assert vcenter_vms(inventory) == []
    bindings = lab.inventory_path / "generated" / "bindings.json"
    if bindings.exists():
        assert not any(k.startswith(PROJECT) for k in json.loads(bindings.read_text()))
    kept = yaml.safe_load((lab.inventory_path / "generated" / "secrets.yml").read_text())
    assert SECRET not in kept and kept.get("vcenter_password")
