"""JUnit XML of a run for CI/CD pipelines: one testcase per step."""

from __future__ import annotations

import contextlib
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from infra_automation.exceptions import ConfigurationError
from infra_automation.files import write_atomic
from infra_automation.planner import Plan
from infra_automation.results import RunResult, Status


def junit_xml(result: RunResult, plan: Plan) -> str:
    """``<testsuite>`` named after the service; failed -> <failure>, skipped -> <skipped>."""
    steps = result.steps
    suite = ET.Element(
        "testsuite",
        name=f"{plan.service}:{plan.project}",
        tests=str(len(plan.steps)),
        failures=str(len(result.failed_steps)),
        skipped=str(len(result.skipped_steps)),
        errors="0",
        time=f"{sum((r.duration or 0.0) for r in steps.values()):.3f}",
        id=result.run_id,
    )
    for step in plan.steps:
        res = steps.get(step.id)
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{plan.service}.{step.department}",
            name=step.id,
            time=f"{(res.duration or 0.0) if res else 0.0:.3f}",
        )
        if res is None:
            ET.SubElement(case, "skipped", message="never started")
        elif res.status is Status.FAILED:
            kind = res.error_kind.value if res.error_kind else "internal"
            failure = ET.SubElement(case, "failure", message=res.error or "failed", type=kind)
            failure.text = res.diff or res.error or ""
        elif res.status is Status.SKIPPED:
            ET.SubElement(case, "skipped", message=res.error or "skipped")
        elif res.diff:
            ET.SubElement(case, "system-out").text = res.diff
    suites = ET.Element("testsuites", name="infra")
    suites.append(suite)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def check_report_path(path: Path) -> None:
    """Refuse, before a run, a path where the report could not be written: a folder, a path
    under a file, a folder that cannot be created or written. Creates missing parent folders
    and leaves nothing else behind."""
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)
    except OSError as exc:
        raise ConfigurationError(
            f"--junit {path}: the report cannot be written there ({exc.strerror or exc})"
        ) from exc


def write_junit(path: Path, result: RunResult, plan: Plan) -> None:
    """Write the report atomically (a reader never sees half of it)."""
    write_atomic(path, junit_xml(result, plan))
