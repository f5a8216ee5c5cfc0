"""Accuracy of the grasp geometry on SynthParts scenes with known 3D part poses.

Run: ``.venv/bin/python benchmarks/grasp_accuracy.py --scenes 200 [--sensor-noise] [--json out.json]``.

Which cases count ("unoccluded handles at 0.5-1.0 m"), decided only from what a scene provides (the part's
visible mask, its ground-truth PartPose, the rendered depth and intrinsics):

- the part is named ``handle`` and has a ground-truth pose;
- the Euclidean distance from the camera to the pose centre is in [0.5, 1.0] m;
- its mask does not touch the image border (the part is not cut off by the frame);
- its silhouette is occlusion-free: no 4-neighbour outside the mask is nearer to the camera than the adjacent
  mask pixel by more than OCCLUDER_MARGIN_M. In an opaque rendering, anything that hides part of the handle
  (another object, or its own object's body) leaves exactly such a nearer pixel along the cut; a handle's
  own silhouette borders only surfaces behind it.

Included handles are then split by whether they hide part of themselves ("self-occluded"): two 4-neighbouring
mask pixels more than OCCLUDER_MARGIN_M apart in depth are an occluding contour inside the silhouette, where a
near stretch of the handle passes in front of a far one (a mug's C-arc seen from above). The requirement is
for unoccluded handles: those neither hidden by other surfaces nor by themselves; self-occluded ones are
measured and reported beside them.

Handles are split by shape, read from the generator's own builders: "straight" handles are one solid
(capsule or box: pan, pot, knife, hammer, screwdriver, wrench, spatula, ladle), whose ground-truth centre and
long axis are exact; "curved" handles are chains of solids (mug and kettle arcs, drawer U-bars, scissor
rings), whose ground truth is the PCA box of the chain.

What is compared: ``geometry.center`` (the estimate of the solid part's centre: axial midpoint of the visible
surface, moved behind it for a round cross-section) against ``PartPose.center``; and ``geometry.axes[0]``
against ``PartPose.axis`` as undirected axes. The centre error is also split into its component along the
true axis and its distance from the true axis line. ``PartPose`` describes the exposed stretch of a part:
the end of a handle buried in its pan or hammer head is cut off (``Primitive.exposed_obb``). The
visible-surface centroid's distance to ``PartPose.center`` is reported beside it, to show how much of the
error the surface-to-solid correction removes.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import numpy as np

from partglee_ros.geometry import plan_grasp
from partglee_ros.geometry.part_pose import depth_jumps
from training.data.hierarchy import ImageAnnotation, PartAnnotation

PART_NAME = "handle"
MIN_DISTANCE_M, MAX_DISTANCE_M = 0.5, 1.0
OCCLUDER_MARGIN_M = 0.01
DROPOUT = 0.02  # fraction of pixels without a reading in --sensor-noise depth


@dataclass
class Case:
    seed: int
    object_name: str
    shape: str  # "straight" (one solid) or "curved" (a chain of solids)
    distance_m: float
    included: bool
    exclusion: str  # "" when included
    self_occluded: bool = False  # included, but a near stretch of the handle hides a far one
    reason: str = ""  # plan_grasp's reason ("ok" when it returned a pose)
    centre_error_m: float = float("nan")
    along_axis_error_m: float = float("nan")  # |component of the centre error along the true axis|
    across_axis_error_m: float = float("nan")  # distance of the estimated centre from the true axis line
    surface_centroid_error_m: float = float("nan")
    axis_error_deg: float = float("nan")
    quality: float = float("nan")


def axis_angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    """Angle between two undirected axes, in degrees."""
    cos = abs(float(u @ v)) / (np.linalg.norm(u) * np.linalg.norm(v))
    return float(np.degrees(np.arccos(min(cos, 1.0))))


def nearer_neighbour_exists(mask: np.ndarray, depth: np.ndarray, margin: float) -> bool:
    """True where some pixel just outside the mask is nearer than its in-mask 4-neighbour by > margin."""
    filled = np.where(depth > 0, depth, np.inf)
    for axis in (0, 1):
        for step in (1, -1):
            inside = mask & ~np.roll(mask, step, axis=axis)  # mask pixels whose neighbour is outside
            neighbour = np.roll(filled, step, axis=axis)
            if np.any(inside & (neighbour < filled - margin)):
                return True
    return False


def internal_contour_exists(mask: np.ndarray, depth: np.ndarray, margin: float) -> bool:
    """True where two 4-neighbouring mask pixels differ in depth by > margin: the part hides part of itself."""
    jumps = depth_jumps(np.where(depth > 0, depth, np.nan), mask)
    with np.errstate(invalid="ignore"):
        return bool(np.any(jumps > margin))


def handle_shape(object_name: str) -> str:
    """ "straight" when the category builds its handle from one solid, else "curved" (structure is fixed
    per category; only sizes are random, so any seed tells)."""
    from training.data.synthparts.categories import BUILDERS

    solids = dict(BUILDERS[object_name](np.random.default_rng(0)))[PART_NAME]
    return "straight" if len(solids) == 1 else "curved"


def exclusion_of(part: PartAnnotation, scene: ImageAnnotation) -> str:
    """Why a part is not an unoccluded handle in range ("" when it is one)."""
    if part.name != PART_NAME:
        return "not a handle"
    if part.pose is None:
        return "no ground-truth pose"
    distance = float(np.linalg.norm(part.pose.center))
    if not MIN_DISTANCE_M <= distance <= MAX_DISTANCE_M:
        return "distance out of range"
    mask = part.mask
    if not mask.any():
        return "not visible"
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
        return "touches image border"
    if nearer_neighbour_exists(mask, scene.depth, OCCLUDER_MARGIN_M):
        return "occluded"
    return ""


def sensor_depth_mm(depth_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a structured-light camera would report for exact depth: 16UC1 millimetres with axial noise that
    grows with distance (Nguyen et al. 2012, Kinect: sigma = 1.2 mm + 1.9 mm/m^2 * (z - 0.4 m)^2) and
    DROPOUT of the pixels missing (0)."""
    sigma = 0.0012 + 0.0019 * (depth_m - 0.4) ** 2
    noisy = depth_m + rng.normal(size=depth_m.shape) * sigma
    noisy[(depth_m <= 0) | (rng.random(depth_m.shape) < DROPOUT)] = 0.0
    return np.clip(np.round(noisy * 1000.0), 0, 65535).astype(np.uint16)


