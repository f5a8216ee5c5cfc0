"""The node's `segment` service in a real node process: a planner's one-off query for its own names.

It must answer from a camera frame received after the request (never an older one), with the request's
names, matched depth and camera_info, without touching the vocabulary the segmentation topic runs with; or
from an image sent with the request; and every bad request gets a clear reason while the node goes on.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from partglee_ros.msg import HierarchicalSegmentation, ObjectParts
from partglee_ros.srv import GetVocabulary, Segment
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from partglee_ros.geometry import Intrinsics, plan_grasp
from partglee_ros.ros.conversions import depth_msg_to_array, msg_to_result, rgb_to_image_msg
from partglee_ros.ros.parameters import BY_NAME, postprocess_config
from partglee_ros.runtime.factory import load_segmenter
from partglee_ros.runtime.segmenter import Segmenter
from partglee_ros.sensor_images import paste_mask_crop
from tests.conftest import spin_until
from tests.ros_testing import RgbdCamera, noise_image, params_file, partglee_command, small_checkpoint

PARAMS = {"object_threshold": 0.0, "part_threshold": 0.0, "max_objects": 5, "max_parts_per_object": 3}
DEPTH_MM = 800
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
TOPICS = {"image_topic": "/sq/image", "depth_topic": "/sq/depth", "camera_info_topic": "/sq/camera_info"}
# names the default vocabulary (config/partglee.yaml) does not have
QUERY = {"objects": ["teapot", "cup"], "parts": ["nozzle", "grip"], "object_parts": {"teapot": ["nozzle"]}}


class Peer:
    """The test's side: a camera (image, depth, camera_info) and a planner calling the services."""

    def __init__(self, node, proc) -> None:
        self.node, self.proc = node, proc
        self.camera = RgbdCamera(node, TOPICS, np.full((240, 320), DEPTH_MM, np.uint16))
        self.stream: list[HierarchicalSegmentation] = []
        node.create_subscription(HierarchicalSegmentation, "/segmentation", self.stream.append, QOS)
        self.segment = node.create_client(Segment, "/segment")
        self.get_vocabulary = node.create_client(GetVocabulary, "/get_vocabulary")

    def wait_ready(self) -> None:
        up = spin_until(
            self.node, lambda: self.segment.service_is_ready() or self.proc.proc.poll() is not None, 90
        )
        assert up and self.proc.proc.poll() is None, f"node did not come up:\n{self.proc.output()}"
        assert spin_until(self.node, self.camera.connected, 30), self.proc.output()

    def ask(self, request: Segment.Request):
        return self.segment.call_async(request)

    def answer_from_frames(self, future, first_sec: int, timeout: float = 60.0) -> Segment.Response:
        """The answer while the camera publishes frames from first_sec on (seed = stamp)."""
        self.camera.publish_until(future.done, first_sec, timeout)
        return self.answer(future, 1.0)

    def answer(self, future, timeout: float = 60.0) -> Segment.Response:
        assert spin_until(self.node, future.done, timeout), f"segment did not answer:\n{self.proc.output()}"
        return future.result()


def active_vocabulary(peer: Peer) -> tuple[list[str], list[str]]:
    future = peer.get_vocabulary.call_async(GetVocabulary.Request())
    assert spin_until(peer.node, future.done, 30)
    vocab = future.result().vocabulary
    assert vocab.revision == 1 and not vocab.object_parts
    return list(vocab.objects), list(vocab.parts)


def query_request(timeout: float = 30.0, **fields) -> Segment.Request:
    fields = {**QUERY, **fields}
    request = Segment.Request(objects=fields["objects"], parts=fields["parts"], timeout=timeout)
    request.object_parts = [ObjectParts(object=o, parts=p) for o, p in fields["object_parts"].items()]
    return request


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def peer(ros_node, start_module_process, model_dir, tmp_path_factory) -> Peer:
    params = params_file(tmp_path_factory.mktemp("params"), **PARAMS)
    cmd = partglee_command(params, model_dir, use_depth="true", **TOPICS)
    p = Peer(ros_node, start_module_process(*cmd, name="node"))
    p.wait_ready()
    return p


