# Sourced, not run: the venv plus this package's colcon install space (after scripts/setup.sh).
# shellcheck disable=SC1091
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/venv_env.sh"
# setup.sh in the install space chains nothing here (no underlay was sourced at build time).
# shellcheck disable=SC1091
. "$_pg_root/install/setup.sh"
export PYTHONPATH="$_pg_root${PYTHONPATH:+:$PYTHONPATH}"
unset _pg_root
