"""SynthParts scenes: objects on a table, ray-cast with a pinhole camera into RGB, depth and masks.

One seed fixes everything (camera, layout, shapes, materials, light, noise), so a scene is a pure
function of (seed, size, categories). Depth, visibility, occlusion and masks all come from one z-buffer
over exact ray/solid intersections, which is what makes the annotations consistent by construction:
a pixel belongs to the part whose solid is nearest along its ray, and an object's mask is the union of
its parts' solids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from training.data.hierarchy import ImageAnnotation, ObjectAnnotation, PartAnnotation, PartPose
from training.data.synthparts.categories import BUILDERS
from training.data.synthparts.primitives import Primitive, box, capsule, cylinder, ellipsoid, rot_z
from training.data.synthparts.textures import Material, backdrops, random_material

MIN_OBJECT_PIXELS = 16  # objects with fewer visible pixels are not annotated (they stay in the image)
MIN_PART_PIXELS = 4  # parts with fewer visible pixels are not annotated (their pixels stay in the object)
TABLE_ID, WALL_ID, NO_HIT = -2, -3, -1
SHADOW_MAP, SHADOW_HALF_WIDTH, SHADOW_BIAS = 192, 0.8, 0.012  # texels, metres covered, metres
LIGHT_DISTANCE = 2.5  # metres from the table centre: nearly parallel light, like a ceiling lamp


@dataclass
class _Camera:
    K: np.ndarray
    R_cw: np.ndarray  # world -> camera rotation (OpenCV axes: x right, y down, z forward)
    eye: np.ndarray  # camera centre in the world
    target: np.ndarray  # the world point it looks at (an orbit circles the vertical through it)

    def to_camera(self, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.R_cw @ R, self.R_cw @ (t - self.eye)


@dataclass
class _Instance:
    name: str
    parts: list[tuple[str, list[Primitive]]]  # primitives in the camera frame


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World -> camera rotation (rows: right, down, forward) of a camera at ``eye`` facing ``target``."""
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward])


def _sample_camera(
    rng: np.random.Generator, width: int, height: int, orbit: float = 0.0
) -> tuple[_Camera, float, float]:
    fov = np.deg2rad(rng.uniform(50.0, 68.0))
    f = width / (2 * np.tan(fov / 2))
    cx = (width - 1) / 2 + rng.normal(0, 0.01 * width)
    cy = (height - 1) / 2 + rng.normal(0, 0.01 * height)
    K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    dist, elev, azim = rng.uniform(0.55, 0.95), np.deg2rad(rng.uniform(30, 70)), rng.uniform(0, 2 * np.pi)
    azim += orbit  # no random draw depends on it: every orbit of a seed shows the same scene
    target = np.array([rng.normal(0, 0.02), rng.normal(0, 0.02), 0.0])
    eye = target + dist * np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    return _Camera(K, _look_at(eye, target), eye, target), dist, fov


def _footprint(prims: list[Primitive]) -> float:
    return max(np.linalg.norm(c[:2]) + r for c, r in (p.bounding_sphere() for p in prims))


def _place(rng: np.random.Generator, radius: float, spread: float, taken: list[tuple[np.ndarray, float]]):
    """Rejection-sample a table position whose footprint circle does not overlap earlier ones."""
    for _ in range(30):
        xy = rng.uniform(-spread, spread, size=2)
        if all(np.linalg.norm(xy - c) > 0.8 * (radius + r) for c, r in taken):
            taken.append((xy, radius))
            return np.array([xy[0], xy[1], 0.0])
    return None


def _clutter(rng: np.random.Generator) -> list[Primitive]:
    """An unlabelled distractor: a random solid resting on the table."""
    s = rng.uniform(0.02, 0.07, size=3)
    kind = rng.integers(4)
    if kind == 0:
        return [box(np.array([0, 0, s[2] / 2]), s / 2)]
    if kind == 1:
        return [cylinder(np.zeros(3), np.array([0, 0, 1.0]), s[0] / 1.5, s[2] * 1.5)]
    if kind == 2:
        return [ellipsoid(np.array([0, 0, s[2] / 2]), np.array([s[0], s[1], s[2] / 2]))]
    return [capsule(np.array([-s[0], 0, s[1] / 3]), np.array([s[0], 0, s[1] / 3]), s[1] / 3)]


