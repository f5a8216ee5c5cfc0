"""Labelled part point clouds (sensor_msgs/PointCloud2): the cleaned 3D points grasp_node planned on.

Cloud-based grasp planners and collision maps take points, not masks. Each point carries the ids of its
object and part in the segmentation of the same frame (same header), where their labels and masks are, and
its object's track id (0: not tracked), which names the object across frames.
Written with NumPy here because sensor_msgs_py has no PyPI wheel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

# x, y, z in metres (camera frame); ids as in HierarchicalSegmentation (PartInstance.parent_id / id, and the
# object's ObjectInstance.track_id)
POINT_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("object_id", "<u4"), ("part_id", "<u4"), ("track_id", "<u4")]
)
FIELD_TYPES = {np.dtype("<f4"): PointField.FLOAT32, np.dtype("<u4"): PointField.UINT32}
LAYOUT = [  # PointField (name, offset, datatype, count) of each field
    (name, offset, FIELD_TYPES[dtype], 1) for name, (dtype, offset) in POINT_DTYPE.fields.items()
]


class PartPoints(NamedTuple):
    object_id: int
    part_id: int
    track_id: int
    points: np.ndarray  # (N, 3)


def part_cloud(header: Header, parts: Sequence[PartPoints]) -> PointCloud2:
    """One unorganised cloud of every part's points given, in that order."""
    count = sum(len(part.points) for part in parts)
    cloud = np.empty(count, POINT_DTYPE)
    start = 0
    for part in parts:
        end = start + len(part.points)
        for axis, name in enumerate("xyz"):
            cloud[name][start:end] = part.points[:, axis]
        for name in ("object_id", "part_id", "track_id"):
            cloud[name][start:end] = getattr(part, name)
        start = end
    return PointCloud2(
        header=header,
        height=1,
        width=count,
        fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in LAYOUT],
        is_bigendian=False,
        point_step=POINT_DTYPE.itemsize,
        row_step=POINT_DTYPE.itemsize * count,
        data=cloud.tobytes(),
        is_dense=bool(np.isfinite(cloud["z"]).all()),
    )


def cloud_points(msg: PointCloud2) -> np.ndarray:
    """A part cloud back as a structured array (POINT_DTYPE); ValueError for any other layout."""
    layout = [(f.name, f.offset, f.datatype, f.count) for f in msg.fields]
    if layout != LAYOUT or msg.is_bigendian:
        raise ValueError(f"not a part cloud: fields {layout}")
    count = msg.width * msg.height
    if msg.point_step != POINT_DTYPE.itemsize or len(msg.data) != count * POINT_DTYPE.itemsize:
        raise ValueError(f"part cloud of {count} points has {len(msg.data)} bytes, step {msg.point_step}")
    return np.frombuffer(bytes(msg.data), POINT_DTYPE)
