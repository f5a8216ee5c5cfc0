"""SynthParts generator: annotation invariants over 50 scenes, determinism, splits and exact geometry."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data.synthparts import CATEGORIES, generate_scene, load_split_config, split_scenes
from training.data.synthparts.primitives import box, capsule, cylinder, ellipsoid
from training.data.synthparts.scene import MIN_OBJECT_PIXELS, MIN_PART_PIXELS, pose_of_solids
from training.data.visualize import main as visualize_main

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "synthparts.yaml"


def _backproject(depth: np.ndarray, K: np.ndarray, mask: np.ndarray) -> np.ndarray:
    v, u = np.nonzero(mask)
    z = depth[v, u].astype(np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)


def _inside_pose(points: np.ndarray, pose, tol: float) -> np.ndarray:
    """Points within the pose's bounding sphere (centre, half the extent diagonal) plus ``tol``."""
    return np.linalg.norm(points - pose.center, axis=1) <= np.linalg.norm(pose.extent) / 2 + tol


@pytest.fixture(scope="module")
def scenes():
    return [generate_scene(seed) for seed in range(50)]


def test_fifty_scenes_invariants(scenes):
    seen_categories, partial_objects, occluded = set(), 0, 0
    for scene in scenes:
        assert scene.image.shape == (240, 320, 3) and scene.image.dtype == np.uint8
        assert scene.depth.shape == (240, 320) and scene.depth.dtype == np.float32
        assert scene.intrinsics.shape == (3, 3)
        ids = [o.id for o in scene.objects] + [p.id for p in scene.parts()]
        assert len(ids) == len(set(ids)), "ids must be unique within an image"
        union = np.zeros((240, 320), dtype=bool)
        for obj in scene.objects:
            seen_categories.add(obj.name)
            assert obj.mask.sum() >= MIN_OBJECT_PIXELS
            assert not (union & obj.mask).any(), "visible object masks cannot overlap"
            union |= obj.mask
            # depth is a real return on every object pixel, and those 3D points lie on the object
            assert (scene.depth[obj.mask] > 0).all()
            pts = _backproject(scene.depth, scene.intrinsics, obj.mask)
            assert _inside_pose(pts, obj.pose, 0.005).all()
            assert 0.25 < obj.pose.center[2] < 1.5
            parts_union = np.zeros_like(obj.mask)
            names = [p.name for p in obj.parts]
            assert len(names) == len(set(names)), "one part per generic name per object (PACO style)"
            for part in obj.parts:
                assert part.parent_id == obj.id
                assert part.name in CATEGORIES[obj.name]
                assert part.mask.sum() >= MIN_PART_PIXELS
                assert not (part.mask & ~obj.mask).any(), "part mask must lie inside its parent's mask"
                assert not (parts_union & part.mask).any(), "parts of one object cannot overlap"
                parts_union |= part.mask
                assert np.isclose(np.linalg.norm(part.pose.axis), 1.0)
                assert _inside_pose(
                    _backproject(scene.depth, scene.intrinsics, part.mask), part.pose, 0.005
                ).all()
                x0, y0, x1, y1 = part.box
                ys, xs = np.nonzero(part.mask)
                assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            # the object is exactly its parts, except parts too small to annotate
            assert parts_union.sum() >= obj.mask.sum() - MIN_PART_PIXELS * len(CATEGORIES[obj.name])
            partial_objects += len(obj.parts) < len(CATEGORIES[obj.name])
        # no-return pixels (depth 0) are never object pixels; most of a tabletop image has a return
        assert not (union & (scene.depth == 0)).any()
        assert (scene.depth > 0).mean() > 0.3
        occluded += len(scene.objects) >= 2
    assert len(seen_categories) >= 12, seen_categories
    assert partial_objects >= 10, "objects showing only some of their parts must occur"
    assert occluded >= 40


