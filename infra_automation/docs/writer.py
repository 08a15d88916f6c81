"""Markdown pages of a project, rendered from its ledger with the ``templates/docs`` templates
(the project root's own, else the package's defaults).

``docs/projects/<project>/``: ``index.md`` (the summary a TAM hands over: access, IP plan,
VMs, services per host, backup, monitoring, owners, drift, failures, history, the topology
and plan pictures as inline SVG), ``verification.md`` (the last ``infra verify``),
``plan.md``, ``history.md``, ``failures.md`` and ``appendix.md`` (every step's outputs and
tool internals: Ansible stats, MoIDs, configuration applied) are regenerated on every write;
``notes.md`` is created once and never overwritten. Pages an older version generated
(``network.md``...) are removed when their hand-written part is empty. Every generated page keeps
the text between ``<!-- BEGIN MANUAL -->`` and ``<!-- END MANUAL -->`` across regenerations.
Pages are masked once more by :func:`~infra_automation.secrets.redact` before writing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra_automation.config import load_settings
from infra_automation.docs.changes import change_history
from infra_automation.docs.handover import handover
from infra_automation.docs.ledger import (
    ProjectLedger,
    Resource,
    RunRecord,
    StepRecord,
)
from infra_automation.docs.pictures import PlanBox, plan_picture
from infra_automation.docs.quality import quality
from infra_automation.docs.safety import MARKDOWN_HELPERS, display, slug
from infra_automation.docs.sections import PAGES, SECTIONS, Section, SectionRegistry
from infra_automation.exceptions import ConfigurationError
from infra_automation.files import write_atomic
from infra_automation.render import package_templates, render_template
from infra_automation.secrets import REDACTOR

BEGIN_MANUAL = "<!-- BEGIN MANUAL -->"
END_MANUAL = "<!-- END MANUAL -->"
DEFAULT_MANUAL = "\n<!-- Hand-written notes between these markers survive regeneration. -->\n"
_MANUAL_RE = re.compile(re.escape(BEGIN_MANUAL) + r"(.*?)" + re.escape(END_MANUAL), re.S)
_FENCE_RE = re.compile(r"^(`{3,})")
STATUS_CLASSES = ("success", "failed", "skipped", "running", "pending")
GENERATED_PAGES = ("plan.md", "history.md", "failures.md", "verification.md", "appendix.md")
LEGACY_PAGES = ("network.md", "virtual-machines.md", "hosts.md", "resources.md")


def templates_root(root: Path) -> Path:
    """The project's ``templates/`` if it has docs templates, else the package's defaults."""
    own = root / "templates"
    return own if (own / "docs" / "overview.md.j2").is_file() else package_templates()


def docs_dir(root: Path) -> Path:
    """``docs_dir`` of the root's settings (``infra.toml``), ``<root>/docs`` by default."""
    try:
        return load_settings(root).docs_dir
    except ConfigurationError:
        return root / "docs"


@dataclass(frozen=True)
class Page:
    name: str  # file name inside the project folder, e.g. "network.md"
    template: str
    variables: Mapping[str, Any]


