"""Headless Chromium (Debian's ``chromium`` package) driven by Playwright for Python.

Install: ``PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 pip install playwright`` and
``apt-get install -y chromium`` (never ``playwright install``: no browser download). The
browser starts without network services of its own; every request a page makes is seen by
:class:`Requests`, and anything not for 127.0.0.1 is aborted and reported.
"""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


class Requests:
    """Every URL the page asked for; the ones that would leave 127.0.0.1 are aborted."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.outside: list[str] = []

    def handle(self, route: Any) -> None:
        url = route.request.url
        self.seen.append(url)
        host = urlsplit(url).hostname
        if url.startswith(("data:", "about:")) or host == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()


def serve(folder: Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    """A static HTTP server for ``folder`` on 127.0.0.1 (a free port), in a thread."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None
