"""The security department on the lab: gateway ACLs on the core router, nftables on the VMs.

A web_vms=1 landscape with ``firewall: true``, through the CLI as a pipeline calls it, then real
traffic between the lab's containers: from another lab host, port 80 of the web VM answers, SSH
and a listener started on a forbidden port are refused, while the machine (the management
range) still reaches SSH and the page. The core router's running and saved config hold the
ACLs; a dry run changes nothing; a second apply changes nothing; a ruleset removed behind our
back shows in the dry run and in ``infra verify`` (the table gone, or flushed, is drift) and
comes back with the next apply; decommission removes both. Last, the db profile on free lab
hosts: 5432 from the web host answers, from any other host it is refused. Everything is read
back from the targets.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from landscape_root import infra, make_root, write_request

from infra_automation.departments.ansible import PlaybookExecutor, PlaybookParams
from infra_automation.executors.base import RunResources, StepContext
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab
from infra_automation.lab.hosts import podman as lab_podman
from infra_automation.lab.hosts import ssh_login
from infra_automation.results import StepResult
from infra_automation.secrets import Secrets

pytestmark = pytest.mark.lab

PROJECT = "secshop"
ACLS = (f"PROJECT-{PROJECT}-FROM-HOSTS", f"PROJECT-{PROJECT}-TO-HOSTS")
REQUEST = f"""\
service: project-landscape
project: {PROJECT}
requester: ci-pipeline
params:
  web_vms: 1
  firewall: true
  backup: false
  site_title: Defended
"""
DECOMMISSION = f"""\
service: project-decommission
project: {PROJECT}
requester: ci-pipeline
"""
FORBIDDEN = 8080
DB_PORT = 15432
PROBE = """\
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except ConnectionRefusedError:
    print("refused")
except OSError as exc:
    print("timeout" if isinstance(exc, TimeoutError) else f"error {exc}")
"""
GET = """\
import sys, urllib.request
print(urllib.request.urlopen(f"http://{sys.argv[1]}/", timeout=10).read().decode())
"""


def apply(root: Path, *extra: str) -> dict[str, Any]:
    run = infra(root, "apply", str(root / "request.yml"), "--output", "json", *extra)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    return dict(json.loads(run.stdout))


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("security") / "root", lab.inventory_path)
    write_request(path, "request", REQUEST)
    write_request(path, "decommission", DECOMMISSION)
    yield path
    infra(path, "apply", str(path / "decommission.yml"), "--output", "json")  # best effort


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


# --- reading the targets ------------------------------------------------------------------------


def router(inventory: Inventory, name: str, *commands: str) -> list[str]:
    from netmiko import ConnectHandler

    host = inventory.host(name)
    conn = ConnectHandler(
        device_type="cisco_ios", host=host.hostname, port=host.port, username=host.username,
        key_file=host.ssh_key_file, use_keys=True, allow_agent=False, timeout=30,
    )  # fmt: skip
    try:
        return [str(conn.send_command(c)) for c in commands]
    finally:
        conn.disconnect()


def router_acl(inventory: Inventory) -> list[str]:
    return acl_lines(router(inventory, "core", "show running-config")[0])


def configure(inventory: Inventory, *commands: str) -> None:
    """A change on the core router behind the tool's back."""
    from netmiko import ConnectHandler

    host = inventory.host("core")
    conn = ConnectHandler(
        device_type="cisco_ios", host=host.hostname, port=host.port, username=host.username,
        key_file=host.ssh_key_file, use_keys=True, allow_agent=False, timeout=30,
    )  # fmt: skip
    try:
        conn.send_config_set(list(commands), error_pattern=r"^%")
    finally:
        conn.disconnect()


def acl_states(root: Path) -> dict[str, str]:
    """``infra verify``'s state of the project's ACL step."""
    run = infra(root, "verify", "--project", PROJECT, "--output", "json")
    assert run.returncode in (0, 1, 3), run.stdout[-2000:] + run.stderr[-2000:]
    (project,) = json.loads(run.stdout)["projects"]
    return {s["step_id"]: s["state"] for s in project["steps"] if s["step_id"] == "gateway_acl"}


def firewall_states(root: Path) -> dict[str, tuple[str, str]]:
    """``infra verify``'s checks of the firewall step's nftables table: VM -> (state, found)."""
    run = infra(root, "verify", "--project", PROJECT, "--output", "json")
    assert run.returncode in (0, 1, 3), run.stdout[-2000:] + run.stderr[-2000:]
    (project,) = json.loads(run.stdout)["projects"]
    (step,) = [s for s in project["steps"] if s["step_id"] == "firewall"]
    tables = [c for c in step["checks"] if c["resource"] == "firewall inet infra_firewall"]
    return {c["target"]: (c["state"], c["found"]) for c in tables}