@pytest.fixture(scope="module")
def segmenter(model_dir) -> Segmenter:
    """The in-process Segmenter the node's answers must equal."""
    defaults = {p.name: p.default for p in BY_NAME.values()} | PARAMS
    return load_segmenter(model_dir, backend="torch", postprocess_config=postprocess_config(defaults))


def assert_same(got: HierarchicalSegmentation, want) -> None:
    result = msg_to_result(got)
    assert len(result.objects) == len(want.objects) > 0
    for g, w in zip(result.objects, want.objects, strict=True):
        assert (g.label, g.id) == (w.label, w.id)
        assert g.score == pytest.approx(w.score, abs=1e-5)
        assert np.array_equal(g.mask, w.mask)
        assert [p.object_label for p in g.parts] == [p.object_label for p in w.parts]
        for gp, wp in zip(g.parts, w.parts, strict=True):
            assert np.array_equal(gp.mask, wp.mask)


def assert_grasps_on_the_depth_plane(answer: Segment.Response) -> None:
    """The README's planner example, run on an answer: every part's grasp lies on the flat depth sent."""
    seg, depth = answer.segmentation, depth_msg_to_array(answer.depth)
    k = Intrinsics.from_camera_info(answer.camera_info, depth.shape)
    poses = []
    for obj in seg.objects:
        for part in obj.parts:
            mask = paste_mask_crop(part.box, part.mask, seg.image_height, seg.image_width)
            grasp = plan_grasp(mask, depth, k, answer.depth.encoding)
            assert grasp.pose is not None or grasp.reason
            poses += [grasp.pose] if grasp.pose is not None else []
    assert poses, "no part of the answer gave a grasp on a flat, complete depth image"
    for pose in poses:
        assert pose.position[2] == pytest.approx(DEPTH_MM / 1000, abs=0.01)


def test_a_query_is_answered_from_a_frame_after_it_with_its_own_names(
    peer: Peer, segmenter: Segmenter
) -> None:
    peer.camera.publish(10)
    assert spin_until(peer.node, lambda: any(r.header.stamp.sec == 10 for r in peer.stream), 60), (
        peer.proc.output()
    )
    future = peer.ask(query_request())
    spin_until(peer.node, lambda: False, 1.0)
    assert not future.done(), "answered without a frame received after the request"
    response = peer.answer_from_frames(future, 11)
    assert response.success, response.message
    got = response.segmentation
    sec = got.header.stamp.sec
    assert sec >= 11 and got.header.frame_id == "camera_optical" and got.vocabulary_revision == 0
    assert response.message.endswith("(objects teapot, cup; parts nozzle, grip)")
    assert response.depth.header.stamp.sec == sec and response.depth.encoding == "16UC1"
    assert response.camera_info.header.stamp.sec == sec
    segmenter.set_vocabulary(QUERY["objects"], QUERY["parts"], QUERY["object_parts"])
    assert_same(got, segmenter.segment(noise_image(sec)))
    teapot_parts = {p.label for o in got.objects if o.label == "teapot" for p in o.parts}
    assert teapot_parts <= {"nozzle"}
    assert_grasps_on_the_depth_plane(response)
    # the topic ran the same frame with its own, unchanged vocabulary
    assert spin_until(peer.node, lambda: any(r.header.stamp.sec == sec for r in peer.stream), 60)
    streamed = next(r for r in peer.stream if r.header.stamp.sec == sec)
    assert streamed.vocabulary_revision == 1
    segmenter.set_vocabulary(*active_vocabulary(peer))
    assert_same(streamed, segmenter.segment(noise_image(sec)))


def test_a_query_with_its_own_image_needs_no_camera(peer: Peer, segmenter: Segmenter) -> None:
    """Empty names: the active vocabulary; the image's header and size are kept; no depth for it."""
    header = Header(frame_id="planner_snapshot")
    header.stamp.sec = 500
    request = Segment.Request(image=rgb_to_image_msg(noise_image(3, 300, 500), header, "bgr8"), timeout=30.0)
    response = peer.answer(peer.ask(request))
    assert response.success, response.message
    got = response.segmentation
    assert got.header == header and (got.image_height, got.image_width) == (300, 500)
    assert got.vocabulary_revision == 1 and "active vocabulary" in response.message
    assert len(response.depth.data) == 0
    segmenter.set_vocabulary(*active_vocabulary(peer))
    assert_same(got, segmenter.segment(noise_image(3, 300, 500)))