def test_same_seed_same_bytes():
    a, b = generate_scene(1234), generate_scene(1234)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.depth.tobytes() == b.depth.tobytes()
    assert [(o.name, o.mask.tobytes(), [(p.name, p.mask.tobytes()) for p in o.parts]) for o in a.objects] == [
        (o.name, o.mask.tobytes(), [(p.name, p.mask.tobytes()) for p in o.parts]) for o in b.objects
    ]
    assert generate_scene(1235).image.tobytes() != a.image.tobytes()


def test_category_restriction_and_size():
    scene = generate_scene(7, width=160, height=120, categories=["mug"])
    assert scene.image.shape == (120, 160, 3)
    assert {o.name for o in scene.objects} <= {"mug"}
    with pytest.raises(ValueError):
        generate_scene(7, categories=["unicorn"])


def test_shared_generic_parts():
    owners = {
        p: {c for c, parts in CATEGORIES.items() if p in parts} for p in ("handle", "blade", "head", "lid")
    }
    assert {"mug", "pan", "kettle", "knife", "hammer", "screwdriver", "drawer"} <= owners["handle"]
    assert {"knife", "scissors"} <= owners["blade"]
    assert set(CATEGORIES["bottle"]) == {"cap", "neck", "body"}
    assert len(CATEGORIES) >= 12


def test_split_config_rules(tmp_path):
    cfg = load_split_config(CONFIG)
    assert not set(cfg.base_categories) & set(cfg.novel_categories)
    base_parts = {p for c in cfg.base_categories for p in CATEGORIES[c]}
    assert all(set(CATEGORIES[c]) <= base_parts for c in cfg.novel_categories)
    ranges = sorted(cfg.seeds.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    train = list(split_scenes("train", cfg, limit=3))
    assert [s.image_id for s in train] == [0, 1, 2]
    assert all(o.name in cfg.base_categories for s in train for o in s.objects)
    assert set(cfg.categories_for("test")) == set(cfg.base_categories) | set(cfg.novel_categories)
    val_names = {o.name for s in split_scenes("val", cfg, limit=12) for o in s.objects}
    assert val_names & set(cfg.novel_categories), "held-out objects must show up in evaluation splits"

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "base_categories: [mug, knife]\nnovel_categories: [kettle]\n"
        "splits:\n  train: {seeds: [0, 10], categories: base}\n"
    )
    with pytest.raises(ValueError, match="part names"):  # kettle's spout/lid are not on mug or knife
        load_split_config(bad)
    bad.write_text(
        "base_categories: [mug, knife, pot]\nnovel_categories: [pan]\n"
        "splits:\n  train: {seeds: [0, 10], categories: base}\n  val: {seeds: [5, 20], categories: all}\n"
    )
    with pytest.raises(ValueError, match="overlap"):
        load_split_config(bad)


def _ray(x: float, y: float) -> np.ndarray:
    return np.array([[x, y, 1.0]])


@pytest.mark.parametrize(
    ("prim", "ray", "depth", "normal"),
    [
        # sphere of radius 0.1 at z = 1: the central ray meets it at z = 0.9, normal towards the camera
        (ellipsoid(np.array([0, 0, 1.0]), np.array([0.1, 0.1, 0.1])), _ray(0, 0), 0.9, [0, 0, -1]),
        # box 0.2 deep centred at z = 2
        (box(np.array([0, 0, 2.0]), np.array([0.1, 0.1, 0.1])), _ray(0.01, -0.02), 1.9, [0, 0, -1]),
        # cylinder axis along camera x at depth 1, radius 0.05: the central ray hits its side at 0.95
        (cylinder(np.array([-0.2, 0, 1.0]), np.array([1.0, 0, 0]), 0.05, 0.4), _ray(0, 0), 0.95, [0, 0, -1]),
        # cylinder facing the camera: hits the cap at its base distance
        (
            cylinder(np.array([0, 0, 0.7]), np.array([0, 0, 1.0]), 0.05, 0.1),
            _ray(0.01, 0.01),
            0.7,
            [0, 0, -1],
        ),
        # capsule along camera y: spherical end cap below the segment end
        (capsule(np.array([0, -0.1, 1.0]), np.array([0, 0.1, 1.0]), 0.02), _ray(0, 0), 0.98, [0, 0, -1]),
    ],
)
def test_exact_ray_intersections(prim, ray, depth, normal):
    t, _, n_local = prim.intersect(ray)
    assert t[0] == pytest.approx(depth, abs=1e-9)
    np.testing.assert_allclose(n_local[0] @ prim.R.T, normal, atol=1e-6)
    t_miss, _, _ = prim.intersect(_ray(2.0, 2.0))
    assert np.isinf(t_miss[0])


