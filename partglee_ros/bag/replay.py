"""Replay mode: publish the bag's frames into a running partglee_node and record what it publishes.

Frames are published as the recorded CDR bytes (nothing re-encoded) at the recorded pace divided by
`rate`, or with `lockstep` each one after the previous result. Results are matched to frames by header
stamp (the node copies the image header). Latency is measured in this process from just before `publish`
to the result's arrival, so it includes transport both ways, the node's queueing and inference. A frame
without a result after the drain time is a drop (the node keeps only the newest frame while busy).
Needs rclpy and the built partglee_ros interfaces.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from partglee_ros.bag.bag_writer import BagWriter
from partglee_ros.bag.outcome import EvaluationRun, ReplayError, overlay_indices
from partglee_ros.bag.reader import Bag, BagError, read_frames
from partglee_ros.bag.segmentation_msgs import bag_msg_to_result, deserialize, stamp_ns
from partglee_ros.bag.typestore import COMPRESSED_TYPE, IMAGE_TYPE, SEGMENTATION_TYPE
from partglee_ros.runtime.vocabulary import Vocabulary


@dataclass
class ReplayOptions:
    image_topic: str = ""  # where to publish; "" = the bag's own topic name
    result_topic: str = "/segmentation"
    rate: float = 1.0  # multiple of the recorded pace
    vocabulary: Vocabulary | None = None  # sent to the node's set_vocabulary first (None = keep the node's)
    vocabulary_service: str = "/set_vocabulary"
    connect_timeout: float = 60.0
    drain_timeout: float = 10.0  # after the last frame, wait this long without news for the last results
    lockstep: bool = False  # publish the next frame only after this one's result (or drain_timeout): no drops


ROS_TYPES = {IMAGE_TYPE: Image, COMPRESSED_TYPE: CompressedImage}
# A drain ends at the latest this many drain timeouts after it began, however the results trickle in.
DRAIN_LIMIT = 3


class _Session:
    """Publisher, result subscription and an executor thread in a private rclpy context."""

    def __init__(self, msgtype: str, options: ReplayOptions, topic: str) -> None:
        from partglee_ros.msg import HierarchicalSegmentation

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("partglee_bag_replay", context=self.context)
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}  # stamp -> monotonic publish time
        self.results: dict[int, tuple[float, bytes, object]] = {}
        self.last_event = time.monotonic()
        self.expected_revision: int | None = None
        self.stale = 0
        self.foreign = 0  # results this replay did not ask for: another camera feeding the node, or garbage
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(ROS_TYPES[msgtype], topic, reliable)
        self.sub = self.node.create_subscription(
            HierarchicalSegmentation, options.result_topic, self._on_result, reliable, raw=True
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, name="bag-replay-executor", daemon=True)
        self.thread.start()

    def _on_result(self, raw: bytes) -> None:
        """Only results for stamps this replay sent count, as news for the drain too: the results of another
        camera the node also listens to kept the drain from ever going quiet."""
        received = time.monotonic()
        try:
            msg = deserialize(raw, SEGMENTATION_TYPE)
            stamp = stamp_ns(msg.header)
        except Exception:  # rosbags raises assorted errors for malformed CDR; not ours to score
            stamp = None
        with self.lock:
            if stamp not in self.sent:
                self.foreign += 1
                return
            self.last_event = received
            if self.expected_revision is not None and msg.vocabulary_revision != self.expected_revision:
                self.stale += 1  # computed with an older vocabulary (a frame from before the switch)
                return
            self.results.setdefault(stamp, (received, raw, msg))

    def publish(self, stamp: int, raw: bytes) -> None:
        with self.lock:
            self.sent[stamp] = time.monotonic()
        self.pub.publish(raw)

    def wait_for_node(self, options: ReplayOptions, topic: str) -> None:
        deadline = time.monotonic() + options.connect_timeout
        while time.monotonic() < deadline:
            if self.pub.get_subscription_count() > 0 and self.sub.get_publisher_count() > 0:
                return
            time.sleep(0.05)
        raise ReplayError(
            f"no node connected within {options.connect_timeout:.0f} s: {self.pub.get_subscription_count()} "
            f"subscriber(s) on {topic}, {self.sub.get_publisher_count()} publisher(s) on {options.result_topic}; "
            "is partglee_node running with its image topic remapped there?"
        )

    def set_vocabulary(self, vocab: Vocabulary, service: str, timeout: float) -> int:
        from partglee_ros.msg import ObjectParts
        from partglee_ros.srv import SetVocabulary

        client = self.node.create_client(SetVocabulary, service)
        if not client.wait_for_service(timeout_sec=timeout):
            raise ReplayError(f"service {service} is not available; is partglee_node running?")
        request = SetVocabulary.Request(objects=list(vocab.objects), parts=list(vocab.parts))
        request.object_parts = [ObjectParts(object=o, parts=list(p)) for o, p in vocab.object_parts.items()]
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done():
            raise ReplayError(f"{service} did not answer within {timeout:.0f} s")
        response = future.result()
        if not response.success:
            raise ReplayError(f"the node rejected the vocabulary: {response.message}")
        with self.lock:
            self.expected_revision = int(response.revision)
        return int(response.revision)

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def run_replay(
    bag: Bag,
    image_topic: str,
    options: ReplayOptions,
    writer: BagWriter | None,
    max_frames: int | None = None,
    overlays: int = 4,
) -> EvaluationRun:
    if options.rate <= 0:
        raise ValueError(f"rate must be > 0, got {options.rate}")
    info = bag.topics[image_topic]
    out_topic = options.image_topic or image_topic
    run = EvaluationRun("replay", str(bag.path), image_topic)
    run.log.warnings += bag.warnings
    keep = overlay_indices(min(info.count, max_frames or info.count), overlays)
    session = _Session(info.msgtype, options, out_topic)
    expected: set[int] = set()  # stamps of good frames, which should get a result
    try:
        session.wait_for_node(options, out_topic)
        if options.vocabulary is not None:
            revision = session.set_vocabulary(
                options.vocabulary, options.vocabulary_service, options.connect_timeout
            )
            run.notes.append(f"vocabulary sent to {options.vocabulary_service}: node revision {revision}")
        start, first_log = time.monotonic(), None
        try:
            for frame in read_frames(bag, image_topic, max_frames):
                run.add_frame(frame, frame.index in keep)
                if frame.stamp_ns < 0 or frame.stamp_ns in session.sent:
                    continue  # not deserializable, or a duplicate stamp: cannot be matched to a result
                first_log = frame.log_ns if first_log is None else first_log
                # A log time earlier than the previous one (out of order) is published at once.
                time.sleep(
                    max(0.0, start + (frame.log_ns - first_log) / 1e9 / options.rate - time.monotonic())
                )
                session.publish(frame.stamp_ns, frame.raw)  # bad images too: the node must survive them
                if frame.error is None:
                    expected.add(frame.stamp_ns)
                    if options.lockstep:
                        _drain(session, {frame.stamp_ns}, options.drain_timeout)
                        start = time.monotonic() - (frame.log_ns - first_log) / 1e9 / options.rate
        except BagError as err:
            run.stop(err)
        _drain(session, expected, options.drain_timeout)
    finally:
        session.close()
    _collect(run, session, writer, options.result_topic)
    return run


def _drain(session: _Session, expected: set[int], timeout: float) -> None:
    """Wait until every `expected` stamp has its result, nothing came for `timeout` s, or DRAIN_LIMIT
    timeouts have passed."""
    start = time.monotonic()
    with session.lock:
        session.last_event = start
    while True:
        with session.lock:
            done = expected.issubset(session.results)
            now = time.monotonic()
            quiet = now - session.last_event
        if done or quiet > timeout or now - start > DRAIN_LIMIT * timeout:
            return
        time.sleep(0.02)


def _collect(run: EvaluationRun, session: _Session, writer: BagWriter | None, topic: str) -> None:
    sent = session.sent
    for outcome in run.frames:
        got = session.results.get(outcome.stamp_ns)
        if got is None or outcome.stamp_ns not in sent or outcome.error is not None:
            continue
        received, raw, msg = got
        outcome.result = bag_msg_to_result(msg)
        outcome.latency_ms = (received - sent[outcome.stamp_ns]) * 1e3
        if writer is not None:
            writer.write(topic, SEGMENTATION_TYPE, outcome.log_ns, raw)
    times = sorted(sent.values())
    pace = f"{(len(times) - 1) / (times[-1] - times[0]):.2f} Hz" if len(times) > 1 else "-"
    run.notes.append(
        f"published {len(sent)} frames (mean rate {pace}); {len(run.answered)} answered, "
        f"{len(run.dropped)} good frames without a result (dropped)"
        + (f"; {session.stale} results from an older vocabulary ignored" if session.stale else "")
        + (
            f"; {session.foreign} results for frames this replay did not send ignored (another camera"
            " feeding the node?)"
            if session.foreign
            else ""
        )
    )
