#!/usr/bin/env bash
# The service parts the tests use, from Debian's packages, on 127.0.0.1 (idempotent):
#   - PostgreSQL 15 (`postgresql`): the cluster 15/main, a role and a database for the tests
#   - Redis (`redis-server`): one server with no persistence, pid file under .infra/services
# Prints the settings to export (`eval "$(scripts/services.sh)"`); `scripts/services.sh down`
# stops what this script started (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=.infra/services
PG_VERSION=${PG_VERSION:-15}
PG_PORT=${INFRA_PG_PORT:-5432}
PG_USER=infra
PG_PASSWORD=${INFRA_PG_PASSWORD:-infra-test-pw}
PG_DB=infra_test
REDIS_PORT=${INFRA_REDIS_PORT:-6390}
mkdir -p "$STATE"

if [[ ${1:-up} == down ]]; then
  if [[ -f $STATE/redis.pid ]]; then
    kill "$(cat "$STATE/redis.pid")" 2>/dev/null || true
    rm -f "$STATE/redis.pid"
  fi
  if [[ -f $STATE/pg.started ]]; then
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main stop || true
    rm -f "$STATE/pg.started"
  fi
  exit 0
fi

need=()
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
if ((${#need[@]})); then
  echo "==> apt-get install ${need[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL: the Debian cluster, started without systemd, answering on 127.0.0.1 only.
if ! pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then
  echo "==> starting PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT" >&2
  conf=/etc/postgresql/$PG_VERSION/main
  sed -i '/^listen_addresses\|^port\|^max_connections/d' "$conf/postgresql.conf"
  printf "listen_addresses = '127.0.0.1'\nport = %s\nmax_connections = 200\n" "$PG_PORT" \
    >"$conf/conf.d/infra-tests.conf"
  pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start >&2
  touch "$STATE/pg.started"
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.2; done
fi
psql_admin() { runuser -u postgres -- psql -p "$PG_PORT" -v ON_ERROR_STOP=1 -qtA "$@"; }
if [[ -z $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$PG_USER'") ]]; then
  psql_admin -c "CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" >&2
fi
if [[ -z $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") ]]; then
  psql_admin -c "CREATE DATABASE $PG_DB OWNER $PG_USER" >&2
fi

# Redis: our own server, no persistence, stopped by PID.
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "==> starting Redis on 127.0.0.1:$REDIS_PORT" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
    --appendonly no --pidfile "$PWD/$STATE/redis.pid" --logfile "$PWD/$STATE/redis.log" >&2
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

echo "export INFRA_TEST_POSTGRES_URL='postgresql+psycopg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB'"
echo "export INFRA_TEST_REDIS_URL='redis://127.0.0.1:$REDIS_PORT/0'"
