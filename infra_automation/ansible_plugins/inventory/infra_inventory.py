"""Ansible inventory plugin ``infra_inventory``: an infra-automation inventory folder.

Enabled by the repository's ``ansible.cfg`` (``[defaults] inventory_plugins``, ``[inventory]
enable_plugins``). Ansible hands it each ``inventory.yml`` of the source folder; it loads the
folder as the engine does (:func:`infra_automation.inventory.load_inventory`: the hand-written
file with ``generated/*.yml`` merged over it) and adds what
:func:`infra_automation.departments.ansible.inventory_view` says: the hosts, their groups
(``-`` becomes ``_``), their data and connection variables, and the VM hosts bound so far
(every binder lists them through ``bound()``: a pool's from the run database of the project
root, ``$INFRA_ROOT`` or the current folder, when the inventory keeps its bindings there; the
lab's ``lab-guests`` each VM's guest). Secrets are never read: a host with a password keeps
a reference to an extra variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansible.errors import AnsibleParserError  # type: ignore[import-untyped]
from ansible.plugins.inventory import BaseInventoryPlugin  # type: ignore[import-untyped]

from infra_automation.config import load_settings
from infra_automation.departments.ansible import inventory_view
from infra_automation.exceptions import ConfigurationError, RecordError
from infra_automation.inventory import HAND_WRITTEN, load_inventory
from infra_automation.record import open_database

DOCUMENTATION = r"""
name: infra_inventory
short_description: an infra-automation inventory folder (inventory.yml and generated/)
description:
  - The hosts, groups and variables the infra-automation engine and Nornir use.
options: {}
"""


class InventoryModule(BaseInventoryPlugin):  # type: ignore[misc]
    NAME = "infra_inventory"

    def verify_file(self, path: str) -> bool:
        return Path(path).name == HAND_WRITTEN and bool(super().verify_file(path))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        try:
            view = _view(Path(path).parent)
        except (ConfigurationError, RecordError) as exc:
            raise AnsibleParserError(f"{path}: {exc}") from exc
        top = view["all"]
        for name, hostvars in top["hosts"].items():
            self.inventory.add_host(name)
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
        for group, members in top["children"].items():
            self.inventory.add_group(group)
            for name in members["hosts"]:
                self.inventory.add_child(group, name)


def _view(folder: Path) -> dict[str, Any]:
    """The inventory as Ansible sees it, bound VMs from the database when they live there."""
    inventory = load_inventory(folder)
    binding = inventory.spec.host_binding
    if binding.kind != "pool" or binding.store != "database":
        return inventory_view(inventory)
    settings = load_settings()
    inventory.db = open_database(settings.database_url, timeout=settings.database_timeout)
    try:
        return inventory_view(inventory)
    finally:
        inventory.db.dispose()
