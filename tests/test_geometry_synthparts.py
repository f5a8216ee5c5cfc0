"""Must-show accuracy of the grasp geometry on SynthParts scenes with known 3D part poses.

Cases, exactly as defined (and measured at scale) in benchmarks/grasp_accuracy.py: parts named "handle" whose
pose centre is 0.5-1.0 m from the camera, whose mask does not touch the image border and whose silhouette
borders no pixel nearer than the adjacent mask pixel by more than 1 cm (nothing in front of them), and that
do not hide part of themselves (no two neighbouring mask pixels more than 1 cm apart in depth), straight (one
solid) and curved (arcs, rings, U-bars) alike. Self-occluded handles must still give finite poses. Compared:
the estimated solid centre against PartPose.center and the first principal axis against PartPose.axis
(undirected). PartPose describes the exposed stretch of a handle (the end buried in a pan or a hammer head is
cut off), which is all a camera or a gripper can reach. Run on the exact rendered depth and on a noisy 16UC1
sensor's view of it (distance-dependent axial noise, millimetre quantisation, 2 % dropouts).
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.grasp_accuracy import collect
from partglee_ros.geometry import plan_grasp

synthparts = pytest.importorskip("training.data.synthparts", reason="SynthParts generator not available")

SEEDS = range(40)


@pytest.fixture(scope="module", params=[False, True], ids=["exact-depth", "sensor-noise"])
def included(request):
    """Included cases estimated from the exact rendered depth, and from a noisy 16UC1 sensor's view of it."""
    return [c for c in collect(SEEDS, width=320, height=240, sensor_noise=request.param) if c.included]


def test_every_included_handle_gets_a_pose(included):
    failures = [(c.seed, c.object_name, c.reason) for c in included if c.reason != "ok"]
    assert not failures


def test_unoccluded_handles_within_1cm_and_10_degrees(included):
    unoccluded = [c for c in included if not c.self_occluded]
    for shape, at_least in (("straight", 20), ("curved", 5)):
        n = sum(c.shape == shape for c in unoccluded)
        assert n >= at_least, f"only {n} {shape} unoccluded handles in range; widen SEEDS"
    misses = [
        (c.seed, c.object_name, round(c.centre_error_m * 100, 2), round(c.axis_error_deg, 1))
        for c in unoccluded
        if c.centre_error_m > 0.01 or c.axis_error_deg > 10.0
    ]
    assert not misses, f"(seed, object, centre error cm, axis error deg): {misses}"


def test_handle_with_depth_holes_or_empty_mask_gives_reason_not_nan():
    scene = synthparts.generate_scene(0)
    part = next(p for p in scene.parts() if p.name == "handle" and p.mask.sum() > 50)
    holed = scene.depth.copy()
    holed[part.mask] = 0.0
    for mask, depth in ((part.mask, holed), (np.zeros_like(part.mask), scene.depth)):
        result = plan_grasp(mask, depth, scene.intrinsics)
        assert result.pose is None and result.reason not in ("", "ok")
    result = plan_grasp(part.mask, scene.depth, scene.intrinsics)
    assert result.reason == "ok"
    assert np.isfinite(result.pose.position).all() and np.isfinite(result.pose.orientation).all()
