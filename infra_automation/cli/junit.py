"""JUnit XML of a run for CI/CD pipelines: one testcase per step."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

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


def write_junit(path: Path, result: RunResult, plan: Plan) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(result, plan))
