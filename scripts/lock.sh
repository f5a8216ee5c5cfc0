#!/usr/bin/env bash
# Resolve env/requirements.in in a scratch venv and write the exact versions to env/constraints.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3.11 -m venv "$scratch/venv"
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$scratch/venv/bin/pip" install --quiet -r env/requirements.in
{
  echo "# Pinned versions of everything in env/requirements.in (pip freeze of a working venv; $(date -u +%F))."
  "$scratch/venv/bin/pip" freeze
} >env/constraints.txt
echo "wrote env/constraints.txt"
