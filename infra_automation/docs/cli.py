"""``infra docs build [--project P] [--site]``: regenerate the as-built docs from the ledgers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from infra_automation.config import load_settings
from infra_automation.docs.ledger import ledger_store
from infra_automation.docs.site import build_site, mkdocs_available
from infra_automation.docs.writer import DocsWriter
from infra_automation.exceptions import InfraError
from infra_automation.record import open_database
from infra_automation.secrets import redact

app = typer.Typer(help="As-built project documentation.", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


@app.command()
def build(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project.")
    ] = None,
    site: Annotated[bool, typer.Option("--site", help="Also run 'mkdocs build --strict'.")] = False,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Project root (default: infra --root, $INFRA_ROOT or .)."),
    ] = None,
) -> None:
    """Rewrite docs/projects/ from the projects' as-built state in the run database (and
    build the site)."""
    try:
        settings = load_settings(root or ctx.find_root().params.get("root"))
        base = settings.root
        db = open_database(settings.database_url, timeout=settings.database_timeout)
        store = ledger_store(base, db)
        if project and not store.has(project):
            known = ", ".join(store.projects()) or "none"
            _error(f"--project: no docs ledger for {project!r} (known: {known})")
            raise typer.Exit(2)
        writer = DocsWriter(base)
        for name in [project] if project else store.projects():
            pages = writer.write_project(store.load(name))
            _say(f"{name}: {len(pages)} pages in {writer.project_dir(name)}")
        out.print(f"index: {writer.write_index(store.all())}", markup=False)
        broken = store.broken()
        for _, reason in broken:
            _error(f"{reason} (left out of the docs; the other projects are written)")
        if site:
            if not mkdocs_available():
                _error("mkdocs is not installed: pip install 'infra-automation[docs]'")
                raise typer.Exit(2)
            out.print(f"site: {build_site(base, ledgers=store)}", markup=False)
    except InfraError as exc:
        _error(str(exc))
        raise typer.Exit(1) from exc
    if broken:
        raise typer.Exit(1)


def _visible(text: str) -> str:
    from infra_automation.cli.render import visible  # here: infra_automation.cli imports us

    return visible(text)


def _say(message: str) -> None:
    out.print(_visible(message), markup=False)


def _error(message: str) -> None:
    err.print("error: " + _visible(str(redact(message))), style="red", markup=False)
