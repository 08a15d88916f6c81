#!/bin/sh
# Vendor the portal's browser assets (htmx + its SSE extension) from the npm registry into
# infra_automation/portal/static/vendor/, pinned by integrity and SHA-256. Idempotent: files
# already in place and matching their pins are kept (no network needed). --check: verify only.
set -eu
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
exec "$PY" -m infra_automation.portal.vendor "$@"
