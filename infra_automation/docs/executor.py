"""``docs.build``: the last step of a landscape writes the project's docs and builds the site."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from infra_automation.docs.ledger import ledger_store
from infra_automation.docs.site import build_site, mkdocs_available
from infra_automation.docs.writer import DocsWriter
from infra_automation.exceptions import InfraError
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.results import StepResult
from infra_automation.verify import ResourceCheck, VerifyContext, VerifyResult


class DocsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    site: bool = True


class DocsOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    docs_path: str
    pages: list[str]
    site_path: str | None = None


class DocsExecutor:
    info = ExecutorInfo(
        key="docs.build",
        department="docs",
        description="Write the project's as-built docs from its ledger; build the mkdocs site.",
        params=DocsParams,
        outputs=DocsOutputs,
        content=("templates/docs/*.j2",),
    )

    def preview(self, ctx: StepContext) -> StepResult:
        writer = DocsWriter(ctx.root)
        folder = writer.project_dir(ctx.project)
        outputs = DocsOutputs(
            docs_path=str(folder),
            pages=[str(folder / name) for name in writer.page_names()],
            site_path=None,
        )
        return StepResult.success(outputs=outputs.model_dump())

    def apply(self, ctx: StepContext) -> StepResult:
        params = ctx.typed_params(DocsParams)
        store = ledger_store(ctx.root, ctx.db)
        writer = DocsWriter(ctx.root)
        try:
            ledger = store.load(ctx.project)
            before = _snapshot(writer, ctx.project)
            pages = writer.write_project(ledger)
            writer.write_index(store.all())
            changed = before != _snapshot(writer, ctx.project)
            build = params.site and mkdocs_available()
            site = build_site(ctx.root, ledgers=store) if build else None
        except InfraError as exc:
            return StepResult.failure(str(exc))
        except OSError as exc:
            return StepResult.failure(f"cannot write the docs: {exc}")
        outputs = DocsOutputs(
            docs_path=str(writer.project_dir(ctx.project)),
            pages=[str(p) for p in pages],
            site_path=str(site) if site is not None else None,
        )
        ctx.emit("docs", {"pages": len(pages), "site": outputs.site_path})
        return StepResult.success(changed=changed, outputs=outputs.model_dump())

    def verify(self, ctx: VerifyContext) -> VerifyResult:
        """The project's pages are where the docs step wrote them."""
        writer = DocsWriter(ctx.step.root)
        folder = writer.project_dir(ctx.step.project)
        expected = "\n".join(writer.page_names())
        found = "\n".join(n for n in writer.page_names() if (folder / n).is_file())
        return VerifyResult.of(
            ResourceCheck.compare(
                f"docs pages in {folder}", expected, found, target="docs", reason="pages missing"
            )
        )


def _snapshot(writer: DocsWriter, project: str) -> dict[str, str]:
    folder = writer.project_dir(project)
    if not folder.is_dir():
        return {}
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.md"))}
