"""partglee_node in its own process, started as launch would start it (issue #7)."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import yaml
from partglee_ros.msg import HierarchicalSegmentation
from partglee_ros.srv import GetVocabulary, Segment, SetVocabulary
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from partglee_ros.ros.conversions import msg_to_result, rgb_to_image_msg
from partglee_ros.ros.frame_age import frame_age_ms
from partglee_ros.ros.node import ERROR_LOGS_PER_5S
from partglee_ros.ros.parameters import BY_NAME, postprocess_config
from partglee_ros.runtime.factory import load_segmenter
from tests.conftest import first_answer, spin_until
from tests.ros_testing import REPO, noise_image, params_file, partglee_command, small_checkpoint

IMAGE_TOPIC = "/cam/image_raw"
PARAMS = {"object_threshold": 0.0, "part_threshold": 0.0, "max_objects": 5, "max_parts_per_object": 3}
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("model"))


class NodeClient:
    """The test's side: publishes frames, collects results, calls services."""

    def __init__(self, node, proc) -> None:
        self.node, self.proc = node, proc
        self.results: list[HierarchicalSegmentation] = []
        self.pub = node.create_publisher(Image, IMAGE_TOPIC, QOS)
        node.create_subscription(HierarchicalSegmentation, "/segmentation", self.results.append, QOS)
        self.set_vocab = node.create_client(SetVocabulary, "/set_vocabulary")
        self.set_params = None

    def wait_ready(self) -> None:
        ok = spin_until(
            self.node, lambda: self.set_vocab.service_is_ready() or self.proc.proc.poll() is not None, 90
        )
        assert ok and self.proc.proc.poll() is None, f"node did not come up:\n{self.proc.output()}"
        assert spin_until(self.node, lambda: self.pub.get_subscription_count() > 0, 30), self.proc.output()

    def send(self, msg: Image, timeout: float = 60.0) -> HierarchicalSegmentation:
        """Publish one frame and wait for its result (matched by stamp)."""
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        self.pub.publish(msg)

        def arrived() -> bool:
            return any((r.header.stamp.sec, r.header.stamp.nanosec) == stamp for r in self.results)

        assert spin_until(self.node, arrived, timeout), f"no result for stamp {stamp}:\n{self.proc.output()}"
        return next(r for r in self.results if (r.header.stamp.sec, r.header.stamp.nanosec) == stamp)

    def call(self, request: SetVocabulary.Request, timeout: float = 60.0) -> SetVocabulary.Response:
        future = self.set_vocab.call_async(request)
        assert spin_until(self.node, future.done, timeout), "set_vocabulary did not answer"
        return future.result()

    def set_param(self, name: str, value: ParameterValue) -> bool:
        if self.set_params is None:
            self.set_params = self.node.create_client(SetParameters, "/partglee/set_parameters")
            assert spin_until(self.node, self.set_params.service_is_ready, 30)
        future = self.set_params.call_async(
            SetParameters.Request(parameters=[Parameter(name=name, value=value)])
        )
        assert spin_until(self.node, future.done, 30)
        return future.result().results[0].successful


def frame(seed: int, sec: int, frame_id: str = "camera_optical", **kwargs) -> Image:
    header = Header(frame_id=frame_id)
    header.stamp.sec = sec
    return rgb_to_image_msg(noise_image(seed, **kwargs), header)


@pytest.fixture(scope="module")
def client(ros_node, start_module_process, model_dir, tmp_path_factory):
    """One node for the module; the tests run in file order (vocabulary revisions build on each other)."""
    params = params_file(tmp_path_factory.mktemp("params"), **PARAMS)
    proc = start_module_process(*partglee_command(params, model_dir, image_topic=IMAGE_TOPIC), name="node")
    c = NodeClient(ros_node, proc)
    c.wait_ready()
    return c


def test_results_equal_in_process_segmenter(client, model_dir) -> None:
    defaults = {p.name: p.default for p in BY_NAME.values()} | PARAMS
    segmenter = load_segmenter(model_dir, backend="torch", postprocess_config=postprocess_config(defaults))
    segmenter.set_vocabulary(*_default_vocabulary())

    for i, msg in enumerate([frame(1, 100), frame(2, 101, height=300, width=500)]):
        got = client.send(msg)
        assert got.header == msg.header  # stamp and frame_id copied
        want = segmenter.segment(noise_image(1 + i, msg.height, msg.width))
        result = msg_to_result(got)
        assert (result.height, result.width) == (msg.height, msg.width)
        assert len(result.objects) == len(want.objects) > 0
        for g, w in zip(result.objects, want.objects, strict=True):
            assert (g.label, g.id) == (w.label, w.id)
            assert g.score == pytest.approx(w.score, abs=1e-5)
            assert np.array_equal(g.mask, w.mask)
            assert [(p.object_label, p.parent_id) for p in g.parts] == [
                (p.object_label, p.parent_id) for p in w.parts
            ]
            for gp, wp in zip(g.parts, w.parts, strict=True):
                assert np.array_equal(gp.mask, wp.mask)


