"""The README's executor example runs: it registers, plans with typed references, previews."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra_automation.config import load_settings
from infra_automation.departments.vmware import vcenter_config
from infra_automation.engine import Engine
from infra_automation.exceptions import PlanningError
from infra_automation.executors import REGISTRY
from infra_automation.inventory import load_inventory

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
EXAMPLE = re.findall(r"```python\n(.*?)```", README, flags=re.S)[0]

SERVICE = """\
name: dns-demo
steps:
  - id: prep
    executor: core.noop
    params: {echo: {gateway: 192.0.2.1}}
  - id: dns
    executor: dns.record
    needs: [prep]
    params: {zone: example, address: "{{ steps.prep.outputs.gateway }}"}
  - id: after
    executor: core.noop
    needs: [dns]
    params: {echo: {name: "{{ steps.dns.outputs.FIELD }}"}}
"""


@pytest.fixture()
def root(tmp_path: Path) -> Iterator[Path]:
    module = types.ModuleType("readme_example")  # as if it were a plugin module
    sys.modules[module.__name__] = module
    exec(compile(EXAMPLE, "README.md", "exec"), module.__dict__)  # noqa: S102 - our README
    (tmp_path / "catalog").mkdir()
    (tmp_path / "inventories" / "lab").mkdir(parents=True)
    (tmp_path / "inventories" / "lab" / "inventory.yml").write_text("name: t\n")
    yield tmp_path
    REGISTRY.unregister("dns.record")
    del sys.modules[module.__name__]


def engine(root: Path, field: str) -> Engine:
    (root / "catalog" / "dns-demo.yml").write_text(SERVICE.replace("FIELD", field))
    return Engine(load_settings(root, env={}), load_observers=False)


def test_readme_executor_plans_and_previews(root: Path) -> None:
    eng = engine(root, "fqdn")
    result = eng.apply(eng.validate({"service": "dns-demo", "project": "shop"}), check=True)
    assert not result.failed
    assert result.steps["dns"].outputs == {"fqdn": "shop.example"}
    assert result.steps["after"].outputs == {"name": "shop.example"}


def test_a_field_the_executor_does_not_produce_is_refused_at_plan_time(root: Path) -> None:
    eng = engine(root, "ttl")
    with pytest.raises(PlanningError, match="ttl"):
        eng.plan(eng.validate({"service": "dns-demo", "project": "shop"}))


def test_the_example_site_inventory_loads() -> None:
    inv = load_inventory(ROOT / "inventories" / "example-site")
    assert vcenter_config(inv).protocol == "https" and inv.select(group="routers") == [
        "core",
        "edge",
    ]
    assert inv.bind_host("shop-web-01", "10.64.0.2").hostname == "10.64.0.2"