class DocsWriter:
    """Renders and writes the Markdown of projects from their ledgers."""

    def __init__(
        self,
        root: Path,
        *,
        docs: Path | None = None,
        templates: Path | None = None,
        sections: SectionRegistry = SECTIONS,
    ) -> None:
        self.root = root
        self.docs = docs or docs_dir(root)
        self.templates = templates or templates_root(root)
        self.sections = sections

    @property
    def projects_dir(self) -> Path:
        return self.docs / "projects"

    def project_dir(self, project: str) -> Path:
        return self.projects_dir / slug(project)

    def page_names(self) -> list[str]:
        return ["index.md", *GENERATED_PAGES, "notes.md"]

    def write_project(self, ledger: ProjectLedger) -> list[Path]:
        """Write every page of ``ledger``'s project; returns the paths of its pages."""
        folder = self.project_dir(ledger.project)
        written = [self._write(folder / page.name, page) for page in self.pages(ledger)]
        _remove_legacy(folder)
        notes = folder / "notes.md"
        if not notes.exists():
            self._write(notes, Page("notes.md", "docs/notes.md.j2", _base(ledger)), manual=False)
        return [*written, notes]

    def write_index(self, ledgers: Iterable[ProjectLedger]) -> Path:
        return self.write_index_rows([index_row(ledger) for ledger in ledgers])

    def write_index_rows(self, rows: Iterable[dict[str, Any]]) -> Path:
        """The projects index from rows of :func:`index_row` (any order)."""
        ordered = sorted(rows, key=lambda row: str(row["project"]))
        page = Page("index.md", "docs/projects.md.j2", {"projects": ordered})
        return self._write(self.projects_dir / "index.md", page)

    def pages(self, ledger: ProjectLedger) -> list[Page]:
        base = _base(ledger)
        by_page = self._sections(ledger)
        summary = {**_overview(ledger), **handover(ledger), **_failures(ledger)}
        summary.update(quality(self.root, ledger.project))  # the Quality section (the record)
        summary["history"] = _history(ledger)["runs"][:5]
        groups = [(PAGES[stem], by_page.get(stem, [])) for stem in PAGES]
        return [
            Page("index.md", "docs/overview.md.j2", {**base, **summary}),
            Page("verification.md", "docs/verification.md.j2", {**base, **summary}),
            Page("plan.md", "docs/plan.md.j2", {**base, **_plan(ledger)}),
            Page("history.md", "docs/history.md.j2", {**base, **self._history(ledger)}),
            Page("failures.md", "docs/failures.md.j2", {**base, **_failures(ledger)}),
            Page("appendix.md", "docs/sections.md.j2", {**base, "groups": groups}),
        ]

    def _history(self, ledger: ProjectLedger) -> dict[str, Any]:
        return {**_history(ledger), "changes": change_history(self.root, ledger.project)}

    def render(self, page: Page, manual: str = DEFAULT_MANUAL) -> str:
        variables = {**MARKDOWN_HELPERS, **page.variables, "manual": manual}
        markdown = render_template(self.templates, page.template, variables)
        return REDACTOR.text(tidy(markdown))

    def _write(self, path: Path, page: Page, *, manual: bool = True) -> Path:
        old = path.read_text(encoding="utf-8") if path.is_file() else None
        kept = _manual_text(old) if manual and old is not None else None
        content = self.render(page, kept if kept is not None else DEFAULT_MANUAL)
        if content != old:
            write_atomic(path, content)
        return path

    def _sections(self, ledger: ProjectLedger) -> dict[str, list[Section]]:
        by_page: dict[str, list[Section]] = {}
        for resource in ordered_state(ledger):
            for section in self.sections.render(resource):
                page = section.page if section.page in PAGES else "resources"
                by_page.setdefault(page, []).append(section)
        return by_page


def tidy(markdown: str) -> str:
    """Collapse runs of blank lines outside fenced code blocks (templates leave some)."""
    lines: list[str] = []
    fence: str | None = None
    for line in markdown.split("\n"):
        stripped = line.strip()
        opening = _FENCE_RE.match(stripped)
        if fence is None and opening:
            fence = opening.group(1)
        elif fence is not None and stripped == fence:
            fence = None
        elif fence is None and not stripped and lines and not lines[-1].strip():
            continue
        lines.append(line)
    return "\n".join(lines)


def _remove_legacy(folder: Path) -> None:
    """Pages an older version generated (network.md...), unless someone wrote in them."""
    for name in LEGACY_PAGES:
        path = folder / name
        if not path.is_file():
            continue
        kept = _manual_text(path.read_text(encoding="utf-8"))
        if kept is not None and kept.strip() in ("", DEFAULT_MANUAL.strip()):
            path.unlink()


def _manual_text(old: str) -> str | None:
    match = _MANUAL_RE.search(old)
    return match.group(1) if match else None


def ordered_state(ledger: ProjectLedger) -> list[Resource]:
    """Current resources in plan order, then any that are no longer in the plan."""
    order = {step.id: i for i, step in enumerate(ledger.plan)}
    return sorted(
        ledger.state.values(), key=lambda r: (order.get(r.step_id, len(order)), r.step_id)
    )


# --------------------------------------------------------------------------- page data


def _base(ledger: ProjectLedger) -> dict[str, Any]:
    return {"project": ledger.project, "pages": PAGES}


def _overview(ledger: ProjectLedger) -> dict[str, Any]:
    latest = ledger.latest_applied()
    return {
        "ledger": ledger,
        "state_label": state_label(ledger),
        "latest_applied": latest,
        "latest": ledger.latest(),
        "params": _flat(ledger.params),
        "resources": [(r, _summary(r.outputs)) for r in ordered_state(ledger)],
        "statuses": {s.id: s.status for s in ledger.plan},
        "removed": list(reversed(ledger.removed)),
    }


def state_label(ledger: ProjectLedger) -> str:
    latest = ledger.latest_applied()
    if ledger.decommissioned:
        return "decommissioned"
    if latest is None:
        return "not built yet (dry runs only)" if ledger.runs else "no runs yet"
    if latest.status == "running":
        return f"run {latest.run_id} in progress or interrupted"
    if latest.status != "success":
        return f"failed (run {latest.run_id}): see Open failures"
    return "built"


def _summary(outputs: Mapping[str, Any], limit: int = 160) -> str:
    scalars = [f"{k}={display(v)}" for k, v in outputs.items() if not isinstance(v, Mapping | list)]
    counted = [f"{k}: {len(v)}" for k, v in outputs.items() if isinstance(v, Mapping | list)]
    joined = ", ".join(scalars + counted)
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


