#!/usr/bin/env bash
# The README demo: install, start the built-in lab, build the example landscape, write its docs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export ANSIBLE_HOME="$PWD/.infra/ansible-home"
REQUEST=${1:-requests/example-landscape.yml}

echo "==> infra lab up"
infra lab up
echo
echo "==> infra plan $REQUEST"
infra plan "$REQUEST"
echo
echo "==> infra apply $REQUEST"
infra apply "$REQUEST"
echo
# The lab gives each VM its own guest container (`infra lab up`'s default): one per VM now.
echo "==> infra lab status"
infra lab status || true
echo
project=$(sed -n 's/^project: *//p' "$REQUEST")
echo "Documentation: docs/projects/$project/index.md (HTML site: site/index.html)"
echo "Run record:    .venv/bin/infra runs list --project $project"
echo "Another:       a copy of $REQUEST with another project: its VMs get guests of their own"

# The TAM portal over the same record: a demo TAM of this project, a fresh password each time.
echo "==> infra server (the TAM portal)"
password=$(python -c 'import secrets; print(secrets.token_urlsafe(15))')
if infra users list | grep -q " demo-tam "; then
  infra users passwd demo-tam --password-stdin <<<"$password" >/dev/null
else
  infra users add demo-tam --role tam --project "$project" --password-stdin <<<"$password" >/dev/null
fi
PORT=${INFRA_DEMO_PORT:-8080}
pidfile=.infra/server.pid
if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "(the portal of an earlier demo is still running, PID $(cat "$pidfile"))"
else
  setsid nohup infra server --port "$PORT" >.infra/server.log 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 100); do
    python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/login', timeout=1)" \
      2>/dev/null && break
    sleep 0.2
  done
fi
echo
echo "Portal:        http://127.0.0.1:$PORT/  (log in as demo-tam, password: $password)"
echo "               shown once; new one: infra users passwd demo-tam"
echo "Stop it:       kill \$(cat $pidfile)   (log: .infra/server.log)"
echo "Remove it:     .venv/bin/infra apply requests/example-decommission.yml ; .venv/bin/infra lab down"
