"""The optional webhook: each state change of a change record is POSTed as JSON.

The URL comes from ``INFRA_CHANGE_WEBHOOK`` (or the caller). A receiver that is down, slow
(5 s) or answers an error is logged as a warning, without the URL's query or credentials;
it never stops a change. The body::

    {"event": "change.state", "change": "<sha256>", "previous": "waiting",
     "state": "approved", "actor": "carol", "reason": "...", "at": "<ISO 8601>",
     "service": "...", "project": "...", "type": "normal", "risk": "medium",
     "requester": "...", "flagged": false}

:func:`post_json` is the delivery itself, shared with the drift webhook of ``infra verify``
(:mod:`infra_automation.verify_webhook`): one way to POST, one way to log a failure.
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


def post_json(
    url: str,
    body: Mapping[str, Any],
    *,
    label: str,
    about: str = "",
    headers: Mapping[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> bool:
    """POST ``body`` as JSON; whether the receiver took it (a 2xx answer). A receiver that is
    down, slow or answers an error is logged as a warning ``<label> <url>: <error> (<about>)``
    with the URL stripped of its query and credentials; the body and the headers (a token)
    are never logged."""
    try:
        response = httpx.post(url, json=dict(body), headers=dict(headers or {}), timeout=timeout)
        response.raise_for_status()
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        log.warning("%s %s: %s (%s)", label, _shown(url), type(exc).__name__, about)
        return False
    return True


def _shown(url: str) -> str:
    try:
        return str(httpx.URL(url).copy_with(query=None, userinfo=b""))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "(unparsable URL)"


class Webhook:
    """A :data:`~infra_automation.changes.store.Notify` that POSTs each state change."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout

    def __call__(self, view: ChangeView, change: StateChange) -> None:
        about = f"change {change.change_id[:12]}, state {change.state}"
        post_json(
            self.url, payload(view, change), label="change webhook", about=about,
            timeout=self.timeout,
        )  # fmt: skip
