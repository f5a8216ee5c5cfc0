"""The generated interfaces cross a real middleware between two processes unchanged (issue #2)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from partglee_ros.msg import HierarchicalSegmentation, ObjectInstance, ObjectParts, PartInstance, Vocabulary
from partglee_ros.srv import GetVocabulary, SetVocabulary
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from partglee_ros.ros.conversions import msg_to_result, object_parts_from_msgs, result_to_msg
from partglee_ros.runtime.result import ObjectResult, PartResult, SegmentationResult
from partglee_ros.runtime.vocabulary import VocabularyError, make_vocabulary
from partglee_ros.sensor_images import ImageDecodeError, paste_mask_crop
from tests.conftest import PYTHON, REPO, first_answer, spin_until

RELIABLE = QoSProfile(
    depth=10, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.VOLATILE
)


def _random_mask(rng: np.random.Generator, h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) > 0.3
    mask[y0, x0] = mask[y1 - 1, x1 - 1] = True  # pin the tight box
    return mask


def _one_object_two_parts() -> SegmentationResult:
    rng = np.random.default_rng(7)
    h, w = 240, 320
    obj_mask = _random_mask(rng, h, w, (40, 30, 200, 180))
    handle = _random_mask(rng, h, w, (150, 60, 200, 140)) & obj_mask
    body = _random_mask(rng, h, w, (40, 30, 150, 180)) & obj_mask
    parts = [
        PartResult(2, "handle", "mug:handle", 0.81, np.zeros(4, np.float32), handle, 1),
        PartResult(3, "body", "mug:body", 0.92, np.zeros(4, np.float32), body, 1),
    ]
    obj = ObjectResult(1, "mug", 0.95, np.zeros(4, np.float32), obj_mask, parts)
    return SegmentationResult(h, w, 4, [obj], {"total": 12.5})


@pytest.fixture()
def peer(start_process):
    proc = start_process(PYTHON, str(REPO / "tests" / "ros_peer.py"), name="peer")
    yield proc
    assert proc.proc.poll() is None, f"peer died:\n{proc.output()}"


def _echo(node, name: str, msg_type, message, peer) -> object:
    received: list = []
    pub = node.create_publisher(msg_type, f"echo/{name}/in", RELIABLE)
    node.create_subscription(msg_type, f"echo/{name}/out", received.append, RELIABLE)

    # publish until the peer has matched and echoed once (discovery takes a moment)
    def sent_and_back() -> bool:
        if not received:
            pub.publish(message)
        return bool(received)

    assert spin_until(node, sent_and_back, timeout=30.0), f"no echo for {name}:\n{peer.output()}"
    return received[0]


def test_segmentation_round_trip_is_bit_exact(ros_node, peer) -> None:
    result = _one_object_two_parts()
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 1700000000, 123456789
    sent = result_to_msg(result, header)
    back = _echo(ros_node, "segmentation", HierarchicalSegmentation, sent, peer)

    assert back == sent  # every field, including every mask byte
    # Not the serialized bytes themselves: CDR's alignment padding is left uninitialised (serializing one
    # message twice in one process gave different bytes at offsets 43, 93-95, ...; CI failed on offset 43).
    # What crosses the wire again decodes to exactly what was sent.
    assert deserialize_message(serialize_message(back), HierarchicalSegmentation) == sent
    assert back.header.frame_id == "camera_color_optical_frame"
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (1700000000, 123456789)
    decoded = msg_to_result(back)
    assert decoded.vocabulary_revision == 4
    (obj,) = decoded.objects
    assert np.array_equal(obj.mask, result.objects[0].mask)
    for got, want in zip(obj.parts, result.objects[0].parts, strict=True):
        assert np.array_equal(got.mask, want.mask)
        assert (got.label, got.object_label, got.parent_id) == (want.label, want.object_label, 1)
        assert got.score == pytest.approx(want.score)


@pytest.mark.parametrize(
    ("name", "msg_type", "message"),
    [
        ("object", ObjectInstance, ObjectInstance(id=9, label="kettle", score=0.5)),
        ("part", PartInstance, PartInstance(id=3, parent_id=9, label="spout", object_label="kettle:spout")),
        ("object_parts", ObjectParts, ObjectParts(object="kettle", parts=["lid", "spout", "handle"])),
        ("vocabulary", Vocabulary, Vocabulary(revision=2, objects=["mug"], parts=["handle"])),
    ],
)
def test_every_message_type_round_trips(ros_node, peer, name, msg_type, message) -> None:
    assert _echo(ros_node, name, msg_type, message, peer) == message


def _call(node, client, request, peer):
    assert spin_until(node, client.service_is_ready, timeout=30.0), f"service not up:\n{peer.output()}"
    future = client.call_async(request)
    assert spin_until(node, future.done, timeout=10.0), "service call did not return"
    return future.result()


def test_vocabulary_services(ros_node, peer) -> None:
    set_client = ros_node.create_client(SetVocabulary, "set_vocabulary")
    get_client = ros_node.create_client(GetVocabulary, "get_vocabulary")
    # each client first gets one reply to a request that changes nothing (conftest.first_answer)
    for client, harmless in ((get_client, GetVocabulary.Request()), (set_client, SetVocabulary.Request())):
        assert spin_until(ros_node, client.service_is_ready, timeout=30.0), (
            f"service not up:\n{peer.output()}"
        )
        first_answer(ros_node, partial(client.call_async, harmless), 10, 3.0, peer.output)

    initial = _call(ros_node, get_client, GetVocabulary.Request(), peer).vocabulary
    assert (initial.revision, list(initial.objects), list(initial.parts)) == (0, ["mug"], ["handle"])

    request = SetVocabulary.Request(objects=["mug", "kettle"], parts=["handle", "lid", "spout"])
    request.object_parts = [ObjectParts(object="kettle", parts=["lid", "spout", "handle"])]
    ok = _call(ros_node, set_client, request, peer)
    assert ok.success, ok.message
    assert ok.revision == 1 and list(ok.vocabulary.objects) == ["mug", "kettle"]
    assert [(e.object, list(e.parts)) for e in ok.vocabulary.object_parts] == [
        ("kettle", ["lid", "spout", "handle"])
    ]

    bad = _call(ros_node, set_client, SetVocabulary.Request(objects=["mug", "Mug"], parts=[]), peer)
    assert not bad.success and "duplicate" in bad.message
    assert bad.revision == 1 and list(bad.vocabulary.objects) == ["mug", "kettle"]

    now = _call(ros_node, get_client, GetVocabulary.Request(), peer).vocabulary
    assert now.revision == 1 and list(now.parts) == ["handle", "lid", "spout"]


def test_set_vocabulary_counts_its_names_in_words() -> None:
    """set_vocabulary's answer and the node's `loaded` line said "1 objects, 0 parts"."""
    assert make_vocabulary(["mug"], []).describe() == "revision 0: 1 object, 0 parts"
    vocab = make_vocabulary(["mug", "kettle"], ["lid"], {"kettle": ["lid"]}, revision=3)
    assert vocab.describe() == "revision 3: 2 objects, 1 part (kettle: lid)"


def test_malformed_mask_crops_are_refused() -> None:
    """A box leaving the image or a crop of the wrong size is a clear error, not an IndexError or a wrong mask."""
    sent = result_to_msg(_one_object_two_parts(), Header())
    obj = sent.objects[0]
    assert np.array_equal(
        paste_mask_crop(obj.box, obj.mask, sent.image_height, sent.image_width),
        msg_to_result(sent).objects[0].mask,
    )
    obj.box.x_offset = sent.image_width - obj.box.width + 1
    with pytest.raises(ImageDecodeError, match="leaves the"):
        paste_mask_crop(obj.box, obj.mask, sent.image_height, sent.image_width)
    obj.box.x_offset = 0
    obj.mask.data = bytes(obj.mask.data)[:-1]
    with pytest.raises(ImageDecodeError, match="bytes for step"):
        paste_mask_crop(obj.box, obj.mask, sent.image_height, sent.image_width)


def test_an_object_listed_twice_in_object_parts_is_refused() -> None:
    entries = [ObjectParts(object="mug", parts=["handle"]), ObjectParts(object="mug", parts=["lid"])]
    with pytest.raises(VocabularyError, match="'mug' twice"):
        object_parts_from_msgs(entries)
    assert object_parts_from_msgs(entries[:1]) == {"mug": ["handle"]}