@pytest.mark.parametrize(
    "prim",
    [
        ellipsoid(np.array([0.1, 0, 1.0]), np.array([0.1, 0.05, 0.02])),
        box(np.array([0, 0.1, 1.0]), np.array([0.05, 0.02, 0.03])),
        cylinder(np.array([0, 0, 1.0]), np.array([1.0, 1.0, 0]), 0.03, 0.2),
        capsule(np.array([0, 0, 1.0]), np.array([0.1, 0.1, 1.1]), 0.02),
    ],
)
def test_contains_agrees_with_ray_entry_and_exit(prim):
    """Points just before a ray's first hit are outside, just after it inside."""
    centre, _ = prim.bounding_sphere()
    ray = (centre / centre[2])[None]
    t, _, _ = prim.intersect(ray)
    before, after = ray * (t[0] - 1e-4), ray * (t[0] + 1e-4)
    assert not prim.contains(before)[0] and prim.contains(after)[0]
    assert prim.contains(centre[None])[0]


def test_part_pose_covers_only_the_exposed_stretch():
    """A capsule handle whose first 4 cm are buried in a box: its pose is the 6 cm (plus end cap) outside."""
    handle = capsule(np.array([0.0, 0, 1.0]), np.array([0.10, 0, 1.0]), 0.01)
    body = box(np.array([0.0, 0, 1.0]), np.array([0.04, 0.05, 0.05]))
    exposed = pose_of_solids([handle], covering=[body])
    # exposed from x = 0.04 (the box face) to x = 0.11 (the cap's tip)
    np.testing.assert_allclose(exposed.center, [0.075, 0, 1.0], atol=1e-3)
    assert exposed.extent[0] == pytest.approx(0.07, abs=2e-3)
    np.testing.assert_allclose(np.abs(exposed.axis), [1, 0, 0], atol=1e-9)
    whole = pose_of_solids([handle])
    np.testing.assert_allclose(whole.center, [0.05, 0, 1.0], atol=1e-9)
    assert whole.extent[0] == pytest.approx(0.12)
    # fully buried solids fall back to their whole box rather than vanishing
    np.testing.assert_allclose(
        pose_of_solids([handle], covering=[box(handle.t, np.full(3, 0.5))]).center, whole.center
    )


def test_visualize_cli_writes_labelled_panels(tmp_path):
    visualize_main(["--out", str(tmp_path), "--num", "2", "--seed", "5", "--scale", "1"])
    files = sorted(tmp_path.glob("synthparts_*.png"))
    assert [f.name for f in files] == ["synthparts_000000005.png", "synthparts_000000006.png"]
    panels = cv2.imread(str(files[0]))
    assert panels.shape == (240, 4 * 320, 3)
    scene = generate_scene(5)
    rgb = cv2.cvtColor(panels[:, :320], cv2.COLOR_BGR2RGB)
    assert np.array_equal(rgb, scene.image)  # first panel is the untouched image
    assert not np.array_equal(panels[:, 320:640], panels[:, :320])  # object overlay drawn


def test_an_orbit_sequence_never_looks_from_behind_the_wall() -> None:
    """The wall stands beyond the camera's whole orbit circle: seed 1055, whose wall once stood inside it,
    shows objects from every side (it showed none from behind the wall)."""
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    counts = [len(generate_scene(1055, 160, 120, orbit=a).objects) for a in angles]
    assert min(counts) > 0, counts
