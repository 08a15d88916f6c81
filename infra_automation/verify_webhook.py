"""The drift webhook: ``infra verify`` (by hand or on the beat schedule) POSTs a JSON
document to ``drift_webhook`` (``infra.toml``) when a project's drift appears or changes, and
when the project is back in sync.

What counts is the project's previous *conclusive* verification (state ``drifted`` or
``in-sync``; an ``unverifiable`` one tells nothing about drift and is passed over):

- now ``drifted`` and the previous was in sync, or there was none, or it drifted differently
  (another resource, another difference): ``drift.detected``;
- now ``in-sync`` and the previous was drifted: ``drift.resolved``;
- anything else (the same drift again, in sync again, unverifiable): nothing is posted.

The body (from the recorded, redacted ``verify.finished`` event: a secret that reached a diff
is masked there too)::

    {"event": "drift.detected", "project": "shop", "state": "drifted",
     "previous_state": "in-sync", "verify_id": "verify-...", "previous_verify_id": "verify-...",
     "at": "<ISO 8601>", "counts": {"in-sync": 14, "drifted": 2, "unverifiable": 0},
     "based_on": ["<run id>"],
     "drifted": [{"step_id": "network", "department": "network", "executor": "...",
                  "resource": "configuration of core", "target": "core",
                  "reason": "...", "diff": "--- expected\\n+++ found\\n..."}]}

When the secret ``drift_webhook_token`` is set (``INFRA_SECRET_DRIFT_WEBHOOK_TOKEN``, or the
secrets backend of the default inventory: ``generated/secrets.yml``, Vault), it is sent in
the header :data:`TOKEN_HEADER`, and nowhere else: not in the body, not in a log line. A
receiver that is down, slow or answers an error is logged (URL without query or credentials)
and never fails the verification (:func:`infra_automation.changes.webhook.post_json`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from infra_automation.changes.webhook import post_json
from infra_automation.config import Settings
from infra_automation.events import Event
from infra_automation.exceptions import InfraError
from infra_automation.inventory import GENERATED_DIR, SECRETS_FILE
from infra_automation.record import events as events_table
from infra_automation.secrets import Secrets

log = logging.getLogger(__name__)
TOKEN_SECRET = "drift_webhook_token"  # noqa: S105 - the secret's name, not its value
TOKEN_HEADER = "X-Infra-Token"  # noqa: S105 - a header name
DETECTED, RESOLVED = "drift.detected", "drift.resolved"
CONCLUSIVE = ("drifted", "in-sync")
DRIFT_FIELDS = ("step_id", "department", "executor", "resource", "target", "reason", "diff")
BATCH = 200  # verify.finished rows fetched at a time, newest first, until one matches


@dataclass(frozen=True)
class Verified:
    """A recorded verification as the webhook compares it."""

    verify_id: str
    state: str
    drift: frozenset[tuple[str, str, str, str]]  # (step, resource, target, diff) drifted


def verified(verify_id: str, data: Mapping[str, Any]) -> Verified:
    """The comparable part of a ``verify.finished`` payload."""
    drift = frozenset(
        (str(c.get("step_id")), str(c.get("resource")), str(c.get("target")), str(c.get("diff")))
        for c in _drifted(data)
    )
    return Verified(verify_id, str(data.get("state")), drift)


def _drifted(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in data.get("open") or () if c.get("state") == "drifted"]


def previous_conclusive(db: Engine, project: str, *, before: str) -> Verified | None:
    """The newest recorded verification of ``project`` other than ``before`` that says
    drifted or in-sync (None if there is none)."""
    query = (
        sa.select(events_table.c.run_id, events_table.c.data)
        .where(events_table.c.kind == "verify.finished", events_table.c.run_id != before)
        .order_by(events_table.c.seq.desc())
        .execution_options(yield_per=BATCH)  # streamed: the scan stops at the first match
    )
    with db.connect() as conn:
        for row in conn.execute(query):
            data = dict(row.data)
            if (
                data.get("project") == project
                and data.get("state") in CONCLUSIVE
                and not data.get("error")
            ):
                return verified(str(row.run_id), data)
    return None


def decide(now: Verified, previous: Verified | None) -> str | None:
    """Which event to post for ``now`` after ``previous`` (None: nothing)."""
    if now.state == "drifted":
        if previous is None or previous.state != "drifted" or previous.drift != now.drift:
            return DETECTED
        return None
    if now.state == "in-sync" and previous is not None and previous.state == "drifted":
        return RESOLVED
    return None


def body(
    event: str, verify_id: str, data: Mapping[str, Any], previous: Verified | None
) -> dict[str, Any]:
    """The JSON document posted (see the module docstring)."""
    return {
        "event": event,
        "project": data.get("project"),
        "state": data.get("state"),
        "previous_state": previous.state if previous else None,
        "verify_id": verify_id,
        "previous_verify_id": previous.verify_id if previous else None,
        "at": data.get("finished_at"),
        "counts": data.get("counts") or {},
        "based_on": list(data.get("based_on") or ()),
        "drifted": [{k: c.get(k) for k in DRIFT_FIELDS} for c in _drifted(data)],
    }


class DriftWebhook:
    """An :class:`~infra_automation.events.Observer` of ``verify.finished`` events that
    posts drift appearing, changing and going away (see the module docstring)."""

    def __init__(
        self, url: str, db: Engine, secrets: Secrets, *, timeout: float | None = None
    ) -> None:
        self.url = url
        self.db = db
        self.secrets = secrets
        self.timeout = timeout
        self.posted: list[str] = []  # the events posted (and taken), for callers and tests

    @classmethod
    def for_settings(cls, settings: Settings, db: Engine) -> DriftWebhook | None:
        """The webhook ``settings`` configure (None without ``drift_webhook``)."""
        if not settings.drift_webhook:
            return None
        files = (settings.inventory / GENERATED_DIR / SECRETS_FILE,)
        return cls(settings.drift_webhook, db, Secrets(files=files))

    def on_event(self, event: Event) -> None:
        if event.kind != "verify.finished":
            return
        try:
            self._handle(event.run_id, event.data)
        except (InfraError, sa.exc.SQLAlchemyError) as exc:  # never fails a verification
            log.warning("drift webhook: not posted for %s: %s", event.run_id, exc)

    def _handle(self, verify_id: str, data: Mapping[str, Any]) -> None:
        project = str(data.get("project"))
        previous = previous_conclusive(self.db, project, before=verify_id)
        event = decide(verified(verify_id, data), previous)
        if event is None:
            return
        headers = self._headers()
        if headers is None:
            return
        about = f"{event}, project {project}, {verify_id}"
        extra = {} if self.timeout is None else {"timeout": self.timeout}
        sent = body(event, verify_id, data, previous)
        if post_json(self.url, sent, label="drift webhook", about=about, headers=headers, **extra):
            self.posted.append(event)

    def _headers(self) -> dict[str, str] | None:
        """The token header if the secret is set; None if it cannot be read (logged)."""
        try:
            token = self.secrets.find(TOKEN_SECRET)
        except InfraError as exc:  # messages of the secrets module never hold a value
            log.warning("drift webhook: not posted: secret %s unreadable: %s", TOKEN_SECRET, exc)
            return None
        return {TOKEN_HEADER: token} if token else {}


def observers_for(settings: Settings, db: Engine) -> Sequence[DriftWebhook]:
    """``[DriftWebhook]`` when ``drift_webhook`` is configured, else ``[]``."""
    hook = DriftWebhook.for_settings(settings, db)
    return [hook] if hook is not None else []
