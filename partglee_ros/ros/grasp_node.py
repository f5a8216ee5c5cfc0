"""grasp_node: 3D grasp targets for requested parts (e.g. "handle") from segmentations + depth.

Inputs (relative topics): segmentation (HierarchicalSegmentation), depth (16UC1 mm or 32FC1 m, aligned to the
colour image) and camera_info; remap them to what partglee_node republishes with each result
(segmentation/depth, segmentation/camera_info; README), matched to each segmentation by nearest stamp within
`depth_slop`. Outputs, all in the image's frame with the image's stamp: grasp_targets (PoseArray, best
first), grasp_target (PoseStamped, the best), grasp_markers (MarkerArray for RViz). Each pose: position =
the part's estimated centre, z axis = approach along the camera ray, y axis = closing direction across the
part's principal axis. No collision checking and no gripper model: a planner must add both.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import Point, Pose, PoseArray, PoseStamped, Quaternion, Vector3
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from partglee_ros.geometry import GraspPose, plan_grasp
from partglee_ros.msg import HierarchicalSegmentation
from partglee_ros.ros.conversions import ImageConversionError, depth_msg_to_array
from partglee_ros.ros.depth_sync import NearestStampBuffer, stamp_seconds
from partglee_ros.sensor_images import paste_mask_crop


def pose_msg(grasp: GraspPose) -> Pose:
    x, y, z, w = (float(v) for v in grasp.orientation)
    px, py, pz = (float(v) for v in grasp.position)
    return Pose(position=Point(x=px, y=py, z=pz), orientation=Quaternion(x=x, y=y, z=z, w=w))


def markers(header: Header, targets: list[tuple[str, GraspPose]]) -> MarkerArray:
    """An approach arrow, a centre sphere and a label per target; DELETEALL first so stale ones vanish."""
    out = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    for i, (label, grasp) in enumerate(targets):
        p = grasp.position
        start = p - 0.10 * grasp.approach
        colour = ColorRGBA(r=float(1 - grasp.quality), g=float(grasp.quality), b=0.2, a=1.0)
        arrow = Marker(header=header, ns="approach", id=i, type=Marker.ARROW, action=Marker.ADD, color=colour)
        arrow.points = [Point(x=float(a), y=float(b), z=float(c)) for a, b, c in (start, p)]
        arrow.scale = Vector3(x=0.01, y=0.02, z=0.03)
        sphere = Marker(header=header, ns="centre", id=i, type=Marker.SPHERE, action=Marker.ADD, color=colour)
        sphere.pose = pose_msg(grasp)
        sphere.scale = Vector3(x=0.02, y=0.02, z=0.02)
        text = Marker(header=header, ns="label", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.pose.position = Point(x=float(p[0]), y=float(p[1]) - 0.04, z=float(p[2]))
        text.scale.z, text.color = 0.03, ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = f"{label} q={grasp.quality:.2f}"
        out.markers += [arrow, sphere, text]
    return out


class GraspNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("partglee_grasp", **kwargs)
        self.declare_parameter(
            "part_names", ["handle"], ParameterDescriptor(description="generic part names to grasp")
        )
        self.declare_parameter(
            "object_names",
            [""],
            ParameterDescriptor(description="only parts of these objects ('' = any object)"),
        )
        self.declare_parameter(
            "min_quality", 0.2, ParameterDescriptor(description="drop candidates below this quality")
        )
        self.declare_parameter(
            "depth_slop", 0.05, ParameterDescriptor(description="max stamp difference (s)")
        )
        self.add_on_set_parameters_callback(self._check_parameters)
        self._depth = NearestStampBuffer()
        self._info = NearestStampBuffer()
        self.create_subscription(Image, "depth", self._depth.add, 10)
        self.create_subscription(CameraInfo, "camera_info", self._info.add, 10)
        self.create_subscription(HierarchicalSegmentation, "segmentation", self._on_segmentation, 10)
        self.poses_pub = self.create_publisher(PoseArray, "grasp_targets", 10)
        self.best_pub = self.create_publisher(PoseStamped, "grasp_target", 10)
        self.marker_pub = self.create_publisher(MarkerArray, "grasp_markers", 10)

    def _check_parameters(self, params: list) -> SetParametersResult:
        for p in params:
            if p.name in ("min_quality", "depth_slop") and not 0.0 <= float(p.value) <= 1.0:
                return SetParametersResult(successful=False, reason=f"{p.name} must be in [0, 1]")
        return SetParametersResult(successful=True)

    def _on_segmentation(self, msg: HierarchicalSegmentation) -> None:
        try:
            self._plan(msg)
        except Exception as err:  # one bad message must not take the node down
            self.get_logger().error(
                f"grasp planning failed: {type(err).__name__}: {err}", throttle_duration_sec=5.0
            )

    def _plan(self, msg: HierarchicalSegmentation) -> None:
        t, slop = stamp_seconds(msg.header), self.get_parameter("depth_slop").value
        depth_msg, info = self._depth.nearest(t, slop), self._info.nearest(t, slop)
        if depth_msg is None or info is None:
            self.get_logger().warning(
                f"no depth/camera_info within {slop}s of segmentation at {t:.3f}", throttle_duration_sec=5.0
            )
            return
        try:
            depth = depth_msg_to_array(depth_msg)
        except ImageConversionError as err:
            self.get_logger().warning(f"bad depth image: {err}", throttle_duration_sec=5.0)
            return
        if depth.shape != (msg.image_height, msg.image_width):
            self.get_logger().warning(
                f"depth is {depth.shape[1]}x{depth.shape[0]} but the image is {msg.image_width}x{msg.image_height};"
                " depth must be aligned to the colour image",
                throttle_duration_sec=5.0,
            )
            return
        targets = self._grasps(
            msg, depth, depth_msg.encoding, np.array(info.k, dtype=np.float64).reshape(3, 3)
        )
        targets.sort(key=lambda item: -item[1].quality)
        header = msg.header
        self.poses_pub.publish(PoseArray(header=header, poses=[pose_msg(g) for _, g in targets]))
        if targets:
            self.best_pub.publish(PoseStamped(header=header, pose=pose_msg(targets[0][1])))
        self.marker_pub.publish(markers(header, targets))

    def _grasps(self, msg: HierarchicalSegmentation, depth: np.ndarray, encoding: str, k: np.ndarray):
        wanted = set(self.get_parameter("part_names").value)
        objects = {n for n in self.get_parameter("object_names").value if n}
        min_quality = self.get_parameter("min_quality").value
        targets: list[tuple[str, GraspPose]] = []
        for obj in msg.objects:
            if objects and obj.label not in objects:
                continue
            for part in obj.parts:
                if part.label not in wanted:
                    continue
                try:
                    mask = paste_mask_crop(part.box, part.mask, msg.image_height, msg.image_width)
                    result = plan_grasp(mask, depth, k, encoding)
                except ValueError as err:  # a malformed mask (ImageDecodeError), bad intrinsics
                    self.get_logger().warning(f"{part.object_label}: {err}", throttle_duration_sec=5.0)
                    continue
                if result.pose is None:
                    self.get_logger().debug(f"{part.object_label} #{part.id}: no grasp ({result.reason})")
                elif result.pose.quality >= min_quality:
                    targets.append((part.object_label, result.pose))
        return targets


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args if args is not None else sys.argv)
    node = GraspNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
