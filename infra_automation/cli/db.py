"""``infra db``: the schema of the database (Alembic migrations shipped in the package).

``infra db upgrade`` migrates the database of the settings (``INFRA_DATABASE_URL`` or
``database_url`` of ``infra.toml``) to the newest revision; SQLite is also migrated by
itself on first use, any other database only by this command. ``infra db current`` shows
the revision it is at. The URL is shown without its password; errors exit 2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.markup import escape

from infra_automation.config import Settings
from infra_automation.exceptions import InfraError
from infra_automation.record import (
    create_engine,
    current_revision,
    describe_failure,
    head_revision,
    safe_url,
    upgrade_database,
)

app = typer.Typer(help="The database schema (migrations).", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
T = TypeVar("T")


def _settings() -> Settings:
    from infra_automation.cli import STATE  # the --root of the main command

    return STATE.settings()


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error[/]: {escape(message)}")
    return typer.Exit(2)


def _on_database(action: Callable[[sa.Engine], T]) -> tuple[str, T]:
    """``action`` on the engine of the settings' database; (shown URL, its result)."""
    try:
        settings = _settings()
        engine = create_engine(settings.database_url, timeout=settings.database_timeout)
    except InfraError as exc:
        raise _fail(f"{type(exc).__name__}: {exc}") from None
    try:
        return safe_url(settings.database_url), action(engine)
    except sa.exc.SQLAlchemyError as exc:
        raise _fail(describe_failure(exc, engine, "use the database")) from None
    finally:
        engine.dispose()


@app.command("upgrade")
def upgrade() -> None:
    """Migrate the database to the newest revision."""
    where, (before, after) = _on_database(upgrade_database)
    if before == after:
        out.print(f"{escape(where)}: at revision {after}, nothing to do")
    else:
        out.print(f"{escape(where)}: upgraded from {before or 'none'} to {after}")


@app.command("current")
def current() -> None:
    """Show the revision of the database and the newest one."""
    where, revision = _on_database(current_revision)
    head = head_revision()
    state = "up to date" if revision == head else "behind: run `infra db upgrade`"
    out.print(f"{escape(where)}: revision {revision or 'none'} (newest {head}, {state})")
