"""Pictures of a project as inline SVG, drawn when the docs are written.

No JavaScript and no download: a page shows its pictures on a management network without
internet access, in any Markdown viewer that renders HTML, and the same ledger always gives
the same bytes. Two pictures:

- :func:`plan_picture`: the plan's steps in dependency order (one column per depth), each
  box coloured by the step's last status, arrows from a step to the steps that need it;
- :func:`topology_picture`: the routers, the project's VLAN and subnet, and the VMs with the
  services running on each.

Layout is a layered graph (:class:`Graph`): columns left to right, boxes stacked in each
column, edges as curves from the right side of a box to the left side of the next. Every
text is XML-escaped; the SVG scales down to the page width (``max-width: 100%``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

BOX_WIDTH = 190
LINE_HEIGHT = 16
PAD = 8
COLUMN_GAP = 60
ROW_GAP = 16
MARGIN = 10
MAX_CHARS = 28
BOLD = ' font-weight="bold"'
ARROW = "url(#arrow)"  # replaced by the picture's own marker id
FILLS: dict[str, tuple[str, str]] = {  # class -> (fill, stroke)
    "success": ("#d4edda", "#2e7d32"),
    "in-sync": ("#d4edda", "#2e7d32"),
    "failed": ("#f8d7da", "#c62828"),
    "drifted": ("#f8d7da", "#c62828"),
    "skipped": ("#eeeeee", "#9e9e9e"),
    "unverifiable": ("#fff3cd", "#b8860b"),
    "running": ("#dbeafe", "#1d4ed8"),
    "pending": ("#ffffff", "#607d8b"),
    "router": ("#e8eaf6", "#3949ab"),
    "network": ("#e0f2f1", "#00796b"),
    "vm": ("#fff8e1", "#f57f17"),
    "off": ("#eeeeee", "#616161"),
}


@dataclass(frozen=True)
class Node:
    id: str
    column: int
    lines: tuple[str, ...]
    kind: str = "pending"


@dataclass
class Graph:
    """Boxes in layers: ``across`` (left to right, the default) or top to bottom."""

    title: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False

    def add(self, node_id: str, column: int, lines: Sequence[str], kind: str) -> None:
        shown = tuple(_fit(line) for line in lines if line) or ("",)
        self.nodes.append(Node(node_id, column, shown, kind))

    def svg(self) -> str:
        return render(self)


def _fit(line: str) -> str:
    line = " ".join(str(line).split())
    return line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 1] + "…"


def _box_height(node: Node) -> int:
    return PAD * 2 + LINE_HEIGHT * len(node.lines)


def _layers(graph: Graph) -> dict[int, list[Node]]:
    layers: dict[int, list[Node]] = {}
    for node in graph.nodes:
        layers.setdefault(node.column, []).append(node)
    return layers


def _layout(graph: Graph) -> dict[str, tuple[int, int, int]]:
    return _layout_down(graph) if graph.down else _layout_across(graph)


def _layout_down(graph: Graph) -> dict[str, tuple[int, int, int]]:
    """Node id -> (x, y, height): one row per layer, rows centred on the widest one."""
    layers = _layers(graph)
    widest = max((len(ns) for ns in layers.values()), default=0)
    placed: dict[str, tuple[int, int, int]] = {}
    y = MARGIN
    for _, nodes in sorted(layers.items()):
        x = MARGIN + (widest - len(nodes)) * (BOX_WIDTH + ROW_GAP) // 2
        height = max(_box_height(n) for n in nodes)
        for node in nodes:
            placed[node.id] = (x, y, height)
            x += BOX_WIDTH + ROW_GAP
        y += height + COLUMN_GAP // 2
    return placed


def _layout_across(graph: Graph) -> dict[str, tuple[int, int, int]]:
    """Node id -> (x, y, height); columns are centred vertically on the tallest one."""
    columns = _layers(graph)
    heights = {
        c: sum(_box_height(n) for n in ns) + ROW_GAP * (len(ns) - 1) for c, ns in columns.items()
    }
    tallest = max(heights.values(), default=0)
    placed: dict[str, tuple[int, int, int]] = {}
    for column, nodes in sorted(columns.items()):
        x = MARGIN + column * (BOX_WIDTH + COLUMN_GAP)
        y = MARGIN + (tallest - heights[column]) // 2
        for node in nodes:
            height = _box_height(node)
            placed[node.id] = (x, y, height)
            y += height + ROW_GAP
    return placed


def render(graph: Graph) -> str:
    """The graph as one ``<svg>`` element on one line (Markdown keeps it as raw HTML)."""
    placed = _layout(graph)
    marker = "arrow-" + hashlib.sha1(graph.title.encode(), usedforsecurity=False).hexdigest()[:8]
    width = MARGIN + max((x + BOX_WIDTH for x, _, _ in placed.values()), default=0)
    height = MARGIN + max((y + h for _, y, h in placed.values()), default=0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="infra-picture" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}" role="img" '
        f"aria-label={quoteattr(graph.title)} "
        'style="max-width:100%;height:auto" font-family="sans-serif" font-size="12">',
        f"<title>{escape(graph.title)}</title>",
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#546e7a"/></marker></defs>',
    ]
    draw = _edge_down if graph.down else _edge
    parts += [
        draw(placed[a], placed[b]).replace(ARROW, f"url(#{marker})")
        for a, b in graph.edges
        if a in placed and b in placed
    ]
    parts += [_box(node, placed[node.id]) for node in graph.nodes]
    parts.append("</svg>")
    return "".join(parts)


def _edge(start: tuple[int, int, int], end: tuple[int, int, int]) -> str:
    x1, y1 = start[0] + BOX_WIDTH, start[1] + start[2] // 2
    x2, y2 = end[0], end[1] + end[2] // 2
    if x2 <= x1:  # same column: a straight line between the boxes
        x1, x2 = start[0] + BOX_WIDTH // 2, end[0] + BOX_WIDTH // 2
        y1, y2 = start[1] + start[2], end[1]
        return f'<path d="M {x1} {y1} L {x2} {y2}" stroke="#546e7a" fill="none"/>'
    middle = (x1 + x2) // 2
    return (
        f'<path d="M {x1} {y1} C {middle} {y1}, {middle} {y2}, {x2} {y2}" stroke="#546e7a" '
        f'fill="none" marker-end="{ARROW}"/>'
    )


def _edge_down(start: tuple[int, int, int], end: tuple[int, int, int]) -> str:
    x1, y1 = start[0] + BOX_WIDTH // 2, start[1] + start[2]
    x2, y2 = end[0] + BOX_WIDTH // 2, end[1]
    middle = (y1 + y2) // 2
    return (
        f'<path d="M {x1} {y1} C {x1} {middle}, {x2} {middle}, {x2} {y2}" stroke="#546e7a" '
        f'fill="none" marker-end="{ARROW}"/>'
    )


def _box(node: Node, where: tuple[int, int, int]) -> str:
    x, y, height = where
    fill, stroke = FILLS.get(node.kind, FILLS["pending"])
    dash = ' stroke-dasharray="4 4"' if node.kind in ("skipped", "unverifiable") else ""
    texts = "".join(
        f'<text x="{x + PAD}" y="{y + PAD + LINE_HEIGHT * (i + 1) - 4}"{BOLD if i == 0 else ""}>'
        f"{escape(line)}</text>"
        for i, line in enumerate(node.lines)
    )
    return (
        f'<g class="node {escape(node.kind)}"><rect x="{x}" y="{y}" width="{BOX_WIDTH}" '
        f'height="{height}" rx="6" fill="{fill}" stroke="{stroke}"{dash}/>{texts}</g>'
    )


# --------------------------------------------------------------------------- the pictures


@dataclass(frozen=True)
class PlanBox:
    id: str
    department: str
    executor: str
    needs: tuple[str, ...]
    status: str


def plan_picture(steps: Sequence[PlanBox]) -> str:
    """The plan's steps by dependency depth, coloured by status."""
    graph = Graph("Plan: steps in dependency order, coloured by their last status", down=True)
    ids = {s.id for s in steps}
    depth: dict[str, int] = {}
    for step in steps:  # plan order is a topological order
        depth[step.id] = 1 + max((depth.get(n, 0) for n in step.needs if n in ids), default=-1)
    for step in steps:
        lines = (step.id, f"{step.department} · {step.executor}", step.status)
        graph.add(step.id, depth[step.id], lines, step.status)
    graph.edges = [(n, s.id) for s in steps for n in s.needs if n in ids]
    return graph.svg()


