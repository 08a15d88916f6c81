"""Network department, pure parts: params validation, platform mapping, templates, and the
config diff/removal logic of tasks/network.py (no device; the lab tests drive real routers)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from pydantic import ValidationError

from infra_automation.departments.network import (
    ConfigureExecutor,
    ConfigureParams,
    load_tasks,
    make_plan,
    netmiko_platform,
)
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Inventory, InventoryFile
from infra_automation.results import Status

ROOT = Path(__file__).resolve().parents[2]

RUNNING = """Building configuration...

Current configuration:
!
frr version 8.4.4
frr defaults traditional
hostname core
service integrated-vtysh-config
!
interface core-edge
 ip address 10.255.0.1/30
exit
!
router bgp 65001
 bgp router-id 10.255.0.1
 neighbor 10.255.0.2 remote-as 65002
exit
!
end
"""

INTENDED = """interface vlan120
 description project demo
 ip address 10.20.20.1/24
exit
ip route 10.20.20.0/24 Null0
router bgp 65001
 address-family ipv4 unicast
  network 10.20.20.0/24
 exit-address-family
exit
"""

APPLIED = RUNNING.replace(
    "!\nrouter bgp 65001",
    "!\ninterface vlan120\n description project demo\n ip address 10.20.20.1/24\nexit\n"
    "!\nip route 10.20.20.0/24 Null0\n!\nrouter bgp 65001",
).replace(
    " neighbor 10.255.0.2 remote-as 65002\n",
    " neighbor 10.255.0.2 remote-as 65002\n !\n address-family ipv4 unicast\n"
    "  network 10.20.20.0/24\n exit-address-family\n",
)


@pytest.fixture(scope="module")
def tasks() -> ModuleType:
    return load_tasks(ROOT)


@pytest.fixture
def inventory() -> Inventory:
    spec = InventoryFile.model_validate(
        {
            "name": "t",
            "groups": {"routers": {"platform": "cisco_ios"}},
            "hosts": {
                "core": {
                    "groups": ["routers"],
                    "hostname": "127.0.0.1",
                    "data": {"role": "core", "asn": 65001},
                },
                "edge": {
                    "groups": ["routers"],
                    "hostname": "127.0.0.1",
                    "data": {"role": "edge", "asn": 65002},
                },
                "odd": {
                    "platform": "ios",
                    "hostname": "127.0.0.1",
                    "data": {"role": "core", "asn": 65009},
                },
            },
        }
    )
    return Inventory(spec)


def params(**changes: object) -> ConfigureParams:
    base: dict[str, object] = {"vlan_id": 120, "subnet": "10.20.20.0/24", "gateway": "10.20.20.1"}
    return ConfigureParams.model_validate({**base, **changes})


def step(inventory: Inventory, p: object, project: str = "demo") -> StepContext:
    return StepContext(
        run_id="r",
        project=project,
        step_id="net",
        department="network",
        params=p,  # type: ignore[arg-type]
        inventory=inventory,
        root=ROOT,
    )


# --- params ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["a\nb", "x\r\nend", "end\nhostname x", "a ! b", "{{ x }}", "{% if %}", "tab\there"]
)
@pytest.mark.parametrize("field", ["description", "group", "devices"])
def test_string_params_refuse_config_and_template_syntax(field: str, bad: str):
    value: object = [bad] if field == "devices" else bad
    with pytest.raises(ValidationError) as err:
        params(**{field: value})
    assert err.value.errors()[0]["loc"][0] == field


def test_addresses_are_typed_and_checked():
    with pytest.raises(ValidationError, match="subnet"):
        params(subnet="10.20.20.5/24")  # host bits set
    with pytest.raises(ValidationError, match="not a usable address"):
        params(gateway="10.20.21.1")
    with pytest.raises(ValidationError, match="vlan_id"):
        params(vlan_id=5000)
    with pytest.raises(ValidationError, match="extra"):
        params(config="hostname x")


def test_executor_revalidates_params_built_without_validation(inventory: Inventory):
    smuggled = ConfigureParams.model_construct(
        **{**params().model_dump(), "description": "x\nhostname pwned"}
    )
    result = ConfigureExecutor().apply(step(inventory, smuggled))
    assert result.status is Status.FAILED
    assert (result.error or "").startswith("description:")


def test_bad_project_name_is_refused(inventory: Inventory):
    result = ConfigureExecutor().preview(step(inventory, params(), project="x\nend"))
    assert result.status is Status.FAILED and "project" in (result.error or "")


# --- platforms and templates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "device_type"),
    [("cisco_ios", "cisco_ios"), ("ios", "cisco_ios"), ("eos", "arista_eos"), ("linux", "linux")],
)
def test_platforms_are_normalized_to_netmiko(given: str, device_type: str):
    assert netmiko_platform(given) == device_type


def test_unknown_platform_is_a_clear_error():
    with pytest.raises(ConfigurationError, match="not known"):
        netmiko_platform("toaster_os")


def test_plan_renders_per_role(inventory: Inventory):
    plan = make_plan(step(inventory, params(devices=["core", "edge", "odd"])))
    assert plan.intended["core"] == INTENDED
    assert plan.intended["edge"] == "ip prefix-list PROJECT-demo seq 5 permit 10.20.20.0/24\n"
    assert "router bgp 65009" in plan.intended["odd"]  # napalm's "ios" maps to cisco_ios
    assert plan.roles == {"core": "core", "edge": "edge", "odd": "core"}


def test_plan_refuses_a_device_without_an_address(inventory: Inventory):
    spec = inventory.spec.model_copy(deep=True)
    spec.hosts["edge"].hostname = None
    with pytest.raises(ConfigurationError, match="host 'edge' has no address"):
        make_plan(step(Inventory(spec), params(devices=["core", "edge"])))


def test_plan_refuses_unknown_devices(inventory: Inventory):
    with pytest.raises(ConfigurationError, match="no host 'nope'"):
        make_plan(step(inventory, params(devices=["nope"])))


# --- config logic (tasks/network.py) -----------------------------------------------------


def test_missing_lines_are_hierarchy_aware(tasks: ModuleType):
    assert tasks.missing(INTENDED, RUNNING) == tasks.clean(INTENDED)
    assert tasks.missing(INTENDED, APPLIED) == ""
    partial = APPLIED.replace("ip route 10.20.20.0/24 Null0\n", "")
    assert tasks.missing(INTENDED, partial) == "ip route 10.20.20.0/24 Null0\n"


def test_diff_marks_new_lines_and_keeps_existing_parents_as_context(tasks: ModuleType):
    diff = tasks.plus_minus(tasks.missing(INTENDED, RUNNING), "+", RUNNING)
    assert "+ interface vlan120\n" in diff
    assert "  router bgp 65001\n" in diff  # exists already: context, no sign
    assert "+   network 10.20.20.0/24\n" in diff


def test_removal_deletes_owned_blocks_and_negates_shared_leaves(tasks: ModuleType):
    present = tasks.present_lines(INTENDED, APPLIED)
    commands = tasks.removal_commands(present, RUNNING)
    assert "no interface vlan120" in commands
    assert "no ip route 10.20.20.0/24 Null0" in commands
    assert "no router bgp 65001" not in commands  # shared block: only our leaf goes
    i = commands.index("no network 10.20.20.0/24")
    assert commands[i - 2 : i] == ["router bgp 65001", "address-family ipv4 unicast"]
    assert commands[i + 1 : i + 3] == ["exit", "exit"]


def test_negating_a_no_line_restores_the_default(tasks: ModuleType):
    running = RUNNING.replace(
        " neighbor 10.255.0.2 remote-as 65002\n",
        " no bgp ebgp-requires-policy\n neighbor 10.255.0.2 remote-as 65002\n",
    )
    added = tasks.missing(running, RUNNING)
    assert tasks.removal_commands(added, RUNNING) == [
        "router bgp 65001",
        "bgp ebgp-requires-policy",
        "exit",
    ]


def test_rollback_commands_restore_lines_that_went_missing(tasks: ModuleType):
    damaged = RUNNING.replace(" bgp router-id 10.255.0.1\n", "")
    assert tasks.add_commands(tasks.missing(RUNNING, damaged)) == [
        "router bgp 65001",
        "bgp router-id 10.255.0.1",
        "exit",
    ]


def test_present_lines_ignore_headers_alone(tasks: ModuleType):
    # router bgp exists on the device, but none of our leaves: nothing to remove
    assert tasks.present_lines(INTENDED, RUNNING) == ""


def test_save_output_is_checked(tasks: ModuleType):
    ok = "Building Configuration...\nIntegrated configuration saved to /x/frr.conf\n[OK]\n"
    bad = "Building Configuration...\n% Can't open configuration file /x/frr.conf.\n"
    partial = ok + "Configuration write to /x/zebra.conf failed\n"
    assert tasks.save_ok(ok)
    assert not tasks.save_ok(bad)
    assert not tasks.save_ok(partial)


def test_a_read_ends_at_the_prompt_line_only(tasks: ModuleType):
    import re

    prompt = re.compile(tasks.prompt_pattern("core"))
    # the prompt alone on its line ends the read, in any mode, with or without a space after
    for line in ("core#", "core# ", "core>", "core(config)#", "core(config-router-af)#"):
        assert prompt.search(f"{RUNNING}{line}"), line
    # the running config names the host: a read must not stop there
    assert "hostname core" in RUNNING
    assert not prompt.search(RUNNING)
    for text in ("hostname core#", "core#1 uplink", "edge#", "xcore#", " core#"):
        assert not prompt.search(f"{RUNNING}{text}"), text
    # netmiko keeps 16 characters of an IOS hostname: the prompt still ends the read
    long = re.compile(tasks.prompt_pattern("access-switch-fl"))
    assert long.search("end\naccess-switch-floor3#")
    assert long.search("end\naccess-switch-fl(config)#")
    assert not long.search("hostname access-switch-floor3\n")
    # a hostname with regex characters is taken literally
    assert not re.search(tasks.prompt_pattern("r1.lab"), "r1xlab#")
    assert re.search(tasks.prompt_pattern("r1.lab"), "end\nr1.lab#")


def test_a_description_with_double_spaces_is_not_reported_missing(tasks: ModuleType):
    intended = "interface vlan100\n description project  shop\n"
    running = "interface vlan100\n description project shop\nexit\n"
    assert tasks.missing(intended, running) == ""


def test_changes_to_one_device_never_interleave(tmp_path: Path):
    import threading
    import time

    from infra_automation.departments.network import device_locks
    from infra_automation.record import open_database

    db = open_database(f"sqlite:///{tmp_path / 'runs.db'}")
    events: list[str] = []

    def change(name: str, devices: list[str], hold: float) -> None:
        with device_locks(db, devices):
            events.append(f"{name} in")
            time.sleep(hold)
            events.append(f"{name} out")

    first = threading.Thread(target=change, args=("a", ["core", "edge"], 0.3))
    first.start()
    time.sleep(0.05)
    second = threading.Thread(target=change, args=("b", ["edge"], 0.0))
    other = threading.Thread(target=change, args=("c", ["r003"], 0.0))
    second.start()
    other.start()
    for t in (first, second, other):
        t.join()
    assert events.index("b in") > events.index("a out")  # waited for the same device
    assert events.index("c out") < events.index("a out")  # another device did not wait
