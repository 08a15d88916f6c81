"""A plugin loaded through ``INFRA_PLUGINS=infra_test_plugin``: registers ``test.append``,
an executor that appends one line per call to a log file (to prove what ran, and how often)."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from infra_automation.executors import ExecutorInfo, StepContext, register
from infra_automation.results import StepResult
from infra_automation.validation import SafeText


class AppendParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    log: SafeText
    seconds: float = Field(default=0.0, ge=0)
    value: SafeText = ""


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
        return StepResult.success(changed=True, outputs={"value": p.value})


register("test.append", AppendExecutor, replace=True)
