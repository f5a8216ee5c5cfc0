"""Back-projection through a CameraInfo as image_geometry reads it: K and D for raw images (OpenCV's
distortion models, inverted), P for rectified ones, skew, binning and ROI; checked by projecting known 3D
points with OpenCV and recovering them at their depth."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from partglee_ros.geometry import GeometryParams, Intrinsics, depth_to_metres, estimate_part_geometry

K = np.array([[500.0, 0.0, 320.0], [0.0, 510.0, 240.0], [0.0, 0.0, 1.0]])
ZERO = (0.0, 0.0, 0.0)


def camera_info(
    k=K, d=(), model="plumb_bob", p=None, width=640, height=480, binning=(0, 0), roi=(0, 0, 0, 0)
):
    """The fields of a sensor_msgs/CameraInfo that the camera model reads."""
    p = np.hstack([k, np.zeros((3, 1))]) if p is None else p
    x, y, w, h = roi
    return SimpleNamespace(
        k=np.ravel(k).tolist(),
        d=list(d),
        distortion_model=model,
        p=np.ravel(p).tolist(),
        width=width,
        height=height,
        binning_x=binning[0],
        binning_y=binning[1],
        roi=SimpleNamespace(x_offset=x, y_offset=y, width=w, height=h),
    )


def scene_points() -> np.ndarray:
    """3D points across a 640x480 view, 0.5-2 m away."""
    rng = np.random.default_rng(0)
    z = rng.uniform(0.5, 2.0, 200)
    return np.stack([rng.uniform(-0.5, 0.5, 200) * z, rng.uniform(-0.4, 0.4, 200) * z, z], axis=1)


def recovered(intrinsics: Intrinsics, pixels: np.ndarray, z: np.ndarray) -> np.ndarray:
    return intrinsics.rays(pixels[:, 0], pixels[:, 1]) * z[:, None]


@pytest.mark.parametrize(
    ("model", "d"),
    [
        ("plumb_bob", (-0.28, 0.09, 0.001, -0.002, -0.015)),
        ("rational_polynomial", (0.5, -0.2, 0.001, 0.002, 0.01, 0.8, -0.1, 0.05)),
        ("equidistant", (-0.05, 0.01, -0.002, 0.0005)),
    ],
)
def test_raw_images_are_undistorted_with_k_and_d(model: str, d: tuple) -> None:
    points = scene_points()
    if model == "equidistant":
        pixels, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), ZERO, ZERO, K, np.array(d))
    else:
        pixels, _ = cv2.projectPoints(points, ZERO, ZERO, K, np.array(d))
    pixels = pixels.reshape(-1, 2)
    intrinsics = Intrinsics.from_camera_info(camera_info(d=d, model=model), (480, 640))
    np.testing.assert_allclose(recovered(intrinsics, pixels, points[:, 2]), points, atol=1e-6)
    pinhole = Intrinsics.from_any(K)  # K alone misses the distortion by millimetres to centimetres
    assert np.abs(recovered(pinhole, pixels, points[:, 2]) - points).max() > 2e-3


def test_raw_images_with_skew() -> None:
    points = scene_points()
    d = np.array([-0.28, 0.09, 0.001, -0.002, -0.015])
    normalised, _ = cv2.projectPoints(points, ZERO, ZERO, np.eye(3), d)  # distorted, before K
    xd, yd = normalised.reshape(-1, 2).T
    k = K.copy()
    k[0, 1] = 4.0  # OpenCV's projection ignores a skew, so K is applied here by hand
    pixels = np.stack([k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]], axis=1)
    intrinsics = Intrinsics.from_camera_info(camera_info(k=k, d=d), (480, 640))
    np.testing.assert_allclose(recovered(intrinsics, pixels, points[:, 2]), points, atol=1e-6)


def test_rectified_images_use_p_and_skew() -> None:
    points = scene_points()
    p = np.array([[480.0, 3.0, 300.0, 0.0], [0.0, 490.0, 250.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    pixels = (points @ p[:, :3].T)[:, :2] / points[:, 2:]
    info = camera_info(d=(-0.28, 0.09, 0.0, 0.0, 0.0), p=p)
    rectified = Intrinsics.from_camera_info(info, (480, 640), rectified=True)
    np.testing.assert_allclose(recovered(rectified, pixels, points[:, 2]), points, atol=1e-9)
    raw = Intrinsics.from_camera_info(info, (480, 640))  # the same pixels read as raw ones: wrong
    assert np.abs(recovered(raw, pixels, points[:, 2]) - points).max() > 1e-2


def test_binning_and_roi_map_to_full_resolution_pixels() -> None:
    points = scene_points()
    full = (points @ K.T)[:, :2] / points[:, 2:]
    x, y, bx, by = 100, 60, 2, 2
    info = camera_info(binning=(bx, by), roi=(x, y, 400, 300))
    binned = (full - [x, y]) / [bx, by]
    intrinsics = Intrinsics.from_camera_info(info, (150, 200))
    np.testing.assert_allclose(recovered(intrinsics, binned, points[:, 2]), points, atol=1e-9)


def test_camera_info_for_another_image_size_or_model_is_refused() -> None:
    with pytest.raises(ValueError, match="camera_info is for 640x480 images .* the depth image is 320x240"):
        Intrinsics.from_camera_info(camera_info(), (240, 320))
    with pytest.raises(ValueError, match="unsupported distortion model 'kannala'"):
        Intrinsics.from_camera_info(camera_info(d=(0.1, 0.0, 0.0, 0.0), model="kannala"), (480, 640))
    with pytest.raises(ValueError, match="uncalibrated"):
        Intrinsics.from_camera_info(camera_info(k=np.zeros((3, 3))), (480, 640))
    infinite = np.array(K, dtype=np.float64)
    infinite[0, 0] = np.inf  # every point would land on the optical axis, and a grasp be planned there
    with pytest.raises(ValueError, match="finite values and fx, fy > 0 needed"):
        Intrinsics.from_camera_info(camera_info(k=infinite), (480, 640))
    with pytest.raises(ValueError, match="finite values"):  # was a LinAlgError per part while planning
        Intrinsics.from_camera_info(camera_info(d=(np.nan, 0.0, 0.0, 0.0, 0.0)), (480, 640))
    with pytest.raises(ValueError, match="finite values"):
        Intrinsics.from_camera_info(camera_info(p=np.hstack([infinite, np.zeros((3, 1))])), (480, 640), True)
    with pytest.raises(ValueError, match="plumb_bob distortion with 3 coefficients; OpenCV takes"):
        Intrinsics.from_camera_info(camera_info(d=(0.1, 0.01, 0.001)), (480, 640))
    with pytest.raises(ValueError, match="equidistant distortion with 5 coefficients"):
        Intrinsics.from_camera_info(camera_info(d=(0.1, 0.0, 0.0, 0.0, 0.0), model="equidistant"), (480, 640))
    with pytest.raises(ValueError, match="has no P"):
        Intrinsics.from_camera_info(camera_info(p=np.zeros((3, 4))), (480, 640), rectified=True)
    # a camera_info without size (some simulators) or distortion (any model name) is taken as it is
    plain = Intrinsics.from_camera_info(camera_info(d=(0.0,) * 5, model="", width=0, height=0), (240, 320))
    assert plain == Intrinsics.from_any(K)
    zeros = Intrinsics.from_camera_info(camera_info(d=(0.0,) * 5, model="equidistant"), (480, 640))
    assert zeros == Intrinsics.from_any(K)


def test_a_binned_mask_gives_the_full_resolution_radius() -> None:
    """A 40 px wide bar 1 m away (fx 500: 8 cm, radius 4 cm), and the same bar 2x2 binned (20 px)."""
    full = np.zeros((480, 640), bool)
    full[200:240, 100:500] = True
    binned = full[::2, ::2]
    depth = np.ones((480, 640), np.float32)
    at_full = estimate_part_geometry(full, depth, Intrinsics.from_camera_info(camera_info(), (480, 640)))[0]
    info = camera_info(binning=(2, 2))
    at_half = estimate_part_geometry(binned, depth[::2, ::2], Intrinsics.from_camera_info(info, (240, 320)))[
        0
    ]
    assert at_full.radius == pytest.approx(0.04, rel=0.05)
    assert at_half.radius == pytest.approx(at_full.radius, rel=0.05)


def test_depth_dtype_must_match_its_encoding_and_min_points_its_pca() -> None:
    with pytest.raises(ValueError, match="millimetres are integers"):
        depth_to_metres(np.ones((2, 2), np.float32), "16UC1")
    with pytest.raises(ValueError, match="metres are floats"):
        depth_to_metres(np.full((2, 2), 1000, np.uint16), "32FC1")
    with pytest.raises(ValueError, match="min_points must be at least 3"):
        GeometryParams(min_points=1)
