"""The README's commands are real: every `infra ...` line names existing subcommands and
options, and the two newcomer commands are the ones CI and the Makefile run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra_automation.cli import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    commands: list[str] = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            commands += [c.strip() for c in line.split(" | ") if c.strip().startswith("infra ")]
    return commands


GLOBAL_OPTIONS = ("--server", "--token-file", "--root")


def split(command: str) -> tuple[list[str], list[str]]:
    """(subcommand path, options) of one README command line."""
    words = command.replace("[", " ").replace("]", " ").split()[1:]
    while words and words[0] in GLOBAL_OPTIONS:  # `infra --server URL apply ...`
        words = words[2:]
    path: list[str] = []
    for word in words:
        if not re.fullmatch(r"[a-z]+", word) or word in ("json", "text", "mermaid"):
            break
        path.append(word)
    options = [w.split("=")[0] for w in words if w.startswith("--")]
    return path, options


COMMANDS = readme_commands()


def test_the_readme_lists_the_cli() -> None:
    assert len(COMMANDS) >= 12


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_exists_with_its_options(command: str) -> None:
    path, options = split(command)
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, f"{command!r}: {result.output}"
    for option in options:
        assert option in result.output, f"{command!r}: no option {option}"


def test_the_two_newcomer_commands_are_what_ci_and_make_run() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```")[0]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines()]
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == "scripts/test.sh"  # CI runs exactly the README's test command
    makefile = (ROOT / "Makefile").read_text()
    assert "demo: setup\n\tscripts/demo.sh" in makefile
    assert "test:\n\tscripts/test.sh" in makefile


def test_the_roles_table_is_the_servers_own() -> None:
    """The README's role x endpoint table is generated from the one table the server enforces."""
    from infra_automation.server.policy import markdown_table

    shown = README.split("<!-- roles: generated from infra_automation/server/policy.py -->\n", 1)
    assert len(shown) == 2, "the README lost its roles table"
    table = shown[1].split("<!-- end roles -->", 1)[0]
    assert table.strip() == markdown_table().strip(), (
        "regenerate it: python -c 'from infra_automation.server.policy import markdown_table "
        "as t; print(t())'"
    )


def test_the_portal_roles_table_is_the_servers_own() -> None:
    from infra_automation.server.policy import PORTAL_RULES, markdown_table

    shown = README.split(
        "<!-- portal roles: generated from infra_automation/server/policy.py -->\n"
    )
    assert len(shown) == 2, "the README lost its portal roles table"
    table = shown[1].split("<!-- end portal roles -->", 1)[0]
    assert table.strip() == markdown_table(PORTAL_RULES).strip()
