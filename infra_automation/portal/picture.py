"""The dependency picture of a plan, drawn on the server as SVG (no picture library in the
browser): one column per wave, one box per step (its id and department), an arrow from each
step to the steps that need it. A box's CSS class is its status (``planned``, ``running``,
``success``, ``failed``, ``skipped``), so the live run page recolours it by swapping the SVG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 150, 46, 36, 18, 10


@dataclass(frozen=True)
class Node:
    id: str
    department: str
    needs: tuple[str, ...]
    wave: int


def nodes_of(plan: Sequence[Mapping[str, object]]) -> list[Node]:
    """Nodes from a plan summary (``run.started``'s ``plan`` or :meth:`Plan.summary`);
    the wave of a step is one more than the deepest of its needs."""
    waves: dict[str, int] = {}
    out: list[Node] = []
    for step in plan:
        sid = str(step["id"])
        needs = tuple(str(n) for n in step.get("needs") or ())  # type: ignore[attr-defined]
        waves[sid] = 1 + max((waves.get(n, 0) for n in needs), default=-1)
        out.append(Node(sid, str(step.get("department", "")), needs, waves[sid]))
    return out


def _positions(nodes: Sequence[Node]) -> dict[str, tuple[int, int]]:
    rows: dict[int, int] = {}
    where: dict[str, tuple[int, int]] = {}
    for node in nodes:
        row = rows.get(node.wave, 0)
        rows[node.wave] = row + 1
        where[node.id] = (PAD + node.wave * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    return where


def svg(nodes: Sequence[Node], status: Mapping[str, str] | None = None) -> Markup:
    """The picture; ``status`` maps step ids to their status (default ``planned``)."""
    where = _positions(nodes)
    width = max((x for x, _ in where.values()), default=0) + BOX_W + PAD
    height = max((y for _, y in where.values()), default=0) + BOX_H + PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="dag" role="img" '
        f'aria-label="dependency picture" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>',
    ]
    for node in nodes:
        x2, y2 = where[node.id]
        for need in node.needs:
            if need in where:
                x1, y1 = where[need]
                parts.append(
                    f'<line class="edge" x1="{x1 + BOX_W}" y1="{y1 + BOX_H // 2}" '
                    f'x2="{x2}" y2="{y2 + BOX_H // 2}" marker-end="url(#arrow)"/>'
                )
    for node in nodes:
        parts.append(_box(node, where[node.id], (status or {}).get(node.id, "planned")))
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  # every text in it went through escape()


def _box(node: Node, at: tuple[int, int], status: str) -> str:
    x, y = at
    sid, dept, state = escape(node.id), escape(node.department), escape(status)
    return (
        f'<g class="node status-{state}" id="node-{sid}" data-status="{state}">'
        f"<title>{sid} ({dept}): {state}</title>"
        f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6"/>'
        f'<text x="{x + 10}" y="{y + 19}" class="step">{sid}</text>'
        f'<text x="{x + 10}" y="{y + 36}" class="dept">{dept} · {state}</text></g>'
    )
