"""Departments' inventory sections: the registry, the core inventory's validation of them,
typed access, and the VMware and IPAM sections registered through entry points."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra_automation import registry as registry_module
from infra_automation import sections
from infra_automation.departments.ipam import IpamConfig, IpamPool, ipam_config
from infra_automation.departments.vmware import VCenter, vcenter_config
from infra_automation.exceptions import ConfigurationError
from infra_automation.inventory import Inventory, InventoryFile, load_inventory
from infra_automation.sections import SECTIONS, Section, SectionRegistry


class Dns(BaseModel):
    model_config = ConfigDict(extra="forbid")
    zone: str
    ttl: int = Field(default=300, ge=60)


class OtherDns(BaseModel):
    zone: str


DNS = Section("dns", Dns)


@pytest.fixture
def dns() -> Iterator[Section]:
    """A department section registered in the default registry for one test."""
    SECTIONS.register(DNS)
    try:
        yield DNS
    finally:
        SECTIONS.unregister(DNS.name)


def folder_with(tmp_path: Path, text: str, generated: str | None = None) -> Path:
    (tmp_path / "inventory.yml").write_text(text)
    if generated is not None:
        (tmp_path / "generated").mkdir()
        (tmp_path / "generated" / "lab.yml").write_text(generated)
    return tmp_path


def test_the_core_inventory_names_no_department() -> None:
    assert set(InventoryFile.model_fields) == {
        "name", "defaults", "groups", "hosts", "host_binding", "change",
    }  # fmt: skip
    assert {"vcenter", "ipam"} <= set(SECTIONS.names())  # from the entry points
    assert SECTIONS.get("vcenter").model is VCenter and SECTIONS.get("ipam").model is IpamConfig


def test_the_lab_inventory_keeps_its_format(tmp_path: Path) -> None:
    inv = load_inventory(Path(__file__).parents[2] / "inventories" / "lab")
    assert set(inv.spec.sections) == {"vcenter", "ipam"}
    assert vcenter_config(inv).template == "debian12-template"
    assert ipam_config(inv).pools["default"] == IpamPool(
        vlan_min=100, vlan_max=199, supernet="10.20.0.0/16", prefix_length=24
    )


def test_an_unknown_key_is_refused_naming_it_and_the_known_sections(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "name: t\nacme: {x: 1}\n")
    with pytest.raises(ConfigurationError) as err:
        load_inventory(folder)
    message = str(err.value)
    assert "inventory.yml: acme: unknown inventory section (known sections: " in message
    known = message.partition("known sections: ")[2].partition(";")[0].split(", ")
    assert {"ipam", "vcenter"} <= set(known) and "acme" not in known
    assert "core keys: change, defaults, groups, host_binding, hosts, name" in message


def test_a_sections_errors_name_the_section_field_and_the_file(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path,
        "name: t\nvcenter: {datacenter: DC1}\nipam: {pools: {p: {vlan_min: 0}}}\n",
        generated="vcenter: {port: nope, bogus: 1}\n",
    )
    with pytest.raises(ConfigurationError) as err:
        load_inventory(folder)
    message = str(err.value)
    assert "generated/lab.yml: vcenter.port: Input should be a valid integer" in message
    assert "generated/lab.yml: vcenter.bogus: Extra inputs are not permitted" in message
    assert "inventory.yml: ipam.pools.p.vlan_min: Input should be greater than or equal to 1" in (
        message
    )
    assert "inventory.yml: ipam.pools.p.supernet: Field required" in message


@pytest.mark.parametrize("value", ["[1, 2]", "7", "null", "text"])
def test_a_section_that_is_not_a_mapping_is_refused(tmp_path: Path, value: str) -> None:
    folder = folder_with(tmp_path, f"name: t\nvcenter: {value}\n")
    with pytest.raises(ConfigurationError, match=r"inventory\.yml: vcenter: Input should be"):
        load_inventory(folder)


def test_core_errors_still_name_their_field(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "name: t\nhosts: {r1: {port: x}}\nvcenter: {}\n")
    with pytest.raises(ConfigurationError, match=r"inventory\.yml: hosts\.r1\.port"):
        load_inventory(folder)


def test_a_registered_section_is_validated_and_read_typed(tmp_path: Path, dns: Section) -> None:
    inv = load_inventory(folder_with(tmp_path, "name: t\ndns: {zone: example.org}\n"))
    found = inv.section("dns", Dns)
    assert isinstance(found, Dns) and (found.zone, found.ttl) == ("example.org", 300)
    with pytest.raises(ConfigurationError, match=r"dns\.ttl: Input should be greater"):
        load_inventory(folder_with(tmp_path, "name: t\ndns: {zone: a, ttl: 5}\n"))


def test_typed_access_refuses_a_missing_section_or_another_model(dns: Section) -> None:
    inv = Inventory(InventoryFile.model_validate({"name": "t", "dns": {"zone": "z"}}))
    with pytest.raises(ConfigurationError, match="inventory 't' has no 'vcenter' section"):
        vcenter_config(inv)
    assert ipam_config(inv) == IpamConfig()  # IPAM's default: no pools
    with pytest.raises(ConfigurationError, match="registered as Dns, not OtherDns"):
        inv.section("dns", OtherDns)


def test_sections_given_as_models_or_copied_in_are_kept() -> None:
    vc = VCenter(port=8989)
    spec = InventoryFile(name="t", vcenter=vc)  # type: ignore[call-arg]  # a section: extra
    assert vcenter_config(Inventory(spec)) is vc
    pools = IpamConfig(pools={"p": IpamPool(vlan_min=1, vlan_max=2, supernet="10.0.0.0/8",
                                             prefix_length=24)})  # fmt: skip
    copied = spec.model_copy(update={"ipam": pools})
    assert ipam_config(Inventory(copied)) is pools


def test_the_registry_refuses_bad_sections_and_duplicates() -> None:
    registry = SectionRegistry(use_entry_points=False)
    registry.register(DNS)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(DNS)
    registry.register(Section("dns", OtherDns), replace=True)
    assert registry.get("dns").model is OtherDns
    with pytest.raises(ValueError, match="must match"):
        registry.register(Section("Bad Name", Dns))
    with pytest.raises(ValueError, match="not a pydantic model"):
        registry.register(Section("plain", dict))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not an inventory section"):
        registry.register(Dns)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"no inventory section 'nope' \(known: .*dns"):
        registry.get("nope")


def test_registries_do_not_share_their_sections() -> None:
    one, two = SectionRegistry(use_entry_points=False), SectionRegistry(use_entry_points=False)
    one.register(DNS)
    assert "dns" in one and "dns" not in two


def test_the_registry_validates_only_what_it_knows() -> None:
    registry = SectionRegistry(use_entry_points=False)
    registry.register(DNS)
    assert registry.validate({"dns": {"zone": "z"}})["dns"] == Dns(zone="z")
    with pytest.raises(ValidationError) as err:
        registry.validate({"dns": {"zone": "z"}, "vcenter": {}, 3: "x"})
    assert [e["loc"] for e in err.value.errors()] == [("vcenter",), (3,)]


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("no_such_department_module:SECTION", r"'broken': cannot import 'no_such_department"),
        ("infra_automation.sections:NAME_RE", r"'broken' .*is not an inventory section"),
        ("infra_automation.departments.vmware:VCENTER_SECTION", r"calls itself 'vcenter'"),
    ],
)
def test_a_broken_entry_point_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, target: str, error: str
) -> None:
    found = [EntryPoint("broken", target, sections.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: found)
    registry = SectionRegistry()
    assert registry.names() == ["broken"]  # names only: nothing imported yet
    with pytest.raises(ConfigurationError, match=error):
        registry.validate({"broken": {}})


def test_the_readme_example_registers_a_section() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (block,) = [b for b in blocks if "Section(" in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    try:
        model = namespace["DnsSettings"]
        inv = Inventory(InventoryFile.model_validate({"dns": {"server": "192.0.2.53"}}))
        assert inv.section("dns", model).server == "192.0.2.53"
        with pytest.raises(ValidationError, match=r"dns\.ttl|ttl"):
            InventoryFile.model_validate({"dns": {"server": "x", "ttl": 1}})
    finally:
        SECTIONS.unregister("dns")
