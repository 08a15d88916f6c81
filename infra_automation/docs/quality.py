"""The quality section of a project's docs: its service levels over the last 90 days.

:func:`quality` reads the run record (the settings' database of the project root) and
computes the project's figures as ``infra stats --project P --since 90d`` does
(:mod:`infra_automation.metrics`): deliveries done and their lead time, the success rate of
its deployments and DORA's figures, its incidents (responded, resolved, open) and SLA
breaches against ``sla.yml``, step durations and OLA waits per department, with a chart of
the step durations. The index page shows it (template ``docs/_quality.md.j2``, included with
``ignore missing`` so a project's own docs templates need not have it).

The record is read through one engine per database URL (kept: pages are rewritten after
every step). A record that cannot be read leaves the section saying so; the docs are still
written.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from infra_automation.config import load_settings
from infra_automation.events import utcnow
from infra_automation.exceptions import InfraError
from infra_automation.metrics import compute_stats, load_history, load_targets
from infra_automation.metrics.panels import duration_text, step_chart
from infra_automation.metrics.report import Figures, StatsReport
from infra_automation.metrics.sla import SLA_FILE
from infra_automation.record import open_database

log = logging.getLogger(__name__)
WINDOW = timedelta(days=90)
ENGINES_KEPT = 4
_engines: OrderedDict[str, Engine] = OrderedDict()
_lock = threading.Lock()


def quality(
    root: Path, project: str, *, db: Engine | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """The variables of the quality section (``quality``): figures, tables, a chart; with
    ``error`` (and no figures) when the record cannot be read."""
    end = now or utcnow()
    try:
        engine = db or _engine(root)
        history = load_history(engine, end - WINDOW, end, project=project)
        report = compute_stats(history, load_targets(root / SLA_FILE))
    except (InfraError, OSError) as exc:
        log.warning("docs: quality of %s not computed: %s", project, exc)
        return {"quality": {"error": str(exc), "days": WINDOW.days}}
    return {"quality": section(report, project)}


def section(report: StatsReport, project: str) -> dict[str, Any]:
    """What ``docs/_quality.md.j2`` shows of ``report`` for ``project``."""
    figures: Figures = report.projects.get(project) or report.totals
    dora = figures.dora
    fail_rate = dora.change_fail_rate
    return {
        "days": WINDOW.days,
        "since": report.since.isoformat(timespec="minutes"),
        "deliveries": figures.deliveries,
        "done": figures.done,
        "lead_p50": duration_text(figures.lead_time.p50),
        "lead_p95": duration_text(figures.lead_time.p95),
        "deployments": dora.deployments,
        "success_rate": _percent(None if fail_rate is None else 1 - fail_rate),
        "change_fail_rate": _percent(fail_rate),
        "recovery_p50": duration_text(dora.failed_deployment_recovery_time.p50),
        "rework_rate": _percent(dora.rework_rate),
        "incidents": [_incident(i) for i in report.incidents if i.project == project],
        "incident_response_p50": duration_text(figures.incident_response.p50),
        "incident_resolution_p50": duration_text(figures.incident_resolution.p50),
        "breaches": [_breach(b) for b in report.breaches if b.project == project],
        "departments": [
            {
                "name": name,
                "steps": f.steps,
                "failed": f.failed_steps,
                "step_p50": duration_text(f.step_duration.p50),
                "step_p95": duration_text(f.step_duration.p95),
                "waiting_p50": duration_text(f.waiting.p50),
            }
            for name, f in report.departments.items()
        ],
        "chart": step_chart(report) if report.departments else "",
    }


def _incident(incident: Any) -> dict[str, str]:
    return {
        "id": incident.id,
        "department": incident.department or "-",
        "opened": incident.opened_at.isoformat(timespec="minutes"),
        "response": duration_text(incident.response_time),
        "resolution": duration_text(incident.resolution_time) if incident.resolved_at else "open",
    }


def _breach(breach: Any) -> dict[str, str]:
    cause = breach.incident_id or f"run {breach.run_id}"
    if breach.step_id:
        cause += f" step {breach.step_id}"
    return {
        "kind": breach.kind,
        "department": breach.department or "-",
        "target": duration_text(breach.target),
        "actual": duration_text(breach.actual) + (" (ongoing)" if breach.ongoing else ""),
        "cause": cause,
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _engine(root: Path) -> Engine:
    """The record of ``root``'s settings, one engine per URL (the oldest disposed)."""
    settings = load_settings(root)
    url = settings.database_url
    with _lock:
        found = _engines.get(url)
        if found is not None:
            _engines.move_to_end(url)
            return found
    engine = open_database(url, timeout=settings.database_timeout)
    with _lock:
        _engines[url] = engine
        while len(_engines) > ENGINES_KEPT:
            _, old = _engines.popitem(last=False)
            old.dispose()
    return engine
