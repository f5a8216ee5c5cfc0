"""The node's declared parameters: names, defaults, descriptions and ranges in one table.

`launch/partglee.launch.py` and `config/partglee.yaml` use these names; tests check they declare the same
names, types and values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from partglee_ros.runtime.backends.onnx_backend import DEFAULT_SPIN_US
from partglee_ros.runtime.postprocess import PostprocessConfig
from partglee_ros.runtime.tracking import TrackingConfig


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    dynamic: bool = False  # may change at run time (validated in a parameter callback)
    range: tuple[float, float] | None = None


DEFAULT_MODEL = "share/partglee_ros/models/default"  # relative to the package's install prefix

PARAMS = (
    Param("backend", "auto", "inference backend: auto | torch | onnx | tensorrt"),
    Param(
        "model_path",
        "",
        f"model directory (config.json + model.safetensors); empty = bundled model ({DEFAULT_MODEL})",
    ),
    Param("engine_path", "", "ONNX file for backend onnx, or TensorRT engine (.engine) for tensorrt/auto"),
    Param(
        "rebuild_stale_engine",
        False,
        "rebuild a TensorRT engine whose metadata no longer matches (else refuse it)",
    ),
    Param(
        "onnx_spin_threads",
        False,
        "ONNX Runtime workers busy-wait between ops (up to onnx_spin_us each time): lower latency",
    ),
    Param(
        "onnx_spin_us",
        DEFAULT_SPIN_US,
        "with onnx_spin_threads: microseconds an idle worker spins before it sleeps; 0 = ONNX Runtime's own",
        range=(0, 1_000_000),
    ),
    Param(
        "onnx_threads",
        0,
        "backend onnx: intra-op threads, 0 = the CPUs this process may use",
        range=(0, 256),
    ),
    Param(
        "torch_compile",
        False,
        "backend torch: compile the model with torch.compile (faster; minutes at the first start, needs g++)",
    ),
    Param(
        "torch_threads",
        0,
        "backend torch: intra-op threads, 0 = PyTorch's default (all cores); 1 suits a node sharing 2 cores",
        range=(0, 256),
    ),
    Param("device", "cpu", "cpu | cuda | cuda:N (tensorrt: the GPU to run on; cpu means cuda:0)"),
    Param(
        "precision",
        "fp32",
        "fp32 | fp16 (backend torch, needs CUDA) | int8 (backend onnx or auto: model.int8.onnx from "
        "engines.quantize_onnx); tensorrt ignores it",
    ),
    Param("input_width", 0, "network input width in pixels; 0 = the model's own", range=(0, 4096)),
    Param("input_height", 0, "network input height in pixels; 0 = the model's own", range=(0, 4096)),
    Param("object_threshold", 0.3, "minimum object score", dynamic=True, range=(0.0, 1.0)),
    Param("part_threshold", 0.3, "minimum part score", dynamic=True, range=(0.0, 1.0)),
    Param(
        "nms_iou",
        0.7,
        "box IoU above which a lower-scored duplicate is suppressed",
        dynamic=True,
        range=(0.0, 1.0),
    ),
    Param("max_objects", 20, "most objects reported per frame", dynamic=True, range=(1, 1000)),
    Param("max_parts_per_object", 8, "most parts reported per object", dynamic=True, range=(0, 100)),
    Param("objects", ["mug", "kettle", "bottle", "pan", "knife", "hammer"], "default object vocabulary"),
    Param(
        "parts", ["handle", "body", "lid", "spout", "cap", "neck", "blade", "head"], "default part vocabulary"
    ),
    Param("object_parts", [""], "optional restriction, entries like 'mug: handle, body' ('' = none)"),
    Param(
        "compressed", False, "subscribe to sensor_msgs/CompressedImage on <image>/compressed instead of image"
    ),
    Param("use_depth", False, "match depth + camera_info to each frame and republish them with the result"),
    Param(
        "depth_slop", 0.05, "largest stamp difference (s) for depth/camera_info matching", range=(0.0, 1.0)
    ),
    Param("qos_reliability", "best_effort", "image subscription reliability: best_effort | reliable"),
    Param(
        "max_rate",
        0.0,
        "most frames per second segmented for the topics (0 = every frame inference keeps up with); frames "
        "between are skipped, the newest is taken when one is due; segment requests do not wait for it",
        dynamic=True,
        range=(0.0, 1000.0),
    ),
    Param(
        "tracking",
        True,
        "give objects track ids that stay the same across frames (ObjectInstance.track_id; 0 when off)",
        dynamic=True,
    ),
    Param(
        "track_iou",
        TrackingConfig.iou,
        "mask IoU with a track's last mask needed to continue it; must be > 0",
        dynamic=True,
        range=(0.0, 1.0),
    ),
    Param(
        "track_max_missed",
        TrackingConfig.max_missed,
        "segmented frames in a row a track may go unmatched (occlusion, a missed detection) before it ends",
        dynamic=True,
        range=(0, 1000),
    ),
    Param(
        "track_relabel_iou",
        TrackingConfig.relabel_iou,
        "mask IoU with a track's last mask at which an object of another label continues it (a detector "
        "wavering between two names for one object; the track takes the new label); 0 = labels never change",
        dynamic=True,
        range=(0.0, 1.0),
    ),
    Param(
        "track_max_age",
        TrackingConfig.max_age,
        "seconds of frame stamps a track may go unseen before it ends, however few frames came (a paused "
        "camera); 0 = no time limit. A frame stamped before the previous one ends every track",
        dynamic=True,
        range=(0.0, 3600.0),
    ),
    Param("publish_debug_image", True, "publish debug_image (only computed while someone subscribes)"),
    Param("diagnostics_period", 1.0, "seconds between /diagnostics messages", range=(0.1, 60.0)),
)
BY_NAME = {p.name: p for p in PARAMS}


def descriptor(p: Param, static_writable: bool = False) -> ParameterDescriptor:
    """``static_writable``: parameters read at configure can be set too (the lifecycle node, between its
    configurations; the node refuses them while configured)."""
    d = ParameterDescriptor(description=p.description, read_only=not (p.dynamic or static_writable))
    if p.range is not None:
        lo, hi = p.range
        if isinstance(p.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        else:
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
    return d


def postprocess_config(values: dict[str, Any]) -> PostprocessConfig:
    cfg = PostprocessConfig(
        object_threshold=float(values["object_threshold"]),
        part_threshold=float(values["part_threshold"]),
        max_objects=int(values["max_objects"]),
        max_parts_per_object=int(values["max_parts_per_object"]),
        nms_iou=float(values["nms_iou"]),
    )
    cfg.validate()
    return cfg


def tracking_warning(values: dict[str, Any]) -> str | None:
    """A capped rate whose frames lie `track_max_age` or more apart ends every track between two frames: legal
    (the node obeys it), but rarely what was meant."""
    rate, age = float(values["max_rate"]), float(values["track_max_age"])
    if values["tracking"] and rate > 0.0 and age > 0.0 and 1.0 / rate >= age:
        return (
            f"max_rate {rate:g} segments a frame every {1.0 / rate:g} s, at least track_max_age ({age:g} s): "
            "every track ends before the next frame; raise track_max_age, or set it to 0 (no time limit)"
        )
    return None
