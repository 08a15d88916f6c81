"""Built-in executors of the ``core`` department: no-op, sleep and fail.

They carry no target; the engine's tests, the benchmarks and catalog authors use them
(e.g. a manual approval placeholder that simply succeeds).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.results import StepResult


class EchoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    echo: dict[str, Any] = Field(default_factory=dict)


class SleepParams(EchoParams):
    seconds: float = Field(default=0.0, ge=0, le=3600)


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    message: str = "failed on purpose"


class EchoOutputs(BaseModel):
    """Whatever the step echoes; fields are free-form."""

    model_config = ConfigDict(extra="allow", frozen=True)


class NoopExecutor:
    info = ExecutorInfo(
        key="core.noop",
        department="core",
        description="Does nothing; outputs the 'echo' mapping.",
        params=EchoParams,
        outputs=EchoOutputs,
        rerun_safe=True,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self.apply(ctx)

    def apply(self, ctx: StepContext) -> StepResult:
        params = ctx.typed_params(EchoParams)
        return StepResult.success(outputs=params.echo)


class SleepExecutor:
    info = ExecutorInfo(
        key="core.sleep",
        department="core",
        description="Sleeps 'seconds' (not in check mode); outputs the 'echo' mapping.",
        params=SleepParams,
        outputs=EchoOutputs,
        rerun_safe=True,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return StepResult.success(outputs=ctx.typed_params(SleepParams).echo)

    def apply(self, ctx: StepContext) -> StepResult:
        params = ctx.typed_params(SleepParams)
        time.sleep(params.seconds)
        return StepResult.success(changed=True, outputs=params.echo)


class FailExecutor:
    info = ExecutorInfo(
        key="core.fail",
        department="core",
        description="Always fails with 'message' (for tests and drills).",
        params=FailParams,
        rerun_safe=True,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return StepResult.success()

    def apply(self, ctx: StepContext) -> StepResult:
        return StepResult.failure(ctx.typed_params(FailParams).message)
