"""A plugin loaded through ``INFRA_PLUGINS=infra_verify_plugin`` (in ``infra worker``
processes too): ``vtest.file`` writes a file under ``<root>/live/`` on apply and, on verify,
reads it back (after ``verify_seconds``: a slow target): missing or different is drift,
unreadable is unverifiable."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from infra_automation.executors import ExecutorInfo, StepContext, register
from infra_automation.results import ErrorKind, StepResult
from infra_automation.validation import Name, SafeText
from infra_automation.verify import ResourceCheck, VerifyContext, VerifyResult


class FileParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    content: SafeText
    verify_seconds: float = Field(default=0.0, ge=0, le=30)  # a slow target


class FileOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    path: str
    content: str


class FileExecutor:
    info = ExecutorInfo(
        key="vtest.file",
        department="test",
        description="A file under <root>/live, read back by verify",
        params=FileParams,
        outputs=FileOutputs,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        p = ctx.typed_params(FileParams)
        return StepResult.success(outputs={"path": str(self._path(ctx, p)), "content": p.content})

    def apply(self, ctx: StepContext) -> StepResult:
        p = ctx.typed_params(FileParams)
        path = self._path(ctx, p)
        path.parent.mkdir(exist_ok=True)
        path.write_text(p.content + "\n")
        return StepResult.success(changed=True, outputs={"path": str(path), "content": p.content})

    def verify(self, ctx: VerifyContext) -> VerifyResult:
        p = ctx.typed_params(FileParams)
        time.sleep(p.verify_seconds)
        resource = f"file {p.name}"
        path = Path(ctx.recorded["path"])
        if not path.exists():
            missing = ResourceCheck.drifted(resource, expected=p.content, found="(missing)")
            return VerifyResult.of(missing)
        try:
            found = path.read_text().rstrip("\n")
        except OSError as exc:
            return VerifyResult.unverifiable(resource, str(exc), ErrorKind.UNREACHABLE)
        return VerifyResult.of(ResourceCheck.compare(resource, p.content, found, target="live"))

    @staticmethod
    def _path(ctx: StepContext, p: FileParams) -> Path:
        return ctx.root / "live" / f"{p.name}.txt"


register("vtest.file", FileExecutor, replace=True)
