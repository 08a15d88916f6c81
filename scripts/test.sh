#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, types, playbook lint, unit + lab integration tests,
# and the documentation site. pytest's "no tests collected" (exit 5) counts as a failure here:
# the suite must always run tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export ANSIBLE_HOME="$PWD/.infra/ansible-home"
# The lab tests on an instance of their own (bound to a pool of hosts), beside the lab
# `make demo` brings up (guests): INFRA_LAB_NAME picks another.
export INFRA_LAB_NAME=${INFRA_LAB_NAME:-tests}
# PostgreSQL and Redis on 127.0.0.1 (scripts/services.sh): the database suites run on both
# SQLite and PostgreSQL.
eval "$(scripts/services.sh)"

echo "==> ruff"
ruff check .
ruff format --check .
echo "==> mypy --strict"
mypy
echo "==> ansible-lint (production profile)"
ansible-lint -q
run_pytest() {
  set +e
  pytest -p no:cacheprovider "$@"
  local rc=$?
  set -e
  if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests: that is a failure for this project" >&2
    exit 1
  fi
  if [[ $rc -ne 0 ]]; then
    exit "$rc"
  fi
}
if (($#)); then
  echo "==> pytest $*"
  run_pytest "$@"
else
  # The whole suite as users run it (mitogen, installed by the dev extra, on by default); the
  # Ansible lab tests again on Ansible's stock strategies, the fallback without mitogen.
  echo "==> pytest (unit, database, service, portal, workers, lab integration; Ansible on mitogen)"
  # --durations: the slowest tests, named in the log (the suite must stay well under CI's limit)
  INFRA_ANSIBLE_MITOGEN=1 run_pytest --ignore=tests/faults --durations=30
  echo "==> Ansible lab tests again with Ansible's stock strategies"
  INFRA_ANSIBLE_MITOGEN=0 run_pytest tests/integration/test_ansible_lab.py \
    tests/integration/test_ansible_crash_lab.py tests/integration/test_speed_session_lab.py
  # The fault suite stops routers, vCenter and hosts of the lab on purpose: it runs last, on
  # its own, and prints its fault x outcome matrix.
  echo "==> pytest tests/faults (fuzzing and the fault matrix on the lab)"
  run_pytest tests/faults
  echo "==> secret scan (project root, databases, temp dir)"
  python tests/faults/secret_scan.py --database "$INFRA_TEST_POSTGRES_URL"
fi
echo "==> mkdocs build --strict"
mkdocs build --strict -d .infra/site
