"""Pinhole back-projection of masked depth pixels into camera-frame 3D points.

Uses the ROS/OpenCV convention: the camera looks along +z, x right, y down, and integer pixel indices
(u = column, v = row) are pixel centres, which is what ``CameraInfo.k`` describes. ``from_camera_info`` reads
a ``sensor_msgs/CameraInfo`` as ``image_geometry``'s PinholeCameraModel does: a raw image through K and the
distortion D (pixels are undistorted with OpenCV), a rectified one through P, binning and ROI mapped back to
the full-resolution pixels the calibration describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from partglee_ros.sensor_images import quoted

DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")
OPENCV_COEFFICIENTS = (4, 5, 8, 12, 14)  # k1 k2 p1 p2 [k3 [k4 k5 k6 [s1 s2 s3 s4 [tx ty]]]]
# OpenCV inverts the distortion iteratively; its default 5 iterations leave millimetres at a wide image's edge
UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    skew: float = 0.0  # K[0, 1]
    distortion: tuple[float, ...] = ()  # OpenCV's order: k1, k2, p1, p2[, k3[, k4, k5, k6]]; fisheye k1..k4
    fisheye: bool = False  # ROS "equidistant": cv2.fisheye's model
    # image pixel (u, v) is full-resolution pixel (u * bx + ox, v * by + oy): binning, the ROI's corner
    binning: tuple[int, int] = (1, 1)
    offset: tuple[int, int] = (0, 0)

    @classmethod
    def from_any(cls, intrinsics: Intrinsics | np.ndarray | tuple | list) -> Intrinsics:
        """Accept an Intrinsics, a 3x3 K (or the 9 values of ``CameraInfo.k``), or (fx, fy, cx, cy)."""
        if isinstance(intrinsics, Intrinsics):
            return intrinsics
        values = np.asarray(intrinsics, dtype=np.float64)
        if values.size == 9:
            k = values.reshape(3, 3)
            result = cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), float(k[0, 1]))
        elif values.size == 4:
            result = cls(*(float(v) for v in values.ravel()))
        else:
            raise ValueError(f"intrinsics must be a 3x3 K or (fx, fy, cx, cy), got {values.size} values")
        result.check()
        return result

    @classmethod
    def from_camera_info(cls, info: Any, image_shape: tuple[int, int], rectified: bool = False) -> Intrinsics:
        """The camera model of a ``sensor_msgs/CameraInfo`` (any object with its fields) for an image of
        ``image_shape`` (H, W): ``rectified`` images (``image_rect``) use P without distortion, raw ones K
        and D. ValueError when the camera_info is for another image size or names an unknown model."""
        bx, by = max(int(info.binning_x), 1), max(int(info.binning_y), 1)
        roi = info.roi
        full_w = int(roi.width) if roi.width else int(info.width)
        full_h = int(roi.height) if roi.height else int(info.height)
        h, w = image_shape
        if full_w and full_h and (full_w // bx, full_h // by) != (w, h):
            raise ValueError(
                f"camera_info is for {full_w // bx}x{full_h // by} images (binning {bx}x{by}, roi"
                f" {roi.width}x{roi.height}) but the depth image is {w}x{h}: the depth must be aligned to the"
                " camera the camera_info describes"
            )
        pixels = {"binning": (bx, by), "offset": (int(roi.x_offset), int(roi.y_offset))}
        if rectified:
            p = np.asarray(info.p, dtype=np.float64).reshape(3, 4)
            if not p.any():
                raise ValueError("camera_info has no P (all zeros): a rectified image needs it; is it raw?")
            result = cls(p[0, 0], p[1, 1], p[0, 2], p[1, 2], p[0, 1], **pixels)
        else:
            k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
            distortion, fisheye = _distortion(str(info.distortion_model), tuple(float(v) for v in info.d))
            result = cls(k[0, 0], k[1, 1], k[0, 2], k[1, 2], k[0, 1], distortion, fisheye, **pixels)
        result.check()
        return result

    def check(self) -> None:
        # an infinite focal length puts every point on the optical axis: confident grasps at the wrong place
        finite = np.isfinite([self.fx, self.fy, self.cx, self.cy, self.skew, *self.distortion]).all()
        if not (self.fx > 0 and self.fy > 0 and finite):
            raise ValueError(
                f"invalid intrinsics (finite values and fx, fy > 0 needed; an uncalibrated camera?): {self}"
            )

    def rays(self, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
        """(N, 3) viewing rays through pixel centres, scaled so that z = 1 (multiply by depth for points)."""
        us = us * self.binning[0] + self.offset[0]
        vs = vs * self.binning[1] + self.offset[1]
        y = (vs - self.cy) / self.fy
        x = (us - self.cx - self.skew * y) / self.fx
        if self.distortion and len(x):
            distorted = np.stack([x, y], axis=1).reshape(-1, 1, 2)
            x, y = (
                _undistort(distorted, np.asarray(self.distortion, np.float64), self.fisheye).reshape(-1, 2).T
            )
        return np.stack([x, y, np.ones(len(us))], axis=1)


def _distortion(model: str, d: tuple[float, ...]) -> tuple[tuple[float, ...], bool]:
    """(coefficients, fisheye) of a CameraInfo's distortion; () where there is none. ValueError for a model
    or a coefficient count OpenCV cannot undo."""
    if not any(d):
        return (), False
    if model not in DISTORTION_MODELS:
        raise ValueError(f"unsupported distortion model {quoted(model)}; expected one of {DISTORTION_MODELS}")
    counts = (4,) if model == "equidistant" else OPENCV_COEFFICIENTS
    if len(d) not in counts:
        raise ValueError(f"{model} distortion with {len(d)} coefficients; OpenCV takes {counts}")
    return d, model == "equidistant"


def _undistort(points: np.ndarray, coeffs: np.ndarray, fisheye: bool) -> np.ndarray:
    """Undistorted normalised coordinates of (N, 1, 2) distorted ones, on OpenCV 4 and 5 (which moved
    ``criteria`` from undistortPointsIter into undistortPoints)."""
    eye = np.eye(3)  # on normalised coordinates: the skew is already out
    if fisheye:
        try:
            return cv2.fisheye.undistortPoints(points, eye, coeffs, R=eye, P=eye, criteria=UNDISTORT_CRITERIA)
        except cv2.error:  # an OpenCV 4 without the keyword: its own 10 iterations
            return cv2.fisheye.undistortPoints(points, eye, coeffs, R=eye, P=eye)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4
        return cv2.undistortPointsIter(points, eye, coeffs, eye, eye, UNDISTORT_CRITERIA)
    return cv2.undistortPoints(points, eye, coeffs, R=eye, P=eye, criteria=UNDISTORT_CRITERIA)


def back_project(depth_m: np.ndarray, mask: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """3D points (N, 3, metres) of the mask pixels that have a finite depth, in row-major pixel order."""
    vs, us = np.nonzero(mask & np.isfinite(depth_m))
    z = depth_m[vs, us].astype(np.float64)
    return intrinsics.rays(us.astype(np.float64), vs.astype(np.float64)) * z[:, None]
