"""The webhook posts each state change to a real local HTTP receiver; a receiver that is
down never stops a change."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import pytest
from change_helpers import TUESDAY

from infra_automation.changes import ChangeService, State
from infra_automation.engine import Engine
from infra_automation.request import Request


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: ClassVar[list[dict[str, Any]]] = []
    handler = type("Handler", (Receiver,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/changes", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_each_state_change_is_posted(
    engine: Engine,
    request_for: Callable[..., Request],
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = receiver
    changes = ChangeService(engine, webhook=url, clock=lambda: TUESDAY)
    change = changes.gate(request_for()).change
    assert change is not None
    for who in ("nina", "victor", "olga"):
        changes.approve(change.id, who)
    changes.reject(change.id, "nina")  # approved is still open: it can be rejected
    assert [(m["previous"], m["state"]) for m in received] == [
        (None, "waiting"),
        ("waiting", "approved"),
        ("approved", "rejected"),
    ]
    last = received[-1]
    assert last["change"] == change.id and last["actor"] == "nina"
    assert last["service"] == "landscape" and last["requester"] == "jane"
    assert last["type"] == "normal" and last["flagged"] is False


def test_a_receiver_that_is_down_is_logged_and_the_change_goes_on(
    engine: Engine, request_for: Callable[..., Request], caplog: pytest.LogCaptureFixture
) -> None:
    changes = ChangeService(engine, webhook="http://127.0.0.1:9/hook?token=s3cret")
    outcome = changes.gate(request_for())
    assert outcome.change is not None and outcome.change.state is State.WAITING
    assert "change webhook http://127.0.0.1:9/hook" in caplog.text
    assert "s3cret" not in caplog.text
