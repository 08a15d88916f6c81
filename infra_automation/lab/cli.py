"""``infra lab up|down|status``: the built-in local lab (mounted by the main CLI)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from infra_automation.exceptions import InfraError
from infra_automation.lab.base import LabOptions
from infra_automation.lab.orchestrator import (
    DEFAULT_NAME,
    GUEST_HOSTS,
    MAX_GUESTS,
    MAX_HOSTS,
    POOL_HOSTS,
    Lab,
    binding_summary,
    find_root,
)

app = typer.Typer(
    help="The built-in local lab: vCenter simulator, FRR routers, Debian hosts.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

NameOpt = Annotated[
    str, typer.Option("--name", "-n", help="Lab instance; only 'lab' uses inventories/lab.")
]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root",
        envvar="INFRA_ROOT",
        help="Project root (default: nearest folder up holding inventories/lab/inventory.yml).",
    ),
]


def _lab(root: Path | None, name: str, options: LabOptions | None = None) -> Lab:
    try:
        return Lab(root or find_root(), name, options)
    except InfraError as exc:
        _fail(exc)


def _fail(exc: Exception) -> NoReturn:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@app.command()
def up(
    name: NameOpt = DEFAULT_NAME,
    routers: Annotated[int, typer.Option(help="FRR routers: core, edge, then r003...")] = 2,
    hosts: Annotated[
        int | None,
        typer.Option(
            help=f"Debian hosts debian1..N (default: {GUEST_HOSTS} with guests, the VMs have "
            f"their own; {POOL_HOSTS} with --no-guests: the pool VMs are bound to).",
            show_default=False,
        ),
    ] = None,
    vcenter: Annotated[bool, typer.Option("--vcenter/--no-vcenter", help="Run vcsim.")] = True,
    guests: Annotated[
        bool | None,
        typer.Option(
            "--guests/--no-guests",
            help="Give each VM its own guest container on demand (host_binding lab-guests; "
            "the default with vCenter); --no-guests binds VMs to a fixed pool of the debian "
            "hosts.",
            show_default=False,
        ),
    ] = None,
    max_guests: Annotated[
        int | None,
        typer.Option(help="At most N guests (default: available memory / 256 MiB)."),
    ] = None,
    root: RootOpt = None,
) -> None:
    """Build (once) and start the lab; write its inventory. A second `up` reuses what runs."""
    if max_guests is not None and not 0 <= max_guests <= MAX_GUESTS:
        err.print(f"[bold red]error:[/] --max-guests: {max_guests} is not in 0..{MAX_GUESTS}")
        raise typer.Exit(2)
    on = vcenter if guests is None else guests  # guests serve the simulator's VMs
    if max_guests is not None and not on:
        err.print("[bold red]error:[/] --max-guests: only with guests (not with --no-guests)")
        raise typer.Exit(2)
    if hosts is not None and not 0 <= hosts <= MAX_HOSTS:
        err.print(f"[bold red]error:[/] --hosts: {hosts} is not in 0..{MAX_HOSTS}")
        raise typer.Exit(2)
    count = hosts if hosts is not None else (GUEST_HOSTS if on else POOL_HOSTS)
    options = LabOptions(
        routers=routers, hosts=count, vcenter=vcenter, guests=on, max_guests=max_guests
    )
    lab = _lab(root, name, options)
    lock = threading.Lock()

    def progress(component: str, event: str, seconds: float) -> None:
        with lock:
            if event == "started":
                err.print(f"  {component}: starting ...", highlight=False)
            else:
                colour = "green" if event == "up" else "red"
                err.print(f"  {component}: [{colour}]{event}[/] in {seconds:.1f}s", highlight=False)

    err.print(f"lab [bold]{name}[/]: starting", highlight=False)
    try:
        report = lab.up(progress)
    except InfraError as exc:
        _fail(exc)
    table = Table(title=f"lab {name} is up ({report.total:.1f}s)")
    table.add_column("component")
    table.add_column("seconds", justify="right")
    for component, seconds in report.timings.items():
        table.add_row(component, f"{seconds:.2f}")
    out.print(table)
    out.print(f"inventory: {report.inventory_path}", highlight=False)
    out.print(f"VMs: {binding_summary(report.inventory_path)}", highlight=False)


@app.command()
def down(name: NameOpt = DEFAULT_NAME, root: RootOpt = None) -> None:
    """Stop every lab process, remove its namespaces, containers, networks and generated files."""
    lab = _lab(root, name)
    t0 = time.monotonic()
    try:
        lab.down()
    except InfraError as exc:
        _fail(exc)
    out.print(f"lab {name} is down ({time.monotonic() - t0:.1f}s)", highlight=False)


@app.command()
def status(
    name: NameOpt = DEFAULT_NAME,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
    root: RootOpt = None,
) -> None:
    """Each lab target's health; exit code 1 unless the lab is up and every target healthy."""
    if output not in ("table", "json"):
        _fail(ValueError(f"--output: {output!r} is not one of: table, json"))
    lab = _lab(root, name)
    try:
        st = lab.status()
    except InfraError as exc:
        _fail(exc)
    if output == "json":
        typer.echo(json.dumps(st.as_dict(), indent=2))
    else:
        state = "up" if st.up else "not up"
        table = Table(title=f"lab {name}: {state}; inventory {st.inventory_path}")
        table.add_column("target")
        table.add_column("health")
        table.add_column("detail")
        for t in st.targets:
            health = "[green]healthy[/]" if t.healthy else "[red]unhealthy[/]"
            table.add_row(t.target, health, t.detail)
        out.print(table)
        if st.up:
            out.print(f"VMs: {binding_summary(st.inventory_path)}", highlight=False)
    if not st.healthy:
        raise typer.Exit(1)
