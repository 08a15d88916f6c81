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


def contender(
    project: str, vm: str, requester: str = "jane"
) -> Any:  # a ChangeRecord; Any keeps this module free of the package's imports at the top
    """A change record of ``project`` touching ``vm`` (no dry run: admission tests)."""
    from infra_automation.changes.model import ChangeRecord, digest

    content = {
        "request": {"service": "vmset", "project": project, "params": {"vm": vm}},
        "requester": requester,
        "type": "normal",
        "type_reason": "",
        "risk": "medium",
        "plan": [{"id": "vms", "department": "vmware", "executor": "core.noop", "needs": []}],
        "steps": {},
        "items": sorted([f"project:{project}", f"vm:{vm}"]),
        "content": {},
    }
    return ChangeRecord(id=digest(content), content=content)


def widen_the_race(pause: float = 0.3) -> None:
    """Make admission pause between its overlap check and its write, so that without the
    change lock every contender would check before any writes (the race made certain)."""
    import time

    from infra_automation.changes import store

    checked = store._overlap

    def slow(*args: Any, **kwargs: Any) -> Any:
        found = checked(*args, **kwargs)
        time.sleep(pause)
        return found

    store._overlap = slow  # type: ignore[assignment]


def admit_in_process(url: str, project: str, vm: str, barrier: Any, results: Any) -> None:
    """A process of its own proposing one change (``multiprocessing``, spawn)."""
    from infra_automation.changes.store import ChangeStore, State
    from infra_automation.record import open_database

    widen_the_race()
    db = open_database(url)
    try:
        store = ChangeStore(db)
        record = contender(project, vm)
        barrier.wait(timeout=60)
        done = store.admit(record, State.WAITING, reason="waits for approval")
        conflict = done.conflict.id if done.conflict is not None else None
        results.put((record.id, done.change.state.value, conflict))
    finally:
        db.dispose()
