"""DORA's five software delivery performance metrics, computed from our record.

Definitions used (DORA, "DORA's software delivery performance metrics", Nathen Harvey,
https://dora.dev/guides/dora-metrics, read 2026-12; five metrics since the 2024/2025
reports, rework rate being the fifth):

- *Change lead time*: "the amount of time it takes for a change to go from committed to
  version control to deployed in production".
- *Deployment frequency*: "the number of deployments over a given period or the time
  between deployments".
- *Failed deployment recovery time*: "the time it takes to recover from a deployment that
  fails and requires immediate intervention".
- *Change fail rate*: "the ratio of deployments that require immediate intervention
  following a deployment", likely a rollback or a hotfix.
- *Deployment rework rate*: "the ratio of deployments that are unplanned but happen as a
  result of an incident in production".

How they map onto the record:

- a **deployment** is an applied (not check-mode) run that finished — a resume is a
  deployment of its own; a deployment *fails* when the run fails or is interrupted (it needs
  someone to resume or repair it: immediate intervention);
- a change is **committed** when its change record is written (the hashed dry run the
  approvers approve, :mod:`infra_automation.changes`), or, without one, when its first run was
  requested; it is **deployed** when a run of its delivery succeeds — so change lead time is
  measured per delivery, from that commit to that success;
- **recovery** from a failed deployment is the ``run:`` incident it opened
  (:mod:`~infra_automation.metrics.incidents`): from the failed run's finish to the finish
  of the run of the same project and service that succeeded next;
- a deployment is **rework** when it was requested while an incident of its project (a failed
  run, or drift found by verify) was open: a resume, a rerun or a repair.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from infra_automation.metrics.history import Delivery, RunFact
from infra_automation.metrics.incidents import Incident
from infra_automation.metrics.quantiles import Spread, ratio, spread

DAY = 86400.0


@dataclass(frozen=True)
class Dora:
    deployments: int
    per_day: float
    change_lead_time: Spread
    change_fail_rate: float | None
    failed_deployment_recovery_time: Spread
    rework_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "deployment_frequency": {
                "deployments": self.deployments,
                "per_day": self.per_day,
                "per_week": self.per_day * 7,
            },
            "change_lead_time": self.change_lead_time.to_dict(),
            "change_fail_rate": self.change_fail_rate,
            "failed_deployment_recovery_time": self.failed_deployment_recovery_time.to_dict(),
            "rework_rate": self.rework_rate,
        }


def dora(
    deployments: Sequence[RunFact],
    deliveries: Sequence[Delivery],
    incidents: Sequence[Incident],
    rework: Collection[str],
    days: float,
    *,
    lead_time: Spread | None = None,
) -> Dora:
    """The five metrics of ``deployments`` (and their deliveries and incidents) over
    ``days``; ``rework``: the ids of the runs that are rework (:func:`during_incident`);
    ``lead_time``: the spread of the deliveries' lead times when already known."""
    if lead_time is None:
        done = [(d.done_at, d.requested_at) for d in deliveries if d.done_at is not None]
        lead_time = spread([(end - start).total_seconds() for end, start in done])
    recovered = [i.resolution_time for i in incidents if i.source == "run"]
    failed = sum(1 for r in deployments if r.failed)
    reworked = sum(1 for r in deployments if r.id in rework)
    return Dora(
        deployments=len(deployments),
        per_day=len(deployments) / days if days > 0 else 0.0,
        change_lead_time=lead_time,
        change_fail_rate=ratio(failed, len(deployments)),
        failed_deployment_recovery_time=spread([t for t in recovered if t is not None]),
        rework_rate=ratio(reworked, len(deployments)),
    )


def during_incident(run: RunFact, incidents: Sequence[Incident]) -> bool:
    """Whether ``run`` was requested while one of ``incidents`` (of its project) was open."""
    at = run.requested_at
    return any(
        i.opened_at <= at and (i.resolved_at is None or at <= i.resolved_at) for i in incidents
    )
