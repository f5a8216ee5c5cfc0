"""Robust 3D statistics of one segmented part: its points, centroid, principal axes, extent and thickness.

A mask from a segmenter and an aligned depth image disagree at the edges (the mask bleeds a pixel into the
background; depth sensors interpolate "flying pixels" between foreground and background) and depth has holes
and outliers. The cleaning steps below each remove one of those failure modes, in the order they occur:
erode the mask edge, drop pixels on a depth discontinuity, then drop depths that are robust outliers (MAD)
both from the median depth and from a plane fitted to depth over the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from partglee_ros.geometry.depth import depth_to_metres
from partglee_ros.geometry.points import Intrinsics, back_project

MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


@dataclass(frozen=True)
class GeometryParams:
    erosion_px: int = 1  # mask edge pixels to drop (skipped if it would leave fewer than min_points pixels)
    jump_abs_m: float = 0.01  # a depth step to an in-mask neighbour above max(jump_abs_m, jump_rel * z) ...
    jump_rel: float = 0.02  # ... marks a depth discontinuity (flying pixel) and both sides are dropped
    mad_k: float = 3.5  # keep depths within mad_k robust sigmas of the median depth or the depth plane ...
    min_gate_m: float = (
        0.01  # ... but never gate tighter than this (a flat part facing the camera has MAD ~ 0)
    )
    min_points: int = 20  # fewer valid points than this is "too few points": no geometry
    round_section: bool = True  # assume the hidden depth of the part is at least its visible width

    def __post_init__(self) -> None:
        if self.min_points < 3:  # the part's axes come from a PCA of its points
            raise ValueError(f"min_points must be at least 3, got {self.min_points}")


DEFAULT_PARAMS = GeometryParams()


@dataclass
class PartGeometry:
    """3D geometry of the visible part in the camera frame (metres); axes are rows, right-handed."""

    points: np.ndarray  # (N, 3) cleaned surface points
    surface_centroid: np.ndarray  # (3,) mean of the visible surface points
    center: np.ndarray  # (3,) estimate of the solid part's centre (see estimate_part_geometry)
    axes: np.ndarray  # (3, 3) principal axes as rows, by decreasing variance; axes[2] faces the camera
    variances: np.ndarray  # (3,) variance of the points along each axis
    extent: np.ndarray  # (3,) full size of the visible surface along each axis
    radius: float  # cross-section radius from the mask's medial axis, metres
    n_mask: int  # pixels in the input mask
    n_valid: int  # points kept after cleaning
    valid_fraction: float  # n_valid / the mask's pixels less the edge its erosion removed on purpose


def depth_jumps(depth_m: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Largest absolute depth step from each pixel to its 4-neighbours inside the mask (NaN if none).

    Only in-mask neighbours count: a part's silhouette against a far background is not an error, a flying
    pixel inside the mask is.
    """
    inside = np.where(mask, depth_m, np.nan)
    padded = np.pad(inside, 1, constant_values=np.nan)
    centre = padded[1:-1, 1:-1]
    jumps = np.full(depth_m.shape, np.nan, dtype=np.float32)
    for dv, du in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        neighbour = padded[1 + dv : padded.shape[0] - 1 + dv, 1 + du : padded.shape[1] - 1 + du]
        jumps = np.fmax(jumps, np.abs(centre - neighbour))
    return jumps


def _radius_px(mask: np.ndarray) -> float:
    """Half the typical width of the mask in pixels: the distance transform sampled on its ridge.

    Ridge pixels (local maxima of the distance to the background) lie on the medial axis, where the distance
    is the half-width. Measured between pixel centres it overshoots the half-width to the pixel edges by
    half a pixel, hence the 0.5 correction.
    """
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ridge = mask & (distance >= ndimage.maximum_filter(distance, size=3))
    return max(float(np.median(distance[ridge])) - 0.5, 0.0)


def mask_interior(depth_m: np.ndarray, mask: np.ndarray, params: GeometryParams) -> np.ndarray:
    """The mask less its edge (``erosion_px``; mixed foreground/background depth there), unless that leaves
    too few pixels with depth, as on a thin part."""
    if params.erosion_px > 0:
        eroded = ndimage.binary_erosion(mask, iterations=params.erosion_px)
        if np.count_nonzero(eroded & np.isfinite(depth_m)) >= params.min_points:
            return eroded
    return mask.copy()


def clean_mask(depth_m: np.ndarray, interior: np.ndarray, params: GeometryParams) -> np.ndarray:
    """Pixels of the ``interior`` whose depth is trusted: finite, off discontinuities, within the depth gate."""
    keep = interior & np.isfinite(depth_m)
    jumps = depth_jumps(depth_m, keep)
    with np.errstate(invalid="ignore"):
        keep &= ~(jumps > np.maximum(params.jump_abs_m, params.jump_rel * depth_m))
    if np.count_nonzero(keep) < 3:
        return keep
    return _depth_gate(depth_m, keep, params)


def _mad_inliers(values: np.ndarray, params: GeometryParams) -> np.ndarray:
    """Values within ``mad_k`` robust sigmas of their median, never gated tighter than ``min_gate_m``."""
    median = np.median(values)
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
    return np.abs(values - median) <= max(params.mad_k * sigma, params.min_gate_m)


