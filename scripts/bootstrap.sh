#!/usr/bin/env bash
# Install what infra-automation and its lab need on a fresh Debian 12 machine (idempotent).
#   - Debian packages for the lab (vcsim sources, FRR, podman, debootstrap...) when run as root
#   - a virtualenv in .venv with the project and its dev tools
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  golang-go golang-github-vmware-govmomi-dev   # vcsim, built from Debian's govmomi sources
  frr openssh-server iproute2                   # FRRouting routers in namespaces, sshd per router
  podman runc debootstrap openssh-client        # Debian hosts as rootful podman containers
  postgresql redis-server                       # the service's shared state and broker (tests)
  chromium                                      # the portal's and the docs site's browser tests
  git make ca-certificates
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
  echo "==> apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

VENV=${VENV:-.venv}
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating $VENV"
  python3 -m venv "$VENV" 2>/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  }
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -e "$stamp" ]]; then
  echo "==> pip install -e '.[dev]'"
  "$VENV/bin/pip" install -q --upgrade pip
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$VENV/bin/pip" install -q -e '.[dev]'
  rm -f "$VENV"/.installed-* && touch "$stamp"
fi
# The portal's vendored front-end assets (htmx): committed, pinned; verified here, fetched from
# the npm registry only if missing.
scripts/vendor-assets.sh
