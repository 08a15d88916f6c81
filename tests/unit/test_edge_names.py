"""Names derived from the project (VM and host names) fit whatever project name is valid.

A request's project is a :data:`~infra_automation.validation.Name` (2-40 characters); the VM
step derives ``<project>-<role>-NN`` from it. Every valid project must give valid derived
names, or a run changes IPAM, routers, folder and portgroup and only then refuses the VMs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from infra_automation.catalog import load_catalog
from infra_automation.config import load_settings
from infra_automation.departments import vmware
from infra_automation.departments.ansible import HostAddress
from infra_automation.engine import Engine
from infra_automation.exceptions import PlanningError
from infra_automation.validation import HOST_LABEL_MAX, NAME_MAX, ROLE_MAX, HostLabel, Name, Role

ROOT = Path(__file__).resolve().parents[2]
LONGEST = "p" + "a" * (NAME_MAX - 2) + "z"  # a valid project name of the greatest length


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(load_settings(ROOT, env={}), load_observers=False)


def _vms_step() -> Any:
    service = load_catalog(ROOT / "catalog").get("project-landscape")
    return service, next(s for s in service.steps if s.executor == "vmware.vms")


def test_the_limits_leave_room_for_role_and_number() -> None:
    assert NAME_MAX + len("-") + ROLE_MAX + len("-99") == HOST_LABEL_MAX == 63
    TypeAdapter(Name).validate_python(LONGEST)
    with pytest.raises(ValidationError):
        TypeAdapter(Name).validate_python(LONGEST + "x")
    TypeAdapter(HostLabel).validate_python(f"{LONGEST}-{'r' * ROLE_MAX}-99")
    with pytest.raises(ValidationError):
        TypeAdapter(Role).validate_python("r" * (ROLE_MAX + 1))


def test_the_longest_project_plans_and_its_vm_step_accepts_the_names(engine: Engine) -> None:
    service, step = _vms_step()
    request = engine.validate({"service": service.name, "project": LONGEST, "params": {}})
    plan = engine.plan(request)
    assert "vms" in [s.id for s in plan.steps]
    count = int(service.params["web_vms"].maximum or 0)
    params = vmware.VmsParams.model_validate(
        {
            "project": LONGEST,
            "role": step.params["role"],
            "count": count,
            "portgroup": LONGEST,
            "folder": LONGEST,
            "addresses": [f"10.20.0.{i}" for i in range(2, 2 + count)],
        }
    )
    names = params.vm_names()
    assert names[-1] == f"{LONGEST}-web-{count:02d}" and len(names[-1]) == NAME_MAX + 7
    specs = vmware.render_specs(ROOT / "templates", params)
    assert [s.name for s in specs] == names


def test_a_role_that_could_not_fit_is_refused_at_the_role_field() -> None:
    with pytest.raises(ValidationError) as info:
        vmware.VmsParams.model_validate(
            {
                "project": "shop",
                "portgroup": "shop",
                "count": 1,
                "addresses": ["10.0.0.1"],
                "role": "r" * (ROLE_MAX + 1),
            }
        )
    assert [e["loc"] for e in info.value.errors()] == [("role",)]


def test_the_os_steps_accept_the_vm_names() -> None:
    HostAddress.model_validate({"name": f"{LONGEST}-web-08", "ip": "10.20.0.9"})


def test_a_catalog_role_too_long_for_a_host_name_is_refused_at_planning(tmp_path: Path) -> None:
    """A role that could overflow the VM names is refused before anything runs."""
    (tmp_path / "catalog").mkdir()
    text = (ROOT / "catalog" / "project-landscape.yml").read_text()
    assert "      role: web\n" in text
    long_role = "r" * (ROLE_MAX + 1)
    (tmp_path / "catalog" / "project-landscape.yml").write_text(
        text.replace("      role: web\n", f"      role: {long_role}\n")
    )
    engine = Engine(load_settings(tmp_path, env={}), load_observers=False)
    request = engine.validate({"service": "project-landscape", "project": "shop"})
    with pytest.raises(
        PlanningError, match=r"step 'vms' \(vmware.vms\): invalid params: params.role"
    ):
        engine.plan(request)
