"""``infra users`` and ``infra tokens`` (mounted here as the lead mounts them on ``infra``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from infra_automation import cli
from infra_automation.cli.server import tokens_app, users_app
from infra_automation.identity import IdentityStore, create_identity_tables
from infra_automation.record import open_database
from tests.server.conftest import make_root

app = typer.Typer()
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")


@app.callback()
def _main(root: Annotated[Path, typer.Option("--root")]) -> None:
    cli.STATE.root = root


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    base = make_root(tmp_path / "project")
    yield base
    cli.STATE.root = None


def invoke(root: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--root", str(root), *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def store(root: Path) -> IdentityStore:
    engine = open_database(f"sqlite:///{root / '.infra' / 'runs.db'}")
    create_identity_tables(engine)
    return IdentityStore(engine)


def test_users_and_tokens(root: Path) -> None:
    code, out, _ = invoke(
        root,
        "users",
        "add",
        "jane",
        "--role",
        "tam",
        "--project",
        "shop",
        "--password-stdin",
        stdin="long enough password\n",
    )
    assert code == 0 and "added jane as tam (projects: shop)" in out
    assert store(root).check_password("jane", "long enough password") is not None
    code, out, _ = invoke(root, "users", "list")
    assert "jane" in out and "tam" in out
    code, token, err = invoke(root, "tokens", "create", "jane", "--label", "ci")
    value = token.strip()
    assert code == 0 and value.startswith("infra_") and "not shown again" in err
    user = store(root).user_for_token(value)
    assert user is not None and user.name == "jane"
    _, listed, _ = invoke(root, "tokens", "list")
    token_id = value.split("_")[1]
    assert token_id in listed and value not in listed
    code, out, _ = invoke(root, "tokens", "revoke", token_id)
    assert code == 0
    assert store(root).user_for_token(value) is None
    code, _, err = invoke(root, "tokens", "revoke", token_id)
    assert code == 2 and "no active token" in err


@pytest.mark.parametrize(
    ("args", "stdin", "problem"),
    [
        (["Bad Name", "--role", "viewer"], "long enough password\n", "user name 'Bad Name'"),
        (["ok-name", "--role", "viewer"], "short\n", "password: must be at least 8"),
        (["ok-name", "--role", "tam", "--project", "No!"], "long enough password\n", "project"),
    ],
)
def test_bad_user_input_exits_2_and_writes_nothing(
    root: Path, args: list[str], stdin: str, problem: str
) -> None:
    code, _, err = invoke(root, "users", "add", *args, "--password-stdin", stdin=stdin)
    assert code == 2 and problem in err
    assert store(root).list_users() == []


def test_users_passwd_replaces_the_password(root: Path) -> None:
    add = ("users", "add", "jane", "--role", "tam", "--password-stdin")
    assert invoke(root, *add, stdin="long enough password\n")[0] == 0
    code, out, _ = invoke(
        root, "users", "passwd", "jane", "--password-stdin", stdin="another one, long\n"
    )
    assert code == 0 and "password of jane changed" in out
    identity = store(root)
    assert identity.check_password("jane", "another one, long") is not None
    assert identity.check_password("jane", "long enough password") is None
    code, _, err = invoke(
        root, "users", "passwd", "nobody", "--password-stdin", stdin="long enough password\n"
    )
    assert code == 2 and "no user 'nobody'" in err
    code, _, err = invoke(root, "users", "passwd", "jane", "--password-stdin", stdin="short\n")
    assert code == 2 and "password" in err
