"""Helpers of the change-management tests: the ``testchg.file`` executor (a "device" whose
running config is a file under the root, so an out-of-band edit changes the dry run's diff),
the test catalog and inventory with their ``change:`` blocks, and a project-root writer."""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from infra_automation.executors import ExecutorInfo, StepContext
from infra_automation.results import Status, StepResult, TargetResult

TUESDAY = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)  # noon, outside the weekend freeze


class FileParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    device: str
    content: str


class FileOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    devices: list[str]


class FileExecutor:
    """A device whose running config is ``devices/<device>.cfg`` under the root."""

    info = ExecutorInfo(
        key="testchg.file",
        department="network",
        description="writes a device config file",
        params=FileParams,
        outputs=FileOutputs,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self._do(ctx, write=False)

    def apply(self, ctx: StepContext) -> StepResult:
        return self._do(ctx, write=True)

    def _do(self, ctx: StepContext, *, write: bool) -> StepResult:
        p = ctx.typed_params(FileParams)
        path = ctx.root / "devices" / f"{p.device}.cfg"
        old = path.read_text() if path.is_file() else ""
        new = p.content + "\n"
        diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True)))
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(new)
        target = TargetResult(p.device, Status.SUCCESS, changed=old != new, diff=diff)
        return StepResult.from_targets((target,), outputs={"devices": [p.device]})


INVENTORY: dict[str, Any] = {
    "name": "changes",
    "groups": {"routers": {"platform": "cisco_ios"}},
    "hosts": {"core": {"groups": ["routers"]}, "edge": {"groups": ["routers"]}},
    "change": {
        "approval": {
            "mode": "departments",
            "approvers": {"network": ["nina"], "vmware": ["victor"], "os": ["olga"]},
            "expires_hours": 48,
        },
        "emergency": {"retrospective_hours": 12},
        "blackouts": [
            {
                "name": "weekend freeze",
                "start": "fri 18:00",
                "end": "mon 06:00",
                "timezone": "Europe/Berlin",
            }
        ],
    },
}

SERVICES: dict[str, dict[str, Any]] = {
    "landscape": {
        "name": "landscape",
        "params": {
            "device": {"type": "string", "default": "core"},
            "vlan": {"type": "integer", "default": 100},
            "vm": {"type": "string", "default": "vm1"},
        },
        "steps": [
            {
                "id": "network",
                "department": "network",
                "executor": "testchg.file",
                "params": {"device": "{{ params.device }}", "content": "vlan {{ params.vlan }}"},
            },
            {
                "id": "vms",
                "department": "vmware",
                "executor": "core.noop",
                "needs": ["network"],
                "params": {"echo": {"names": ["{{ params.vm }}"]}},
            },
            {"id": "os", "department": "os", "executor": "core.noop", "needs": ["vms"]},
        ],
        "change": {"type": "normal", "risk": "high"},
    },
    "quick": {
        "name": "quick",
        "params": {
            "vm": {"type": "string", "default": "q1"},
            "fail": {"type": "boolean", "default": False},
        },
        "steps": [
            {
                "id": "vms",
                "department": "vmware",
                "executor": "core.noop",
                "params": {"echo": {"names": ["{{ params.vm }}"]}},
            },
            {"id": "boom", "executor": "core.fail", "when": "params.fail", "needs": ["vms"]},
        ],
        "change": {"type": "standard", "risk": "low", "history": 20},
    },
    "vmset": {
        "name": "vmset",
        "params": {"vm": {"type": "string", "default": "v1"}},
        "steps": [
            {
                "id": "vms",
                "department": "vmware",
                "executor": "core.noop",
                "params": {"echo": {"names": ["{{ params.vm }}"]}},
            }
        ],
        "change": {"type": "normal"},
    },
    "plain": {  # no change: block: the inventory's change.defaults
        "name": "plain",
        "params": {"fail": {"type": "boolean", "default": False}},
        "steps": [
            {"id": "noop", "department": "os", "executor": "core.noop"},
            {"id": "boom", "executor": "core.fail", "when": "params.fail", "needs": ["noop"]},
        ],
    },
    "hotfix": {
        "name": "hotfix",
        "steps": [{"id": "fix", "department": "os", "executor": "core.noop"}],
        "change": {"type": "emergency"},
    },
}


def write_root(base: Path, inventory: dict[str, Any] | None = None) -> Path:
    (base / "catalog").mkdir(parents=True)
    for name, service in SERVICES.items():
        (base / "catalog" / f"{name}.yml").write_text(yaml.safe_dump(service))
    folder = base / "inventories" / "lab"
    folder.mkdir(parents=True)
    (folder / "inventory.yml").write_text(yaml.safe_dump(inventory or INVENTORY))
    (base / "requests").mkdir()
    return base
