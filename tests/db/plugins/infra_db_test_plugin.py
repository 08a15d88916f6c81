"""Executors of the database tests, loaded with ``INFRA_PLUGINS=infra_db_test_plugin``:

- ``test.append``: appends ``<step> <value>`` to a log file, sleeps, outputs ``value``; with
  ``hold_until`` it then waits (at most a minute) until that file exists.
- ``test.lockrecord``: locks the run record from another connection for ``seconds``
  (SQLite: an exclusive transaction; PostgreSQL: an exclusive lock on the steps table) and
  succeeds, so that the record cannot be written until the lock goes.
- ``test.bind``: binds VMs ``<project>-vm-1..count`` to hosts of the inventory's pool
  (``host_binding``), one at a time with a pause between, and outputs VM -> host.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from infra_automation.executors import ExecutorInfo, StepContext, register
from infra_automation.results import StepResult
from infra_automation.validation import SafeText


class AppendParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    log: SafeText
    seconds: float = Field(default=0.0, ge=0)
    value: SafeText = ""
    hold_until: SafeText = ""  # a path: the step ends only once it exists


class AppendOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: str


class AppendExecutor:
    info = ExecutorInfo(
        key="test.append",
        department="test",
        description="Appends the step id to a log file, sleeps, outputs 'value'.",
        params=AppendParams,
        outputs=AppendOutputs,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return StepResult.success(outputs={"value": ctx.typed_params(AppendParams).value})

    def apply(self, ctx: StepContext) -> StepResult:
        p = ctx.typed_params(AppendParams)
        with Path(p.log).open("a") as log:
            log.write(f"{ctx.step_id} {p.value}\n")
        time.sleep(p.seconds)
        deadline = time.monotonic() + 60
        while p.hold_until and not Path(p.hold_until).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return StepResult.success(changed=True, outputs={"value": p.value})


class LockParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seconds: float = Field(default=1.0, ge=0)


class LockRecordExecutor:
    info = ExecutorInfo(
        key="test.lockrecord",
        department="test",
        description="Locks the run record from another connection for a while.",
        params=LockParams,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self.apply(ctx)

    def apply(self, ctx: StepContext) -> StepResult:
        assert ctx.db is not None
        ready = threading.Event()
        url = ctx.db.url
        seconds = ctx.typed_params(LockParams).seconds
        threading.Thread(target=_hold, args=(url, seconds, ready), daemon=False).start()
        ready.wait(10)
        return StepResult.success(changed=True)


def _hold(url: sa.URL, seconds: float, ready: threading.Event) -> None:
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(str(url.database), timeout=5)
        conn.execute("BEGIN EXCLUSIVE")
        ready.set()
        time.sleep(seconds)
        conn.rollback()
        conn.close()
        return
    engine = sa.create_engine(url)
    with engine.connect() as pg:
        pg.execute(sa.text("LOCK TABLE infra_steps IN ACCESS EXCLUSIVE MODE"))
        ready.set()
        time.sleep(seconds)
        pg.rollback()
    engine.dispose()


class BindParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(default=1, ge=1)
    seconds: float = Field(default=0.0, ge=0)


class BindOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    hosts: dict[str, str]


class BindExecutor:
    info = ExecutorInfo(
        key="test.bind",
        department="test",
        description="Binds the project's VMs to hosts of the inventory's pool.",
        params=BindParams,
        outputs=BindOutputs,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self.apply(ctx)

    def apply(self, ctx: StepContext) -> StepResult:
        p = ctx.typed_params(BindParams)
        hosts: dict[str, str] = {}
        for i in range(1, p.count + 1):
            vm = f"{ctx.project}-vm-{i}"
            hosts[vm] = str(ctx.inventory.bind_host(vm, dry_run=ctx.check).data["bound_to"])
            time.sleep(p.seconds)
        return StepResult.success(changed=True, outputs={"hosts": hosts})


register("test.append", AppendExecutor, replace=True)
register("test.bind", BindExecutor, replace=True)
register("test.lockrecord", LockRecordExecutor, replace=True)
