"""The docs observer: folds run events into the project's ledger and rewrites its pages.

Built by the engine from the ``infra_automation.observers`` entry point as
``DocsObserver(root, db)``: the ledgers are kept in the run database ``db`` (files under the
root when ``db`` is None). The ledger and pages are rewritten after ``run.started``, after each
``step.finished`` (so a crash leaves the docs current up to that step), on ``run.finished``
and on ``verify.finished`` (``infra verify``: the pages' Verification section).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra_automation.docs.ledger import Ledgers, ProjectLedger, apply_event, ledger_store
from infra_automation.docs.site import build_site
from infra_automation.docs.writer import DocsWriter, index_row
from infra_automation.events import Event
from infra_automation.exceptions import ConfigurationError, InfraError

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)
WRITE_ON = frozenset({"run.started", "step.finished", "run.finished", "verify.finished"})


class DocsObserver:
    """An :class:`~infra_automation.events.Observer` that keeps as-built docs current."""

    def __init__(
        self, root: Path, db: Engine | None = None, *, store: Ledgers | None = None
    ) -> None:
        self.root = Path(root)
        self.store = store or ledger_store(self.root, db)
        self.writer = DocsWriter(self.root)
        self._projects: dict[str, str] = {}
        self._sites: dict[str, Path] = {}  # run id -> site a docs.build step built in it
        self._lock = threading.Lock()
        self._index: dict[str, tuple[object, dict[str, Any]]] = {}  # project -> stamp, row

    def on_event(self, event: Event) -> None:
        if event.kind not in WRITE_ON:
            return
        try:
            with self._lock:
                self._handle(event)
        except (InfraError, OSError, ValueError) as exc:
            log.warning("docs: could not record %s of run %s: %s", event.kind, event.run_id, exc)

    def _handle(self, event: Event) -> None:
        project = self._project_of(event)
        if project is None:
            log.warning("docs: %s of unknown run %s ignored", event.kind, event.run_id)
            return
        ledger = self.store.load(project)
        if event.kind == "verify.finished" and not ledger.runs:
            return  # no docs of this project (its runs were not observed): nothing to add to
        if apply_event(ledger, event):
            self.store.save(ledger)
            self.write(ledger)
        self._track_site(event)

    def _track_site(self, event: Event) -> None:
        """A site built by a ``docs.build`` step is rebuilt once the run has finished, so the
        HTML shows the run's final state (the step itself runs before the run ends)."""
        data = event.data
        if event.kind == "step.finished" and data.get("executor") == "docs.build":
            site = (data.get("outputs") or {}).get("site_path")
            if site and data.get("status") == "success":
                self._sites[event.run_id] = Path(str(site))
        elif event.kind == "run.finished" and event.run_id in self._sites:
            build_site(self.root, site_dir=self._sites.pop(event.run_id), ledgers=self.store)
        elif event.kind == "verify.finished":
            self._rebuild_project_site(str(event.data.get("project") or ""))

    def _rebuild_project_site(self, project: str) -> None:
        """After a verification, the site the project's docs step built shows it too."""
        ledger = self.store.load(project)
        for resource in ledger.state.values():
            site = resource.outputs.get("site_path") if resource.executor == "docs.build" else None
            if site:
                build_site(self.root, site_dir=Path(str(site)), ledgers=self.store)
                return

    def write(self, ledger: ProjectLedger) -> None:
        self.writer.write_project(ledger)
        self.writer.write_index_rows(self._index_rows(ledger))

    def _index_rows(self, saved: ProjectLedger) -> list[dict[str, Any]]:
        """The index's rows: ``saved`` as it is, other projects from the rows kept since
        the last write unless their stamp changed (another process saved them), so a step
        boundary reads one cheap listing, not every project's ledger."""
        rows: dict[str, dict[str, Any]] = {saved.project: index_row(saved)}
        kept: dict[str, tuple[object, dict[str, Any]]] = {
            saved.project: (None, rows[saved.project])
        }
        for project, stamp in self.store.stamps().items():
            if project in rows:
                continue
            cached = self._index.get(project)
            if cached is None or cached[0] != stamp or stamp is None:
                try:
                    cached = (stamp, index_row(self.store.load(project)))
                except ConfigurationError as exc:
                    log.warning("%s", exc)  # one broken ledger never hides the others
                    continue
            kept[project], rows[project] = cached, cached[1]
        self._index = kept
        return list(rows.values())

    def _project_of(self, event: Event) -> str | None:
        if event.kind.startswith("verify."):  # a verification names its project
            return str(event.data.get("project") or "") or None
        if event.kind == "run.started":
            project = str(event.data.get("project") or "")
            if project:
                self._projects[event.run_id] = project
                return project
        if event.run_id not in self._projects:
            found = self.store.find_run(event.run_id)
            if found is None:
                return None
            self._projects[event.run_id] = found
        return self._projects[event.run_id]
