"""``infra lab up|down|status`` (filled in by the lab orchestrator)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The built-in local lab: vCenter simulator, FRR routers, Debian hosts.")
