"""A service's own outputs: expressions over its steps' outputs, rendered after a run.

Like a Terraform ``output``: the catalog says what the requester gets back (the site URL,
where the docs are), and ``infra apply`` prints it (``--output json`` includes it).
"""

from __future__ import annotations

from typing import Any

from infra_automation.catalog import Service
from infra_automation.exceptions import RenderError
from infra_automation.planner import Plan
from infra_automation.render import render_value
from infra_automation.results import RunResult, Status
from infra_automation.scheduler import base_variables


def service_outputs(service: Service, plan: Plan, result: RunResult) -> dict[str, Any]:
    """Render ``service.outputs``; an output whose steps did not succeed is ``None``."""
    outputs = {sid: r.outputs for sid, r in result.steps.items() if r.status is Status.SUCCESS}
    variables = base_variables(plan, outputs)
    values: dict[str, Any] = {}
    for name, expression in service.outputs.items():
        try:
            values[name] = render_value(expression, variables, f"outputs.{name}")
        except RenderError:
            values[name] = None
    return values