def acl_lines(config: str) -> list[str]:
    return [line for line in config.splitlines() if line.startswith("access-list PROJECT-secshop")]


def json_documents(text: str) -> dict[str, Any]:
    """vtysh prints one JSON document per daemon, one after the other: merged."""
    decoder, merged, at = json.JSONDecoder(), {}, 0
    while text[at:].strip():
        start = text.index("{", at)
        data, at = decoder.raw_decode(text, start)
        merged.update(data)
    return merged


def podman(lab: Lab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lab_podman(lab.context, *args, check=check, timeout=60)


def container(inventory: Inventory, host: str) -> str:
    return str(inventory.host(host).data["container"])


def address(lab: Lab, cname: str) -> str:
    return podman(lab, "exec", cname, "hostname", "-I").stdout.split()[0]


def probe(lab: Lab, source: str, target: str, port: int, timeout: float = 3.0) -> str:
    """Connect from inside container ``source`` to ``target:port``: open, refused, timeout."""
    argv = ["exec", "-i", source, "python3", "-", target, str(port), str(timeout)]
    proc = subprocess.run(
        ["podman", *argv], input=PROBE, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **_podman_env(lab)},
    )  # fmt: skip
    return proc.stdout.strip() or f"error {proc.stderr.strip()}"


def http_from(lab: Lab, source: str, target: str) -> str:
    proc = subprocess.run(
        ["podman", "exec", "-i", source, "python3", "-", target], input=GET,
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **_podman_env(lab)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _podman_env(lab: Lab) -> dict[str, str]:
    from infra_automation.lab.hosts import podman_env

    return podman_env(lab.context)


def listen(lab: Lab, cname: str, port: int) -> None:
    """A TCP listener inside ``cname`` (gone by itself after 5 minutes), answering locally."""
    server = f"timeout 300 python3 -m http.server {port} --bind 0.0.0.0"
    podman(lab, "exec", "-d", cname, "sh", "-c", server)
    deadline = time.monotonic() + 20
    while probe(lab, cname, "127.0.0.1", port) != "open":
        assert time.monotonic() < deadline, f"the listener on {cname}:{port} never answered"
        time.sleep(0.3)


def stop_listener(lab: Lab, cname: str, port: int) -> None:
    pids = podman(lab, "exec", cname, "pgrep", "-f", f"http.server {port}", check=False)
    for pid in pids.stdout.split():
        podman(lab, "exec", cname, "kill", pid, check=False)


def ruleset(lab: Lab, cname: str) -> str:
    return podman(lab, "exec", cname, "nft", "list", "ruleset").stdout


def others(lab: Lab, inventory: Inventory, but: str) -> list[str]:
    """The lab's other host containers (real traffic comes from there)."""
    names = [container(inventory, h) for h in inventory.select(group="vm-pool")]
    return [n for n in names if n != but]


# --- the landscape --------------------------------------------------------------------------------


def test_dry_run_shows_the_acl_and_changes_nothing(root: Path, inventory: Inventory) -> None:
    """Runs first (file order): nothing of the project exists yet."""
    before = router(inventory, "core", "show running-config")
    result = apply(root, "--check")
    assert result["check"] is True and result["status"] == "success"
    acl = result["steps"]["gateway_acl"]
    assert acl["changed"] and all(name in acl["diff"] for name in ACLS)
    assert "firewall" in result["steps"]
    assert router(inventory, "core", "show running-config") == before


@pytest.fixture(scope="module")
def applied(root: Path) -> dict[str, Any]:
    result = apply(root)
    assert result["status"] == "success", result
    return result


@pytest.fixture(scope="module")
def web(applied: dict[str, Any], inventory: Inventory, lab: Lab) -> dict[str, str]:
    """The web VM's pool host: its name, container and address on the lab network."""
    hosts = applied["steps"]["firewall"]["outputs"]["hosts"]
    (vm,) = hosts
    host = str(hosts[vm]["bound_to"])
    cname = container(inventory, host)
    return {"vm": vm, "host": host, "container": cname, "ip": address(lab, cname)}


def test_core_router_holds_the_acls_running_and_saved(
    applied: dict[str, Any], inventory: Inventory, lab: Lab
) -> None:
    subnet = applied["outputs"]["subnet"]
    network, _ = subnet.split("/")
    running, listing = router(
        inventory, "core", "show running-config", f"show ip access-list {ACLS[1]} json"
    )
    lines = acl_lines(running)
    assert f"access-list {ACLS[0]} seq 10 permit ip {network} 0.0.0.255 any" in lines
    assert f"access-list {ACLS[1]} seq 10 deny ip {network} 0.0.0.255 any" in lines
    assert f"access-list {ACLS[1]} seq 20 permit ip any {network} 0.0.0.255" in lines
    assert len(lines) == 5
    data = json_documents(listing)  # parsed by the daemons themselves: zebra's, then bgpd's
    for daemon in ("ZEBRA", "BGP"):
        rules = data[daemon][ACLS[1]]["rules"]
        assert [r["filterType"] for r in rules] == ["deny", "permit", "deny"]
    saved = (lab.state_dir / "routers" / "core" / "etc" / "frr.conf").read_text()
    assert all(line in saved for line in lines)  # write memory
    edge = router(inventory, "edge", "show running-config")[0]
    assert acl_lines(edge) == []  # the edge holds no gateway
    outputs = applied["steps"]["gateway_acl"]["outputs"]
    assert outputs["entries"]["core"] == lines and outputs["acls"] == list(ACLS)
    assert "nftables" in outputs["enforcement"]


def test_allowed_port_answers_forbidden_ones_are_refused(
    web: dict[str, str], inventory: Inventory, lab: Lab
) -> None:
    outsider = others(lab, inventory, web["container"])[0]
    listen(lab, web["container"], FORBIDDEN)
    try:
        assert probe(lab, outsider, web["ip"], 80) == "open"
        assert PROJECT in http_from(lab, outsider, web["ip"])  # the landing page, from anywhere
        assert probe(lab, outsider, web["ip"], 22) == "refused"  # SSH: not the management range
        assert probe(lab, outsider, web["ip"], FORBIDDEN) == "refused"
        assert probe(lab, web["container"], "127.0.0.1", FORBIDDEN) == "open"  # it does listen
    finally:
        stop_listener(lab, web["container"], FORBIDDEN)
    # the machine is the management range: SSH and the page still answer from here
    host = inventory.host(web["host"])
    ok, detail = ssh_login(Path(str(host.ssh_key_file)), int(host.port or 22))
    assert ok, detail
    url = f"http://127.0.0.1:{host.data['http_port']}/"
    with urllib.request.urlopen(url, timeout=15) as response:
        assert PROJECT in response.read().decode()


def test_ruleset_read_back_in_outputs_and_docs(
    applied: dict[str, Any], web: dict[str, str], lab: Lab, root: Path
) -> None:
    live = ruleset(lab, web["container"])
    assert "table inet infra_firewall" in live and "policy drop" in live
    facts = applied["steps"]["firewall"]["outputs"]["hosts"][web["vm"]]["facts"]["firewall"]
    assert facts["present"] is True and facts["profile"] == "web"
    assert "tcp dport 80 accept" in facts["rules"]
    assert "tcp dport 22 ip saddr @mgmt accept" in facts["rules"]
    assert [r for r in facts["mgmt_ranges"] if r.endswith("/32")] == facts["mgmt_ranges"]
    docs = "\n".join(
        p.read_text() for p in sorted((root / "docs" / "projects" / PROJECT).glob("*.md"))
    )
    assert "tcp dport 80 accept" in docs and ACLS[1] in docs


def test_second_apply_changes_nothing(applied: dict[str, Any], root: Path) -> None:
    again = apply(root)
    changed = {sid: s["diff"][-800:] for sid, s in again["steps"].items() if s["changed"]}
    # the security department's steps; the other departments' are the landscape test's
    assert not {"gateway_acl", "firewall"} & set(changed), changed
    assert again["steps"]["firewall"]["outputs"]["hosts"], "the firewall step ran on no host"


def test_a_ruleset_removed_behind_our_back_is_seen_and_restored(
    applied: dict[str, Any], web: dict[str, str], inventory: Inventory, lab: Lab, root: Path
) -> None:
    rules = applied["steps"]["firewall"]["outputs"]["hosts"][web["vm"]]["facts"]["firewall"]
    assert firewall_states(root) == {web["vm"]: ("in-sync", "\n".join(rules["rules"]))}
    podman(lab, "exec", web["container"], "nft", "delete", "table", "inet", "infra_firewall")
    podman(lab, "exec", web["container"], "rm", "/etc/infra-firewall.nft")
    # infra verify sees the host's table gone
    assert firewall_states(root) == {web["vm"]: ("drifted", "(no table inet infra_firewall)")}
    lost = next(line for line in router_acl(inventory) if " seq 10 deny " in line)
    configure(inventory, f"no {lost}")
    assert acl_states(root) == {"gateway_acl": "drifted"}  # infra verify sees the ACL drift
    check = apply(root, "--check")
    assert lost in check["steps"]["gateway_acl"]["diff"]
    assert check["steps"]["firewall"]["changed"] is True
    assert "+\t\ttcp dport 80 accept" in check["steps"]["firewall"]["diff"]  # the ruleset diff
    assert "infra_firewall" not in ruleset(lab, web["container"])  # the dry run changed nothing
    restored = apply(root)
    assert restored["steps"]["firewall"]["changed"] is True
    assert "table inet infra_firewall" in ruleset(lab, web["container"])
    assert lost in router_acl(inventory) and acl_states(root) == {"gateway_acl": "in-sync"}
    assert firewall_states(root)[web["vm"]][0] == "in-sync"
    outsider = others(lab, inventory, web["container"])[0]
    assert probe(lab, outsider, web["ip"], 22) == "refused"


def test_a_rule_deleted_on_the_host_is_drift_in_verify_and_restored(
    applied: dict[str, Any], web: dict[str, str], inventory: Inventory, lab: Lab, root: Path
) -> None:
    """(A flushed table keeps its chain's drop policy: the host answers nothing, not even
    SSH, and verify reads it unverifiable; one rule gone shows what verify compares.)"""
    listing = podman(lab, "exec", web["container"], "nft", "-a", "list", "chain", "inet",
                     "infra_firewall", "input").stdout  # fmt: skip
    (handle,) = [line.split()[-1] for line in listing.splitlines() if "tcp dport 80 accept" in line]
    podman(lab, "exec", web["container"], "nft", "delete", "rule", "inet", "infra_firewall",
           "input", "handle", handle)  # fmt: skip
    outsider = others(lab, inventory, web["container"])[0]
    assert probe(lab, outsider, web["ip"], 80) == "refused"  # the site is cut off
    state, found = firewall_states(root)[web["vm"]]
    assert state == "drifted" and "tcp dport 80 accept" not in found
    restored = apply(root)
    assert restored["steps"]["firewall"]["changed"] is True  # re-loaded: live != loaded
    assert firewall_states(root)[web["vm"]][0] == "in-sync"
    assert probe(lab, outsider, web["ip"], 80) == "open"


def test_decommission_removes_acl_and_firewall(
    applied: dict[str, Any], web: dict[str, str], inventory: Inventory, lab: Lab, root: Path
) -> None:
    run = infra(root, "apply", str(root / "decommission.yml"), "--output", "json")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = json.loads(run.stdout)
    assert (
        result["steps"]["gateway_acl"]["changed"] and result["steps"]["firewall_remove"]["changed"]
    )
    running = router(inventory, "core", "show running-config")[0]
    assert acl_lines(running) == []
    saved = (lab.state_dir / "routers" / "core" / "etc" / "frr.conf").read_text()
    assert "PROJECT-secshop" not in saved
    assert "infra_firewall" not in ruleset(lab, web["container"])


# --- the database tier behind its firewall (project-landscape, database: postgresql) ------------

DB_PROJECT = "secdb"
DB_REQUEST = f"""\
service: project-landscape
project: {DB_PROJECT}
requester: ci-pipeline
params:
  web_vms: 1
  firewall: true
  database: postgresql
  backup: false
  monitoring: false
"""


@pytest.fixture(scope="module")
def db_root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("secdb") / "root", lab.inventory_path)
    write_request(path, "request", DB_REQUEST)
    write_request(path, "decommission", DECOMMISSION.replace(PROJECT, DB_PROJECT))
    yield path
    infra(path, "apply", str(path / "decommission.yml"), "--output", "json")  # best effort


