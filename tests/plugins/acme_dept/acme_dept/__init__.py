"""The ACME department: files one ticket per project in the spool folder of its site.

Its inventory section (``acme:`` in ``inventory.yml``) says which site it serves, how many
replicas a ticket asks for and where tickets are filed; ``acme.ticket`` reads that section
(never a parameter) and writes ``<spool>/<project>.ticket``, idempotently.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from infra_automation.executors import ExecutorInfo, StepContext
from infra_automation.results import StepResult
from infra_automation.sections import Section
from infra_automation.validation import SafeText


class AcmeSettings(BaseModel):
    """The ``acme`` inventory section."""

    model_config = ConfigDict(extra="forbid")

    site: str = Field(pattern=r"^[a-z][a-z0-9-]{1,30}$")
    replicas: int = Field(ge=1, le=9)
    spool: str = Field(min_length=1)  # the folder tickets are filed in


SECTION = Section("acme", AcmeSettings)


class TicketParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: SafeText


class TicketOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    replicas: int
    path: str


class TicketExecutor:
    info = ExecutorInfo(
        key="acme.ticket",
        department="acme",
        description="File the project's ticket at the inventory's ACME site.",
        params=TicketParams,
        outputs=TicketOutputs,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        path, text, outputs = _ticket(ctx)
        changed = not path.is_file() or path.read_text() != text
        return StepResult.success(changed=changed, diff=f"+ {path}\n" if changed else "",
                                  outputs=outputs)  # fmt: skip

    def apply(self, ctx: StepContext) -> StepResult:
        path, text, outputs = _ticket(ctx)
        if path.is_file() and path.read_text() == text:
            return StepResult.success(outputs=outputs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return StepResult.success(changed=True, diff=f"+ {path}\n", outputs=outputs)


def _ticket(ctx: StepContext) -> tuple[Path, str, dict[str, object]]:
    acme = ctx.inventory.section("acme", AcmeSettings)
    summary = ctx.typed_params(TicketParams).summary
    path = Path(acme.spool) / f"{ctx.project}.ticket"
    text = f"site={acme.site}\nreplicas={acme.replicas}\nsummary={summary}\n"
    outputs = {"site": acme.site, "replicas": acme.replicas, "path": str(path)}
    return path, text, outputs
