"""The project's containerised application: one page naming the project and its container.

Reads its settings (project, app, container, port, message) from the JSON file given as
argument, listens on 127.0.0.1 only (the container shares the host's network; nginx is the
way in) and exits cleanly on SIGTERM, so `podman stop` does not have to kill it.
"""

import html
import http.server
import json
import signal
import socket
import sys


def page(config):
    esc = {k: html.escape(str(v)) for k, v in config.items()}
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{esc['app']} of {esc['project']}</title></head><body>\n"
        f"<h1>{esc['app']}</h1>\n"
        f'<p>Project <strong id="project">{esc["project"]}</strong>, '
        f'container <span id="container">{esc["container"]}</span> '
        f'on <span id="host">{html.escape(socket.gethostname())}</span>, served by podman.</p>\n'
        f'<p id="message">{esc["message"]}</p>\n</body></html>\n'
    ).encode()


def handler(body):
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "infra-app/1"

        def do_GET(self):
            data = b"ok\n" if self.path.rstrip("/").endswith("/healthz") else body
            kind = "text/plain" if data == b"ok\n" else "text/html; charset=utf-8"
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    return Handler


def main():
    with open(sys.argv[1], encoding="utf-8") as fh:
        config = json.load(fh)
    address = ("127.0.0.1", int(config["port"]))
    server = http.server.ThreadingHTTPServer(address, handler(page(config)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()
