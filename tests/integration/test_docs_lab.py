"""As-built docs of a real run: ipam.allocate + network.configure on the lab's FRR routers.

The engine runs a small service in a temporary project root (its own run record, ledger and
docs) against the lab's inventory. The docs must show what the routers answered (lines
present on core, the prefix learned by edge over BGP), which is also checked on the router
itself; a second run appends to the history without duplicating; a hand-written note
survives; no lab secret appears in the docs; the docs step builds the site with
``mkdocs build --strict``. A decommission run removes the config again and the docs say so.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from infra_automation.config import load_settings
from infra_automation.engine import Engine
from infra_automation.inventory import load_inventory
from infra_automation.lab import Lab
from infra_automation.results import RunResult
from tests.integration.landscape_root import as_built

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]

VLAN = random.randint(150, 199)  # a free-ish slot: IPAM is per test root
SUBNET = f"10.20.{random.randint(200, 250)}.0/24"
GATEWAY = SUBNET.replace(".0/24", ".1")
SERVICE = f"""\
name: docs-lab
description: Gateway for a project on the lab routers, documented
owner: network-team
steps:
  - id: ipam
    executor: ipam.allocate
    params: {{vlan_id: {VLAN}, subnet: "{SUBNET}", hosts: 2}}
  - id: gateway
    executor: network.configure
    needs: [ipam]
    params:
      vlan_id: "{{{{ steps.ipam.outputs.vlan_id }}}}"
      subnet: "{{{{ steps.ipam.outputs.subnet }}}}"
      gateway: "{{{{ steps.ipam.outputs.gateway }}}}"
      description: docs lab test
  - id: docs
    executor: docs.build
    needs: [gateway]
    params: {{site: true}}
"""
DECOMMISSION = f"""\
name: docs-lab-decommission
description: Remove the project's gateway and free its addresses
owner: network-team
steps:
  - id: gateway_remove
    executor: network.unconfigure
    params: {{vlan_id: {VLAN}, subnet: "{SUBNET}", gateway: "{GATEWAY}", bgp_wait: 5}}
  - id: ipam_release
    executor: ipam.release
    needs: [gateway_remove]
"""


@pytest.fixture(scope="module")
def project() -> str:
    return f"docs-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("docs-lab")
    (base / "catalog").mkdir()
    (base / "catalog" / "docs-lab.yml").write_text(SERVICE)
    (base / "catalog" / "docs-lab-decommission.yml").write_text(DECOMMISSION)
    (base / "infra.toml").write_text(f'inventory = "{lab.inventory_path}"\n')
    for content in ("templates", "tasks", "playbooks"):  # device templates, Nornir tasks
        (base / content).symlink_to(ROOT / content)
    return base


@pytest.fixture(scope="module")
def runs(root: Path, project: str) -> Iterator[list[RunResult]]:
    results = [apply(root, "docs-lab", project), apply(root, "docs-lab", project)]
    yield results
    apply(root, "docs-lab-decommission", project)  # clean the routers even if a test failed


def apply(root: Path, service: str, project: str) -> RunResult:
    engine = Engine(load_settings(root, env={}), load_observers=True)
    try:
        request = engine.validate({"service": service, "project": project, "requester": "Lab Bot"})
        return engine.apply(request)
    finally:
        engine.close()


def read(root: Path, project: str, name: str) -> str:
    return (root / "docs" / "projects" / project / name).read_text()


def test_docs_show_what_the_routers_answered(
    lab: Lab, root: Path, project: str, runs: list[RunResult]
) -> None:
    first = runs[0]
    assert not first.failed, {k: r.error for k, r in first.steps.items()}
    network = read(root, project, "appendix.md")
    assert f"| VLAN | {VLAN} |" in network
    assert f"| Subnet | {SUBNET} |" in network
    assert f"| Gateway | {GATEWAY} |" in network
    assert "#### Device core" in network
    assert "#### Device edge" in network
    edge = network.split("#### Device edge", 1)[1]
    assert "| BGP prefix learned | yes |" in edge  # read back from edge's BGP table
    core = network.split("#### Device core", 1)[1].split("#### Device edge", 1)[0]
    assert "| Lines present | yes |" in core
    assert "Configuration applied" in core
    # The same facts, asked of the router itself.
    assert SUBNET in router_command(lab, "edge", "show ip bgp")


def test_second_run_appends_history_without_duplicates(
    root: Path, project: str, runs: list[RunResult]
) -> None:
    first, second = runs
    assert not second.failed
    assert not second.steps["gateway"].changed  # idempotent on the routers
    history = read(root, project, "history.md")
    assert history.count(f"## Run {first.run_id}:") == 1
    assert history.count(f"## Run {second.run_id}:") == 1
    ledger = as_built(root, project)
    assert [r.run_id for r in ledger.runs][:2] == [first.run_id, second.run_id]
    # The unchanged second run still shows what the first one applied.
    assert f"Configuration applied (run {first.run_id})" in read(root, project, "appendix.md")


def test_note_survives_and_site_builds(root: Path, project: str, runs: list[RunResult]) -> None:
    outputs = runs[-1].steps["docs"].outputs
    site = Path(outputs["site_path"])
    assert (site / "projects" / project / "appendix" / "index.html").is_file()
    page = root / "docs" / "projects" / project / "appendix.md"
    page.write_text(
        page.read_text().replace("<!-- BEGIN MANUAL -->", "<!-- BEGIN MANUAL -->\nPatch panel B7\n")
    )
    third = apply(root, "docs-lab", project)
    assert not third.failed
    assert "Patch panel B7" in page.read_text()
    assert third.run_id in read(root, project, "history.md")


def test_no_lab_secret_in_docs(lab: Lab, root: Path, runs: list[RunResult]) -> None:
    inventory = load_inventory(lab.inventory_path)
    secrets_file = lab.inventory_path / "generated" / "secrets.yml"
    values = [str(v) for v in (yaml.safe_load(secrets_file.read_text()) or {}).values()]
    assert inventory is not None and values
    text = "\n".join(
        p.read_text(errors="replace")
        for folder in (root / "docs", root / ".infra" / "docs")
        for p in folder.rglob("*")
        if p.is_file()
    )
    for value in values:
        if len(value) >= 4:
            assert value not in text


def test_decommission_is_documented(root: Path, project: str, runs: list[RunResult]) -> None:
    gone = apply(root, "docs-lab-decommission", project)
    assert not gone.failed, {k: r.error for k, r in gone.steps.items()}
    overview = read(root, project, "index.md")
    assert "| State | decommissioned |" in overview
    assert "## Removed resources" in overview
    assert as_built(root, project).state == {}


def router_command(lab: Lab, device: str, command: str) -> str:
    from netmiko import ConnectHandler

    host = load_inventory(lab.inventory_path).hosts[device]
    conn = ConnectHandler(
        device_type="cisco_ios",
        host=host.hostname,
        port=host.port,
        username=host.username,
        use_keys=True,
        key_file=str(host.ssh_key_file),
        allow_agent=False,
    )
    try:
        return str(conn.send_command(command))
    finally:
        conn.disconnect()
