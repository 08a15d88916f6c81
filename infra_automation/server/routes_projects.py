"""Projects: their current as-built state and docs pages, from the docs ledger."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import PlainTextResponse

from infra_automation.docs.ledger import ProjectLedger
from infra_automation.server import queries
from infra_automation.server.auth import problem
from infra_automation.server.policy import API
from infra_automation.server.schemas import DocsPages, ProjectOut
from infra_automation.server.state import Caller, StateDep
from infra_automation.validation import NAME_RE

router = APIRouter(prefix=API, tags=["projects"])
ProjectName = Annotated[str, Path(pattern=NAME_RE.pattern)]
PageName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9-]{0,40}\.md$")]


@router.get("/projects", response_model=list[ProjectOut])
def list_projects(caller: Caller, state: StateDep) -> list[ProjectOut]:
    only = caller.projects_filter()
    documented = set(state.ledgers.projects())
    names = documented | set(queries.projects_with_runs(state.engine.db, only))
    if only is not None:
        names &= set(only)
    return [ProjectOut(name=n, has_docs=n in documented) for n in sorted(names)]


def known_ledger(project: ProjectName, caller: Caller, state: StateDep) -> ProjectLedger:
    """The ledger of a project the caller may see (404 if nothing is known of it)."""
    caller.require_project(project)
    ledger = state.ledgers.load(project)
    if not ledger.runs and not queries.projects_with_runs(state.engine.db, [project]):
        raise problem(404, "not_found", f"no project {project!r}: it has no runs")
    return ledger


Ledger = Annotated[ProjectLedger, Depends(known_ledger)]


@router.get("/projects/{project}")
def show_project(project: ProjectName, ledger: Ledger) -> dict[str, Any]:
    """The as-built ledger: current ``state`` by step, the ``plan``, the ``runs`` history."""
    return ledger.model_dump(mode="json")


@router.get("/projects/{project}/docs", response_model=DocsPages)
def list_pages(project: ProjectName, ledger: Ledger, state: StateDep) -> DocsPages:
    return DocsPages(project=project, pages=[p.name for p in state.docs.pages(ledger)])


@router.get(
    "/projects/{project}/docs/{page}",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}}}},
)
def show_page(project: ProjectName, page: PageName, ledger: Ledger, state: StateDep) -> Any:
    """One page, rendered from the ledger as the docs writer writes it (Markdown)."""
    writer = state.docs
    found = next((p for p in writer.pages(ledger) if p.name == page), None)
    if found is None:
        raise problem(404, "not_found", f"project {project!r} has no docs page {page!r}")
    return PlainTextResponse(writer.render(found), media_type="text/markdown")
