"""The dashboard's charts, from the figures: what the portal's ``/dashboard`` and a project's
quality page show (:mod:`infra_automation.metrics.charts` draws them).

- deliveries per day by outcome (applied runs that ended, by the day they started; weeks
  when the range is longer than :data:`MAX_COLUMNS` days);
- lead time (request -> done) p50 with p95 per project or per service;
- step durations and OLA waits per department, p50 with p95;
- incidents per department, open and resolved;
- the pools' headroom (:mod:`infra_automation.metrics.capacity`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from markupsafe import Markup

from infra_automation.metrics.capacity import Headroom, amount
from infra_automation.metrics.charts import Bar, Column, Meter, bars, columns, meters
from infra_automation.metrics.history import History
from infra_automation.metrics.quantiles import Spread
from infra_automation.metrics.report import FINAL, StatsReport

MAX_COLUMNS = 45
P50_P95 = (("primary", "p50"), ("text", "p95 (tick)"))


def duration_text(seconds: float | None) -> str:
    """``1h 39m``, ``57m``, ``42s``, ``2d 3h``; ``-`` without a value."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m"]
    if days:
        parts[2] = ""
    return " ".join(p for p in parts if p) or "0m"


@dataclass(frozen=True)
class Kpi:
    id: str
    label: str
    value: str


def kpis(report: StatsReport) -> list[Kpi]:
    """The headline figures of the range."""
    t = report.totals
    d = t.dora
    return [
        Kpi("kpi-done", "Deliveries done", f"{t.done} / {t.deliveries}"),
        Kpi("kpi-lead", "Lead time p50", duration_text(t.lead_time.p50)),
        Kpi("kpi-frequency", "Deployments per day", f"{d.per_day:.2f}"),
        Kpi("kpi-fail-rate", "Change fail rate", _percent(d.change_fail_rate)),
        Kpi("kpi-recovery", "Recovery p50", duration_text(d.failed_deployment_recovery_time.p50)),
        Kpi("kpi-incidents", "Incidents open", f"{t.incidents_open} of {t.incidents}"),
        Kpi("kpi-breaches", "SLA breaches", str(t.breaches)),
    ]


def deliveries_chart(history: History, since: datetime, until: datetime) -> Markup:
    """Applied runs that ended in the range, per day (or week) they started, by outcome."""
    step = 1 if (until - since).days <= MAX_COLUMNS else 7
    first = since.date()
    done: Counter[date] = Counter()
    failed: Counter[date] = Counter()
    for run in history.applied:
        if run.status in FINAL and since <= run.started_at < until:
            day = first + timedelta(days=(run.started_at.date() - first).days // step * step)
            (done if run.status == "success" else failed)[day] += 1
    if not done and not failed:
        return columns("chart-deliveries", "Deliveries per day", [], ())
    day, items = first, []
    while day <= until.date():
        items.append(Column(day.isoformat(), (("success", done[day]), ("failed", failed[day]))))
        day += timedelta(days=step)
    title = "Deliveries per day" if step == 1 else "Deliveries per week"
    legend = (("success", "succeeded"), ("failed", "failed"))
    return columns("chart-deliveries", title, items, legend)


def lead_time_chart(report: StatsReport, by: str = "project") -> Markup:
    """Request -> done, p50 and p95, per project (or ``by="service"``)."""
    scope = report.projects if by == "project" else report.services
    items = [_spread_bar(name, f.lead_time) for name, f in scope.items() if f.lead_time.count]
    return bars("chart-lead-time", f"Lead time per {by}", items, duration_text, legend=P50_P95)


def step_chart(report: StatsReport) -> Markup:
    items = [
        _spread_bar(name, f.step_duration)
        for name, f in report.departments.items()
        if f.step_duration.count
    ]
    return bars("chart-steps", "Step duration per department", items, duration_text, legend=P50_P95)


def waiting_chart(report: StatsReport) -> Markup:
    items = [
        _spread_bar(name, f.waiting) for name, f in report.departments.items() if f.waiting.count
    ]
    title = "Waiting on each department (OLA clock)"
    return bars("chart-waiting", title, items, duration_text, legend=P50_P95)


def incidents_chart(report: StatsReport) -> Markup:
    items = [
        Column(name, (("failed", f.incidents_open), ("success", f.incidents - f.incidents_open)))
        for name, f in report.departments.items()
        if f.incidents
    ]
    legend = (("failed", "open"), ("success", "resolved"))
    return columns("chart-incidents", "Incidents per department", items, legend, height=180)


def capacity_chart(headroom: Headroom) -> Markup:
    items = [
        Meter(
            pool.id,
            pool.used,
            pool.capacity,
            f"{amount(pool.used, pool.unit)} of {amount(pool.capacity, pool.unit)}",
        )
        for pool in headroom.pools
    ]
    return meters("chart-capacity", "Capacity used per pool", items)


def charts(
    report: StatsReport, history: History, headroom: Headroom | None = None
) -> Mapping[str, Markup]:
    """Every chart of the dashboard, by id."""
    found = {
        "chart-deliveries": deliveries_chart(history, report.since, report.until),
        "chart-lead-time": lead_time_chart(report),
        "chart-steps": step_chart(report),
        "chart-waiting": waiting_chart(report),
        "chart-incidents": incidents_chart(report),
    }
    if headroom is not None:
        found["chart-capacity"] = capacity_chart(headroom)
    return found


def _spread_bar(label: str, spread: Spread) -> Bar:
    return Bar(label, spread.p50 or 0.0, spread.p95)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"