def _default_vocabulary() -> tuple[list[str], list[str]]:
    values = yaml.safe_load((REPO / "config" / "partglee.yaml").read_text())["/**"]["ros__parameters"]
    return values["objects"], values["parts"]


BAD_VOCABULARIES = [
    ({"objects": [], "parts": ["handle"]}, "at least one object"),
    ({"objects": ["mug", "MUG"], "parts": []}, "duplicate"),
    ({"objects": [f"thing {i}" for i in range(10_000)], "parts": []}, "limit is"),
    ({"objects": ["x" * 5000], "parts": []}, "characters"),
    ({"objects": ["\x1b[31mmug"], "parts": []}, "control characters"),
    ({"objects": ["mug"], "parts": ["handle"], "object_parts": {"cup": ["handle"]}}, "not in the objects"),
]


def test_bad_input_gets_clear_errors_and_node_keeps_working(client) -> None:
    from partglee_ros.msg import ObjectParts

    for fields, reason in BAD_VOCABULARIES:
        request = SetVocabulary.Request(objects=fields["objects"], parts=fields["parts"])
        request.object_parts = [
            ObjectParts(object=o, parts=p) for o, p in fields.get("object_parts", {}).items()
        ]
        response = client.call(request)
        assert not response.success and reason in response.message, response.message
        assert response.revision == 1  # the previous vocabulary stays active

    good = frame(4, 300)
    bad_frames = []
    wrong_encoding = frame(4, 301)
    wrong_encoding.encoding = "yuv422_yuy2_unknown"
    bad_frames.append(wrong_encoding)
    bad_step = frame(4, 302)
    bad_step.step = bad_step.step - 5
    bad_frames.append(bad_step)
    short_data = frame(4, 303)
    short_data.data = bytes(short_data.data)[:1000]
    bad_frames.append(short_data)
    empty = Image(header=Header(frame_id="camera_optical"), encoding="rgb8")
    empty.header.stamp.sec = 304
    bad_frames.append(empty)
    huge = Image(
        header=Header(frame_id="camera_optical"), encoding="rgb8", height=100_000, width=100_000, step=300_000
    )
    huge.header.stamp.sec = 305
    bad_frames.append(huge)
    for msg in bad_frames:
        client.pub.publish(msg)
        spin_until(client.node, lambda: False, 0.3)  # let the node take each one (latest frame wins)
    result = client.send(good)
    assert result.objects, "node stopped producing results after bad frames"
    log = client.proc.output()
    for text in ("unsupported encoding", "step", "expected step*height", "empty image", "exceeds the limit"):
        assert text in log, f"no clear error mentioning {text!r} in the node log:\n{log}"
    assert client.proc.proc.poll() is None


def test_a_flood_of_ever_new_bad_strings_is_quoted_short_and_logged_sparingly(client) -> None:
    """Encodings are the sender's strings: each error quotes a bounded part of one, and however many kinds of
    error arrive (letters differ, so each is a new kind), at most ERROR_LOGS_PER_5S lines are logged in any
    5 s (every frame is still counted)."""
    letters = np.random.default_rng(0).choice(list("abcdefghij"), (60, 8))
    for i in range(60):
        msg = frame(4, 400 + i)
        msg.encoding = "burst-" + "".join(letters[i]) + "-" + "x" * 5000
        client.pub.publish(msg)
        spin_until(client.node, lambda: False, 0.03)

    def lines() -> list[str]:
        return [line for line in client.proc.output().splitlines() if "unsupported encoding 'burst-" in line]

    assert spin_until(client.node, lines, 30), client.proc.output()
    spin_until(client.node, lambda: False, 1.0)  # the node takes the last frames (no good frame: tracks stay)
    logged = lines()
    assert len(logged) > 1 and all(len(line) < 600 and "(5015 characters)" in line for line in logged), logged
    times = [float(line.split("] [")[1].split("]")[0]) for line in logged]  # "[WARN] [<seconds>] [partglee]"
    assert max(sum(t <= u < t + 5.0 for u in times) for t in times) <= ERROR_LOGS_PER_5S, times


