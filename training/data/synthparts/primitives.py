"""Analytic solids and their ray intersections, the geometry every SynthParts object is made of.

Each solid lives in its own local frame (cylinders and capsules along +z from z=0, boxes and ellipsoids
centred at the origin). `Primitive.pose` maps local points to a parent frame (object, world or camera)
as ``p_parent = R @ p_local + t``. Intersections are vectorised over rays and solved exactly, so the
depth map, the visibility and the normals all come from the same closed-form geometry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-9


@dataclass
class Primitive:
    """A solid: ``kind`` in {cylinder, capsule, box, ellipsoid}, its size ``params`` and pose (R, t).

    params: cylinder (radius, height); capsule (radius, length); box (3 half extents);
    ellipsoid (3 semi-axes).
    """

    kind: str
    params: np.ndarray
    R: np.ndarray
    t: np.ndarray

    def transformed(self, R: np.ndarray, t: np.ndarray) -> Primitive:
        """The same solid with its pose composed after (R, t), e.g. object -> world."""
        return Primitive(self.kind, self.params, R @ self.R, R @ self.t + t)

    def local_obb(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(centre, full extents along local x/y/z, index of the local long axis) in the local frame."""
        p = self.params
        if self.kind == "cylinder":
            return np.array([0.0, 0.0, p[1] / 2]), np.array([2 * p[0], 2 * p[0], p[1]]), 2
        if self.kind == "capsule":
            return np.array([0.0, 0.0, p[1] / 2]), np.array([2 * p[0], 2 * p[0], p[1] + 2 * p[0]]), 2
        extent = 2 * np.asarray(p, dtype=np.float64)
        return np.zeros(3), extent, int(np.argmax(extent))

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        """Centre (parent frame) and radius of a sphere enclosing the solid, for screen-space culling."""
        centre, extent, _ = self.local_obb()
        return self.R @ centre + self.t, float(np.linalg.norm(extent) / 2)

    def obb_corners(self, obb: tuple[np.ndarray, np.ndarray, int] | None = None) -> np.ndarray:
        """The 8 corners of the local bounding box (or of ``obb``, a local box) in the parent frame, (8, 3)."""
        centre, extent, _ = self.local_obb() if obb is None else obb
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
        return (centre + signs * extent / 2) @ self.R.T + self.t

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Which of ``points`` (N, 3, parent frame) lie inside the solid (boundary included), (N,) bool."""
        q = (np.asarray(points, dtype=np.float64) - self.t) @ self.R  # rows are R^T (p - t)
        p = self.params
        if self.kind == "cylinder":
            return (q[:, 0] ** 2 + q[:, 1] ** 2 <= p[0] ** 2) & (q[:, 2] >= 0) & (q[:, 2] <= p[1])
        if self.kind == "capsule":
            on_axis = np.clip(q[:, 2], 0.0, p[1])
            return q[:, 0] ** 2 + q[:, 1] ** 2 + (q[:, 2] - on_axis) ** 2 <= p[0] ** 2
        if self.kind == "box":
            return np.all(np.abs(q) <= p, axis=1)
        return np.sum((q / p) ** 2, axis=1) <= 1.0

    def exposed_obb(
        self, covering: list[Primitive], spacing: float = 0.001
    ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """``local_obb`` cut along the long axis to the stretch not inside any ``covering`` solid, or None
        when all of it is covered.

        A handle starts inside the pan it is fixed to; that buried length can neither be seen nor
        grasped, so part poses describe the exposed stretch. Exact when nothing is covered; otherwise
        sampled every ``spacing`` metres along the axis on an 11 x 11 cross-section grid.
        """
        centre, extent, long_axis = self.local_obb()
        axes = [np.linspace(c - e / 2, c + e / 2, 11) for c, e in zip(centre, extent, strict=True)]
        steps = max(5, int(np.ceil(extent[long_axis] / spacing)) + 1)
        axes[long_axis] = np.linspace(
            centre[long_axis] - extent[long_axis] / 2, centre[long_axis] + extent[long_axis] / 2, steps
        )
        local = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        points = local @ self.R.T + self.t
        inside = self.contains(points)
        covered = np.zeros(len(points), dtype=bool)
        for other in covering:
            covered |= other.contains(points)
        if not covered[inside].any():
            return centre, extent, long_axis
        exposed = local[inside & ~covered, long_axis]
        if exposed.size == 0:
            return None
        centre, extent = centre.copy(), extent.copy()
        centre[long_axis] = (exposed.min() + exposed.max()) / 2
        extent[long_axis] = exposed.max() - exposed.min()
        return centre, extent, long_axis

    def intersect(self, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rays from the parent origin (the camera) along ``dirs`` (N, 3).

        Returns (t, local hit points (N, 3), local normals (N, 3)); t is np.inf on a miss. With ray
        directions scaled to z = 1 in the camera frame, t is exactly the camera-frame depth.
        """
        o = -self.R.T @ self.t
        d = dirs @ self.R  # rows are R^T d
        fn = {"cylinder": _cylinder, "capsule": _capsule, "box": _box, "ellipsoid": _ellipsoid}[self.kind]
        t, n = fn(o, d, self.params)
        p = o + t[:, None] * d
        p[~np.isfinite(t)] = 0.0
        return t, p, n


