"""The launch file's arguments, as data: each maps to one node parameter or one topic remap.

`launch/partglee.launch.py` builds its Node from this table, and `node_command` builds the equivalent
command line (`--ros-args --params-file ... -r ... -p ...`), which is what the tests start, because
`ros2 launch` itself is not installable from PyPI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from partglee_ros.ros.parameters import BY_NAME

# argument -> (kind, target, default); kind "param" sets a node parameter, "remap" remaps a relative topic
ARGUMENTS: dict[str, tuple[str, str, str]] = {
    "image_topic": ("remap", "image", "/camera/color/image_raw"),
    "depth_topic": ("remap", "depth", "/camera/aligned_depth_to_color/image_raw"),
    "camera_info_topic": ("remap", "camera_info", "/camera/color/camera_info"),
    "backend": ("param", "backend", "auto"),
    "model_path": ("param", "model_path", ""),
    "use_debug_image": ("param", "publish_debug_image", "true"),
    "use_depth": ("param", "use_depth", "false"),
    "compressed": ("param", "compressed", "false"),
}
# namespace, params_file and dds_profile are declared in the launch file itself: they are not one parameter


def parameter_type(target: str) -> type:
    """The declared type of a parameter argument. Launch and rcl read untyped values as YAML, so an empty
    model_path would become null (launch_ros: TypeError; rcl: `-p model_path:=` does not parse)."""
    return type(BY_NAME[target].default)


def _override(target: str, value: str) -> str:
    # a YAML double-quoted scalar keeps any text a string: '', 'true', '123', 'a: b'
    return json.dumps(value) if parameter_type(target) is str else value


def node_command(
    executable: str, params_file: str, values: Mapping[str, str], namespace: str = ""
) -> list[str]:
    """The command line `ros2 launch partglee_ros partglee.launch.py ARG:=VALUE ...` would run."""
    unknown = set(values) - set(ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown launch arguments: {sorted(unknown)}")
    cmd = [executable, "--ros-args", "--params-file", params_file]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for name, (kind, target, default) in ARGUMENTS.items():
        value = values.get(name, default)
        # launch always sets these (with their defaults), so they override the params file's values
        if kind == "remap":
            cmd += ["-r", f"{target}:={value}"]
        else:
            cmd += ["-p", f"{target}:={_override(target, value)}"]
    return cmd