def bound(result: dict[str, Any], step: str, inventory: Inventory, lab: Lab) -> dict[str, str]:
    """VM name -> its pool host's address on the lab network, from a firewall step's hosts."""
    hosts = result["steps"][step]["outputs"]["hosts"]
    return {vm: address(lab, container(inventory, h["bound_to"])) for vm, h in hosts.items()}


def test_db_tier_answers_the_web_vm_only_through_its_firewall(
    db_root: Path, inventory: Inventory, lab: Lab
) -> None:
    result = apply(db_root)
    assert result["status"] == "success", result
    (url,) = result["outputs"]["site_urls"]
    assert url.startswith("http://127.0.0.1:"), url  # lab targets only
    with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback lab URL
        assert '<span id="db-status">connected</span>' in response.read().decode()  # the row
    addresses = bound(result, "db_firewall", inventory, lab)
    db_ip, web_ip = addresses[f"{DB_PROJECT}-db-01"], addresses[f"{DB_PROJECT}-web-01"]
    by_ip = {address(lab, c): c for c in others(lab, inventory, "")}
    facts = result["steps"]["db_firewall"]["outputs"]["hosts"][f"{DB_PROJECT}-db-01"]["facts"]
    assert facts["firewall"]["profile"] == "db"
    assert "tcp dport 5432 ip saddr @db_clients accept" in facts["firewall"]["rules"]
    outsider = next(c for ip, c in by_ip.items() if ip not in (db_ip, web_ip))
    assert probe(lab, by_ip[web_ip], db_ip, 5432) == "open"  # PostgreSQL itself answers
    assert probe(lab, outsider, db_ip, 5432) == "refused"
    assert probe(lab, outsider, db_ip, 22) == "refused"
    assert probe(lab, outsider, web_ip, 80) == "open"
    run = infra(db_root, "apply", str(db_root / "decommission.yml"), "--output", "json")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for ip in (db_ip, web_ip):
        assert "infra_firewall" not in ruleset(lab, by_ip[ip])