@dataclass(frozen=True)
class VmBox:
    name: str
    address: str = ""
    power: str = ""
    host: str = ""
    services: tuple[str, ...] = ()


def topology_picture(
    routers: Sequence[tuple[str, str]],
    network: Mapping[str, str],
    vms: Sequence[VmBox],
) -> str:
    """Routers (name, role) -> the project VLAN -> the VMs with their services."""
    graph = Graph("Topology: routers, the project VLAN and the VMs with their services")
    for name, role in routers:
        graph.add(f"r:{name}", 0, (name, f"router {role}".strip()), "router")
    lines = [
        f"VLAN {network['vlan']}" if network.get("vlan") else "project network",
        network.get("subnet", ""),
        f"gateway {network['gateway']}" if network.get("gateway") else "",
        f"portgroup {network['portgroup']}" if network.get("portgroup") else "",
    ]
    graph.add("net", 1 if routers else 0, lines, "network")
    column = 2 if routers else 1
    for vm in vms:
        kind = "vm" if vm.power in ("", "poweredOn") else "off"
        head = [vm.name, " ".join(x for x in (vm.address, vm.power) if x)]
        if vm.host:
            head.append(f"on {vm.host}")
        graph.add(f"vm:{vm.name}", column, [*head, *vm.services], kind)
    graph.edges = [(f"r:{name}", "net") for name, _ in routers]
    graph.edges += [("net", f"vm:{vm.name}") for vm in vms]
    return graph.svg()
