"""Pinhole back-projection of masked depth pixels into camera-frame 3D points.

Uses the ROS/OpenCV convention: the camera looks along +z, x right, y down, and integer pixel indices
(u = column, v = row) are pixel centres, which is what ``CameraInfo.k`` describes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_any(cls, intrinsics: Intrinsics | np.ndarray | tuple | list) -> Intrinsics:
        """Accept an Intrinsics, a 3x3 K (or the 9 values of ``CameraInfo.k``), or (fx, fy, cx, cy)."""
        if isinstance(intrinsics, Intrinsics):
            return intrinsics
        values = np.asarray(intrinsics, dtype=np.float64)
        if values.size == 9:
            k = values.reshape(3, 3)
            result = cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
        elif values.size == 4:
            result = cls(*(float(v) for v in values.ravel()))
        else:
            raise ValueError(f"intrinsics must be a 3x3 K or (fx, fy, cx, cy), got {values.size} values")
        if not (result.fx > 0 and result.fy > 0 and np.isfinite([result.cx, result.cy]).all()):
            raise ValueError(f"invalid intrinsics {result}")
        return result

    def rays(self, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
        """(N, 3) viewing rays through pixel centres, scaled so that z = 1 (multiply by depth for points)."""
        return np.stack([(us - self.cx) / self.fx, (vs - self.cy) / self.fy, np.ones(len(us))], axis=1)


def back_project(depth_m: np.ndarray, mask: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """3D points (N, 3, metres) of the mask pixels that have a finite depth, in row-major pixel order."""
    vs, us = np.nonzero(mask & np.isfinite(depth_m))
    z = depth_m[vs, us].astype(np.float64)
    return intrinsics.rays(us.astype(np.float64), vs.astype(np.float64)) * z[:, None]