def pose_of_solids(prims: list[Primitive], covering: Sequence[Primitive] = ()) -> PartPose:
    """Centre, long axis and extents of a group of solids (exact for one solid, PCA of boxes otherwise),
    cut to what lies outside ``covering`` (the object's other parts; see Primitive.exposed_obb)."""
    cut = [(p, p.exposed_obb(list(covering))) for p in prims]
    cut = [(p, obb) for p, obb in cut if obb is not None] or [(p, p.local_obb()) for p in prims]
    if len(cut) == 1:
        prim, (centre, extent, long_axis) = cut[0]
        order = [long_axis] + [i for i in range(3) if i != long_axis]
        return PartPose(prim.R @ centre + prim.t, prim.R[:, long_axis].copy(), extent[order])
    corners = np.concatenate([p.obb_corners(obb) for p, obb in cut])
    mean = corners.mean(axis=0)
    _, _, vt = np.linalg.svd(corners - mean, full_matrices=False)
    proj = (corners - mean) @ vt.T
    lo, hi = proj.min(axis=0), proj.max(axis=0)
    return PartPose(mean + vt.T @ ((lo + hi) / 2), vt[0].copy(), hi - lo)


def _rect(prim: Primitive, K: np.ndarray, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Conservative pixel rectangle (u0, u1, v0, v1) covering the solid's bounding sphere."""
    c, r = prim.bounding_sphere()
    if c[2] + r <= 1e-3:
        return None
    if c[2] - r <= 1e-3:
        return 0, width, 0, height
    xs = [(c[0] + sx * r) / (c[2] + sz * r) for sx in (-1, 1) for sz in (-1, 1)]
    ys = [(c[1] + sy * r) / (c[2] + sz * r) for sy in (-1, 1) for sz in (-1, 1)]
    u0 = max(int(np.floor(K[0, 0] * min(xs) + K[0, 2])), 0)
    u1 = min(int(np.ceil(K[0, 0] * max(xs) + K[0, 2])) + 1, width)
    v0 = max(int(np.floor(K[1, 1] * min(ys) + K[1, 2])), 0)
    v1 = min(int(np.ceil(K[1, 1] * max(ys) + K[1, 2])) + 1, height)
    return (u0, u1, v0, v1) if u0 < u1 and v0 < v1 else None


class _ZBuffer:
    """Nearest-hit buffers over the image: depth, hit id, camera-frame normal and albedo."""

    def __init__(self, dirs: np.ndarray):
        h, w, _ = dirs.shape
        self.dirs = dirs
        self.dirs32 = dirs.astype(np.float32)
        self.depth = np.full((h, w), np.inf)
        self.ids = np.full((h, w), NO_HIT, dtype=np.int32)
        self.normal = np.zeros((h, w, 3), dtype=np.float32)
        self.albedo = np.zeros((h, w, 3), dtype=np.float32)

    def plane(self, hit_id: int, n_c: np.ndarray, p_c: np.ndarray, uv_axes: np.ndarray, bounds, material):
        """A planar rectangle: points p with n.(p - p_c) = 0, local coords (p - p_c) @ uv_axes in bounds."""
        denom = self.dirs @ n_c
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (n_c @ p_c) / denom
        uv = t[..., None] * (self.dirs @ uv_axes) - p_c @ uv_axes
        closer = (
            (t > 0) & (t < self.depth) & (np.abs(uv[..., 0]) <= bounds[0]) & (np.abs(uv[..., 1]) <= bounds[1])
        )
        self.depth[closer] = t[closer]
        self.ids[closer] = hit_id
        self.normal[closer] = n_c
        local = np.zeros((int(closer.sum()), 3))
        local[:, :2] = uv[closer]
        normal_local = np.zeros_like(local)
        normal_local[:, 2] = 1.0
        self.albedo[closer] = material.albedo(local, normal_local)

    def solid(self, hit_id: int, prim: Primitive, K: np.ndarray, material: Material) -> None:
        h, w = self.depth.shape
        rect = _rect(prim, K, w, h)
        if rect is None:
            return
        u0, u1, v0, v1 = rect
        dirs = self.dirs[v0:v1, u0:u1].reshape(-1, 3)
        t, p_local, n_local = prim.intersect(dirs)
        t = t.reshape(v1 - v0, u1 - u0)
        depth = self.depth[v0:v1, u0:u1]
        closer = t < depth
        if not closer.any():
            return
        flat = closer.ravel()
        depth[closer] = t[closer]
        self.ids[v0:v1, u0:u1][closer] = hit_id
        self.normal[v0:v1, u0:u1][closer] = n_local[flat] @ prim.R.T
        self.albedo[v0:v1, u0:u1][closer] = material.albedo(p_local[flat], n_local[flat])


@lru_cache(maxsize=1)
def _shadow_rays() -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics and ray grid of the shadow-map camera (fixed size and field of view)."""
    f = SHADOW_MAP / (2 * SHADOW_HALF_WIDTH / LIGHT_DISTANCE)
    K = np.array([[f, 0, (SHADOW_MAP - 1) / 2], [0, f, (SHADOW_MAP - 1) / 2], [0, 0, 1.0]])
    return K, _ray_grid(K, SHADOW_MAP, SHADOW_MAP)


def _lit_fraction(zb: _ZBuffer, cam: _Camera, light_w: np.ndarray, solids: list[Primitive]) -> np.ndarray:
    """Cast shadows with a shadow map: depth of the solids seen from a light LIGHT_DISTANCE m away along
    ``light_w`` (world), compared with each camera pixel's point (2x2 percentage-closer filtering);
    1 = lit, 0 = shadowed."""
    light_eye = light_w * LIGHT_DISTANCE
    R_lw = _look_at(light_eye, np.zeros(3))
    R_lc, t_lc = R_lw @ cam.R_cw.T, R_lw @ (cam.eye - light_eye)  # camera frame -> light frame
    K_l, dirs = _shadow_rays()
    shadow_map = np.full((SHADOW_MAP + 1, SHADOW_MAP + 1), np.inf, dtype=np.float32)  # +1: PCF border
    for solid in solids:
        prim = solid.transformed(R_lc, t_lc)
        rect = _rect(prim, K_l, SHADOW_MAP, SHADOW_MAP)
        if rect is not None:
            u0, u1, v0, v1 = rect
            t, _, _ = prim.intersect(dirs[v0:v1, u0:u1].reshape(-1, 3))
            view = shadow_map[v0:v1, u0:u1]
            np.minimum(view, t.reshape(v1 - v0, u1 - u0), out=view)
    hit = np.isfinite(zb.depth)
    depth = np.where(hit, zb.depth, 0.0).astype(np.float32)
    pts = (zb.dirs32 * depth[..., None]) @ R_lc.T.astype(np.float32) + t_lc.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K_l[0, 0] * pts[..., 0] / pts[..., 2] + K_l[0, 2]
        v = K_l[1, 1] * pts[..., 1] / pts[..., 2] + K_l[1, 2]
    u = np.clip(np.nan_to_num(u, nan=-1.0), -1.0, SHADOW_MAP)
    v = np.clip(np.nan_to_num(v, nan=-1.0), -1.0, SHADOW_MAP)
    u0 = np.minimum(np.floor(u), SHADOW_MAP - 1).astype(np.int32)
    v0 = np.minimum(np.floor(v), SHADOW_MAP - 1).astype(np.int32)
    fu, fv = u - u0, v - v0
    lit = np.zeros(depth.shape, dtype=np.float32)
    z = pts[..., 2] - np.float32(SHADOW_BIAS)
    for du, dv, w in (
        (0, 0, (1 - fu) * (1 - fv)),
        (1, 0, fu * (1 - fv)),
        (0, 1, (1 - fu) * fv),
        (1, 1, fu * fv),
    ):
        lit += w * (z <= shadow_map[v0 + dv, u0 + du])  # index -1 wraps to the inf border: lit
    return np.where(hit, lit, np.float32(1.0))


def _shade(
    rng: np.random.Generator, zb: _ZBuffer, cam: _Camera, backdrop: np.ndarray, solids: list[Primitive]
) -> np.ndarray:
    """Lambert + Blinn-Phong under one random light with cast shadows, photo backdrop where nothing is hit."""
    elev, azim = rng.uniform(np.deg2rad(25), np.deg2rad(85)), rng.uniform(0, 2 * np.pi)
    light_w = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    light = cam.R_cw @ light_w
    light_colour = rng.uniform(0.85, 1.15, size=3)
    ambient, diffuse_k = rng.uniform(0.25, 0.5), rng.uniform(0.5, 0.9)
    spec_k, shininess = rng.uniform(0.0, 0.35), rng.uniform(8, 64)
    view = -zb.dirs32.copy()
    view /= np.linalg.norm(view, axis=-1, keepdims=True)
    n = zb.normal
    n = np.where((np.einsum("hwc,hwc->hw", n, view) < 0)[..., None], -n, n)
    lit_fraction = _lit_fraction(zb, cam, light_w, solids)
    diffuse = np.clip(n @ light.astype(np.float32), 0, None) * lit_fraction
    half = light.astype(np.float32) + view
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    spec = np.float32(spec_k) * np.clip(np.einsum("hwc,hwc->hw", n, half), 0, None) ** np.float32(shininess)
    spec *= lit_fraction
    lit = zb.albedo * (np.float32(ambient) + np.float32(diffuse_k) * diffuse)[..., None] + spec[..., None]
    return np.where((zb.ids == NO_HIT)[..., None], backdrop, lit * light_colour.astype(np.float32))


def _camera_noise(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Exposure, gamma, optional defocus blur and sensor noise, then 8-bit quantisation."""
    img = np.clip(img * np.float32(rng.uniform(0.8, 1.2)), 0, 1) ** np.float32(rng.uniform(0.85, 1.15))
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.1))
    img = img + np.float32(rng.uniform(0.004, 0.025)) * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _backdrop(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    photo = backdrops()[int(rng.integers(len(backdrops())))]
    h, w, _ = photo.shape
    crop_h = int(h * rng.uniform(0.5, 1.0))
    crop_w = min(w, int(crop_h * width / height))
    y0, x0 = int(rng.integers(0, h - crop_h + 1)), int(rng.integers(0, w - crop_w + 1))
    crop = photo[y0 : y0 + crop_h, x0 : x0 + crop_w]
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA) * np.float32(rng.uniform(0.6, 1.0))


