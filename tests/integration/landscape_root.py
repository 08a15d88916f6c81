"""A throwaway project root for landscape runs against the shared lab.

The content (catalog, templates, playbooks, tasks) is the repository's own, linked in; the
run record, IPAM allocations and generated docs live in the temporary root, so a test or a
benchmark never writes into the checkout. The inventory is the running lab's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from infra_automation.config import load_settings
from infra_automation.docs.ledger import ProjectLedger, ledger_store
from infra_automation.record import open_database

ROOT = Path(__file__).resolve().parents[2]
CONTENT = ("catalog", "templates", "playbooks", "tasks", "requests")


def make_root(base: Path, inventory: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    for name in CONTENT:
        (base / name).symlink_to(ROOT / name, target_is_directory=True)
    (base / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text())
    shutil.copytree(ROOT / "docs", base / "docs", ignore=shutil.ignore_patterns("projects"))
    (base / "infra.toml").write_text(f'inventory = "{inventory}"\n')
    return base


def as_built(root: Path, project: str) -> ProjectLedger:
    """The project's as-built state (its docs ledger) from the root's run database."""
    db = open_database(load_settings(root, env={}).database_url)
    try:
        return ledger_store(root, db).load(project)
    finally:
        db.dispose()


def write_request(root: Path, name: str, body: str) -> Path:
    path = root / f"{name}.yml"
    path.write_text(body)
    return path


def infra(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``infra --root ROOT ARGS`` in a process of its own (its own Ansible home under the root)."""
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(root), *args]
    env = {**os.environ, "ANSIBLE_HOME": str(root / ".infra" / "ansible-home")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, check=False)
