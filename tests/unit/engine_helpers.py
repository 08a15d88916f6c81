"""Helpers of the engine's unit tests: test executors, an event collector, file writers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from infra_automation.events import Event
from infra_automation.executors import ExecutorInfo, StepContext
from infra_automation.request import Request
from infra_automation.results import StepResult

INVENTORY = {
    "name": "unit",
    "groups": {"routers": {"platform": "cisco_ios"}, "debian": {"platform": "linux"}},
    "hosts": {
        "core": {"groups": ["routers"]},
        "edge": {"groups": ["routers"]},
        "debian1": {"groups": ["debian"]},
    },
}


class RecordParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: str = ""
    count: int = 0
    sleep: float = Field(default=0.0, ge=0)
    fail_if_exists: str | None = None


class RecordOutputs(BaseModel):
    """Typed outputs (no extra fields): the planner checks references against them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: str
    count: int


class Calls:
    """What the test executors were asked to do, in call order (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[dict[str, Any]] = []

    def add(self, **item: Any) -> None:
        with self.lock:
            self.items.append(item)

    def steps(self, mode: str | None = None) -> list[str]:
        return [i["step"] for i in self.items if mode is None or i["mode"] == mode]


class RecordExecutor:
    """Records each call; optionally sleeps, or fails while a flag file exists."""

    info = ExecutorInfo(
        key="test.record",
        department="test",
        description="records calls",
        params=RecordParams,
        outputs=RecordOutputs,
    )

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def preview(self, ctx: StepContext) -> StepResult:
        return self._do(ctx, "preview")

    def apply(self, ctx: StepContext) -> StepResult:
        return self._do(ctx, "apply")

    def _do(self, ctx: StepContext, mode: str) -> StepResult:
        p = ctx.typed_params(RecordParams)
        self.calls.add(
            step=ctx.step_id,
            mode=mode,
            params=p.model_dump(),
            targets=ctx.targets,
            upstream=dict(ctx.upstream),
            peers=ctx.peers,
            followers={f.step_id: f.typed_params(RecordParams).value for f in ctx.followers()},
        )
        ctx.emit("task", {"host": "none", "task": f"record {p.value}", "status": "ok"})
        if p.sleep and mode == "apply":
            time.sleep(p.sleep)
        if p.fail_if_exists and Path(p.fail_if_exists).exists():
            return StepResult.failure(f"flag {Path(p.fail_if_exists).name} is set")
        return StepResult.success(changed=True, outputs={"value": p.value, "count": p.count})


class BoomExecutor:
    info = ExecutorInfo(key="test.boom", department="test", description="raises")

    def preview(self, ctx: StepContext) -> StepResult:
        raise RuntimeError("boom in preview")

    def apply(self, ctx: StepContext) -> StepResult:
        raise RuntimeError("boom in apply")


class BadOutputsExecutor:
    info = ExecutorInfo(
        key="test.badout", department="test", description="bad outputs", outputs=RecordOutputs
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self.apply(ctx)

    def apply(self, ctx: StepContext) -> StepResult:
        return StepResult.success(outputs={"value": "x", "count": "not a number"})


class NoCheckExecutor:
    info = ExecutorInfo(
        key="test.nocheck", department="test", description="no check mode", supports_check=False
    )

    def preview(self, ctx: StepContext) -> StepResult:
        raise AssertionError("preview must not be called")

    def apply(self, ctx: StepContext) -> StepResult:
        return StepResult.success(changed=True)


class Collector:
    """An observer keeping every event."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def step(
    sid: str, executor: str = "core.noop", needs: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"id": sid, "executor": executor, "needs": needs or [], **extra}


def write_service(
    root: Path, name: str, steps: list[dict[str, Any]], params: dict[str, Any] | None = None
) -> Path:
    path = root / "catalog" / f"{name}.yml"
    data = {
        "name": name,
        "description": f"test service {name}",
        "owner": "tests",
        "params": params or {},
        "steps": steps,
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_request(
    root: Path,
    service: str,
    project: str = "shop",
    params: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    path = root / "requests" / f"{name or service}.yml"
    data = {
        "service": service,
        "project": project,
        "requester": "Unit Tests",
        "params": params or {},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


MakeRequest = Callable[..., Request]
