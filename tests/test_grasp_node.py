"""grasp_node in its own process: poses for `handle` from published segmentation + depth (issue #9).

Ground-truth masks stand in for the model's here, so the test measures the node and the geometry, not the
detector; the geometry's accuracy itself is covered by test_geometry_*.py.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable

import numpy as np
import pytest
from geometry_msgs.msg import PoseArray, PoseStamped
from partglee_ros.msg import HierarchicalSegmentation, ObjectParts, Vocabulary
from partglee_ros.srv import GetVocabulary
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from benchmarks.grasp_accuracy import exclusion_of, handle_shape
from partglee_ros.ros.conversions import depth_array_to_msg, result_to_msg
from partglee_ros.ros.depth_sync import stamp_ns
from partglee_ros.ros.grasp_node import vocabulary_lacks
from partglee_ros.ros.part_cloud import cloud_points
from partglee_ros.runtime.result import ObjectResult, PartResult, SegmentationResult
from tests.conftest import PYTHON, REPO, first_answer, spin_until
from training.data.synthparts import generate_scene

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
GRASP_NODE = REPO / "install" / "partglee_ros" / "lib" / "partglee_ros" / "grasp_node"
REMAPS = ("-r", "segmentation:=/seg", "-r", "depth:=/seg/depth", "-r", "camera_info:=/seg/camera_info")


def scene_with_straight_handle():
    for seed in range(200):
        scene = generate_scene(seed)
        for obj in scene.objects:
            for part in obj.parts:
                if not exclusion_of(part, scene) and handle_shape(obj.name) == "straight":
                    return scene, part
    raise AssertionError("no scene with an unoccluded straight handle in 200 seeds")


def as_result(scene) -> SegmentationResult:
    objects = [
        ObjectResult(
            o.id,
            o.name,
            1.0,
            o.box,
            o.mask,
            [PartResult(p.id, p.name, f"{o.name}:{p.name}", 1.0, p.box, p.mask, o.id) for p in o.parts],
        )
        for o in scene.objects
    ]
    return SegmentationResult(scene.height, scene.width, 1, objects)


class Publishers:
    """The segmentation, depth and camera_info grasp_node plans on, for one scene."""

    def __init__(self, ros_node, scene, depth: np.ndarray) -> None:
        self.node, self.scene, self.depth = ros_node, scene, depth
        self.seg = ros_node.create_publisher(HierarchicalSegmentation, "/seg", QOS)
        self.depth_pub = ros_node.create_publisher(Image, "/seg/depth", QOS)
        self.info = ros_node.create_publisher(CameraInfo, "/seg/camera_info", QOS)

    def matched(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (self.seg, self.depth_pub, self.info))

    def send(
        self,
        header: Header,
        segmentation_first: bool = False,
        depth_frame: str | None = None,
        depth_after_s: float | None = 0.0,
    ) -> None:
        """One frame; depth and camera_info in ``depth_frame`` when given (an unaligned depth camera), the
        depth stamped ``depth_after_s`` after the frame (None: no depth, as when it is lost in transport)."""
        scene = self.scene
        depth_header = Header(stamp=header.stamp, frame_id=depth_frame or header.frame_id)
        k = scene.intrinsics.flatten().tolist()
        info = CameraInfo(header=depth_header, height=scene.height, width=scene.width, k=k)
        sends = [
            lambda: self.info.publish(info),
            lambda: self.seg.publish(result_to_msg(as_result(scene), header)),
        ]
        if depth_after_s is not None:
            stamp = Time(nanoseconds=stamp_ns(header) + round(depth_after_s * 1e9)).to_msg()
            shifted = Header(stamp=stamp, frame_id=depth_header.frame_id)
            sends.insert(0, lambda: self.depth_pub.publish(depth_array_to_msg(self.depth, shifted)))
        for send in reversed(sends) if segmentation_first else sends:
            send()
            spin_until(self.node, lambda: False, 0.1)


@pytest.fixture()
def grasp_process(start_process):
    return start_process(PYTHON, str(GRASP_NODE), "--ros-args", *REMAPS, name="grasp")


@pytest.mark.parametrize(
    ("depth_kind", "segmentation_first"),
    [("32FC1", False), ("16UC1", True)],
    ids=["32FC1-depth-first", "16UC1-segmentation-first"],
)
def test_publishes_handle_pose_with_image_header(
    ros_node, grasp_process, depth_kind: str, segmentation_first: bool
) -> None:
    """Each round has a new stamp, so the depth it needs is never already there from an earlier round: sent
    after the segmentation, it is matched when it arrives (the segmentation waits for it)."""
    scene, handle = scene_with_straight_handle()
    depth = scene.depth if depth_kind == "32FC1" else np.round(scene.depth * 1000).astype(np.uint16)

    pubs = Publishers(ros_node, scene, depth)
    poses: list[PoseArray] = []
    best: list[PoseStamped] = []
    marks: list[MarkerArray] = []
    ros_node.create_subscription(PoseArray, "/grasp_targets", poses.append, QOS)
    ros_node.create_subscription(PoseStamped, "/grasp_target", best.append, QOS)
    ros_node.create_subscription(MarkerArray, "/grasp_markers", marks.append, QOS)
    clouds: list[PointCloud2] = []
    ros_node.create_subscription(PointCloud2, "/part_points", clouds.append, QOS)
    assert spin_until(ros_node, pubs.matched, 60), grasp_process.output()

    # again each second: grasp_node may see a subscriber (or a publisher) a moment late, and what is sent in
    # that moment is lost
    for second in range(30):
        header = Header(frame_id="camera_color_optical_frame")
        header.stamp.sec, header.stamp.nanosec = 1234 + second, 5678
        pubs.send(header, segmentation_first)
        if spin_until(ros_node, lambda: poses and best and marks and clouds, 1.0):
            break
    assert poses and best and marks and clouds, grasp_process.output()

    array = poses[0]
    header = array.header
    assert header.frame_id == "camera_color_optical_frame" and header.stamp.sec >= 1234
    assert header.stamp.nanosec == 5678 and best[0].header == header
    assert len(array.poses) >= 1
    got = np.array([[p.position.x, p.position.y, p.position.z] for p in array.poses])
    error = np.linalg.norm(got - handle.pose.center, axis=1).min()
    assert error < 0.02, f"no pose within 2 cm of the handle centre (closest {error * 100:.1f} cm)"
    q = best[0].pose.orientation
    assert np.isclose(q.x**2 + q.y**2 + q.z**2 + q.w**2, 1.0, atol=1e-6)
    assert all(np.isfinite([p.position.x, p.position.y, p.position.z]).all() for p in array.poses)
    assert any(m.ns == "approach" for m in marks[0].markers)

    # the handle's cleaned points: its ids, and each one the depth of a handle pixel, back-projected
    assert clouds[0].header == header
    points = cloud_points(clouds[0])
    mine = points[points["part_id"] == handle.id]
    assert len(mine) > 50 and set(mine["object_id"]) == {handle.parent_id}
    assert set(points["part_id"]) <= {p.id for o in scene.objects for p in o.parts if p.name == "handle"}
    k = scene.intrinsics
    us = np.round(k[0, 0] * mine["x"] / mine["z"] + k[0, 2]).astype(int)
    vs = np.round(k[1, 1] * mine["y"] / mine["z"] + k[1, 2]).astype(int)
    assert handle.mask[vs, us].all()
    np.testing.assert_allclose(mine["z"], scene.depth[vs, us], atol=1e-3 if depth_kind == "16UC1" else 1e-6)


def test_a_segmentation_without_depth_says_whether_depth_is_lost_or_stamped_apart(
    ros_node, grasp_process
) -> None:
    """The usual cause of a segmentation without depth is depth frames lost in transport (Fast DDS's default
    shared-memory segment), not stamps, which the warning named alone. It now says what it can tell: no depth
    came lately, or only this frame's did not (lost: the profile), or none fits any frame (stamps). The
    warning comes at most once in 5 s, so each case takes a few frames."""
    scene, _ = scene_with_straight_handle()
    pubs = Publishers(ros_node, scene, scene.depth)
    assert spin_until(ros_node, pubs.matched, 60), grasp_process.output()
    header = Header(frame_id="camera_color_optical_frame")
    lost = (
        r"; depth frames may be lost in transport: .* config/fastdds_large_data\.xml \(README: \"Raw camera"
    )

    def warned(first_sec: int, depth_after_s: Callable[[int], float | None], warning: str) -> bool:
        """Frames from ``first_sec`` until ``warning`` (a pattern) is logged about one of them."""
        at = rf"no depth within 0\.05s of segmentation at {first_sec // 100}\d\d\.000: "
        found = re.compile(at + warning, re.MULTILINE)
        for sec in range(first_sec, first_sec + 30):
            header.stamp.sec = sec
            pubs.send(header, depth_after_s=depth_after_s(sec))
            if spin_until(ros_node, lambda: found.search(grasp_process.output()), 0.5):
                return True
        return False

    # segmentation and camera_info only: each frame is replaced by the next, still without depth
    none_came = f"none received on /seg/depth in the last 5 s .*{lost}"
    assert warned(6000, lambda _: None, none_came), grasp_process.output()
    # every depth 0.3 s after its frame (over depth_slop): stamps, not losses
    apart = (
        r"the nearest on /seg/depth is stamped 0\.300s after it, and no segmentation found its depth in the "
        r"last 5 s: the stamps differ by more than depth_slop \(raise it .*\)$"
    )
    assert warned(6100, lambda _: 0.3, apart), grasp_process.output()
    # every other frame's depth lost: the others are planned on
    lost_one = (
        rf"the nearest on /seg/depth is stamped 1\.000s (after|before) it, while other .*did not come{lost}"
    )
    assert warned(6200, lambda sec: None if sec % 2 else 0.0, lost_one), grasp_process.output()


def test_depth_from_another_camera_frame_is_refused(ros_node, grasp_process) -> None:
    """Depth of the same size from the unaligned depth camera: poses would be off by the baseline and
    published in the colour frame. grasp_node says so and plans nothing."""
    scene, _ = scene_with_straight_handle()
    pubs = Publishers(ros_node, scene, scene.depth)
    poses: list[PoseArray] = []
    ros_node.create_subscription(PoseArray, "/grasp_targets", poses.append, QOS)
    assert spin_until(ros_node, pubs.matched, 60), grasp_process.output()
    refused = "are in different frames; depth must be aligned to the colour image"
    for second in range(30):
        header = Header(frame_id="camera_color_optical_frame")
        header.stamp.sec = 2000 + second
        pubs.send(header, depth_frame="camera_depth_optical_frame")
        if spin_until(ros_node, lambda: refused in grasp_process.output(), 1.0):
            break
    assert refused in grasp_process.output(), grasp_process.output()
    assert not poses


@pytest.mark.parametrize(
    ("parameter", "value", "lacks"),
    [
        ("part_names", "[wheel, handle]", "no part 'wheel'; its parts: {parts}"),
        ("object_names", "[bike, {objects}]", "no object 'bike'; its objects: {objects}"),
    ],
    ids=["part_names", "object_names"],
)
def test_names_the_vocabulary_lacks_are_warned_about_once(
    ros_node, start_process, parameter: str, value: str, lacks: str
) -> None:
    """A part (or object) the active vocabulary lacks is never looked for, so its grasp_targets stay empty for
    good, which would read as "not visible". grasp_node reads the vocabulary of the segmentations' revision
    from `get_vocabulary` (served here, as partglee_node does) and says so once, not with every frame."""
    scene, _ = scene_with_straight_handle()
    parts = sorted({p.name for o in scene.objects for p in o.parts})
    objects = sorted({o.name for o in scene.objects})
    names = {"parts": ", ".join(parts), "objects": ", ".join(objects)}

    def get_vocabulary(_, response: GetVocabulary.Response) -> GetVocabulary.Response:
        response.vocabulary = Vocabulary(revision=1, objects=objects, parts=parts)  # as_result's revision
        return response

    ros_node.create_service(GetVocabulary, "/vocab/get_vocabulary", get_vocabulary)
    vocab = ("-r", "get_vocabulary:=/vocab/get_vocabulary", "-p", f"{parameter}:={value.format(**names)}")
    grasp = start_process(PYTHON, str(GRASP_NODE), "--ros-args", *REMAPS, *vocab, name="grasp")
    pubs = Publishers(ros_node, scene, scene.depth)
    poses: list[PoseArray] = []
    ros_node.create_subscription(PoseArray, "/grasp_targets", poses.append, QOS)
    assert spin_until(ros_node, pubs.matched, 60), grasp.output()
    lacks = lacks.format(**names)
    warning = f"{parameter}: the active vocabulary (revision 1) has {lacks}; grasp_targets stay empty"
    header = Header(frame_id="camera_color_optical_frame")
    for second in range(30):
        header.stamp.sec = 3000 + second
        pubs.send(header)
        if spin_until(ros_node, lambda: warning in grasp.output(), 0.5):
            break
    assert warning in grasp.output(), grasp.output()
    for second in range(3):  # more frames of the same revision: no more warnings
        header.stamp.sec = 3100 + second
        pubs.send(header)
    assert spin_until(ros_node, lambda: any(p.header.stamp.sec == 3102 for p in poses), 5), grasp.output()
    assert grasp.output().count("has no ") == 1, grasp.output()
    assert any(p.poses for p in poses)  # the handle, which the vocabulary has, is still planned on


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[]", "part_names is empty"),  # rcl leaves it unset: every frame failed (ParameterUninitialized...)
        ("['']", "part_names entry #0 is empty"),
        ("[handle, ' ', '']", "part_names entries #1, #2 are empty"),
    ],
)
def test_part_names_that_name_no_part_end_the_start_up(start_process, value: str, reason: str) -> None:
    """The node started silently and then failed, or found nothing, on every frame."""
    grasp = start_process(PYTHON, str(GRASP_NODE), "--ros-args", "-p", f"part_names:={value}", name="grasp")
    assert grasp.proc.wait(timeout=60) == 2, grasp.output()
    (line,) = grasp.output().splitlines()
    assert "cannot start: " in line, line
    assert f"{reason}: name the parts to grasp, e.g. part_names:=[handle]" in line, line


def test_part_names_that_name_no_part_are_refused_at_run_time(ros_node, grasp_process) -> None:
    set_parameters = ros_node.create_client(SetParameters, "/partglee_grasp/set_parameters")
    assert spin_until(ros_node, set_parameters.service_is_ready, 60), grasp_process.output()
    for names, reason in (([], "part_names is empty"), ([" "], "part_names entry #0 is empty")):
        value = Parameter("part_names", Parameter.Type.STRING_ARRAY, names).to_parameter_msg()
        request = SetParameters.Request(parameters=[value])
        # refused, so asking again is harmless
        (result,) = (
            first_answer(ros_node, lambda r=request: set_parameters.call_async(r), 5, 5).result().results
        )
        assert not result.successful and result.reason.startswith(reason), result.reason
    get_parameters = ros_node.create_client(GetParameters, "/partglee_grasp/get_parameters")
    request = GetParameters.Request(names=["part_names"])
    (kept,) = first_answer(ros_node, lambda: get_parameters.call_async(request), 5, 5).result().values
    assert list(kept.string_array_value) == ["handle"]


def test_an_empty_object_names_list_means_any_object(ros_node, start_process) -> None:
    """rcl leaves `object_names:=[]` unset: every frame failed (ParameterUninitializedException) where ['']
    means any object."""
    scene, _ = scene_with_straight_handle()
    args = ("--ros-args", *REMAPS, "-p", "object_names:=[]")
    grasp = start_process(PYTHON, str(GRASP_NODE), *args, name="grasp")
    pubs = Publishers(ros_node, scene, scene.depth)
    poses: list[PoseArray] = []
    ros_node.create_subscription(PoseArray, "/grasp_targets", poses.append, QOS)
    assert spin_until(ros_node, pubs.matched, 60), grasp.output()
    header = Header(frame_id="camera_color_optical_frame")
    for second in range(30):
        header.stamp.sec = 7000 + second
        pubs.send(header)
        if spin_until(ros_node, lambda: any(p.poses for p in poses), 1.0):
            break
    assert any(p.poses for p in poses), grasp.output()


def test_parts_the_vocabulary_allows_under_none_of_the_objects_are_named() -> None:
    """The vocabulary has the part and the object, but its object_parts allow the part under other objects
    only: partglee_node never looks for it there, so 0 grasps would read as "not visible". Checking parts and
    objects apart said nothing. No object_names: any object of the vocabulary may have the part."""
    restrictions = [ObjectParts(object="mug", parts=["handle"]), ObjectParts(object="kettle", parts=["lid"])]
    vocabulary = Vocabulary(
        revision=3,
        objects=["mug", "kettle", "pan"],
        parts=["handle", "lid", "spout"],
        object_parts=restrictions,
    )
    assert vocabulary_lacks({"lid"}, {"mug"}, vocabulary) == (
        "part_names and object_names",
        "the active vocabulary (revision 3) has no object:part pair 'mug:lid'; its object_parts: mug: handle",
    )
    assert vocabulary_lacks({"handle", "lid"}, {"mug", "kettle"}, vocabulary) == ("", "")
    assert vocabulary_lacks({"spout"}, set(), vocabulary) == ("", "")  # pan has no restriction
    vocabulary.objects = ["mug", "kettle"]
    assert vocabulary_lacks({"grip", "spout"}, {"bike"}, vocabulary, "the request's parts") == (
        "the request's parts and object_names",
        "the active vocabulary (revision 3) has no part 'grip'; its parts: handle, lid, spout; and no object "
        "'bike'; its objects: mug, kettle",
    )
    assert vocabulary_lacks({"spout"}, set(), vocabulary) == (
        "part_names",
        "the active vocabulary (revision 3) has no object:part pairs 'mug:spout', 'kettle:spout'; its "
        "object_parts: mug: handle; kettle: lid",
    )


def test_ctrl_c_under_traffic_logs_no_error(ros_node, start_process) -> None:
    """Ctrl-C shuts the ROS context down while a frame's callback may be publishing: that publish then fails
    ("publisher's context is invalid"), which is the stop's doing, not an error for log monitors. Frames come
    back to back until the process has ended, each with every part to plan on and a cloud to build, so one is
    being planned on when the signal comes (the error showed in 30 of 30 runs without the guard)."""
    scene, _ = scene_with_straight_handle()
    every_part = f"part_names:=[{', '.join({p.name for o in scene.objects for p in o.parts})}]"
    grasp = start_process(PYTHON, str(GRASP_NODE), "--ros-args", *REMAPS, "-p", every_part, name="grasp")
    pubs = Publishers(ros_node, scene, scene.depth)
    poses: list[PoseArray] = []
    ros_node.create_subscription(PoseArray, "/grasp_targets", poses.append, QOS)
    ros_node.create_subscription(PointCloud2, "/part_points", lambda _: None, QOS)  # more work per frame
    assert spin_until(ros_node, pubs.matched, 60), grasp.output()
    header = Header(frame_id="camera_color_optical_frame")
    seg = result_to_msg(as_result(scene), header)
    depth = depth_array_to_msg(scene.depth, header)
    k = scene.intrinsics.flatten().tolist()
    info = CameraInfo(header=header, height=scene.height, width=scene.width, k=k)
    frames = iter(range(4000, 5000))

    def send_frame() -> None:
        sec = next(frames)
        for msg in (depth, info, seg):
            msg.header.stamp.sec = sec
        pubs.depth_pub.publish(depth)
        pubs.info.publish(info)
        pubs.seg.publish(seg)
        spin_until(ros_node, lambda: False, 0.02)

    deadline = time.monotonic() + 30
    while len(poses) < 5 and time.monotonic() < deadline:
        send_frame()
    assert len(poses) >= 5, grasp.output()
    grasp.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 15
    while grasp.proc.poll() is None and time.monotonic() < deadline:
        send_frame()
    assert grasp.proc.wait(timeout=5) == 0, grasp.output()
    assert "ERROR" not in grasp.output(), grasp.output()
