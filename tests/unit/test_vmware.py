"""VMware department: parameter validation, VM spec rendering, fault mapping (no vCenter)."""

from __future__ import annotations

import http.client
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from pyVmomi import vim

from infra_automation.departments import _vmware_ops, _vsphere, vmware
from infra_automation.departments._vsphere import fault_message, map_fault
from infra_automation.exceptions import (
    ExecutorUnavailable,
    RenderError,
    TargetAuthError,
    TargetRejected,
    TargetUnreachable,
)
from infra_automation.executors.registry import ExecutorRegistry
from infra_automation.render import package_templates

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"


def params(**over: Any) -> vmware.VmsParams:
    base: dict[str, Any] = {
        "project": "shop",
        "portgroup": "shop",
        "count": 2,
        "addresses": ["10.20.5.10", "10.20.5.11"],
    }
    return vmware.VmsParams.model_validate(base | over)


# --- parameters ------------------------------------------------------------------------------


def test_vm_names_follow_project_role_number() -> None:
    assert params(role="db", count=3, addresses=["10.0.0.1"] * 3).vm_names() == [
        "shop-db-01",
        "shop-db-02",
        "shop-db-03",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("description", "web\nhostname evil"),
        ("description", "{{ lookup('env', 'HOME') }}"),
        ("description", "{% raw %}x"),
        ("description", "a # comment"),
        ("template", "debian12\r\n"),
        ("template", "{{ 7 * 7 }}"),
        ("template", "otherproj/otherproj-web-01"),  # a path: another project's VM
        ("project", "Shop"),
        ("project", "shop\n"),
        ("role", "web;rm"),
        ("portgroup", "pg {{x}}"),
    ],
)
def test_injection_is_refused_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        params(**{field: value})
    assert field in {str(e["loc"][0]) for e in info.value.errors()}


def test_too_few_addresses_for_the_count() -> None:
    with pytest.raises(ValidationError, match="addresses: 1 given for count=2"):
        params(addresses=["10.0.0.1"])


def test_bad_address_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        params(addresses=["10.0.0.1", "10.0.0.300"])
    assert info.value.errors()[0]["loc"][0] == "addresses"


def test_vm_names_of_the_longest_project_are_valid_host_names() -> None:
    names = params(project="p" * 40, role="r" * 19, count=2).vm_names()
    assert [len(n) for n in names] == [63, 63]


def test_a_role_too_long_for_a_host_name_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        params(role="r" * 20)
    assert info.value.errors()[0]["loc"] == ("role",)


def test_ipam_host_entries_may_be_mappings_or_interfaces() -> None:
    p = params(addresses=[{"address": "10.0.0.5"}, "10.0.0.6/24"])
    assert [str(a.ip) for a in p.addresses] == ["10.0.0.5", "10.0.0.6"]


def test_unknown_parameters_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        params(password="x")


@pytest.mark.parametrize("vlan", [0, 4095, -1])
def test_vlan_out_of_range(vlan: int) -> None:
    with pytest.raises(ValidationError) as info:
        vmware.PortgroupParams(project="shop", vlan_id=vlan)
    assert info.value.errors()[0]["loc"] == ("vlan_id",)


def test_size_must_be_a_preset() -> None:
    with pytest.raises(ValidationError) as info:
        params(size="huge")
    assert info.value.errors()[0]["loc"] == ("size",)


# --- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "cpu", "memory"), [("small", 1, 1024), ("medium", 2, 4096), ("large", 4, 8192)]
)
def test_size_presets(size: str, cpu: int, memory: int) -> None:
    [spec, _] = vmware.render_specs(TEMPLATES, params(size=size))
    assert (spec.cpu, spec.memory_mb) == (cpu, memory)


def test_explicit_cpu_and_memory_override_the_preset() -> None:
    specs = vmware.render_specs(TEMPLATES, params(size="large", cpu=3, memory_mb=3072))
    assert {(s.cpu, s.memory_mb) for s in specs} == {(3, 3072)}


def test_each_vm_gets_its_own_address_in_network_annotation_and_extra_config() -> None:
    specs = vmware.render_specs(
        TEMPLATES, params(role="web", description="Shop frontend, team: web")
    )
    assert [s.name for s in specs] == ["shop-web-01", "shop-web-02"]
    assert [s.ip for s in specs] == ["10.20.5.10", "10.20.5.11"]
    first = specs[0]
    assert first.network.portgroup == "shop"
    assert first.extra_config == {
        "guestinfo.infra.project": "shop",
        "guestinfo.infra.role": "web",
        "guestinfo.infra.ip": "10.20.5.10",
    }
    assert first.annotation.splitlines()[1:] == [
        "project: shop",
        "role: web",
        "ip: 10.20.5.10",
        "description: Shop frontend, team: web",
    ]


def test_yaml_keywords_stay_strings() -> None:
    """A project called 'on' or 'no' must not turn into a boolean in the rendered YAML."""
    spec = vmware.render_specs(TEMPLATES, params(project="no", portgroup="on", count=1))[0]
    assert spec.network.portgroup == "on"
    assert spec.extra_config["guestinfo.infra.project"] == "no"


def test_a_broken_template_names_itself(tmp_path: Path) -> None:
    (tmp_path / "vmware").mkdir()
    (tmp_path / "vmware" / "vm.yml.j2").write_text("name: {{ name }}\ncpu: {{ nope }}\n")
    with pytest.raises(RenderError, match=r"vmware/vm.yml.j2:2"):
        vmware.render_specs(tmp_path, params())


