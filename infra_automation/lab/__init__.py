"""The built-in local lab: a vCenter simulator, FRR routers and Debian hosts on this machine.

``Lab(root, name="lab", options=LabOptions(...))`` is one instance; ``up()`` starts its
components (:mod:`infra_automation.lab.base` defines the component Protocol) and writes the
instance's inventory, ``down()`` removes everything it created, ``status()`` reports health.
"""

from __future__ import annotations

from infra_automation.lab.base import (
    Fragment,
    Health,
    LabComponent,
    LabContext,
    LabOptions,
    Missing,
)
from infra_automation.lab.orchestrator import (
    COMPONENTS,
    DEFAULT_NAME,
    Lab,
    LabStatus,
    Lease,
    UpReport,
    find_root,
)

__all__ = [
    "COMPONENTS",
    "DEFAULT_NAME",
    "Fragment",
    "Health",
    "Lab",
    "LabComponent",
    "LabContext",
    "LabOptions",
    "LabStatus",
    "Lease",
    "Missing",
    "UpReport",
    "find_root",
]
