"""Every department of the catalog has a queue before anything waits on one.

Without ``[queues]`` in ``infra.toml`` a department's steps go to the queue of its own name,
and ``infra worker`` without ``--queues`` serves them all. With ``[queues]`` the operator
routes departments to the queues their workers serve (``infra worker --queues ...``); a
department the map leaves out would fall back to a queue of its own name that no worker was
told to serve, and its steps would wait there for ever. So with ``[queues]`` every department
the catalog uses must be mapped (``dba = "dba"`` keeps its own name): a worker or scheduler
refuses to start, and a submission with a broker (``infra apply``, ``infra resume``, the
server's ``POST /requests/submit``) is refused, with a :class:`ConfigurationError` (exit 2)
naming each department, the services that use it and the key to add.

No Celery here: the server imports this without the ``workers`` extra.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from infra_automation.catalog import Catalog, Service
from infra_automation.config import CONFIG_FILE, Settings
from infra_automation.exceptions import ConfigurationError
from infra_automation.planner import Plan


def departments_of(services: Iterable[Service]) -> dict[str, list[str]]:
    """Department -> the services whose steps it runs (sorted)."""
    used: dict[str, set[str]] = {}
    for service in services:
        for step in service.steps:
            used.setdefault(step.department, set()).add(service.name)
    return {dept: sorted(names) for dept, names in used.items()}


def unmapped(settings: Settings, used: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The departments of ``used`` that ``[queues]`` maps to no queue (none when there is
    no ``[queues]``: every department's queue is then its own name)."""
    if not settings.queues:
        return {}
    return {d: sorted(used[d]) for d in sorted(used) if d not in settings.queues}


def require_mapped(settings: Settings, used: Mapping[str, Iterable[str]]) -> None:
    """ConfigurationError naming every department of ``used`` that has no queue."""
    missing = unmapped(settings, used)
    if not missing:
        return
    named = "; ".join(f"{d!r} (steps of {', '.join(s)})" for d, s in missing.items())
    first = next(iter(missing))
    raise ConfigurationError(
        f"queues: [queues] of {CONFIG_FILE} maps no queue for department {named}: its steps "
        f"would wait on a queue no worker is told to serve; add each under [queues], e.g. "
        f'{first} = "{first}" for a queue of its own name'
    )


def require_catalog_mapped(settings: Settings, catalog: Catalog) -> None:
    """Every department of the catalog has a queue (a worker's or a scheduler's start)."""
    require_mapped(settings, departments_of(catalog.services.values()))


def require_plan_mapped(settings: Settings, plan: Plan) -> None:
    """Every department of the plan's steps has a queue (a submission with a broker)."""
    require_mapped(settings, {s.department: [plan.request.service] for s in plan.steps})