# --- the db profile (the role on free lab hosts, through os.playbook) ---------------------------


def run_firewall(
    inventory: Inventory, lab: Lab, hosts: tuple[str, ...], extra: dict[str, Any]
) -> StepResult:
    ctx = StepContext(
        run_id="secdb",
        project="secdb",
        step_id="db_firewall",
        department="security",
        params=PlaybookParams.model_validate({"playbook": "firewall.yml", "vars": extra}),
        inventory=inventory,
        targets=hosts,
        secrets=Secrets(env={}),
        root=Path(lab.root),
        resources=RunResources(),
    )
    try:
        return PlaybookExecutor().apply(ctx)
    finally:
        ctx.resources.close()


@pytest.fixture
def db_hosts(inventory: Inventory, lab: Lab, root: Path) -> Iterator[tuple[str, str, str]]:
    """Three free pool hosts (the landscape is gone): db, its web client, an outsider."""
    bindings = lab.inventory_path / "generated" / "bindings.json"
    taken = set(json.loads(bindings.read_text()).values()) if bindings.exists() else set()
    free = [h for h in inventory.select(group="vm-pool") if h not in taken]
    assert len(free) >= 3, f"needs three free lab hosts, has {free}"
    db, client, outsider = free[:3]
    yield db, client, outsider
    run_firewall(inventory, lab, (db, client), {"firewall_state": "absent"})


