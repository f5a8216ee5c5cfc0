"""ROS-free 3D geometry of segmented parts: depth decoding, back-projection, robust part statistics, grasps.

Everything here works on numpy arrays and returns plain dataclasses, so the same code serves the ROS node,
offline benchmarks and tests; ``partglee_ros.ros`` converts the results to ROS messages.
"""

from partglee_ros.geometry.depth import depth_to_metres
from partglee_ros.geometry.grasp import GraspPose, GraspResult, plan_grasp
from partglee_ros.geometry.part_pose import GeometryParams, PartGeometry, estimate_part_geometry
from partglee_ros.geometry.points import Intrinsics, back_project

__all__ = [
    "GeometryParams",
    "GraspPose",
    "GraspResult",
    "Intrinsics",
    "PartGeometry",
    "back_project",
    "depth_to_metres",
    "estimate_part_geometry",
    "plan_grasp",
]
