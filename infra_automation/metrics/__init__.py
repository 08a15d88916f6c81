"""Service levels from the record: incidents, lead times, OLA clocks, DORA, SLA breaches.

- :mod:`~infra_automation.metrics.history` — what is read from the record (runs, steps,
  requests, change records, verifications, acknowledgements) and grouped into deliveries;
- :mod:`~infra_automation.metrics.incidents` — failed runs and drift as incidents;
- :mod:`~infra_automation.metrics.clock` — the OLA clock of each step and department;
- :mod:`~infra_automation.metrics.dora` — DORA's five metrics (definitions cited there);
- :mod:`~infra_automation.metrics.sla` — targets (``sla.yml``) and breaches;
- :mod:`~infra_automation.metrics.report` — the figures per project, service, department;
- :mod:`~infra_automation.metrics.store` — acknowledgements (the one table added);
- :mod:`~infra_automation.metrics.prometheus` — the ``/metrics`` exposition;
- :mod:`~infra_automation.metrics.api` — ``GET /api/v1/stats``, incidents, ``/metrics``.
"""

from infra_automation.metrics.history import History, load_history
from infra_automation.metrics.incidents import Incident, derive_incidents
from infra_automation.metrics.report import StatsReport, compute_stats
from infra_automation.metrics.sla import SLA_FILE, Breach, Targets, load_targets, parse_targets
from infra_automation.metrics.store import (
    add_acknowledgement,
    create_metrics_tables,
    metadata,
)

__all__ = [
    "SLA_FILE",
    "Breach",
    "History",
    "Incident",
    "StatsReport",
    "Targets",
    "add_acknowledgement",
    "compute_stats",
    "create_metrics_tables",
    "derive_incidents",
    "load_history",
    "load_targets",
    "metadata",
    "parse_targets",
]
