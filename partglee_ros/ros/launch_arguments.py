"""The launch file's arguments, as data: each maps to one node parameter or one topic remap.

Every node parameter is a launch argument of its own name (plus `use_debug_image`, the older name of
`publish_debug_image`, and `use_sim_time`). A parameter argument left at '' keeps the params file's value;
only the arguments given override it. `launch/partglee.launch.py` types the given values with
`parameter_values`, and `node_command` builds the equivalent command line (`--ros-args --params-file ... -r ...
-p ...`), which is what the tests start, because `ros2 launch` itself is not installable from PyPI.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import yaml

from partglee_ros.ros.parameters import BY_NAME, PARAMS, Param

UNSET = ""  # a parameter argument's default: the params file (or the node's declared default) decides
USE_SIM_TIME = Param("use_sim_time", False, "use the /clock topic as the node's time (rclpy's own parameter)")
# argument -> (kind, target, default); kind "param" sets a node parameter, "remap" remaps a relative topic
ARGUMENTS: dict[str, tuple[str, str, str]] = {
    "image_topic": ("remap", "image", "/camera/color/image_raw"),
    "depth_topic": ("remap", "depth", "/camera/aligned_depth_to_color/image_raw"),
    "camera_info_topic": ("remap", "camera_info", "/camera/color/camera_info"),
    "use_debug_image": ("param", "publish_debug_image", UNSET),
    **{p.name: ("param", p.name, UNSET) for p in (*PARAMS, USE_SIM_TIME)},
}
# namespace, node_name, params_file, dds_profile and grasp are declared in the launch file itself
# grasp:=true: grasp_node beside the node, on its outputs (relative names: both follow the namespace)
GRASP_REMAPS = [("depth", "segmentation/depth"), ("camera_info", "segmentation/camera_info")]


class ListForm(NamedTuple):
    """What a list argument's error says: its entries, an example, and what an entry YAML read as a mapping
    ('mug: handle' unquoted) needs."""

    entry: str
    example: str
    mapping_hint: str
    # the node drops '' entries of parts and object_parts, so [''] is "none"; it refuses an empty object name
    none: bool = False


NAME_HAS_NO_COLON = "a name cannot contain ':' (object_parts lists an object's parts)"
LIST_FORMS = {
    "objects": ListForm("object name", "['mug', 'cup']", NAME_HAS_NO_COLON),
    "parts": ListForm("part name", "['handle', 'lid']", NAME_HAS_NO_COLON, none=True),
    "object_parts": ListForm(
        "'object: part, part' entry",
        "['mug: handle, body', 'kettle: lid']",
        "quote each entry, e.g. \"['mug: handle, body', 'kettle: lid']\"",
        none=True,
    ),
}


def _param(target: str) -> Param:
    return USE_SIM_TIME if target == USE_SIM_TIME.name else BY_NAME[target]


def description(name: str) -> str:
    """What `ros2 launch ... --show-args` prints for an argument."""
    kind, target, default = ARGUMENTS[name]
    if kind == "remap":
        return f"topic the node's `{target}` input is remapped to"
    alias = f" (parameter {target})" if target != name else ""
    return f"{_param(target).description}{alias}; '' = the params file's value"


def _typed(name: str, target: str, text: str) -> Any:
    """A launch argument's text as the parameter's declared type, or one line saying what was expected.
    Done here, not by rcl, which reads `-p` values as YAML: `model_path:=123` would be an integer,
    `object_threshold:=1` an integer that a double parameter refuses, and `yes` a bool."""
    kind = type(_param(target).default)
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"launch argument {name}:={text!r}: expected true or false")
        return text.lower() == "true"
    if kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"launch argument {name}:={text!r}: expected {kind.__name__}") from None
        if not math.isfinite(value):
            raise ValueError(f"launch argument {name}:={text!r}: expected a finite number")
        return value
    if kind is list:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = None
        form = LIST_FORMS[target]
        if isinstance(value, list) and any(isinstance(v, dict) for v in value):
            raise ValueError(
                f"launch argument {name}:={text!r}: YAML reads an unquoted 'a: b' entry as a mapping; "
                f"{form.mapping_hint}"
            )
        # an empty list leaves the parameter unset in rcl (the node then fails)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(
                f"launch argument {name}:={text!r}: expected a list of at least one {form.entry}, e.g. "
                f'"{form.example}"' + " ([''] for none)" * form.none
            )
        return value
    return text


def parameter_values(values: Mapping[str, str]) -> dict[str, Any]:
    """The parameters the given launch arguments set, typed; '' (unset) arguments set nothing."""
    unknown = set(values) - set(ARGUMENTS)
    if unknown:
        raise ValueError(f"unknown launch arguments: {sorted(unknown)}")
    typed: dict[str, Any] = {}
    for name, text in values.items():
        kind, target, _ = ARGUMENTS[name]
        if kind != "param" or text == UNSET:
            continue
        value = _typed(name, target, text)
        if target in typed and typed[target] != value:
            raise ValueError(
                f"launch arguments use_debug_image and {target} disagree ({typed[target]} and {value})"
            )
        typed[target] = value
    return typed


def with_grasp_node(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` for a node that serves grasp_node: grasp_node plans on the depth the node republishes, so
    use_depth is set, and an explicit use_depth:=false is refused rather than leaving grasp_node without it."""
    given = values.get("use_depth", UNSET)
    if given != UNSET and not parameter_values({"use_depth": given})["use_depth"]:  # a typo: its own error
        raise ValueError(f"grasp:=true needs use_depth (given use_depth:={given!r})")
    return {**values, "use_depth": "true"}


