"""``infra docs build`` (filled in by the docs writer)."""

from __future__ import annotations

import typer

app = typer.Typer(help="As-built project documentation.")
