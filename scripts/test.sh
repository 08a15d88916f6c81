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
echo "==> pytest"
set +e
pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no tests: that is a failure for this project" >&2
  exit 1
fi
if [[ $rc -ne 0 ]]; then
  exit "$rc"
fi
echo "==> mkdocs build --strict"
mkdocs build --strict -d .infra/site