def test_bayer_and_16_bit_frames_are_decoded_like_recorded_ones(client) -> None:
    """The node and the bag tools share one decoder (partglee_ros/sensor_images.py)."""
    grey = noise_image(10)[..., 0]
    bayer = Image(
        header=Header(frame_id="camera_optical"), height=240, width=320, encoding="bayer_rggb8", step=320
    )
    bayer.header.stamp.sec = 350
    bayer.data = grey.tobytes()
    assert client.send(bayer).image_width == 320
    mono16 = Image(
        header=Header(frame_id="camera_optical"), height=240, width=320, encoding="mono16", step=640
    )
    mono16.header.stamp.sec = 351
    mono16.data = (grey.astype("<u2") * 200).tobytes()
    assert client.send(mono16).image_height == 240


def test_vocabulary_change_applies_to_next_frame(client) -> None:
    before = client.send(frame(3, 200))
    assert before.vocabulary_revision == 1
    response = client.call(
        SetVocabulary.Request(objects=["tasse à café", "kettle"], parts=["handle", "spout"])
    )
    assert response.success, response.message
    assert response.revision == 2
    after = client.send(frame(3, 201))
    assert after.vocabulary_revision == 2
    labels = {o.label for o in after.objects} | {p.label for o in after.objects for p in o.parts}
    assert labels <= {"tasse à café", "kettle", "handle", "spout"} and labels


def test_a_large_vocabulary_encodes_while_frames_and_requests_go_on(client) -> None:
    """2000 long names take seconds to encode. Meanwhile frames are segmented, get_vocabulary answers with the
    active revision, and a segment request with names of its own is answered: the encoding holds neither the
    node's executor nor the lock that swaps vocabularies in."""
    names = [f"object number {i} with " + "a rather long and descriptive name " * 4 for i in range(2000)]
    change = client.set_vocab.call_async(SetVocabulary.Request(objects=names, parts=["handle"]))
    get = client.node.create_client(GetVocabulary, "/get_vocabulary")
    segment = client.node.create_client(Segment, "/segment")
    assert spin_until(client.node, lambda: get.service_is_ready() and segment.service_is_ready(), 30)
    ask = Segment.Request(objects=["teapot"], parts=["lid"], image=frame(5, 1), timeout=60.0)
    asked = first_answer(client.node, lambda: segment.call_async(ask), 3, 20, client.proc.output)
    during = client.send(frame(4, 205))
    active = first_answer(client.node, lambda: get.call_async(GetVocabulary.Request()), 3, 10)
    assert not change.done(), "set_vocabulary finished first: the others waited for it (or encoding got fast)"
    assert during.vocabulary_revision == 2 and active.result().vocabulary.revision == 2
    assert asked.result().success, asked.result().message
    assert spin_until(client.node, change.done, 180), client.proc.output()
    assert change.result().success and change.result().revision == 3, change.result().message
    restored = client.call(
        SetVocabulary.Request(objects=["tasse à café", "kettle"], parts=["handle", "spout"])
    )
    assert restored.success and restored.revision == 4  # the later tests run on the small vocabulary again


def double(x: float) -> ParameterValue:
    return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=x)


def test_thresholds_reconfigure_with_validation(client) -> None:
    set_param = client.set_param
    assert not set_param("object_threshold", double(1.5))  # outside its declared range
    assert not set_param("backend", ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="onnx"))
    before = client.send(frame(6, 400))
    assert set_param("object_threshold", double(0.999))
    after = client.send(frame(6, 401))
    assert len(after.objects) < len(before.objects)  # random weights never score 0.999
    assert set_param("object_threshold", double(0.0))


def test_tracking_keeps_ids_across_frames_and_can_be_switched_off(client) -> None:
    """The same image twice: every object continues its track (same label, IoU 1). Switched off and on again
    with no frame in between, tracking starts new tracks with ids never used before; off, the ids are 0."""

    def tracking(on: bool) -> bool:
        return client.set_param("tracking", ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=on))

    first = client.send(frame(9, 450))
    ids = [o.track_id for o in first.objects]
    assert len(ids) > 0 and 0 not in ids and len(set(ids)) == len(ids)
    assert [o.track_id for o in client.send(frame(9, 451)).objects] == ids
    assert not client.set_param("track_iou", double(0.0))  # in the declared range, refused by the node
    assert tracking(False) and tracking(True)
    again = [o.track_id for o in client.send(frame(9, 452)).objects]
    assert len(again) == len(ids) and min(again) > max(ids)
    assert tracking(False)
    assert {o.track_id for o in client.send(frame(9, 453)).objects} == {0}
    assert tracking(True)


