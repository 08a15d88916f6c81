"""The change as a document an ITSM tool imports (``infra changes export ID --output json``).

Field names follow the common change-request shape (ServiceNow's ``change_request``: number,
type, risk, state, requested_by, cmdb_ci, approvals, work notes); ``content`` is the hashed
change record itself, so the importing side can recompute ``sha256``::

    sha256(json.dumps(doc["content"], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()) == doc["sha256"]
"""

from __future__ import annotations

from typing import Any

from infra_automation.changes.store import Approval, ChangeView, StateChange

SCHEMA = "infra-automation/change/v1"


def export_document(view: ChangeView) -> dict[str, Any]:
    record = view.record
    steps = record.content["steps"]
    return {
        "schema": SCHEMA,
        "number": record.id,
        "sha256": record.id,
        "short_description": f"{record.service} for project {record.project}",
        "type": record.change_type.value,
        "type_reason": record.type_reason or None,
        "risk": record.risk.value,
        "state": view.state.value,
        "state_reason": view.reason,
        "requested_by": record.requester,
        "opened_at": _iso(record.created_at),
        "updated_at": _iso(view.updated_at),
        "cmdb_ci": [{"kind": i.kind, "name": i.name} for i in record.items],
        "assignment_groups": list(record.departments),
        "implementation_plan": [
            {
                "step": s["id"],
                "department": s["department"],
                "executor": s["executor"],
                "needs": s["needs"],
                "fingerprint": s["fingerprint"],
                "changed": steps.get(s["id"], {}).get("changed", False),
                "diff": steps.get(s["id"], {}).get("diff", ""),
            }
            for s in record.content["plan"]
        ],
        "dry_run": record.dry_run,
        "run_id": view.run_id,
        "supersedes": view.supersedes,
        "superseded_by": view.superseded_by,
        "emergency": {
            "flagged": view.flagged,
            "retrospective_due": _iso(view.retrospective_due),
            "retrospective_by": view.retrospective_by,
            "retrospective_at": _iso(view.retrospective_at),
        },
        "approvals": [approval_fields(a) for a in view.approvals],
        "work_notes": [_note(h) for h in view.history],
        "git": dict(record.git) if record.git else None,
        "content": dict(record.content),
    }


def approval_fields(approval: Approval, timespec: str = "auto") -> dict[str, Any]:
    """One approval as the export and the project's docs show it (``timespec`` of the
    timestamps: the docs show seconds)."""

    def iso(value: Any) -> str | None:
        return value.isoformat(timespec=timespec) if value is not None else None

    return {
        "approver": approval.approver,
        "decision": approval.decision,
        "department": approval.department,
        "sha256": approval.change_hash,
        "at": iso(approval.at),
        "expires_at": iso(approval.expires_at),
        "voided_at": iso(approval.voided_at),
        "void_reason": approval.void_reason,
        "comment": approval.comment,
    }


def _note(change: StateChange) -> dict[str, Any]:
    return {
        "at": _iso(change.at),
        "from": change.previous,
        "to": change.state,
        "by": change.actor,
        "reason": change.reason,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None
