"""Change management: every apply is a change record, approved by hash (issue 14).

- :mod:`~infra_automation.changes.model` — the immutable change record and its SHA-256;
- :mod:`~infra_automation.changes.policy` — change types, approvals, windows (``change:``);
- :mod:`~infra_automation.changes.store` — tables, states, approvals, history;
- :mod:`~infra_automation.changes.service` — the gate of the apply path, approve, reject;
- :mod:`~infra_automation.changes.export` — the ITSM document; ``webhook`` — state changes.
"""

from infra_automation.changes.export import export_document
from infra_automation.changes.model import ChangeRecord, ConfigItem, build_change
from infra_automation.changes.policy import ChangeType, Risk, Window
from infra_automation.changes.service import (
    EXIT_REFUSED,
    EXIT_WAITING,
    ApprovalResult,
    ChangeRefused,
    ChangeService,
    Decision,
    GateOutcome,
    gate,
)
from infra_automation.changes.store import (
    ChangeFilter,
    ChangeStore,
    ChangeView,
    State,
    create_change_tables,
    metadata,
)

__all__ = [
    "EXIT_REFUSED",
    "EXIT_WAITING",
    "ApprovalResult",
    "ChangeFilter",
    "ChangeRecord",
    "ChangeRefused",
    "ChangeService",
    "ChangeStore",
    "ChangeType",
    "ChangeView",
    "ConfigItem",
    "Decision",
    "GateOutcome",
    "Risk",
    "State",
    "Window",
    "build_change",
    "create_change_tables",
    "export_document",
    "gate",
    "metadata",
]