def evaluate_scene(scene: ImageAnnotation, seed: int, sensor_noise: bool = False) -> list[Case]:
    """One Case per handle in the scene, measured when it is an included case. Cases are chosen on the exact
    depth; with ``sensor_noise`` the estimate sees ``sensor_depth_mm`` of it instead."""
    if sensor_noise:
        depth, encoding = sensor_depth_mm(scene.depth, np.random.default_rng([seed, 1])), "16UC1"
    else:
        depth, encoding = scene.depth, "32FC1"
    cases = []
    for obj in scene.objects:
        for part in obj.parts:
            if part.name != PART_NAME:
                continue
            exclusion = exclusion_of(part, scene)
            distance = float(np.linalg.norm(part.pose.center)) if part.pose is not None else float("nan")
            case = Case(seed, obj.name, handle_shape(obj.name), distance, not exclusion, exclusion)
            if case.included:
                case.self_occluded = internal_contour_exists(part.mask, scene.depth, OCCLUDER_MARGIN_M)
                result = plan_grasp(part.mask, depth, scene.intrinsics, encoding=encoding)
                case.reason = result.reason
                if result.pose is not None:
                    geometry = result.geometry
                    error = geometry.center - part.pose.center
                    along = float(error @ part.pose.axis)
                    case.centre_error_m = float(np.linalg.norm(error))
                    case.along_axis_error_m = abs(along)
                    case.across_axis_error_m = float(np.linalg.norm(error - along * part.pose.axis))
                    case.surface_centroid_error_m = float(
                        np.linalg.norm(geometry.surface_centroid - part.pose.center)
                    )
                    case.axis_error_deg = axis_angle_deg(geometry.axes[0], part.pose.axis)
                    case.quality = result.pose.quality
            cases.append(case)
    return cases


def collect(seeds: range, width: int, height: int, sensor_noise: bool = False) -> list[Case]:
    from training.data.synthparts import generate_scene

    cases = []
    for seed in seeds:
        cases.extend(evaluate_scene(generate_scene(seed, width=width, height=height), seed, sensor_noise))
    return cases


def summarise(values: np.ndarray) -> dict[str, float]:
    return {
        "median": float(np.median(values)),
        "p90": float(np.percentile(values, 90)),
        "max": float(np.max(values)),
    }


def summarise_cases(posed: list[Case]) -> dict:
    """Error distributions and the count within 1 cm and 10 deg for a group of posed cases."""
    centre = np.array([c.centre_error_m for c in posed]) * 100.0
    axis = np.array([c.axis_error_deg for c in posed])
    within = (centre <= 1.0) & (axis <= 10.0)
    return {
        "cases": len(posed),
        "within_1cm_and_10deg": int(np.sum(within)),
        "within_by_category": {
            name: f"{sum(w for c, w in zip(posed, within, strict=True) if c.object_name == name)}/"
            f"{sum(c.object_name == name for c in posed)}"
            for name in sorted({c.object_name for c in posed})
        },
        "centre_error_cm": summarise(centre),
        "along_axis_error_cm": summarise(np.array([c.along_axis_error_m for c in posed]) * 100.0),
        "across_axis_error_cm": summarise(np.array([c.across_axis_error_m for c in posed]) * 100.0),
        "surface_centroid_error_cm": summarise(np.array([c.surface_centroid_error_m for c in posed]) * 100.0),
        "axis_error_deg": summarise(axis),
        "quality": summarise(np.array([c.quality for c in posed])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--json", help="write every case and the summary here")
    parser.add_argument(
        "--sensor-noise", action="store_true", help="estimate from noisy 16UC1 depth (sensor_depth_mm)"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    seeds = range(args.first_seed, args.first_seed + args.scenes)
    cases = collect(seeds, args.width, args.height, args.sensor_noise)
    elapsed = time.perf_counter() - start
    included = [c for c in cases if c.included]
    exclusions: dict[str, int] = {}
    for c in cases:
        if not c.included:
            exclusions[c.exclusion] = exclusions.get(c.exclusion, 0) + 1
    summary = {
        "scenes": args.scenes,
        "resolution": [args.width, args.height],
        "depth": "sensor noise, 16UC1" if args.sensor_noise else "exact, 32FC1",
        "handles": len(cases),
        "included": len(included),
        "excluded": exclusions,
        "no_pose": {
            c.reason: sum(d.reason == c.reason for d in included) for c in included if c.reason != "ok"
        },
        "seconds": round(elapsed, 1),
    }
    for shape in ("straight", "curved"):
        for group, self_occluded in (("unoccluded", False), ("self-occluded", True)):
            posed = [
                c
                for c in included
                if c.reason == "ok" and c.shape == shape and c.self_occluded == self_occluded
            ]
            if posed:
                summary[f"{shape}, {group}"] = summarise_cases(posed)
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "cases": [asdict(c) for c in cases]}, f, indent=1)


if __name__ == "__main__":
    main()
