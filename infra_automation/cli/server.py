"""``infra server``, ``infra users`` and ``infra tokens``: the service and its identities.

::

    infra server [--host 127.0.0.1] [--port 8080] [--workers 4] [--queue-limit 1000]
    infra users add NAME --role ROLE [--project P ...] [--password-stdin]
    infra users list
    infra tokens create NAME [--label TEXT]     # prints the token once, on stdout
    infra tokens list [--user NAME] | infra tokens revoke ID

Bad input exits 2 with the field named; nothing is written.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra_automation import logs
from infra_automation.config import Settings
from infra_automation.exceptions import InfraError
from infra_automation.identity import (
    IdentityStore,
    Role,
    check_password,
    check_user_name,
    create_identity_tables,
)
from infra_automation.record import open_database
from infra_automation.secrets import redact

users_app = typer.Typer(help="Users of the service and their roles.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (shown once when created).", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
EXIT_INVALID = 2


def _settings() -> Settings:
    from infra_automation.cli import STATE  # the --root of the main command

    return STATE.settings()


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error[/]: {escape(str(redact(message)))}")
    return typer.Exit(EXIT_INVALID)


@contextmanager
def _identity() -> Iterator[IdentityStore]:
    try:
        settings = _settings()
        engine = open_database(settings.database_url, timeout=settings.database_timeout)
    except InfraError as exc:
        raise _fail(str(exc)) from None
    try:
        create_identity_tables(engine)
        yield IdentityStore(engine)
    except InfraError as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()


def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8080,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Run threads")] = 4,
    queue_limit: Annotated[
        int,
        typer.Option(
            "--queue-limit", min=1, max=1_000_000, help="Runs waiting for a thread before 429"
        ),
    ] = 1000,
    secure_cookies: Annotated[
        bool, typer.Option("--secure-cookies", help="Session cookie only over HTTPS")
    ] = False,
) -> None:
    """Serve the REST API (/api/v1) with uvicorn; binds to 127.0.0.1 unless told otherwise."""
    from infra_automation.server import create_app, serve

    try:
        app = create_app(
            _settings(), workers=workers, queue_limit=queue_limit, secure_cookies=secure_cookies
        )
    except InfraError as exc:
        raise _fail(str(exc)) from None
    logs.for_server(app)  # --log-format json: the runs' events and uvicorn's lines as JSON
    serve(app, host=host, port=port)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="User name (lower-case)")],
    role: Annotated[Role, typer.Option("--role", help="viewer, tam, engineer, approver, admin")],
    project: Annotated[
        list[str] | None, typer.Option("--project", help="A project of a tam (repeatable)")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin")
    ] = False,
) -> None:
    """Add a user; asks for her password (or reads it from stdin)."""
    try:
        check_user_name(name)
        password = check_password(_read_password(password_stdin))
    except InfraError as exc:
        raise _fail(str(exc)) from None
    with _identity() as identity:
        user = identity.add_user(name, role, password, project or ())
    shown = f" (projects: {', '.join(user.projects)})" if user.projects else ""
    out.print(f"added {escape(user.name)} as {user.role.value}{escape(shown)}")


@users_app.command("passwd")
def set_password(
    name: Annotated[str, typer.Argument(help="User name")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin")
    ] = False,
) -> None:
    """Set a user's password; asks for it (or reads it from stdin)."""
    try:
        password = check_password(_read_password(password_stdin))
        with _identity() as identity:
            identity.set_password(name, password)
    except InfraError as exc:
        raise _fail(str(exc)) from None
    out.print(f"password of {escape(name)} changed")


@users_app.command("list")
def list_users() -> None:
    """Users, their roles and projects."""
    with _identity() as identity:
        found = identity.list_users()
    table = Table("name", "role", "projects", "disabled")
    for user in found:
        table.add_row(user.name, user.role.value, ", ".join(user.projects), str(user.disabled))
    out.print(table)


@tokens_app.command("create")
def create_token(
    name: Annotated[str, typer.Argument(help="The user the token acts as")],
    label: Annotated[str, typer.Option("--label", help="What the token is for")] = "",
) -> None:
    """Create an API token; prints it once on stdout (it is stored hashed only)."""
    with _identity() as identity:
        issued = identity.create_token(name, label)
    err.print(f"token {issued.info.id} for {escape(name)}: store it now, it is not shown again")
    typer.echo(issued.value)


@tokens_app.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="Token id (infra tokens list)")],
) -> None:
    """Revoke a token: it stops working at once."""
    with _identity() as identity:
        if not identity.revoke(token_id):
            raise _fail(f"token id {token_id!r}: no active token with this id")
    out.print(f"revoked {escape(token_id)}")


@tokens_app.command("list")
def list_tokens(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's")] = None,
) -> None:
    """API tokens (never their values)."""
    with _identity() as identity:
        found = identity.list_tokens(user)
    table = Table("id", "user", "label", "created", "revoked")
    for t in found:
        revoked = f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else ""
        table.add_row(t.id, t.user, t.label, f"{t.created_at:%Y-%m-%d %H:%M}", revoked)
    out.print(table)