def test_db_profile_accepts_its_port_from_the_web_vms_only(
    db_hosts: tuple[str, str, str], inventory: Inventory, lab: Lab
) -> None:
    db, client, _ = db_hosts
    # a port of its own: a db tier built before may have left PostgreSQL on 5432 of a host
    extra = {"firewall_web_hosts": [client], "firewall_db_hosts": [db], "firewall_db_port": DB_PORT}
    result = run_firewall(inventory, lab, (db, client), extra)
    assert result.status.value == "success", result.error
    facts = result.outputs["hosts"][db]["facts"]["firewall"]
    assert facts["profile"] == "db" and not any("dport 80" in r for r in facts["rules"])
    assert f"tcp dport {DB_PORT} ip saddr @db_clients accept" in facts["rules"]
    db_c, client_c, outsider_c = (container(inventory, h) for h in db_hosts)
    db_ip = address(lab, db_c)
    listen(lab, db_c, DB_PORT)
    try:
        assert probe(lab, client_c, db_ip, DB_PORT) == "open"
        assert probe(lab, outsider_c, db_ip, DB_PORT) == "refused"
        assert probe(lab, outsider_c, db_ip, 80) == "refused"  # a db host serves no web
    finally:
        stop_listener(lab, db_c, DB_PORT)


@pytest.mark.parametrize(
    "bad",
    [["10.0.0.0/8\n tcp dport 1-65535 accept"], ["0.0.0.0/0 } chain x {"], ["10.0.0.0/33"]],
)
def test_a_bad_range_is_refused_before_the_host_changes(
    bad: list[str], inventory: Inventory, lab: Lab
) -> None:
    host = next(h for h in inventory.select(group="vm-pool"))
    before = ruleset(lab, container(inventory, host))
    try:
        params = PlaybookParams.model_validate(
            {"playbook": "firewall.yml", "vars": {"firewall_mgmt_ranges": bad}}
        )
    except ValueError as exc:  # the executor's own check (no newline, no braces)
        assert "vars" in str(exc)
    else:  # a plain-looking value: the role refuses it before touching nftables
        result = run_firewall(inventory, lab, (host,), dict(params.vars))
        assert result.failed and "firewall_mgmt_ranges" in (result.error or "") + json.dumps(
            result.outputs
        )
    assert ruleset(lab, container(inventory, host)) == before
