"""A third-party department plugs in whole, without a line of ``infra_automation/``.

``tests/plugins/acme_dept`` is a package of its own (its own ``pyproject.toml``): it
registers an inventory section (``acme``) and an executor (``acme.ticket``) through entry
points. The test pip-installs it with ``--target`` into a temporary folder and runs the
installed ``infra`` in a subprocess with that folder on ``PYTHONPATH`` (the checkout's
environment never sees the plugin), against a project root whose inventory holds an
``acme`` section and whose catalog uses ``acme.ticket``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PLUGIN = Path(__file__).parent / "acme_dept"
INFRA = Path(sys.executable).parent / "infra"
TIMEOUT = 300

TICKET_SERVICE = """\
name: acme-ticket
description: One ACME ticket for the project
owner: acme
params:
  summary:
    type: string
    description: What the ticket asks for
    default: a web tier
    pattern: "[A-Za-z ]{1,40}"
steps:
  - id: ticket
    executor: acme.ticket
    params:
      summary: "{{ params.summary }}"
"""
CORE_SERVICE = """\
name: core-only
description: A service of core steps only (no ACME step)
owner: core
steps:
  - id: nothing
    executor: core.noop
"""


def inventory_text(spool: Path, replicas: Any = 3) -> str:
    return (
        "name: acme-lab\n"
        "hosts: {}\n"
        f"acme:\n  site: east-1\n  replicas: {replicas}\n  spool: {spool}\n"
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed (``pip install --target``) from a copy of its sources."""
    base = tmp_path_factory.mktemp("acme-install")
    src = shutil.copytree(PLUGIN, base / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    target = base / "site"
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
    proc = subprocess.run(
        [*argv, str(src)], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "acme_dept" / "__init__.py").is_file()
    return target


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for folder in ("catalog", "inventories/lab", "requests"):
        (root / folder).mkdir(parents=True)
    (root / "catalog" / "acme-ticket.yml").write_text(TICKET_SERVICE)
    (root / "catalog" / "core-only.yml").write_text(CORE_SERVICE)
    (root / "inventories" / "lab" / "inventory.yml").write_text(inventory_text(tmp_path / "spool"))
    for service in ("acme-ticket", "core-only"):
        (root / "requests" / f"{service}.yml").write_text(
            f"service: {service}\nproject: shop\nrequester: tester\n"
            + ("params: {summary: two web VMs}\n" if service == "acme-ticket" else "")
        )
    return root


def infra(root: Path, site: Path | None, *args: str) -> subprocess.CompletedProcess[str]:
    """``infra`` in a subprocess: the plugin importable only through ``site``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INFRA_") and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    if site is not None:
        env["PYTHONPATH"] = str(site)
    env["COLUMNS"] = "400"
    return subprocess.run(
        [str(INFRA), *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_the_plugin_is_not_importable_from_the_checkout() -> None:
    """Guard: what the tests below see of the plugin comes from its installation only."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('acme_dept') is None)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], env=env, check=False, timeout=60)
    assert proc.returncode == 1


def test_its_executor_runs_with_the_values_of_its_inventory_section(
    site: Path, root: Path, tmp_path: Path
) -> None:
    proc = infra(root, site, "apply", "requests/acme-ticket.yml", "--no-docs", "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    step = json.loads(proc.stdout)["steps"]["ticket"]
    ticket = tmp_path / "spool" / "shop.ticket"
    assert step["status"] == "success" and step["changed"] is True
    assert step["outputs"] == {"site": "east-1", "replicas": 3, "path": str(ticket)}
    assert ticket.read_text() == "site=east-1\nreplicas=3\nsummary=two web VMs\n"

    again = infra(root, site, "apply", "requests/acme-ticket.yml", "--no-docs", "-o", "json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["steps"]["ticket"]["changed"] is False  # idempotent


def test_a_bad_value_of_its_section_is_refused_naming_the_field(
    site: Path, root: Path, tmp_path: Path
) -> None:
    inventory = root / "inventories" / "lab" / "inventory.yml"
    inventory.write_text(inventory_text(tmp_path / "spool", replicas=0))
    proc = infra(root, site, "apply", "requests/acme-ticket.yml", "--no-docs")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "acme.replicas" in proc.stderr and "greater than or equal to 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "spool").exists()


def test_without_the_plugin_the_same_inventory_is_refused_naming_the_section(
    root: Path, tmp_path: Path
) -> None:
    proc = infra(root, None, "apply", "requests/core-only.yml", "--no-docs")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())  # the console may wrap the line
    assert "acme: unknown inventory section" in message
    known = message.partition("known sections: ")[2].partition(";")[0].split(", ")
    assert {"ipam", "vcenter"} <= set(known) and "acme" not in known
    assert "Traceback" not in proc.stderr