def _surface(rng: np.random.Generator) -> Material:
    """Table/wall material: mostly photo textures at a coarser scale than object surfaces."""
    material = random_material(rng, textured_prob=0.8)
    material.scale = float(rng.uniform(250.0, 900.0))
    return material


def _build_instances(
    rng: np.random.Generator, cam: _Camera, categories: Sequence[str], spread: float
) -> tuple[list[_Instance], list[list[Primitive]], list[Material], list[list[Material]]]:
    """Sample object instances and clutter on the table; returns everything in the camera frame."""
    taken: list[tuple[np.ndarray, float]] = []
    instances, inst_materials = [], []
    for _ in range(int(rng.integers(2, 7))):
        name = categories[int(rng.integers(len(categories)))]
        parts = BUILDERS[name](rng)
        scale = rng.uniform(0.85, 1.15)
        prims_obj = [
            _unscaled(p.transformed(np.eye(3) * scale, np.zeros(3)), scale) for _, ps in parts for p in ps
        ]
        where = _place(rng, _footprint(prims_obj), spread, taken)
        if where is None:
            continue
        R_w = rot_z(rng.uniform(0, 2 * np.pi)) * scale
        R_c, t_c = cam.to_camera(R_w, where)
        shared = random_material(rng)
        inst_materials.append([shared if rng.random() < 0.4 else random_material(rng) for _ in parts])
        instances.append(
            _Instance(
                name, [(pn, [_unscaled(p.transformed(R_c, t_c), scale) for p in ps]) for pn, ps in parts]
            )
        )
    clutter, clutter_materials = [], []
    for _ in range(int(rng.integers(0, 7))):
        prims = _clutter(rng)
        where = _place(rng, _footprint(prims), spread * 1.1, taken)
        if where is None:
            continue
        R_c, t_c = cam.to_camera(rot_z(rng.uniform(0, 2 * np.pi)), where)
        clutter.append([p.transformed(R_c, t_c) for p in prims])
        clutter_materials.append(random_material(rng, textured_prob=0.6))
    return instances, clutter, clutter_materials, inst_materials


