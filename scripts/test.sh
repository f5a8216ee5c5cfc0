#!/usr/bin/env bash
# The test suite: lint, then pytest over tests/ with the venv and the colcon install space.
# (Run through `make test`, which builds first.) Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/env.sh
ruff check .
ruff format --check .
set +e
python -m pytest -p no:cacheprovider --durations=12 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit "$status"
