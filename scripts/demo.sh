#!/usr/bin/env bash
# The main job (run through `make demo`, which builds first): partglee_node on the bundled default model,
# sample scenes played into it over ROS 2, overlays + summary written to out/demo/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/env.sh
python -m partglee_ros.ros.demo "$@"