def _unscaled(prim: Primitive, scale: float) -> Primitive:
    """Fold a uniform scale out of a pose's rotation into the solid's size, keeping R orthonormal."""
    return Primitive(prim.kind, prim.params * scale, prim.R / scale, prim.t)


def _ray_grid(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Per-pixel camera rays with z = 1 (pixel centres at integer coordinates, OpenCV convention)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)


def generate_scene(
    seed: int,
    width: int = 320,
    height: int = 240,
    categories: Sequence[str] | None = None,
    orbit: float | None = None,
) -> ImageAnnotation:
    """Render one SynthParts scene; the same arguments always give the same bytes.

    Objects are drawn from ``categories`` (all of CATEGORIES when None), 2-6 instances plus 0-6
    unlabelled clutter solids. Masks are visible pixels; poses are camera-frame metres,
    a part's cut to its stretch outside the other parts of its object (a buried handle end is not in it).
    ``orbit`` (radians) makes the scene a frame of a sequence: the camera moves around the vertical through
    the point it looks at, the table, wall, objects, materials and light stay (the backdrop beyond them is a
    flat image that does not move), so frames of one seed at growing ``orbit`` are a camera circling the
    table, and each object's ``track_id`` (its index in the scene + 1) names it in every frame it is
    visible in. Single scenes (``orbit`` None) have no track ids: they are not a sequence.
    """
    cats = tuple(categories) if categories is not None else tuple(BUILDERS)
    unknown = [c for c in cats if c not in BUILDERS]
    if unknown or not cats:
        raise ValueError(f"unknown or empty categories: {unknown or cats}; known: {sorted(BUILDERS)}")
    rng = np.random.default_rng(seed)
    cam, dist, fov = _sample_camera(rng, width, height, orbit or 0.0)
    spread = dist * np.tan(fov / 2) * 0.75
    zb = _ZBuffer(_ray_grid(cam.K, width, height))

    table_half = rng.uniform(0.45, 0.9, size=2)
    table_R = rot_z(rng.uniform(0, 2 * np.pi))
    _, table_t = cam.to_camera(np.eye(3), np.zeros(3))
    zb.plane(TABLE_ID, cam.R_cw[:, 2], table_t, cam.R_cw @ table_R[:, :2], table_half, _surface(rng))
    if rng.random() < 0.5:  # a wall behind the table; otherwise the camera sees past it (no return)
        # behind the table as the camera saw it before its orbit, so the wall stays put while the camera moves
        back = -(rot_z(-orbit) @ cam.R_cw[2] if orbit else cam.R_cw[2].copy())
        back[2] = 0.0
        back /= np.linalg.norm(back)
        wall_d = rng.uniform(0.5, 1.2)
        if orbit is not None:  # beyond the whole orbit circle, so no frame of a sequence looks from behind it
            radius = np.linalg.norm((cam.eye - cam.target)[:2]) + np.linalg.norm(cam.target[:2])
            wall_d = max(wall_d, radius + 0.1)
        wall_p = -back * wall_d
        side = np.cross([0.0, 0.0, 1.0], back)
        axes = np.stack([side, [0.0, 0.0, 1.0]], axis=1)
        _, wall_t = cam.to_camera(np.eye(3), wall_p)
        zb.plane(WALL_ID, cam.R_cw @ back, wall_t, cam.R_cw @ axes, (3.0, 3.0), _surface(rng))

    instances, clutter, clutter_materials, inst_materials = _build_instances(rng, cam, cats, spread)
    part_of_prim: list[int] = []  # prim id -> global part index (-1 for clutter)
    part_keys: list[tuple[int, str, list[Primitive]]] = []  # (instance index, part name, solids)
    for i, (inst, materials) in enumerate(zip(instances, inst_materials, strict=True)):
        for (part_name, prims), material in zip(inst.parts, materials, strict=True):
            for prim in prims:
                zb.solid(len(part_of_prim), prim, cam.K, material)
                part_of_prim.append(len(part_keys))
            part_keys.append((i, part_name, prims))
    for prims, material in zip(clutter, clutter_materials, strict=True):
        for prim in prims:
            zb.solid(len(part_of_prim), prim, cam.K, material)
            part_of_prim.append(-1)

    solids = [p for inst in instances for _, ps in inst.parts for p in ps] + [p for ps in clutter for p in ps]
    image = _camera_noise(rng, _shade(rng, zb, cam, _backdrop(rng, width, height), solids))
    depth = np.where(np.isfinite(zb.depth), zb.depth, 0.0).astype(np.float32)
    lut = np.asarray(part_of_prim + [-1], dtype=np.int32)  # index -1 (no/static hit) -> -1
    part_map = np.where(zb.ids >= 0, lut[np.maximum(zb.ids, -1)], -1)
    objects = _annotate(instances, part_keys, part_map, tracked=orbit is not None)
    return ImageAnnotation(
        image_id=int(seed),
        file_name=f"synthparts_{seed:09d}.png",
        height=height,
        width=width,
        objects=objects,
        image=image,
        depth=depth,
        intrinsics=cam.K,
    )


