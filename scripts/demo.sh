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
project=$(sed -n 's/^project: *//p' "$REQUEST")
echo "Documentation: docs/projects/$project/index.md (HTML site: site/index.html)"
echo "Run record:    .venv/bin/infra runs list --project $project"
echo "Remove it:     .venv/bin/infra apply requests/example-decommission.yml ; .venv/bin/infra lab down"
