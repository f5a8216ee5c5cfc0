# Sourced, not run: puts the venv's ROS 2 wheels on the paths colcon/CMake and rclpy expect.
# The venv's prefix is an ament prefix (its share/ holds the packages' ament index).
_pg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
_pg_venv="$_pg_root/.venv"
export VIRTUAL_ENV="$_pg_venv"
export PATH="$_pg_venv/bin:$PATH"
export AMENT_PREFIX_PATH="$_pg_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$_pg_venv${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
unset _pg_venv
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