def _depth_gate(depth_m: np.ndarray, keep: np.ndarray, params: GeometryParams) -> np.ndarray:
    """Drop depths that are off both the part's median depth and its depth plane (robust sigmas, MAD).

    A gate around the median depth alone assumes the part faces the camera: a handle pointing towards it spans
    more depth than its noise, and that gate cut off its far end and tilted its axis across the view (mug and
    kettle handles seen from above were 25-50 degrees off). A plane fitted to depth over the image (u, v)
    follows that slope, but not the fold between two faces of a box, which the median gate keeps. An outlier
    is off both. The plane is fitted twice: to all trusted pixels, then to the first fit's inliers.
    """
    vs, us = np.nonzero(keep)
    z = depth_m[vs, us].astype(np.float64)
    design = np.stack([us - us.mean(), vs - vs.mean(), np.ones_like(z)], axis=1)
    on_plane = np.ones(len(z), dtype=bool)
    for _ in range(2):
        coefficients, *_ = np.linalg.lstsq(design[on_plane], z[on_plane], rcond=None)
        on_plane = _mad_inliers(z - design @ coefficients, params)
    inliers = on_plane | _mad_inliers(z, params)
    gated = np.zeros_like(keep)
    gated[vs[inliers], us[inliers]] = True
    return gated


def _principal_axes(points: np.ndarray, toward_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCA axes (rows, decreasing variance) with deterministic signs and a right-handed frame.

    The smallest axis is turned to face the camera (for a surface it is the normal) and the largest to have a
    positive largest component, so the same part always yields the same frame.
    """
    variances, vectors = np.linalg.eigh(np.cov(points, rowvar=False))
    order = np.argsort(variances)[::-1]
    variances, axes = variances[order], vectors[:, order].T
    if axes[0][np.argmax(np.abs(axes[0]))] < 0:
        axes[0] = -axes[0]
    if axes[2] @ toward_camera < 0:
        axes[2] = -axes[2]
    axes[1] = np.cross(axes[2], axes[0])
    return axes, np.clip(variances, 0.0, None)


def _solid_centre(
    points: np.ndarray, axis: np.ndarray, ray: np.ndarray, radius: float, round_section: bool
) -> np.ndarray:
    """Centre of the solid part behind its visible surface, in the part's cross-section frame.

    Frame: the principal axis, the direction away from the camera across it (view ray minus its axial
    component) and the third axis. Along the first and third it is the middle of the visible range, because
    the surface mean is pulled towards the near end (perspective gives near surfaces more pixels) and towards
    visible end caps. Away from the camera the back of the part is hidden: with ``round_section`` the part is
    assumed at least as thick as it is wide (2 * radius), so a rod's centre lands on its axis while a part
    that visibly extends in depth (a mug handle seen edge-on) keeps the middle of its visible depth range.
    Percentiles instead of min/max keep single noisy pixels from moving the ends.
    """
    away = ray - (ray @ axis) * axis
    norm = np.linalg.norm(away)
    if norm < 1e-6:  # seen exactly end-on: no "across" direction, the view ray is the depth direction
        away, axis = ray, np.cross(ray, [1.0, 0.0, 0.0] if abs(ray[0]) < 0.9 else [0.0, 1.0, 0.0])
        axis /= np.linalg.norm(axis)
    else:
        away = away / norm
    side = np.cross(axis, away)
    frame = np.stack([axis, side, away])
    low, high = np.percentile(points @ frame.T, [1.0, 99.0], axis=0)
    middle = (low + high) / 2.0
    if round_section:
        middle[2] = low[2] + max(high[2] - low[2], 2.0 * radius) / 2.0
    return middle @ frame


def estimate_part_geometry(
    mask: np.ndarray,
    depth: np.ndarray,
    intrinsics: Intrinsics | np.ndarray | tuple,
    encoding: str | None = None,
    params: GeometryParams = DEFAULT_PARAMS,
) -> tuple[PartGeometry | None, str]:
    """The part's cleaned 3D geometry, or (None, reason) when there is not enough trustworthy depth.

    ``surface_centroid`` is the mean of the visible points; ``center`` estimates the solid part's centre
    behind them (see ``_solid_centre``), which is what a grasp should close around.
    """
    mask = np.asarray(mask, dtype=bool)
    depth_m = depth_to_metres(depth, encoding)
    if mask.shape != depth_m.shape:
        return None, f"mask shape {mask.shape} differs from depth shape {depth_m.shape}"
    n_mask = int(np.count_nonzero(mask))
    if n_mask == 0:
        return None, "empty mask"
    if not np.isfinite(depth_m[mask]).any():
        return None, "no valid depth inside the mask (all holes)"
    k = Intrinsics.from_any(intrinsics)
    interior = mask_interior(depth_m, mask, params)
    keep = clean_mask(depth_m, interior, params)
    points = back_project(depth_m, keep, k)
    if len(points) < params.min_points:
        return None, f"too few valid depth points ({len(points)} < {params.min_points})"

    surface_centroid = points.mean(axis=0)
    ray = surface_centroid / np.linalg.norm(surface_centroid)
    axes, variances = _principal_axes(points, -ray)
    extent = np.ptp((points - surface_centroid) @ axes.T, axis=0)
    # the mask's pixels may be binned, the focal lengths are the full-resolution ones
    radius_px = _radius_px(mask) * np.sqrt(k.binning[0] * k.binning[1])
    radius = radius_px * float(np.median(points[:, 2])) / np.sqrt(k.fx * k.fy)
    center = _solid_centre(points, axes[0], ray, radius, params.round_section)
    geometry = PartGeometry(
        points=points,
        surface_centroid=surface_centroid,
        center=center,
        axes=axes,
        variances=variances,
        extent=extent,
        radius=radius,
        n_mask=n_mask,
        n_valid=len(points),
        # of the pixels considered: the edge removed on purpose is no missing depth (a thin part lost most
        # of its quality to it)
        valid_fraction=len(points) / np.count_nonzero(interior),
    )
    if not all(np.isfinite(v).all() for v in (surface_centroid, center, axes, variances, extent, radius)):
        return None, "non-finite geometry (degenerate points)"
    return geometry, "ok"
