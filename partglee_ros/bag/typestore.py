"""One rosbags typestore that knows the standard ROS 2 messages and this package's own message types.

The partglee_ros types are parsed from the package's msg/*.msg files (the same files colcon builds), so a
bag written here carries exactly the definitions a ROS 2 `ros2 bag play` expects.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "partglee_ros"
SEGMENTATION_TYPE = f"{PACKAGE}/msg/HierarchicalSegmentation"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)


def msg_directory() -> Path:
    """msg/ of the source tree, else of the colcon install space (share/partglee_ros/msg)."""
    source = Path(__file__).resolve().parents[2] / "msg"
    if source.is_dir():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / "msg"
    except ImportError as err:
        raise FileNotFoundError(f"cannot find the {PACKAGE} msg/ directory (looked at {source})") from err


@cache
def bag_typestore() -> Typestore:
    """ROS 2 Kilted's standard types plus partglee_ros/msg/*, parsed once per process."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(msg_directory().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store