# the launch arguments grasp_node takes too: the same clock, and the same depth_slop, since it matches the
# depth partglee_node republishes to each segmentation by stamp again (README: "applies to both nodes")
GRASP_ARGUMENTS = (USE_SIM_TIME.name, "depth_slop")


def grasp_parameters(values: Mapping[str, str]) -> dict[str, Any]:
    """What the launch arguments set on grasp_node: only GRASP_ARGUMENTS (its own parameters come from the
    params file's `/**/partglee_grasp:` section)."""
    return {k: v for k, v in parameter_values(values).items() if k in GRASP_ARGUMENTS}


def grasp_command(
    executable: str, params_file: str, values: Mapping[str, str] | None = None, namespace: str = ""
) -> list[str]:
    """The grasp_node command line `ros2 launch partglee_ros partglee.launch.py grasp:=true` would run."""
    cmd = [executable, "--ros-args"]
    if params_file:  # a `/**/partglee_grasp:` section there sets part_names, min_quality, rectified, ...
        cmd += ["--params-file", params_file]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for source, target in GRASP_REMAPS:
        cmd += ["-r", f"{source}:={target}"]
    for target, value in grasp_parameters(values or {}).items():
        cmd += ["-p", f"{target}:={json.dumps(value)}"]
    return cmd


def topic_remaps(values: Mapping[str, str]) -> list[tuple[str, str]]:
    """(input, topic) for every remap argument, given or default; an empty topic is refused here (rcl
    would stop the node with a traceback: `Couldn't parse remap rule`)."""
    remaps = []
    for name, (kind, target, default) in ARGUMENTS.items():
        if kind == "remap":
            topic = values.get(name, default)
            if not topic.strip() or " " in topic:
                raise ValueError(f"launch argument {name}:={topic!r} is not a topic name")
            remaps.append((target, topic))
    return remaps


def node_command(
    executable: str, params_file: str, values: Mapping[str, str], namespace: str = ""
) -> list[str]:
    """The command line `ros2 launch partglee_ros partglee.launch.py ARG:=VALUE ...` would run."""
    parameters = parameter_values(values)
    cmd = [executable, "--ros-args"]
    if params_file:
        cmd += ["--params-file", params_file]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for target, topic in topic_remaps(values):
        cmd += ["-r", f"{target}:={topic}"]
    for target, value in parameters.items():
        # JSON is YAML: a string stays a string ('', 'true', '123', 'a: b'), a float keeps its '.0'
        cmd += ["-p", f"{target}:={json.dumps(value)}"]
    return cmd
