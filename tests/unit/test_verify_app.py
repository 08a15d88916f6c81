"""``infra verify`` of the containers department's app step (``os.playbook`` with
``playbooks/app.yml``): the app's podman container runs, and its page through nginx carries
the recorded marker. The SSH reading is parsed from what a host prints; the page is served by
a real HTTP server on 127.0.0.1. The lab test reads real hosts
(tests/integration/test_containers_lab.py)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from infra_automation import verify_os
from infra_automation.inventory import Host
from infra_automation.verify import SyncState
from infra_automation.verify_os import SECTION, check_site, parse_state, recorded_app

MARKER = '<span id="container">infra-app-shop-app</span>'
APP = {"state": "present", "container": "infra-app-shop-app", "page_marker": MARKER}


def host_output(container: str | None) -> str:
    out = f"{SECTION}services\n [ + ]  nginx\n{SECTION}cron\n"
    return out if container is None else out + f"{SECTION}container\n{container}\n"


@pytest.fixture
def page() -> Iterator[tuple[str, list[bytes]]]:
    """A URL on 127.0.0.1 and the body it serves (tests change it)."""
    body = [f"<strong id='project'>shop</strong> {MARKER}".encode()]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/app/", body
    finally:
        server.shutdown()
        server.server_close()


def test_only_a_present_app_with_a_plain_name_is_verified() -> None:
    assert recorded_app(APP) == {"container": "infra-app-shop-app", "page_marker": MARKER}
    assert recorded_app({**APP, "state": "absent"}) == {}  # removed by project-app app: false
    assert recorded_app({**APP, "container": "x; podman rm -fa"}) == {}  # never a shell
    assert recorded_app(None) == {}  # a step of another playbook


def test_the_container_status_is_read_from_its_section() -> None:
    assert parse_state(host_output("running")).container == "running"
    assert parse_state(host_output("exited")).container == "exited"
    assert parse_state(host_output("")).container == ""  # podman knows no such container
    assert parse_state(host_output(None)).container == ""


def test_the_site_needs_the_marker_when_one_was_recorded(
    page: tuple[str, list[bytes]],
) -> None:
    url, body = page
    assert check_site("shop", url, "web-01", MARKER).state is SyncState.IN_SYNC
    body[0] = b"<strong id='project'>shop</strong> the PHP landing page"
    check = check_site("shop", url, "web-01", MARKER)
    assert check.state is SyncState.DRIFTED and check.found == "HTTP 200, another page"
    assert check_site("shop", url, "web-01").state is SyncState.IN_SYNC  # no marker asked


def checks(monkeypatch: pytest.MonkeyPatch, url: str, status: str | None) -> dict[str, Any]:
    asked: dict[str, Any] = {}

    def read_host(host: Host, exporter: Any, table: Any = None, *, container: Any = None) -> Any:
        asked["container"] = container
        return parse_state(host_output(status)), "", None

    monkeypatch.setattr(verify_os, "read_host", read_host)
    host = Host(name="shop-web-01", hostname="127.0.0.1", port=22)
    data = {"services": {}, "url": url, "facts": {"app": APP}}
    found = verify_os._host_checks("shop", host, "shop-web-01", data)
    return {"asked": asked["container"], **{c.resource.split()[0]: c for c in found}}


def test_a_running_container_and_its_page_are_in_sync(
    monkeypatch: pytest.MonkeyPatch, page: tuple[str, list[bytes]]
) -> None:
    found = checks(monkeypatch, page[0], "running")
    assert found["asked"] == "infra-app-shop-app"
    assert found["container"].state is SyncState.IN_SYNC
    assert found["site"].state is SyncState.IN_SYNC


def test_a_stopped_or_removed_container_is_drift(
    monkeypatch: pytest.MonkeyPatch, page: tuple[str, list[bytes]]
) -> None:
    stopped = checks(monkeypatch, page[0], "exited")["container"]
    assert stopped.state is SyncState.DRIFTED and stopped.found == "exited"
    removed = checks(monkeypatch, page[0], "")["container"]
    assert removed.state is SyncState.DRIFTED and removed.found == "absent"
    assert "container infra-app-shop-app is absent" in removed.reason
