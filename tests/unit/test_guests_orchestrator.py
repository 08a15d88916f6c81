"""The lab's guests option in the orchestrator, with fake components: ``up --guests`` starts
the guests component and records it; a repair by ``acquire`` (the test fixture's, which asks
only for routers and hosts) keeps it, so running projects' guests are never stranded; an
explicit ``up`` without it switches it off."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_lab_orchestrator import Fake, fakes

from infra_automation.exceptions import LabError
from infra_automation.lab.base import LabOptions
from infra_automation.lab.orchestrator import Lab, validate_options

HAND_WRITTEN = Path(__file__).resolve().parents[2] / "inventories" / "lab" / "inventory.yml"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    inv = tmp_path / "inventories" / "lab"
    inv.mkdir(parents=True)
    (inv / "inventory.yml").write_text(HAND_WRITTEN.read_text())
    return tmp_path


def components() -> list[Fake]:
    return [*fakes(), Fake("guests", inventory={"host_binding": {"kind": "lab-guests"}})]


def binding(lab: Lab) -> str:
    generated = yaml.safe_load((lab.generated_dir / "lab.yml").read_text())
    return str((generated.get("host_binding") or {}).get("kind", "from inventory.yml"))


def recorded(lab: Lab) -> LabOptions:
    return Lab(lab.root, lab.name).options


def test_acquire_repairs_a_guests_lab_with_its_guests(root: Path) -> None:
    comps = components()
    Lab(root, "gq", LabOptions(guests=True, max_guests=5), components=comps).up()
    lab = Lab(root, "gq", LabOptions(routers=2, hosts=3), components=comps)
    assert binding(lab) == "lab-guests"
    comps[2].down(lab.context)  # a host container died: the fixture's acquire repairs the lab
    lab.acquire()
    assert lab.status().healthy
    assert binding(lab) == "lab-guests"  # the binding is kept: the guests still serve VMs
    assert (recorded(lab).guests, recorded(lab).max_guests) == (True, 5)


def test_an_explicit_up_without_guests_switches_them_off(root: Path) -> None:
    comps = components()
    Lab(root, "gq", LabOptions(guests=True), components=comps).up()
    lab = Lab(root, "gq", LabOptions(), components=comps)
    lab.up()
    assert binding(lab) == "from inventory.yml" and recorded(lab).guests is False
    assert comps[3].calls == ["up"]  # the guests component ran for the first up only


def test_max_guests_needs_guests_and_a_sane_number() -> None:
    with pytest.raises(LabError, match="max_guests: only with guests"):
        validate_options(LabOptions(max_guests=3))
    with pytest.raises(LabError, match="max_guests: 501 is invalid"):
        validate_options(LabOptions(guests=True, max_guests=501))
