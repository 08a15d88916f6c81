"""The SVG charts (well-formed, escaped, a mark per item with its value) and the docs' quality
section on the hand-made history (its figures are the project's figures of compute_stats)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

from history_fixture import SINCE, UNTIL
from sqlalchemy import Engine

from infra_automation.docs.quality import quality
from infra_automation.docs.safety import MARKDOWN_HELPERS
from infra_automation.metrics import compute_stats, load_history
from infra_automation.metrics.charts import Bar, Column, Meter, bars, columns, meters
from infra_automation.metrics.history import History, RunFact
from infra_automation.metrics.panels import deliveries_chart, duration_text
from infra_automation.render import package_templates, render_template

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 - SVG our own code made, not untrusted input


def marks(svg: str) -> list[ET.Element]:
    return [g for g in _parse(svg).iter(f"{NS}g") if "data-label" in g.attrib]


def test_bars_escape_their_labels_and_carry_their_values() -> None:
    svg = str(bars("c1", "Lead <time>", [Bar("<script>x</script>", 90.0, 300.0), Bar("b", 30)],
                   duration_text))  # fmt: skip
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    found = marks(svg)
    assert [(g.attrib["data-label"], float(g.attrib["data-value"])) for g in found] == [
        ("<script>x</script>", 90.0), ("b", 30.0),
    ]  # fmt: skip
    widths = [float(r.attrib["width"]) for r in _parse(svg).iter(f"{NS}rect")
              if r.attrib.get("class") == "bar"]  # fmt: skip
    assert widths[0] == 3 * widths[1] or abs(widths[0] - 3 * widths[1]) < 0.2  # to scale


def test_an_empty_chart_says_so() -> None:
    svg = str(columns("c2", "Deliveries", [], ()))
    assert _parse(svg).attrib["data-points"] == "0" and "No data" in svg


def test_columns_stack_their_parts_and_meters_colour_by_share() -> None:
    svg = str(columns("c3", "D", [Column("2026-11-02", (("success", 2), ("failed", 1)))],
                      (("success", "ok"), ("failed", "failed"))))  # fmt: skip
    (column,) = marks(svg)
    assert float(column.attrib["data-value"]) == 3
    assert [r.attrib["class"] for r in column.iter(f"{NS}rect")] == [
        "bar part-success", "bar part-failed",
    ]  # fmt: skip
    full = str(meters("c4", "P", [Meter("mem", 95, 100, "95 of 100"), Meter("v", 1, 100, "1")]))
    fills = [r.attrib["fill"] for r in _parse(full).iter(f"{NS}rect")
             if r.attrib.get("class") == "bar"]  # fmt: skip
    assert fills == ["#c0392b", "#1f8a4c"]  # red when 90% used, green when little


def test_deliveries_are_counted_per_day_then_per_week() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    runs = tuple(
        RunFact(f"r{i}", "s", "p", False, "success" if i % 3 else "failed", None,
                start + timedelta(days=i), start + timedelta(days=i), start + timedelta(days=i))
        for i in range(60)
    )  # fmt: skip
    history = History(since=start, until=start + timedelta(days=60), runs=runs)
    weekly = marks(str(deliveries_chart(history, start, start + timedelta(days=60))))
    assert sum(float(g.attrib["data-value"]) for g in weekly) == 60 and len(weekly) == 9
    daily = marks(str(deliveries_chart(history, start, start + timedelta(days=10))))
    assert [float(g.attrib["data-value"]) for g in daily] == [1.0] * 10 + [0.0]


def test_the_quality_section_shows_the_projects_figures(history_db: Engine, tmp_path: Path) -> None:
    found = quality(tmp_path, "alpha", db=history_db, now=UNTIL)["quality"]
    report = compute_stats(load_history(history_db, UNTIL - timedelta(days=90), UNTIL))
    alpha = report.projects["alpha"]
    assert (found["deliveries"], found["done"]) == (alpha.deliveries, alpha.done)
    assert found["lead_p50"] == duration_text(alpha.lead_time.p50)
    assert [i["id"] for i in found["incidents"]] == ["run:a1"]
    assert found["incidents"][0]["resolution"] == duration_text(99 * 60.0)
    page = render_template(package_templates(), "docs/_quality.md.j2",
                           {**MARKDOWN_HELPERS, "project": "alpha", "quality": found})  # fmt: skip
    assert (
        "## Quality" in page and f"| Deliveries done | {alpha.done} of {alpha.deliveries} |" in page
    )
    assert "`run:a1`" in page and 'id="chart-steps"' in page
    assert SINCE < UNTIL


def test_a_record_that_cannot_be_read_leaves_a_sentence(tmp_path: Path) -> None:
    (tmp_path / "infra.toml").write_text('database_url = "postgresql+psycopg://x@127.0.0.1:1/n"\n')
    found = quality(tmp_path, "alpha")["quality"]
    page = render_template(package_templates(), "docs/_quality.md.j2",
                           {**MARKDOWN_HELPERS, "project": "alpha", "quality": found})  # fmt: skip
    assert "Service levels not available" in page
