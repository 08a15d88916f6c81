"""The optional webhook: each state change of a change record is POSTed as JSON.

The URL comes from ``INFRA_CHANGE_WEBHOOK`` (or the caller). A receiver that is down, slow
(5 s) or answers an error is logged as a warning, without the URL's query or credentials;
it never stops a change. The body::

    {"event": "change.state", "change": "<sha256>", "previous": "waiting",
     "state": "approved", "actor": "carol", "reason": "...", "at": "<ISO 8601>",
     "service": "...", "project": "...", "type": "normal", "risk": "medium",
     "requester": "...", "flagged": false}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import httpx

from infra_automation.changes.store import ChangeView, StateChange

WEBHOOK_ENV = "INFRA_CHANGE_WEBHOOK"
TIMEOUT = 5.0
log = logging.getLogger(__name__)


def webhook_url(env: Mapping[str, str] | None = None) -> str | None:
    value = (os.environ if env is None else env).get(WEBHOOK_ENV, "").strip()
    return value or None


def payload(view: ChangeView, change: StateChange) -> dict[str, Any]:
    record = view.record
    return {
        "event": "change.state",
        "change": record.id,
        "previous": change.previous,
        "state": change.state,
        "actor": change.actor,
        "reason": change.reason,
        "at": change.at.isoformat(),
        "service": record.service,
        "project": record.project,
        "type": record.change_type.value,
        "risk": record.risk.value,
        "requester": record.requester,
        "flagged": view.flagged,
    }


class Webhook:
    """A :data:`~infra_automation.changes.store.Notify` that POSTs each state change."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout

    def __call__(self, view: ChangeView, change: StateChange) -> None:
        try:
            response = httpx.post(self.url, json=payload(view, change), timeout=self.timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            where = httpx.URL(self.url).copy_with(query=None, userinfo=b"")
            log.warning(
                "change webhook %s: %s (change %s, state %s)",
                where,
                type(exc).__name__,
                change.change_id[:12],
                change.state,
            )