def test_a_frame_without_depth_is_answered_and_says_why_it_has_none(peer: Peer) -> None:
    """Only colour frames, stamped far from every depth image sent: the answer comes, and says why no depth."""
    future = peer.ask(Segment.Request(timeout=30.0))
    deadline, sec = time.monotonic() + 60, 9000
    while not future.done() and time.monotonic() < deadline:
        header = Header(frame_id="camera_optical")
        header.stamp.sec = sec
        peer.camera.image_pub.publish(rgb_to_image_msg(noise_image(sec), header))
        sec += 1
        spin_until(peer.node, future.done, 0.3)
    response = peer.answer(future, 1.0)
    assert response.success and len(response.depth.data) == 0, response.message
    assert response.message.endswith(
        "; no depth: none with a camera_info within depth_slop (0.05 s) of that stamp"
    )


def test_diagnostics_count_frames_with_and_without_depth_and_warn_when_most_lack_it(peer: Peer) -> None:
    """Colour and depth from one camera process overflow Fast DDS's default shared-memory segment even at
    320x240, and most depth frames were lost without a word in the log or /diagnostics."""
    seen: list[DiagnosticStatus] = []
    peer.node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: seen.extend(s for s in m.status if s.hardware_id == "/partglee"),
        QOS,
    )
    peer.camera.publish(700)  # with depth
    assert spin_until(peer.node, lambda: any(r.header.stamp.sec == 700 for r in peer.stream), 60)

    def warned() -> bool:
        return any(s.level == DiagnosticStatus.WARN and "lately had no depth" in s.message for s in seen)

    sec, deadline = 9100, time.monotonic() + 60
    while not warned() and time.monotonic() < deadline:  # colour alone: its depth "lost"
        header = Header(frame_id="camera_optical")
        header.stamp.sec = sec
        peer.camera.image_pub.publish(rgb_to_image_msg(noise_image(sec), header))
        sec += 1
        spin_until(peer.node, warned, 0.3)
    assert warned(), [(s.level, s.message) for s in seen]
    status = next(s for s in seen if s.level == DiagnosticStatus.WARN and "lately had no depth" in s.message)
    assert (
        f"on {TOPICS['depth_topic']} (" in status.message
        and "config/fastdds_large_data.xml" in status.message
    )
    values = {kv.key: kv.value for kv in status.values}
    assert int(values["frames_with_depth"]) >= 1 and int(values["frames_without_depth"]) >= 1, values
    assert int(values["depth_received"]) >= 1 and int(values["camera_info_received"]) >= 1, values
    assert "frames lately had no depth and camera_info within depth_slop (0.05 s)" in peer.proc.output()


BAD_REQUESTS = [
    ({"objects": [], "parts": ["handle"], "object_parts": {}}, {}, "parts without objects"),
    ({"objects": ["mug", "MUG"]}, {}, "duplicate"),
    ({"objects": [f"thing {i}" for i in range(10_000)]}, {}, "limit is"),
    ({"objects": ["mug"], "object_parts": {"cup": ["handle"]}}, {}, "not in the objects"),
    ({}, {"timeout": -1.0}, "timeout must be"),
    ({}, {"timeout": float("nan")}, "timeout must be"),
    ({}, {"timeout": 1e6}, "timeout must be"),
    ({}, {"step": 5}, "step"),
    ({}, {"encoding": "yuv_unknown"}, "unsupported encoding"),
    # encoding set, no pixels: was taken for "no image" and waited for a camera frame until the timeout
    ({}, {"empty_image": "rgb8"}, "its image has encoding 'rgb8' but is empty (0x0)"),
]


@pytest.mark.parametrize(("names", "other", "reason"), BAD_REQUESTS)
def test_bad_requests_get_a_clear_reason(peer: Peer, names: dict, other: dict, reason: str) -> None:
    request = query_request(timeout=other.get("timeout", 30.0), **names)
    if "step" in other or "encoding" in other:
        request.image = rgb_to_image_msg(noise_image(4), Header(frame_id="x"))
        request.image.step -= other.get("step", 0)
        request.image.encoding = other.get("encoding", request.image.encoding)
    if "empty_image" in other:
        request.image = Image(encoding=other["empty_image"])
    started = time.monotonic()
    response = peer.answer(peer.ask(request))
    assert not response.success and reason in response.message, response.message
    assert response.message.startswith("rejected:") and time.monotonic() - started < 30
    assert peer.proc.proc.poll() is None