def test_a_template_rendering_an_invalid_spec_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "vmware").mkdir()
    (tmp_path / "vmware" / "vm.yml.j2").write_text("name: {{ name }}\ncpu: 0\n")
    with pytest.raises(RenderError, match="invalid spec for shop-app-01"):
        vmware.render_specs(tmp_path, params())


# --- reconfiguration diff (pyVmomi data objects, no server) -----------------------------------


def _config(cpu: int, memory: int, extra: list[tuple[str, str]]) -> Any:
    nic = vim.vm.device.VirtualE1000(
        key=4000,
        backing=vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(portgroupKey="dvportgroup-1", switchUuid="u")
        ),
    )
    return vim.vm.ConfigInfo(
        name="shop-app-01",
        annotation="",
        hardware=vim.vm.VirtualHardware(numCPU=cpu, memoryMB=memory, device=[nic]),
        extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in extra],
    )


def test_extra_config_last_value_wins() -> None:
    config = _config(1, 32, [("a", "1"), ("a", "2"), ("b", "x")])
    assert _vmware_ops.extra_config(config) == {"a": "2", "b": "x"}


def test_nothing_to_change_gives_no_spec() -> None:
    [spec, _] = vmware.render_specs(TEMPLATES, params())
    config = _config(spec.cpu, spec.memory_mb, list(spec.extra_config.items()))
    config.annotation = spec.annotation

    class Portgroup:
        key = "dvportgroup-1"

    change, diff = _vmware_ops._reconfig_spec(config, spec, Portgroup())
    assert change is None
    assert diff == ""


def test_only_what_differs_is_in_the_spec() -> None:
    [spec, _] = vmware.render_specs(TEMPLATES, params())
    config = _config(spec.cpu, 32, list(spec.extra_config.items()))
    config.annotation = spec.annotation

    class Portgroup:
        key = "dvportgroup-1"

    change, diff = _vmware_ops._reconfig_spec(config, spec, Portgroup())
    assert change is not None
    assert change.memoryMB == spec.memory_mb
    assert change.numCPUs is None
    assert not change.extraConfig
    assert diff == f"~ memory_mb: 32 -> {spec.memory_mb}\n"


# --- faults ----------------------------------------------------------------------------------


def test_invalid_login_is_an_auth_error() -> None:
    error = map_fault(vim.fault.InvalidLogin(msg="Login failure"), "login")
    assert isinstance(error, TargetAuthError)
    assert str(error) == "login: vCenter fault InvalidLogin: Login failure"


def test_other_faults_are_rejections_with_the_fault_details() -> None:
    fault = vim.fault.DuplicateName(msg="*types.DuplicateName", name="shop")
    error = map_fault(fault, "create folder DC0/vm/shop")
    assert isinstance(error, TargetRejected)
    assert str(error) == "create folder DC0/vm/shop: vCenter fault DuplicateName: name=shop"


def test_fault_message_keeps_the_vcenter_text_and_localized_messages() -> None:
    fault = vim.fault.InvalidPowerState(
        msg="The attempted operation cannot be performed in the current state.",
        existingState="poweredOn",
        faultMessage=[vim.LocalizableMessage(key="k", message="Powered on.")],
    )
    assert fault_message(fault) == (
        "InvalidPowerState: The attempted operation cannot be performed in the current "
        "state.; Powered on. (existingState=poweredOn)"
    )


# --- registration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "cls"),
    [
        ("vmware.folder", vmware.FolderExecutor),
        ("vmware.portgroup", vmware.PortgroupExecutor),
        ("vmware.vms", vmware.VmsExecutor),
        ("vmware.decommission", vmware.DecommissionExecutor),
    ],
)
def test_executors_are_registered_by_entry_point(key: str, cls: type) -> None:
    executor = ExecutorRegistry().get(key)
    assert isinstance(executor, cls)
    assert executor.info.key == key
    assert executor.info.department == "vmware"
    assert executor.info.supports_check


def test_running_a_step_without_the_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning reads the info without pyVmomi; running a step says which extra brings it."""
    for module in ("pyVmomi", "pyVim"):  # None in sys.modules: not installed, import fails
        monkeypatch.setitem(sys.modules, module, None)
    registry = ExecutorRegistry()
    assert registry.info("vmware.vms") is vmware.VmsExecutor.info
    with pytest.raises(ExecutorUnavailable) as info:
        registry.get("vmware.vms")
    assert str(info.value) == (
        "executor 'vmware.vms' needs pyVmomi: pip install 'infra-automation[vmware]'"
    )


def test_the_default_vm_template_is_the_packages(tmp_path: Path) -> None:
    class Ctx:
        root = tmp_path

    assert vmware.templates_root(Ctx()) == package_templates()  # type: ignore[arg-type]
    (tmp_path / "templates" / "vmware").mkdir(parents=True)
    (tmp_path / "templates" / "vmware" / "vm.yml.j2").write_text("name: x\n")
    assert vmware.templates_root(Ctx()) == tmp_path / "templates"  # type: ignore[arg-type]


def test_a_refused_connection_is_not_tried_again() -> None:
    """Only a connection dropped under a read is tried again; vCenter down fails at once."""
    tries: list[int] = []

    def refused() -> None:
        tries.append(1)
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(TargetUnreachable, match="probe: vCenter unreachable"):
        _vsphere.read("probe", refused)
    assert tries == [1]


def test_a_dropped_read_is_tried_again_until_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_vsphere, "READ_RETRY_DELAYS", (0.0, 0.0))
    answers: list[object] = [
        http.client.RemoteDisconnected("Remote end closed connection without response"),
        BrokenPipeError(32, "Broken pipe"),
        "found",
    ]

    def flaky() -> object:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    assert _vsphere.read("probe", flaky) == "found"
    assert answers == []
