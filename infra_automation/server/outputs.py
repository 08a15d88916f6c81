"""The service outputs of a recorded run, as ``infra apply`` prints them after a local run:
the catalog's ``outputs`` expressions over the outputs its steps recorded (already redacted
in the record), with the run's recorded request."""

from __future__ import annotations

from typing import Any

from infra_automation.engine import Engine
from infra_automation.exceptions import CatalogError
from infra_automation.planner import Plan
from infra_automation.record import RunRecord, recorded_result
from infra_automation.request import Request
from infra_automation.results import RunResult
from infra_automation.summary import service_outputs


def of_run(engine: Engine, run: RunRecord) -> dict[str, Any]:
    """Each output of the run's service (None while its steps have not succeeded); nothing
    for a service the catalog no longer has."""
    try:
        service = engine.catalog().get(run.service)
    except CatalogError:
        return {}
    if not service.outputs:
        return {}
    recorded = run.request
    request = Request(
        service=run.service,
        project=run.project,
        params=dict(recorded.get("params") or {}),
        requester=run.requester,
        inventory=recorded.get("inventory"),
    )
    done = {s.step_id: recorded_result(s) for s in run.steps if s.status == "success"}
    result = RunResult(run_id=run.id, project=run.project, check=run.check, steps=done)
    return service_outputs(service, Plan(request, ()), result)