def test_tracks_end_when_time_goes_back_or_after_track_max_age(client) -> None:
    """By header stamps: a frame stamped before the previous one (a bag replayed into the node) and a frame
    more than `track_max_age` (1 s) after the last match (a paused camera) start new tracks."""

    def ids(sec: int) -> list[int]:
        return [o.track_id for o in client.send(frame(9, sec)).objects]

    live = ids(1000)
    assert ids(1001) == live and live
    replayed = ids(500)
    assert len(replayed) == len(live) and min(replayed) > max(live)
    assert ids(501) == replayed
    paused = ids(507)  # track_max_age 5 s
    assert len(paused) == len(live) and min(paused) > max(replayed)


def test_a_rate_cap_that_would_end_every_track_is_taken_with_a_warning(client) -> None:
    def warnings() -> int:
        return client.proc.output().count("every track ends before the next frame")

    before = warnings()
    try:
        assert client.set_param("max_rate", double(0.1))  # a frame every 10 s, track_max_age 5 s
        assert spin_until(client.node, lambda: warnings() > before, 10)
    finally:
        assert client.set_param("max_rate", double(0.0))
    assert warnings() == before + 1  # none for the cap lifted


def test_diagnostics_count_frames(client) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    now_stamped = frame(8, 0)
    now_stamped.header.stamp = client.node.get_clock().now().to_msg()  # the node's clock: same machine
    client.send(now_stamped)
    seen: list[DiagnosticArray] = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", seen.append, 10)
    assert spin_until(client.node, lambda: len(seen) >= 2, 10)  # the second one surely counts that frame
    values = {kv.key: kv.value for kv in seen[-1].status[0].values}
    assert int(values["frames_processed"]) >= 3 and int(values["frame_errors"]) >= 5
    # only the frame stamped now has an age; the earlier ones (sec = 100, 200, ...) are decades old
    assert 0 < float(values["frame_age_ms_p50"]) == float(values["frame_age_ms_p95"]) < 10_000
    assert int(values["frames_stamped_off_clock"]) == int(values["frames_processed"]) - 1
    assert int(values["frames_received"]) >= int(values["frames_processed"])
    assert float(values["latency_ms_p95"]) > 0
    assert int(values["active_tracks"]) >= 1  # the objects of the frame just sent
    assert values["backend"] == "torch/cpu, fp32"  # auto: the test model has no model.onnx next to it
    assert 1 <= int(values["cpu_threads"]) <= len(os.sched_getaffinity(0))


def test_diagnostics_level_follows_recent_frames(client) -> None:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

    seen: list[DiagnosticArray] = []
    client.node.create_subscription(DiagnosticArray, "/diagnostics", seen.append, 10)

    def level_becomes(level: bytes, timeout: float) -> DiagnosticStatus:
        start = len(seen)
        assert spin_until(
            client.node, lambda: any(d.status[0].level == level for d in seen[start:]), timeout
        ), [(d.status[0].level, d.status[0].message) for d in seen]
        return next(d.status[0] for d in seen[start:] if d.status[0].level == level)

    broken = frame(9, 600)
    broken.encoding = "not_an_encoding"
    client.pub.publish(broken)
    status = level_becomes(DiagnosticStatus.ERROR, 10)  # after many good frames, only this one failed lately
    assert "unsupported encoding" in status.message
    client.send(frame(9, 601))
    level_becomes(DiagnosticStatus.OK, 10)
    status = level_becomes(DiagnosticStatus.WARN, 15)  # then no input at all
    assert re.fullmatch(rf"no input frames for \d+ s on {IMAGE_TOPIC}", status.message), status.message


def test_frame_age_only_for_stamps_on_the_nodes_clock() -> None:
    second = 1_000_000_000
    header = Header()
    header.stamp.sec, header.stamp.nanosec = 1000, 250_000_000
    assert frame_age_ms(1000 * second + 250_000_000, header) == 0.0
    assert frame_age_ms(1001 * second, header) == 750.0
    assert frame_age_ms(999 * second, header) is None  # stamped in the future: another clock
    assert frame_age_ms(1011 * second, header) is None  # older than MAX_FRAME_AGE_S: a replay or a fake stamp


def test_debug_image_while_subscribed(client) -> None:
    images: list[Image] = []
    client.node.create_subscription(Image, "/debug_image", images.append, QOS)
    spin_until(client.node, lambda: False, 1.0)  # let discovery match the new subscription
    client.send(frame(7, 500))
    assert spin_until(client.node, lambda: bool(images), 10)
    assert (images[0].height, images[0].width, images[0].encoding) == (240, 320, "rgb8")
    assert images[0].header.stamp.sec == 500