def test_a_query_without_frames_times_out_and_the_node_stays_responsive(peer: Peer) -> None:
    started = time.monotonic()
    future = peer.ask(query_request(timeout=3.0))
    spin_until(peer.node, lambda: False, 0.5)
    vocabulary = peer.get_vocabulary.call_async(GetVocabulary.Request())
    assert spin_until(peer.node, vocabulary.done, 30) and not future.done(), (
        "a waiting query blocked the node"
    )
    response = peer.answer(future)
    assert not response.success
    assert response.message == f"timed out after 3 s waiting for a camera frame on {TOPICS['image_topic']}"
    assert 2.5 <= time.monotonic() - started < 30
    # and the next query is answered as before
    response = peer.answer_from_frames(peer.ask(query_request()), 20)
    assert response.success and response.segmentation.header.stamp.sec >= 20, response.message


def test_encoding_many_names_stops_at_the_timeout(peer: Peer) -> None:
    """2000 + 2000 names take seconds to encode on 2 cores (~6 s here); the request's timeout bounds that too,
    where before the answer "timed out" came only once all were encoded, holding one of the four slots."""
    names = {"objects": [f"thing {i}" for i in range(2000)], "parts": [f"bit {i}" for i in range(2000)]}
    started = time.monotonic()
    response = peer.answer(peer.ask(query_request(timeout=0.5, object_parts={}, **names)))
    assert not response.success
    assert response.message.startswith("timed out after 0.5 s encoding its names"), response.message
    assert "of its 4000 names" in response.message and time.monotonic() - started < 5


def test_a_timeout_says_when_frames_came_but_failed(peer: Peer) -> None:
    future = peer.ask(query_request(timeout=2.0))
    spin_until(peer.node, lambda: False, 0.5)
    bad = rgb_to_image_msg(noise_image(7), Header(frame_id="camera_optical"))
    bad.encoding = "yuv_unknown"
    while not future.done():
        peer.camera.image_pub.publish(bad)
        spin_until(peer.node, future.done, 0.3)
    message = peer.answer(future).message
    assert message.startswith("timed out after 2 s waiting for a camera frame on /sq/image; "), message
    assert "frames failed meanwhile, the last: bad image: unsupported encoding" in message, message


def test_concurrent_queries_are_answered_from_the_same_next_frame(peer: Peer) -> None:
    own = peer.ask(query_request())
    active = peer.ask(Segment.Request(timeout=30.0))
    spin_until(peer.node, lambda: False, 1.0)
    assert not own.done() and not active.done()
    answers = [peer.answer_from_frames(own, 30), peer.answer(active)]
    assert all(a.success for a in answers), [a.message for a in answers]
    stamps = [a.segmentation.header.stamp.sec for a in answers]
    assert stamps[0] == stamps[1] >= 30, "requests waiting together get the same frame"
    assert [a.segmentation.vocabulary_revision for a in answers] == [0, 1]


def test_ctrl_c_while_a_request_waits_ends_the_node_at_once(
    ros_node, start_process, model_dir, tmp_path
) -> None:
    """rclpy's executor shutdown waits for callbacks without a time limit: the waiting request must be
    answered at shutdown, not hold the process for its 120 s."""
    params = params_file(tmp_path, **PARAMS)
    cmd = partglee_command(params, model_dir, image_topic="/ctrlc/image")
    proc = start_process(*cmd, "-r", "__ns:=/ctrlc", name="ctrlc")
    client = ros_node.create_client(Segment, "/ctrlc/segment")
    assert spin_until(ros_node, client.service_is_ready, 90), proc.output()
    future = client.call_async(Segment.Request(timeout=120.0))
    spin_until(ros_node, lambda: False, 1.5)
    assert not future.done() and proc.proc.poll() is None
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(timeout=60) == 0, proc.output()
    assert time.monotonic() - started < 15, proc.output()