def _annotate(
    instances: list[_Instance],
    part_keys: list[tuple[int, str, list[Primitive]]],
    part_map: np.ndarray,
    tracked: bool,
) -> list[ObjectAnnotation]:
    """Visible masks from the part map; ids run 1.. over objects and their parts in order; with ``tracked``
    each object's track id is its instance index + 1, the same in every frame of a sequence."""
    areas = np.bincount(part_map[part_map >= 0], minlength=len(part_keys))
    objects: list[ObjectAnnotation] = []
    next_id = 1
    for i, inst in enumerate(instances):
        keys = [k for k, (owner, _, _) in enumerate(part_keys) if owner == i]
        if areas[keys].sum() < MIN_OBJECT_PIXELS:
            continue
        obj = ObjectAnnotation(
            id=next_id,
            name=inst.name,
            mask=np.isin(part_map, keys),
            pose=pose_of_solids([p for k in keys for p in part_keys[k][2]]),
            track_id=i + 1 if tracked else 0,
        )
        next_id += 1
        for k in keys:
            if areas[k] >= MIN_PART_PIXELS:
                _, part_name, prims = part_keys[k]
                others = [p for j in keys if j != k for p in part_keys[j][2]]
                obj.parts.append(
                    PartAnnotation(
                        id=next_id,
                        name=part_name,
                        mask=part_map == k,
                        parent_id=obj.id,
                        pose=pose_of_solids(prims, covering=others),
                    )
                )
                next_id += 1
        objects.append(obj)
    return objects
