"""``infra verify [--project P | --all] [--output text|json] [--junit FILE]``.

Exit codes: 0 every resource in sync, 3 something drifted, 1 nothing drifted but something
could not be verified (or the verification failed), 2 invalid input (no or both of
``--project``/``--all``, an unknown project, a bad ``--output`` or ``--junit`` path); with
invalid input nothing is verified and nothing is recorded.

The main CLI wires it as a command: ``app.command("verify")(verify.verify)``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from infra_automation.cli.junit import check_report_path
from infra_automation.config import Settings, load_plugins, load_settings
from infra_automation.engine import Engine, load_entry_point_observers
from infra_automation.events import Observer
from infra_automation.exceptions import ConfigurationError, InfraError
from infra_automation.files import write_atomic
from infra_automation.secrets import redact
from infra_automation.verify import (
    EXIT_DRIFTED,
    EXIT_ERROR,
    ResourceCheck,
    SyncState,
    Verification,
    VerifyReport,
    recorded_projects,
)

EXIT_INVALID = 2
app = typer.Typer(help="Compare the live landscape with the record.", add_completion=False)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
STYLES = {"in-sync": "green", "drifted": "bold red", "unverifiable": "yellow"}


@app.command()
def verify(
    ctx: typer.Context,
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Verify this project.")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Verify every project with an applied run.")
    ] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Write a JUnit XML report here")
    ] = None,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64)] = 8,
    no_docs: Annotated[bool, typer.Option("--no-docs", help="Do not update the docs")] = False,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Project root (default: infra --root, $INFRA_ROOT or .)."),
    ] = None,
) -> None:
    """Read every recorded resource live (read-only) and report in-sync / drifted /
    unverifiable. Exit 0 in sync, 3 drifted, 1 unverifiable or error, 2 invalid input."""
    if output not in ("text", "json"):
        _fail(f"--output must be one of text, json, not {output!r}")
    if every == (project is not None):
        _fail("give either --project P or --all")
    settings = _settings(root or _parent_root(ctx))
    engine = Engine(settings, load_observers=False)
    try:
        reports = _verify(engine, project, junit, parallel, [] if no_docs else _observers(engine))
    finally:
        engine.close()
    _report(reports, output, junit)


def _parent_root(ctx: typer.Context) -> Path | None:
    value = ctx.find_root().params.get("root")
    return value if isinstance(value, Path) else None


def _settings(root: Path | None) -> Settings:
    try:
        settings = load_settings(root)
        load_plugins(settings.plugins)
    except InfraError as exc:
        _fail(str(exc))
    return settings


def _observers(engine: Engine) -> list[Observer]:
    loaded = load_entry_point_observers(engine.settings.root, engine.db)
    for name, _, error in loaded:
        if error:
            err.print(f"warning: observer {name} not loaded: {error}", markup=False)
    return [observer for _, observer, _ in loaded if observer is not None]


def _verify(
    engine: Engine,
    project: str | None,
    junit: Path | None,
    parallel: int,
    observers: list[Observer],
) -> list[VerifyReport]:
    try:
        known = recorded_projects(engine)
    except InfraError as exc:
        _fail(str(exc), EXIT_ERROR)
    if project is not None and project not in known:
        _fail(f"--project: no applied run of {project!r} in the record (known: "
              f"{', '.join(known) or 'none'})")  # fmt: skip
    if junit is not None:
        try:
            check_report_path(junit)
        except ConfigurationError as exc:
            _fail(str(exc))
    verification = Verification(engine, observers=observers, parallel=parallel)
    try:
        return [verification.run(name) for name in ([project] if project else known)]
    except InfraError as exc:  # e.g. the recorded request no longer plans with this catalog
        _fail(str(exc), EXIT_ERROR)


def _report(reports: list[VerifyReport], output: str, junit: Path | None) -> None:
    if output == "json":
        typer.echo(json.dumps(redact(_json(reports)), indent=2, default=str))
    else:
        for report in reports:
            _text(report)
    if junit is not None:
        try:
            write_atomic(junit, junit_xml(reports))
        except OSError as exc:
            err.print(f"error: the JUnit report could not be written: {exc}", markup=False)
    raise typer.Exit(exit_code(reports))


def exit_code(reports: list[VerifyReport]) -> int:
    codes = {r.exit_code() for r in reports}
    if EXIT_DRIFTED in codes:
        return EXIT_DRIFTED
    return EXIT_ERROR if EXIT_ERROR in codes else 0


def _json(reports: list[VerifyReport]) -> dict[str, object]:
    return {"exit_code": exit_code(reports), "projects": [r.to_dict() for r in reports]}


def _text(report: VerifyReport) -> None:
    counts = report.counts()
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    out.print(
        f"[bold]{_esc(report.project)}[/]: [{STYLES[report.state.value]}]{report.state}[/]"
        f" ({summary or 'nothing to verify'}; {report.duration:.1f} s, {report.verify_id})"
    )
    if report.note:
        out.print(f"  {_esc(report.note)}")
    if report.error:
        out.print(f"  [red]error[/]: {_esc(str(redact(report.error)))}")
    for check in report.checks:
        style = STYLES[check.state.value]
        where = f" on {check.target}" if check.target else ""
        why = (
            f": {redact(check.reason)}"
            if check.reason and check.state is not SyncState.IN_SYNC
            else ""
        )
        out.print(
            f"  [{style}]{check.state:<12}[/] {_esc(check.step_id):<12} "
            f"{_esc(check.resource + where + str(why))}"
        )
    for check in report.checks:
        if check.state is SyncState.DRIFTED:
            out.print(f"[bold]{_esc(check.resource)}[/] on {_esc(check.target or '-')}:")
            out.print(str(redact(check.diff)), markup=False, highlight=False)


def _esc(text: str) -> str:
    from infra_automation.cli.render import escape  # here: infra_automation.cli imports us

    return escape(text)


def junit_xml(reports: list[VerifyReport]) -> str:
    """One testsuite per project, one testcase per resource: drifted -> <failure> with the
    diff, unverifiable -> <error> with the reason."""
    suites = ET.Element("testsuites", name="infra verify")
    for report in reports:
        suites.append(_suite(report))
    ET.indent(suites)
    return str(redact(ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"))


def _suite(report: VerifyReport) -> ET.Element:
    counts = report.counts()
    suite = ET.Element(
        "testsuite",
        name=f"verify:{report.project}",
        tests=str(len(report.checks)),
        failures=str(counts["drifted"]),
        errors=str(counts["unverifiable"]),
        skipped="0",
        time=f"{report.duration:.3f}",
        id=report.verify_id,
    )
    for check in report.checks:
        _case(suite, report.project, check)
    return suite


def _case(suite: ET.Element, project: str, check: ResourceCheck) -> None:
    where = f" on {check.target}" if check.target else ""
    case = ET.SubElement(
        suite,
        "testcase",
        classname=f"{project}.{check.department or 'other'}",
        name=f"{check.step_id}: {check.resource}{where}",
    )
    if check.state is SyncState.DRIFTED:
        failure = ET.SubElement(case, "failure", message=check.reason or "drifted", type="drifted")
        failure.text = check.diff
    elif check.state is SyncState.UNVERIFIABLE:
        kind = check.error_kind.value if check.error_kind else "unverifiable"
        ET.SubElement(case, "error", message=check.reason or "unverifiable", type=kind)


def _fail(message: str, code: int = EXIT_INVALID) -> NoReturn:
    err.print("error: " + str(redact(message)), style="red", markup=False)
    raise typer.Exit(code)


if __name__ == "__main__":  # python -m infra_automation.cli.verify (before the main CLI wires it)
    import logging

    for noisy in ("nornir", "paramiko", "netmiko", "pyVmomi", "urllib3"):  # as `infra` does
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    app()
