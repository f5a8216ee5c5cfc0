# Sourced, not run: the venv plus this package's colcon install space (after scripts/setup.sh).
# shellcheck disable=SC1091
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/venv_env.sh"
# setup.sh in the install space chains nothing here (no underlay was sourced at build time).
if [ ! -f "$_pg_root/install/setup.sh" ]; then
  echo "env.sh: $_pg_root/install/setup.sh is missing; run scripts/setup.sh (or make setup) first" >&2
  return 1
fi
# colcon's setup scripts read unset variables; relax `set -u` while sourcing them
case $- in *u*) _pg_nounset=1; set +u ;; *) _pg_nounset= ;; esac
# shellcheck disable=SC1091
. "$_pg_root/install/setup.sh"
[ -n "$_pg_nounset" ] && set -u
unset _pg_nounset
export PYTHONPATH="$_pg_root${PYTHONPATH:+:$PYTHONPATH}"
unset _pg_root