def _flat(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += _flat(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    return [(prefix or "value", display(value))]


def _plan(ledger: ProjectLedger) -> dict[str, Any]:
    boxes = [
        PlanBox(s.id, s.department, s.executor, tuple(s.needs), _status_class(s.status))
        for s in ledger.plan
    ]
    return {
        "ledger": ledger,
        "plan": ledger.plan,
        "plan_svg": plan_picture(boxes) if boxes else "",
        "mermaid": plan_mermaid(ledger),
    }


def plan_mermaid(ledger: ProjectLedger) -> str:
    """The plan as mermaid source (for tools that draw it; the pages show the SVG)."""
    ids = {step.id: f"s{i}" for i, step in enumerate(ledger.plan)}
    nodes = [
        (ids[s.id], mermaid_label(f"{s.id}<br/>{s.executor}"), _status_class(s.status))
        for s in ledger.plan
    ]
    edges = [(ids[n], ids[s.id]) for s in ledger.plan for n in s.needs if n in ids]
    lines = ["flowchart LR"]
    lines += [f'  {node}["{text}"]:::{cls}' for node, text, cls in nodes]
    lines += [f"  {a} --> {b}" for a, b in edges]
    lines += [f"  classDef {cls} {style}" for cls, style in CLASS_STYLES.items()]
    return "\n".join(lines)


CLASS_STYLES = {
    "success": "fill:#d4edda,stroke:#2e7d32,color:#1b5e20",
    "failed": "fill:#f8d7da,stroke:#c62828,color:#b71c1c",
    "skipped": "fill:#eeeeee,stroke:#9e9e9e,color:#616161,stroke-dasharray:4 4",
    "running": "fill:#dbeafe,stroke:#1d4ed8,color:#1e3a8a",
    "pending": "fill:#ffffff,stroke:#607d8b,color:#37474f",
}


def _status_class(status: str) -> str:
    return status if status in STATUS_CLASSES else "pending"


def mermaid_label(value: str) -> str:
    """Text safe inside a mermaid ``["..."]`` label (``<br/>`` kept as the line break)."""
    parts = value.split("<br/>")
    escaped = [
        p.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
        for p in parts
    ]
    return "<br/>".join(escaped)


def _history(ledger: ProjectLedger) -> dict[str, Any]:
    return {"runs": [_run_view(run) for run in reversed(ledger.runs)]}


def _run_view(run: RunRecord) -> dict[str, Any]:
    steps = list(run.steps.values())
    return {
        "run": run,
        "mode": "dry run (check mode)" if run.check else "apply",
        "status": _run_status(run),
        "changed": [s for s in steps if s.changed],
        "steps": steps,
        "diffs": [(s, _diff(s)) for s in steps if _diff(s)],
    }


def _run_status(run: RunRecord) -> str:
    if run.status == "running":
        return "unfinished (in progress or interrupted)"
    return f"{run.status} (dry run)" if run.check else run.status


def _diff(step: StepRecord) -> str:
    if step.diff:
        return step.diff
    return "".join(f"--- {t.target}\n{t.diff.rstrip()}\n" for t in step.targets if t.diff)


def _failures(ledger: ProjectLedger) -> dict[str, Any]:
    latest = ledger.latest_applied()
    open_run = latest if latest is not None and latest.status != "success" else None
    last = ledger.latest()
    dry = last if last is not None and last.check and last.status == "failed" else None
    return {
        "open_run": open_run,
        "open": _failure_view(open_run) if open_run else None,
        "dry_run": dry,
        "dry": _failure_view(dry) if dry else None,
    }


def _failure_view(run: RunRecord) -> dict[str, Any]:
    failed = [s for s in run.steps.values() if s.status == "failed"]
    failed_ids = {s.step_id for s in failed}
    failed += [
        StepRecord(step_id=s, status="failed") for s in run.failed_steps if s not in failed_ids
    ]
    skipped = [s.step_id for s in run.steps.values() if s.status == "skipped"]
    skipped += [s for s in run.skipped_steps if s not in skipped]
    pending = [s.step_id for s in run.steps.values() if s.status in ("pending", "running")]
    return {
        "failed": failed,
        "skipped": skipped,
        "pending": pending if run.status == "running" else [],
        "command": f"infra resume {run.run_id}",
    }


def index_row(ledger: ProjectLedger) -> dict[str, Any]:
    """What the projects index shows of one project."""
    return {
        "project": ledger.project,
        "path": f"{slug(ledger.project)}/index.md",
        "service": ledger.service,
        "requester": ledger.requester,
        "state": state_label(ledger),
        "latest": ledger.latest(),
        "departments": ", ".join(ledger.departments),
        "verified": ledger.verification,
    }
