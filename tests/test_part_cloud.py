"""Part clouds: grasp_node's labelled points survive a real serialize/deserialize round trip."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from partglee_ros.ros.part_cloud import PartPoints, cloud_points, part_cloud


def test_points_and_ids_round_trip_through_serialization() -> None:
    rng = np.random.default_rng(0)
    handle, lid = rng.uniform(-1, 1, (7, 3)), rng.uniform(-1, 1, (3, 3))
    header = Header(frame_id="camera_optical")
    msg = part_cloud(header, [PartPoints(4, 9, 17, handle), PartPoints(5, 11, 0, lid)])
    back = deserialize_message(serialize_message(msg), PointCloud2)
    assert back.header == header and (back.height, back.width) == (1, 10) and back.is_dense
    points = cloud_points(back)
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=1)
    np.testing.assert_array_equal(xyz, np.concatenate([handle, lid]).astype(np.float32))
    assert points["object_id"].tolist() == [4] * 7 + [5] * 3
    assert points["part_id"].tolist() == [9] * 7 + [11] * 3
    assert points["track_id"].tolist() == [17] * 7 + [0] * 3


def test_no_parts_give_an_empty_cloud_with_the_layout() -> None:
    msg = part_cloud(Header(), [])
    assert (
        msg.width == 0
        and not msg.data
        and [f.name for f in msg.fields] == ["x", "y", "z", "object_id", "part_id", "track_id"]
    )
    assert len(cloud_points(msg)) == 0


def test_a_cloud_of_another_layout_is_refused() -> None:
    xyz = [
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")
    ]
    other = PointCloud2(height=1, width=1, fields=xyz, point_step=12, row_step=12, data=bytes(12))
    with pytest.raises(ValueError, match="not a part cloud"):
        cloud_points(other)
    short = part_cloud(Header(), [PartPoints(1, 2, 0, np.zeros((2, 3)))])
    short.data = short.data[:-4]
    with pytest.raises(ValueError, match="2 points has 44 bytes"):
        cloud_points(short)