def _valid(t: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(t) & (t > _EPS), t, np.inf)


def _sphere_hit(o: np.ndarray, d: np.ndarray, centre: np.ndarray, r: float) -> np.ndarray:
    oc = o - centre
    a = np.einsum("ij,ij->i", d, d)
    b = 2 * d @ oc
    c = oc @ oc - r * r
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    return _valid(np.where(disc >= 0, t, np.inf))


def _side_hit(o: np.ndarray, d: np.ndarray, r: float, z0: float, z1: float) -> np.ndarray:
    """Nearest hit with the infinite cylinder x^2 + y^2 = r^2, kept only for z0 <= z <= z1."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    c = o[0] ** 2 + o[1] ** 2 - r * r
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    z = o[2] + t * d[:, 2]
    return _valid(np.where((disc >= 0) & (a > _EPS) & (z >= z0) & (z <= z1), t, np.inf))


def _cylinder(o: np.ndarray, d: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, h = float(params[0]), float(params[1])
    t_side = _side_hit(o, d, r, 0.0, h)
    with np.errstate(divide="ignore", invalid="ignore"):
        caps = []
        for zc in (0.0, h):
            t = (zc - o[2]) / d[:, 2]
            x, y = o[0] + t * d[:, 0], o[1] + t * d[:, 1]
            caps.append(_valid(np.where(x * x + y * y <= r * r, t, np.inf)))
    t_all = np.stack([t_side, caps[0], caps[1]])
    which = np.argmin(t_all, axis=0)
    t = t_all[which, np.arange(len(which))]
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    n = np.zeros_like(d)
    n[:, 0] = np.where(which == 0, p[:, 0] / r, 0.0)
    n[:, 1] = np.where(which == 0, p[:, 1] / r, 0.0)
    n[:, 2] = np.select([which == 1, which == 2], [-1.0, 1.0], 0.0)
    return t, n


def _capsule(o: np.ndarray, d: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, length = float(params[0]), float(params[1])
    t_all = np.stack(
        [
            _side_hit(o, d, r, 0.0, length),
            _sphere_hit(o, d, np.zeros(3), r),
            _sphere_hit(o, d, np.array([0.0, 0.0, length]), r),
        ]
    )
    t = t_all.min(axis=0)
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    axis_point = np.zeros_like(p)
    axis_point[:, 2] = np.clip(p[:, 2], 0.0, length)
    return t, (p - axis_point) / r


def _box(o: np.ndarray, d: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(params, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-e - o) * inv
        t2 = (e - o) * inv
    t_near_axes = np.fmin(t1, t2)
    t_near_axes = np.where(np.isnan(t_near_axes), -np.inf, t_near_axes)
    t_far_axes = np.fmax(t1, t2)
    t_far_axes = np.where(np.isnan(t_far_axes), np.inf, t_far_axes)
    axis = np.argmax(t_near_axes, axis=1)
    t_near = t_near_axes[np.arange(len(d)), axis]
    t_far = t_far_axes.min(axis=1)
    t = _valid(np.where(t_near <= t_far, t_near, np.inf))
    n = np.zeros_like(d)
    n[np.arange(len(d)), axis] = -np.sign(d[np.arange(len(d)), axis])
    return t, n


def _ellipsoid(o: np.ndarray, d: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(params, dtype=np.float64)
    os_, ds = o / a, d / a
    qa = np.einsum("ij,ij->i", ds, ds)
    qb = 2 * ds @ os_
    qc = os_ @ os_ - 1.0
    disc = qb * qb - 4 * qa * qc
    with np.errstate(invalid="ignore"):
        t = _valid(np.where(disc >= 0, (-qb - np.sqrt(disc)) / (2 * qa), np.inf))
    p = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    n = p / (a * a)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), _EPS)
    return t, n


def frame_from_z(axis: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """A rotation whose third column is ``axis`` (normalised); ``roll`` spins it about that axis."""
    z = np.asarray(axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll), np.sin(roll)
    return np.stack([c * x + s * y, -s * x + c * y, z], axis=1)


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def cylinder(base: np.ndarray, axis: np.ndarray, radius: float, height: float) -> Primitive:
    return Primitive("cylinder", np.array([radius, height]), frame_from_z(axis), np.asarray(base, float))


def capsule(p0: np.ndarray, p1: np.ndarray, radius: float) -> Primitive:
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.linalg.norm(p1 - p0))
    return Primitive("capsule", np.array([radius, length]), frame_from_z(p1 - p0), p0)


def box(centre: np.ndarray, half_extents: np.ndarray, R: np.ndarray | None = None) -> Primitive:
    R = np.eye(3) if R is None else R
    return Primitive("box", np.asarray(half_extents, float), R, np.asarray(centre, float))


def ellipsoid(centre: np.ndarray, semi_axes: np.ndarray, R: np.ndarray | None = None) -> Primitive:
    R = np.eye(3) if R is None else R
    return Primitive("ellipsoid", np.asarray(semi_axes, float), R, np.asarray(centre, float))
