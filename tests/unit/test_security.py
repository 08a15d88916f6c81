"""Security department, pure parts: the gateway ACL plan and template, injection refused before
any device is touched, the firewall role's value checks, the catalog wiring (the lab test
drives the real routers and hosts)."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from infra_automation.departments.network import ConfigureParams, load_tasks
from infra_automation.departments.security import (
    GatewayAclExecutor,
    GatewayAclRemoveExecutor,
    acl_names,
    make_acl_plan,
)
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.results import ErrorKind, Status

ROOT = Path(__file__).resolve().parents[2]
FILTERS = ROOT / "playbooks" / "roles" / "firewall" / "filter_plugins" / "firewall_filters.py"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 nothing listens on (a device must never be contacted)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    yield port


def inventory(port: int = 22) -> Inventory:
    router = {"groups": ["routers"], "hostname": "127.0.0.1", "port": port}
    spec = InventoryFile.model_validate(
        {
            "name": "t",
            "groups": {"routers": {"platform": "cisco_ios"}},
            "hosts": {
                "core": {**router, "data": {"role": "core", "asn": 65001}},
                "edge": {**router, "data": {"role": "edge", "asn": 65002}},
                "r003": {**router, "data": {"role": "leaf", "asn": 65003}},
            },
        }
    )
    return Inventory(spec)


def params(**changes: object) -> ConfigureParams:
    base: dict[str, object] = {"vlan_id": 120, "subnet": "10.20.20.0/24", "gateway": "10.20.20.1"}
    return ConfigureParams.model_validate({**base, **changes})


def step(inv: Inventory, p: object, project: str = "demo", root: Path = ROOT) -> StepContext:
    return StepContext(
        run_id="r",
        project=project,
        step_id="gateway_acl",
        department="security",
        params=p,  # type: ignore[arg-type]
        inventory=inv,
        root=root,
        targets=("core", "edge", "r003"),
    )


# --- the ACL plan ---------------------------------------------------------------------------


def test_acl_goes_to_the_gateway_routers_only_with_both_lists():
    plan = make_acl_plan(step(inventory(), params()))
    assert plan.devices == ["core", "r003"]  # the edge holds no gateway
    assert plan.outputs_base["acls"] == ["PROJECT-demo-FROM-HOSTS", "PROJECT-demo-TO-HOSTS"]
    assert plan.intended["core"].splitlines() == [
        "access-list PROJECT-demo-FROM-HOSTS seq 10 permit ip 10.20.20.0 0.0.0.255 any",
        "access-list PROJECT-demo-FROM-HOSTS seq 20 deny ip any any",
        "access-list PROJECT-demo-TO-HOSTS seq 10 deny ip 10.20.20.0 0.0.0.255 any",
        "access-list PROJECT-demo-TO-HOSTS seq 20 permit ip any 10.20.20.0 0.0.0.255",
        "access-list PROJECT-demo-TO-HOSTS seq 30 deny ip any any",
    ]


def test_acl_wildcard_follows_the_prefix_length():
    plan = make_acl_plan(step(inventory(), params(subnet="10.20.8.0/22", gateway="10.20.8.1")))
    assert "permit ip 10.20.8.0 0.0.3.255 any" in plan.intended["core"]


def test_no_gateway_router_is_a_clear_error():
    ctx = step(inventory(), params())
    with pytest.raises(ConfigurationError, match="no gateway router"):
        make_acl_plan(StepContext(**{**ctx.__dict__, "targets": ("edge",)}))


def test_acl_lines_removed_by_the_tasks_leave_the_rest(tasks: ModuleType):
    plan = make_acl_plan(step(inventory(), params()))
    other = plan.intended["core"].replace("demo", "other")
    running = "hostname core\n" + plan.intended["core"] + other
    commands = tasks.removal_commands(tasks.present_lines(plan.intended["core"], running), other)
    assert len(commands) == 5
    assert all(c.startswith("no access-list PROJECT-demo-") for c in commands)


@pytest.fixture(scope="module")
def tasks() -> ModuleType:
    return load_tasks(ROOT)


# --- injection: refused before a device is touched -------------------------------------------


@pytest.mark.parametrize("project", ["x\nend", "demo\naccess-list X permit any", "a b", "{{x}}"])
@pytest.mark.parametrize("executor", [GatewayAclExecutor, GatewayAclRemoveExecutor])
def test_a_bad_project_never_reaches_a_router(project: str, executor: Any, closed_port: int):
    result = executor().apply(step(inventory(closed_port), params(), project=project))
    assert result.status is Status.FAILED and result.error_kind is ErrorKind.INVALID
    assert (result.error or "").startswith("project:")  # refused in the plan: no connection


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subnet", "10.20.20.0/24\naccess-list X permit any"),
        ("subnet", "any"),
        ("gateway", "10.20.20.1 any"),
        ("devices", ["core\nend"]),
    ],
)
def test_a_bad_param_never_reaches_a_router(field: str, value: object, closed_port: int):
    smuggled = ConfigureParams.model_construct(**{**params().model_dump(), field: value})
    result = GatewayAclExecutor().apply(step(inventory(closed_port), smuggled))
    assert result.status is Status.FAILED and result.error_kind is ErrorKind.INVALID
    assert (result.error or "").startswith(f"{field}")


def test_acl_names_are_built_from_a_valid_name_only():
    assert acl_names("shop-2") == ("PROJECT-shop-2-FROM-HOSTS", "PROJECT-shop-2-TO-HOSTS")


# --- the firewall role's value checks (its filter plugin) ---------------------------------------


@pytest.fixture(scope="module")
def filters() -> ModuleType:
    pytest.importorskip("ansible")
    spec = importlib.util.spec_from_file_location("firewall_filters", FILTERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ranges_are_normalized(filters: ModuleType):
    assert filters.firewall_cidrs(["10.89.4.1", "10.0.0.0/8", "192.168.1.7/24"]) == [
        "10.89.4.1/32",
        "10.0.0.0/8",
        "192.168.1.0/24",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "10.0.0.0/8\n tcp dport 1-65535 accept",
        "10.0.0.0/8 } chain x {",
        "any",
        "10.0.0.0/33",
        " 10.0.0.1",
        "",
        "::1",
    ],
)
def test_a_bad_range_is_refused_naming_the_field(filters: ModuleType, bad: str):
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match=r"^firewall_mgmt_ranges: "):
        filters.firewall_cidrs([bad])


def test_a_string_is_not_a_list_of_ranges(filters: ModuleType):
    from ansible.errors import AnsibleFilterError

    with pytest.raises(AnsibleFilterError, match="a list of IPv4 networks"):
        filters.firewall_cidrs("10.0.0.0/8")


def test_membership_guards_the_ssh_session(filters: ModuleType):
    assert filters.firewall_admits("10.89.4.1", ["10.89.4.1/32"])
    assert not filters.firewall_admits("10.89.4.3", ["10.89.4.1/32"])
    assert not filters.firewall_admits("", ["10.89.4.1/32"])  # no SSH client read: refuse


# --- catalog wiring ---------------------------------------------------------------------------


def infra(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(cwd), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def write(tmp_path: Path, name: str, body: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_firewall_is_off_by_default_and_adds_its_steps(tmp_path: Path):
    body: dict[str, Any] = {
        "service": "project-landscape",
        "project": "sec",
        "requester": "ci",
        "params": {"web_vms": 1},
    }
    off = infra("plan", str(write(tmp_path, "off", body)), "--output", "json")
    assert off.returncode == 0, off.stderr
    assert not {"gateway_acl", "firewall"} & {s["id"] for s in json.loads(off.stdout)["steps"]}
    body["params"]["firewall"] = True
    on = infra("plan", str(write(tmp_path, "on", body)), "--output", "json")
    assert on.returncode == 0, on.stderr
    steps = {s["id"]: s for s in json.loads(on.stdout)["steps"]}
    assert steps["gateway_acl"]["executor"] == "security.gateway_acl"
    assert steps["firewall"]["department"] == "security"
    assert steps["firewall"]["needs"] == ["os_baseline", "gateway_acl"]
    assert "firewall" in steps["web"]["needs"]  # the site opens behind its firewall
    # left out, the steps add no need to any other (the landscape's waves stay as they were)
    assert set(steps["docs"]["needs"]) == {"web", "backup", "monitoring"}
    docs_off = next(s for s in json.loads(off.stdout)["steps"] if s["id"] == "docs")
    assert set(docs_off["needs"]) == {"web", "backup", "monitoring"}


@pytest.mark.parametrize(
    ("field", "value"), [("firewall", "yes\nno"), ("firewall", "{{ 1 }}"), ("project", "a\nb")]
)
def test_a_bad_request_value_exits_2_naming_the_field(tmp_path: Path, field: str, value: str):
    body: dict[str, Any] = {
        "service": "project-landscape",
        "project": "sec",
        "requester": "ci",
        "params": {"web_vms": 1, "firewall": True},
    }
    if field == "project":
        body["project"] = value
    else:
        body["params"][field] = value
    run = infra("plan", str(write(tmp_path, "bad", body)))
    assert run.returncode == 2
    assert field in run.stdout + run.stderr


def test_decommission_removes_the_firewall_before_the_vms_and_the_acl_before_ipam(
    tmp_path: Path,
):
    body = {"service": "project-decommission", "project": "sec", "requester": "ci"}
    run = infra("plan", str(write(tmp_path, "d", body)), "--output", "json")
    assert run.returncode == 0, run.stderr
    steps = {s["id"]: s for s in json.loads(run.stdout)["steps"]}
    assert "firewall_remove" in steps["vmware"]["needs"]
    assert "gateway_acl" in steps["ipam"]["needs"]
    assert steps["gateway_acl"]["executor"] == "security.gateway_acl_remove"
