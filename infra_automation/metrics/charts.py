"""Charts of the figures as SVG, drawn on the server (no picture library, no CDN, no script).

Three shapes, each one ``<svg class="chart">`` with an ``id``, a ``<title>`` per mark (the
tooltip a browser shows) and ``data-*`` attributes a test can read (``data-label``,
``data-value``); every text goes through :func:`markupsafe.escape`, colours are presentation
attributes (the SVG needs no stylesheet, in the portal as in a Markdown page):

- :func:`bars`: horizontal bars, one per label, with an optional second marker (p95 beside
  p50, capacity beside use);
- :func:`columns`: stacked columns over time (deliveries per day by outcome);
- :func:`meters`: share-of-capacity meters (the pools' headroom).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

COLOURS = {
    "primary": "#2456b3",
    "secondary": "#9db5e6",
    "success": "#1f8a4c",
    "failed": "#c0392b",
    "warning": "#d68910",
    "muted": "#8e8e8e",
    "grid": "#d5dae3",
    "text": "#1d2433",
}
FONT = 'font-family="system-ui, sans-serif" font-size="12"'
Format = Callable[[float], str]


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    second: float | None = None  # drawn as a tick (e.g. p95 when value is p50)
    colour: str = "primary"


@dataclass(frozen=True)
class Column:
    label: str
    parts: tuple[tuple[str, float], ...]  # (colour key, value), stacked bottom to top

    @property
    def total(self) -> float:
        return sum(v for _, v in self.parts)


@dataclass(frozen=True)
class Meter:
    label: str
    used: float
    capacity: float
    text: str  # e.g. "4096 of 12286 MiB"

    @property
    def share(self) -> float:
        return min(self.used / self.capacity, 1.0) if self.capacity > 0 else 0.0


def _open(chart_id: str, title: str, width: int, height: int, count: int) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{escape(chart_id)}" '
        f'role="img" aria-label="{escape(title)}" data-points="{count}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">'
        f'<text x="0" y="14" {FONT} font-weight="600" fill="{COLOURS["text"]}">'
        f"{escape(title)}</text>"
    )


def _empty(chart_id: str, title: str, width: int) -> Markup:
    body = _open(chart_id, title, width, 44, 0) + (
        f'<text class="empty" x="0" y="36" {FONT} fill="{COLOURS["muted"]}">'
        "No data in this range.</text></svg>"
    )
    return Markup(body)  # noqa: S704 - every text in it went through escape()


def bars(
    chart_id: str,
    title: str,
    items: Sequence[Bar],
    fmt: Format,
    *,
    width: int = 560,
    legend: Sequence[tuple[str, str]] = (),
) -> Markup:
    """Horizontal bars; ``legend``: (colour key, meaning), e.g. the bar p50, the tick p95."""
    if not items:
        return _empty(chart_id, title, width)
    label_w, row, top = 150, 24, 28 + (18 if legend else 0)
    plot = width - label_w - 90
    top_value = max(max(i.value, i.second or 0.0) for i in items) or 1.0
    height = top + row * len(items) + 6
    parts = [_open(chart_id, title, width, height, len(items))]
    if legend:
        parts.append(_legend(legend, 32))
    for n, item in enumerate(items):
        y = top + n * row
        w = max(item.value / top_value * plot, 1.0 if item.value > 0 else 0.0)
        shown = fmt(item.value) + (f" / {fmt(item.second)}" if item.second is not None else "")
        tip = f"{item.label}: {shown}"
        parts.append(
            f'<g class="mark" data-label="{escape(item.label)}" data-value="{item.value:.12g}">'
            f"<title>{escape(tip)}</title>"
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" {FONT} '
            f'fill="{COLOURS["text"]}">{escape(_short(item.label, 22))}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" '
            f'rx="2" fill="{COLOURS.get(item.colour, COLOURS["primary"])}"/>'
        )
        if item.second is not None:
            x = label_w + item.second / top_value * plot
            parts.append(
                f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{y + 1}" y2="{y + row - 3}" '
                f'stroke="{COLOURS["text"]}" stroke-width="2"/>'
            )
        end = label_w + max(w, (item.second or 0) / top_value * plot) + 6
        parts.append(
            f'<text x="{end:.1f}" y="{y + 15}" {FONT} fill="{COLOURS["muted"]}">'
            f"{escape(shown)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def columns(
    chart_id: str,
    title: str,
    items: Sequence[Column],
    legend: Sequence[tuple[str, str]],
    *,
    width: int = 560,
    height: int = 200,
) -> Markup:
    """Stacked columns, left to right; ``legend``: (colour key, what it counts)."""
    if not items:
        return _empty(chart_id, title, width)
    top, bottom, left = 46, 34, 34
    plot_h, plot_w = height - top - bottom, width - left - 10
    peak = max(c.total for c in items) or 1.0
    slot = plot_w / len(items)
    parts = [_open(chart_id, title, width, height, len(items)), _legend(legend, 32)]
    base = top + plot_h
    parts.append(
        f'<line x1="{left}" x2="{width - 10}" y1="{base}" y2="{base}" '
        f'stroke="{COLOURS["grid"]}"/>'
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" {FONT} '
        f'fill="{COLOURS["muted"]}">{peak:g}</text>'
    )
    every = max(1, len(items) // 8)
    for n, column in enumerate(items):
        x = left + n * slot + slot * 0.15
        w = max(slot * 0.7, 1.0)
        y = float(base)
        tip = f"{column.label}: " + ", ".join(
            f"{dict(legend).get(key, key)} {value:g}" for key, value in column.parts
        )
        parts.append(
            f'<g class="mark" data-label="{escape(column.label)}" '
            f'data-value="{column.total:.12g}"><title>{escape(tip)}</title>'
        )
        for key, value in column.parts:
            if value <= 0:
                continue
            h = value / peak * plot_h
            y -= h
            parts.append(
                f'<rect class="bar part-{escape(key)}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
                f'height="{h:.1f}" fill="{COLOURS.get(key, COLOURS["primary"])}"/>'
            )
        if n % every == 0:
            parts.append(
                f'<text x="{x + w / 2:.1f}" y="{base + 16}" text-anchor="middle" {FONT} '
                f'fill="{COLOURS["muted"]}">{escape(column.label[-5:])}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def meters(chart_id: str, title: str, items: Sequence[Meter], *, width: int = 560) -> Markup:
    """One meter per pool: the share used, coloured by how full it is."""
    if not items:
        return _empty(chart_id, title, width)
    label_w, row, top = 170, 26, 28
    plot = width - label_w - 200
    height = top + row * len(items) + 6
    parts = [_open(chart_id, title, width, height, len(items))]
    for n, item in enumerate(items):
        y = top + n * row
        share = item.share
        colour = "failed" if share >= 0.9 else "warning" if share >= 0.75 else "success"
        tip = f"{item.label}: {item.text} ({share * 100:.0f}% used)"
        parts.append(
            f'<g class="mark" data-label="{escape(item.label)}" data-value="{item.used:.12g}" '
            f'data-capacity="{item.capacity:.12g}"><title>{escape(tip)}</title>'
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end" {FONT} '
            f'fill="{COLOURS["text"]}">{escape(_short(item.label, 28))}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{plot}" height="{row - 10}" rx="3" '
            f'fill="{COLOURS["grid"]}"/>'
            f'<rect class="bar" x="{label_w}" y="{y + 4}" width="{share * plot:.1f}" '
            f'height="{row - 10}" rx="3" fill="{COLOURS[colour]}"/>'
            f'<text x="{label_w + plot + 8}" y="{y + 16}" {FONT} fill="{COLOURS["muted"]}">'
            f"{escape(item.text)}</text></g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()


def _legend(items: Sequence[tuple[str, str]], y: int) -> str:
    out, x = [], 0
    for key, text in items:
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="10" height="10" '
            f'fill="{COLOURS.get(key, COLOURS["primary"])}"/>'
            f'<text x="{x + 14}" y="{y}" {FONT} fill="{COLOURS["muted"]}">{escape(text)}</text>'
        )
        x += 24 + 7 * len(text)
    return "".join(out)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
