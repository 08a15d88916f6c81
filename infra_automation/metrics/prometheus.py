"""Prometheus metrics of the record, read at each scrape (``prometheus-client``).

:class:`RecordCollector` reads the shared database, so the server and every worker expose
the same figures whichever process ran what (a scrape during a run shows its steps
``running``, by department):

- ``infra_runs{status, check}`` — runs in the record by status (``interrupted``: running
  without a live lease);
- ``infra_steps{status, department}`` — steps by status and department;
- ``infra_step_duration_seconds{department}`` — histogram of the durations of the steps that
  ran in applied runs (not dry runs, not reused);
- ``infra_incidents_open{department, source}`` — incidents opened in the last 30 days and
  not resolved (:mod:`~infra_automation.metrics.incidents`);
- ``infra_queue_depth`` — runs submitted to the workers and not started;
- ``infra_leases_expired`` — leases past their expiry (a holder that died), still in the table.

:func:`exposition` renders them in the text format (the server's ``/api/v1/metrics``);
:func:`serve_metrics` serves them from a thread of this process on ``127.0.0.1:PORT``
(``infra worker --metrics-port PORT``: ``/metrics`` of each worker, the same families).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from wsgiref.simple_server import WSGIServer

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import Engine
from sqlalchemy.engine import Connection

from infra_automation.events import utcnow
from infra_automation.exceptions import ConfigurationError, RecordError
from infra_automation.metrics.history import load_history
from infra_automation.metrics.incidents import derive_incidents
from infra_automation.record import describe_failure, leases, live_runs, runs, steps

BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
INCIDENT_WINDOW = timedelta(days=30)


class RecordCollector:
    """A custom collector (``registry.register(RecordCollector(engine))``)."""

    def __init__(self, engine: Engine, *, incident_window: timedelta = INCIDENT_WINDOW) -> None:
        self.engine = engine
        self.incident_window = incident_window

    def collect(self) -> Iterator[Metric]:
        try:
            with self.engine.connect() as conn:
                found = [
                    _runs(conn),
                    _steps(conn),
                    _durations(conn),
                    _queue(conn),
                    _expired(conn),
                ]
        except sa.exc.SQLAlchemyError as exc:
            raise RecordError(describe_failure(exc, self.engine, "read the run record")) from None
        yield from found
        yield self._incidents()

    def _incidents(self) -> Metric:
        family = GaugeMetricFamily(
            "infra_incidents_open",
            "Incidents not resolved (opened in the last 30 days)",
            labels=["department", "source"],
        )
        history = load_history(self.engine, utcnow() - self.incident_window)
        counts = Counter((i.department, i.source) for i in derive_incidents(history) if i.open)
        for (department, source), n in sorted(counts.items()):
            family.add_metric([department, source], n)
        return family


def _runs(conn: Connection) -> Metric:
    family = GaugeMetricFamily(
        "infra_runs", "Runs in the record by status", labels=["status", "check"]
    )
    query = sa.select(runs.c.status, runs.c.check_mode, sa.func.count()).group_by(
        runs.c.status, runs.c.check_mode
    )
    counts: Counter[tuple[str, str]] = Counter()
    for status, check, n in conn.execute(query):
        counts[(status, str(bool(check)).lower())] += n
    dead = _dead_runs(conn)
    for check, n in dead.items():
        counts[("running", check)] -= n
        counts[("interrupted", check)] += n
    for (status, check), n in sorted(counts.items()):
        family.add_metric([status, check], n)
    return family


def _dead_runs(conn: Connection) -> Counter[str]:
    live = live_runs(conn)
    query = sa.select(runs.c.id, runs.c.check_mode).where(runs.c.status == "running")
    return Counter(
        str(bool(check)).lower() for rid, check in conn.execute(query) if rid not in live
    )


def _steps(conn: Connection) -> Metric:
    family = GaugeMetricFamily(
        "infra_steps",
        "Steps in the record by status and department",
        labels=["status", "department"],
    )
    query = sa.select(steps.c.status, steps.c.department, sa.func.count()).group_by(
        steps.c.status, steps.c.department
    )
    for status, department, n in conn.execute(query):
        family.add_metric([status, department], n)
    return family


def _durations(conn: Connection) -> Metric:
    family = HistogramMetricFamily(
        "infra_step_duration_seconds", "Durations of the steps that ran", labels=["department"]
    )
    d = steps.c.duration
    columns = [sa.func.sum(sa.case((d <= b, 1), else_=0)) for b in BUCKETS]
    query = (
        sa.select(steps.c.department, sa.func.count(), sa.func.sum(d), *columns)
        .join(runs, runs.c.id == steps.c.run_id)
        .where(d.is_not(None), steps.c.reused.is_(False), runs.c.check_mode.is_(False))
        .group_by(steps.c.department)
    )
    for department, count, total, *cumulative in conn.execute(query):
        buckets = [(str(b), int(n or 0)) for b, n in zip(BUCKETS, cumulative, strict=True)]
        family.add_metric([department], [*buckets, ("+Inf", int(count))], float(total or 0))
    return family


def _queue(conn: Connection) -> Metric:
    n = conn.execute(sa.select(sa.func.count()).where(runs.c.status == "queued")).scalar_one()
    return GaugeMetricFamily("infra_queue_depth", "Runs submitted, not started", value=n)


def _expired(conn: Connection) -> Metric:
    query = sa.select(sa.func.count()).where(leases.c.expires_at <= utcnow())
    n = conn.execute(query).scalar_one()
    return GaugeMetricFamily("infra_leases_expired", "Leases past their expiry", value=n)


def exposition(
    engine: Engine, *, incident_window: timedelta = INCIDENT_WINDOW
) -> tuple[bytes, str]:
    """The metrics of the record in Prometheus' text format, and its content type."""
    return generate_latest(_registry(engine, incident_window)), CONTENT_TYPE_LATEST


def serve_metrics(
    engine: Engine,
    port: int,
    *,
    host: str = "127.0.0.1",
    incident_window: timedelta = INCIDENT_WINDOW,
) -> WSGIServer:
    """Serve the record's metrics at ``http://host:port/metrics`` (prometheus-client's
    exposition, read at each scrape) from a daemon thread of this process; the server is
    returned (``shutdown()`` stops it). :class:`ConfigurationError` when the port cannot be
    bound (in use, or privileged)."""
    registry = _registry(engine, incident_window)
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {reason}") from None
    return server


def _registry(engine: Engine, incident_window: timedelta) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecordCollector(engine, incident_window=incident_window))
    return registry
