"""Change records in the project's documentation history (issue 14).

The change flow (:class:`~infra_automation.changes.ChangeService`) hands every state change of
a change record to :class:`ChangeDocs`, which reads the project's change records from the
database (the truth) and writes them to ``.infra/docs/changes/<project>.json``. The
``history.md`` page shows them (:func:`change_history`, template ``docs/_changes.md.j2``)
above the runs: the SHA-256, type and risk (with the reason when the type is not the declared
one), who requested it, its state, the run that implemented it, the configuration items,
every approval (who, when, for which department, the hash approved, voided or not) and the
state history. The page is rewritten with the rest of the project's pages after each run
event; between runs, :class:`ChangeDocs` rewrites just that section of the page (between
:data:`BEGIN` and :data:`END`), so it needs no run ledger.

Everything is scrubbed on the way in, files are written atomically, and a failure to write is
logged: it never stops a change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra_automation.changes.export import approval_fields
from infra_automation.docs.ledger import LedgerStore
from infra_automation.docs.safety import scrub, scrub_text, slug
from infra_automation.exceptions import InfraError
from infra_automation.files import write_atomic

if TYPE_CHECKING:
    from infra_automation.changes.store import Approval, ChangeView, StateChange

log = logging.getLogger(__name__)
FOLDER = "changes"  # under .infra/docs/: not a run ledger (those are the folder's *.json)
TEMPLATE = "docs/_changes.md.j2"
BEGIN = "<!-- BEGIN CHANGES -->"
END = "<!-- END CHANGES -->"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ApprovalEntry(_Model):
    approver: str
    decision: str
    department: str | None = None
    sha256: str = ""
    at: str | None = None
    expires_at: str | None = None
    voided_at: str | None = None
    void_reason: str | None = None
    comment: str | None = None


class StateEntry(_Model):
    at: str | None = None
    previous: str | None = None
    state: str
    actor: str | None = None
    reason: str | None = None


class ChangeEntry(_Model):
    id: str
    service: str = ""
    type: str = ""
    type_reason: str | None = None
    risk: str = ""
    requester: str = ""
    state: str = ""
    reason: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    run_id: str | None = None
    supersedes: str | None = None
    superseded_by: str | None = None
    flagged: bool = False
    retrospective_due: str | None = None
    items: list[str] = Field(default_factory=list)
    approvals: list[ApprovalEntry] = Field(default_factory=list)
    history: list[StateEntry] = Field(default_factory=list)

    @property
    def short(self) -> str:
        return self.id[:12]


class ProjectChanges(_Model):
    project: str
    changes: list[ChangeEntry] = Field(default_factory=list)  # newest first


def changes_path(root: Path, project: str) -> Path:
    return LedgerStore.for_root(root).folder / FOLDER / f"{slug(project)}.json"


def change_history(root: Path, project: str) -> list[ChangeEntry]:
    """The change records of ``project`` as last written (newest first; [] if none)."""
    path = changes_path(root, project)
    if not path.is_file():
        return []
    try:
        return ProjectChanges.model_validate_json(path.read_bytes()).changes
    except (ValidationError, OSError) as exc:
        log.warning("docs: %s is not a readable change history: %s", path, type(exc).__name__)
        return []


def entry(view: ChangeView) -> ChangeEntry:
    record = view.record
    data = {
        "id": record.id,
        "service": record.service,
        "type": record.change_type.value,
        "type_reason": record.type_reason or None,
        "risk": record.risk.value,
        "requester": record.requester,
        "state": view.state.value,
        "reason": view.reason,
        "created_at": _iso(record.created_at),
        "updated_at": _iso(view.updated_at),
        "run_id": view.run_id,
        "supersedes": view.supersedes,
        "superseded_by": view.superseded_by,
        "flagged": view.flagged,
        "retrospective_due": _iso(view.retrospective_due),
        "items": [str(i) for i in record.items],
        "approvals": [_approval(a) for a in view.approvals],
        "history": [_state(h) for h in view.history],
    }
    return ChangeEntry.model_validate(scrub(data))


def _approval(approval: Approval) -> dict[str, Any]:
    fields = approval_fields(approval, timespec="seconds")
    for text in ("void_reason", "comment"):
        fields[text] = scrub_text(fields[text]) or None
    return fields


def _state(change: StateChange) -> dict[str, Any]:
    return {
        "at": _iso(change.at),
        "previous": change.previous,
        "state": change.state,
        "actor": change.actor,
        "reason": scrub_text(change.reason) or None,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


class ChangeDocs:
    """A change :data:`~infra_automation.changes.store.Notify`: on each state change, the
    project's change records (read through ``changes_of``) go to its docs history."""

    def __init__(self, root: Path, changes_of: Callable[[str], Sequence[ChangeView]]) -> None:
        self.root = Path(root)
        self.changes_of = changes_of
        self._lock = threading.Lock()

    def __call__(self, view: ChangeView, change: StateChange) -> None:
        project = view.record.project
        try:
            with self._lock:
                self.write(project)
        except (InfraError, OSError, ValueError) as exc:
            log.warning("docs: could not record change %s of %s: %s", view.id[:12], project, exc)

    def write(self, project: str) -> Path:
        """Write the project's change records, and the section of its history page."""
        from infra_automation.docs.writer import DocsWriter, Page  # the writer reads us

        entries = [entry(v) for v in self.changes_of(project)]
        path = changes_path(self.root, project)
        document = ProjectChanges(project=project, changes=entries)
        write_atomic(path, document.model_dump_json(indent=2) + "\n")
        writer = DocsWriter(self.root)
        page = writer.project_dir(project) / "history.md"
        old = page.read_text(encoding="utf-8") if page.is_file() else ""
        head, begin, rest = old.partition(BEGIN)
        _, end, tail = rest.partition(END)
        if begin and end:  # pages not written yet get the section when they are
            variables = {"project": project, "changes": entries}
            section = writer.render(Page("history.md", TEMPLATE, variables)).strip()
            write_atomic(page, head + section + tail)
        return path
