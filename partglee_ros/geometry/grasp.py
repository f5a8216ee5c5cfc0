"""A parallel-jaw grasp candidate for a segmented part, from its robust 3D geometry.

Gripper frame convention (columns of ``rotation``, in the camera frame): z is the approach direction (along
the camera ray to the part, i.e. the gripper comes from the camera's side), y is the closing direction of the
fingers (across the part's principal axis) and x = y cross z lies along the part. This matches the usual ROS
parallel-gripper TCP convention (e.g. the Franka hand), so a planner can use the pose as an end-effector goal
after composing its own TCP offset. No collision checking and no gripper width check is done here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from partglee_ros.geometry.part_pose import (
    DEFAULT_PARAMS,
    GeometryParams,
    PartGeometry,
    estimate_part_geometry,
)
from partglee_ros.geometry.points import Intrinsics

COUNT_SCALE = 50.0  # valid points at which the point-count factor of the quality reaches 1 - 1/e
# Sine between part axis and approach below which a part counts as seen end-on, and above which a part seen
# end-on the last time no longer does: the two closing directions differ, so a part near the switch must not
# alternate between them with depth noise (hysteresis, kept per tracked part by SteadyGrasps).
END_ON_ENTER_SINE = 0.1
END_ON_LEAVE_SINE = 0.2


@dataclass
class GraspPose:
    """Grasp candidate in the camera frame: metres, quaternion (x, y, z, w) as in geometry_msgs."""

    position: np.ndarray  # (3,)
    orientation: np.ndarray  # (4,) unit quaternion x, y, z, w
    rotation: np.ndarray  # (3, 3) columns: gripper x (along part), y (closing), z (approach)
    quality: float  # in [0, 1]; see grasp_quality
    end_on: bool = False  # closing across the second axis: the part axis is (nearly) the approach

    @property
    def approach(self) -> np.ndarray:
        return self.rotation[:, 2]

    @property
    def closing(self) -> np.ndarray:
        return self.rotation[:, 1]


@dataclass
class GraspResult:
    """Either a pose (reason "ok") or no pose and the reason, never a NaN pose."""

    pose: GraspPose | None
    reason: str
    geometry: PartGeometry | None = None


def grasp_quality(geometry: PartGeometry) -> float:
    """Confidence in [0, 1]: enough points, most of the mask backed by depth, and a well-defined axis.

    The axis factor is 0.5 for a round blob (any closing direction is as good as the chosen one, so the
    candidate is not wrong, only arbitrary) and 1 for an elongated part.
    """
    count = 1.0 - np.exp(-geometry.n_valid / COUNT_SCALE)
    elongation = 1.0 - geometry.variances[1] / geometry.variances[0] if geometry.variances[0] > 0 else 0.0
    quality = count * geometry.valid_fraction * (0.5 + 0.5 * elongation)
    return float(np.clip(quality, 0.0, 1.0))


def grasp_from_geometry(geometry: PartGeometry, was_end_on: bool = False) -> GraspPose:
    """Approach along the camera ray to the part's centre, closing across its principal axis.

    ``was_end_on``: the same part was seen end-on the last time, so it stays so up to END_ON_LEAVE_SINE."""
    approach = geometry.center / np.linalg.norm(geometry.center)
    closing = np.cross(approach, geometry.axes[0])
    end_on = np.linalg.norm(closing) < (END_ON_LEAVE_SINE if was_end_on else END_ON_ENTER_SINE)
    if end_on:
        closing = np.cross(approach, geometry.axes[1])  # close across its wider section
    closing /= np.linalg.norm(closing)
    along = np.cross(closing, approach)
    rotation = np.stack([along, closing, approach], axis=1)
    return GraspPose(
        position=geometry.center.copy(),
        orientation=Rotation.from_matrix(rotation).as_quat(),
        rotation=rotation,
        quality=grasp_quality(geometry),
        end_on=bool(end_on),
    )


def plan_grasp(
    mask: np.ndarray,
    depth: np.ndarray,
    intrinsics: Intrinsics | np.ndarray | tuple,
    encoding: str | None = None,
    params: GeometryParams = DEFAULT_PARAMS,
) -> GraspResult:
    """Grasp candidate for one part mask on an aligned depth image (16UC1 mm or 32FC1 m)."""
    geometry, reason = estimate_part_geometry(mask, depth, intrinsics, encoding, params)
    if geometry is None:
        return GraspResult(pose=None, reason=reason)
    pose = grasp_from_geometry(geometry)
    if not (np.isfinite(pose.position).all() and np.isfinite(pose.orientation).all()):
        return GraspResult(pose=None, reason="non-finite grasp pose", geometry=geometry)
    return GraspResult(pose=pose, reason="ok", geometry=geometry)


def turned_like(pose: GraspPose, closing: np.ndarray) -> GraspPose:
    """``pose`` turned half a turn about its approach when its closing direction points against ``closing``.

    A parallel gripper closes the same way in both orientations, so the sign of the closing direction is a
    choice; PCA's sign rule has a seam (a part on the image diagonal flips between frames with depth noise),
    and a planner servoing on a part must not see its target wrist angle jump by 180 degrees."""
    if float(pose.closing @ closing) >= 0.0:
        return pose
    rotation = pose.rotation * np.array([-1.0, -1.0, 1.0])  # x and y reversed: still right-handed
    return GraspPose(
        pose.position, Rotation.from_matrix(rotation).as_quat(), rotation, pose.quality, pose.end_on
    )


class SteadyGrasps:
    """Keeps each tracked part's grasp steady from frame to frame: seen end-on or not with hysteresis
    (``grasp_from_geometry``'s ``was_end_on``) and turned as it was last time (``turned_like``). Parts unseen
    for ``max_age_s`` are forgotten."""

    def __init__(self, max_age_s: float = 5.0) -> None:
        self.max_age_s = max_age_s
        self._last: dict[tuple[int, str], tuple[GraspPose, float]] = {}
        self._lock = threading.Lock()  # grasp_node plans from its topic callback and its service thread

    def steady(self, key: tuple[int, str], geometry: PartGeometry, stamp_s: float) -> GraspPose:
        """The grasp for ``geometry`` (a ``plan_grasp`` result's) of the part ``key``: (track id, part label);
        track id 0 (untracked) is never kept."""
        if key[0] == 0:
            return grasp_from_geometry(geometry)
        with self._lock:
            last = self._last.get(key)
            if last is not None and abs(stamp_s - last[1]) > self.max_age_s:
                last = None
            pose = grasp_from_geometry(geometry, was_end_on=last is not None and last[0].end_on)
            if last is not None:
                pose = turned_like(pose, last[0].closing)
            self._last[key] = (pose, stamp_s)
            self._last = {k: v for k, v in self._last.items() if abs(stamp_s - v[1]) <= self.max_age_s}
        return pose
