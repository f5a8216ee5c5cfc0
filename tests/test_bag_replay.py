"""Replay mode (issue #8): the sample bag published into a live partglee_node process."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from partglee_ros.bag import ground_truth
from partglee_ros.bag.evaluate import main as bag_eval
from partglee_ros.bag.make_sample import START_NS, sequence_scenes, write_scene_bag
from partglee_ros.bag.offline import run_offline
from partglee_ros.bag.reader import Bag
from partglee_ros.bag.replay import DRAIN_LIMIT, ReplayOptions, _drain, _Session
from partglee_ros.bag.report import score
from partglee_ros.bag.segmentation_msgs import bag_msg_to_result, header, result_to_bag_msg
from partglee_ros.bag.typestore import IMAGE_TYPE, SEGMENTATION_TYPE, bag_typestore
from partglee_ros.runtime.result import SegmentationResult
from partglee_ros.runtime.tracking import ObjectTracker
from tests.bag_testing import (
    GT_TOPIC,
    SAMPLE_BAG,
    THRESHOLDS,
    assert_same_metrics,
    assert_same_results,
    from_json,
    segmenter_for,
)
from tests.ros_testing import params_file, partglee_command, small_checkpoint

IMAGE_TOPIC = "/camera/color/image_raw"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def node(start_module_process, model_dir, tmp_path_factory):
    """partglee_node as launch starts it, listening where the bag's camera topic is published."""
    params = params_file(tmp_path_factory.mktemp("params"), **THRESHOLDS)
    return start_module_process(*partglee_command(params, model_dir, image_topic=IMAGE_TOPIC), name="node")


def _replay(node, out, *extra: str, bag: Path = SAMPLE_BAG) -> dict:
    args = [str(bag), "--mode", "replay", "--out", str(out), "--gt-topic", GT_TOPIC]
    rc = bag_eval([*args, "--connect-timeout", "120", "--drain-timeout", "10", *extra])
    assert rc == 0, node.output()
    return json.loads((out / "metrics.json").read_text())


def test_lockstep_replay_gives_the_offline_detections(node, model_dir, tmp_path) -> None:
    frames = 3
    summary = _replay(node, tmp_path / "replay", "--lockstep", "--max-frames", str(frames))
    assert summary["frames_answered"] == frames and summary["frames_dropped"] == 0
    assert summary["latency_ms"]["count"] == frames and summary["latency_ms"]["p50"] > 0

    with Bag(SAMPLE_BAG) as bag:
        gts, _ = ground_truth.from_topic(bag, GT_TOPIC)
        from partglee_ros.bag.evaluate import load_vocabulary, parse_args

        vocab = load_vocabulary(parse_args([str(SAMPLE_BAG), "--out", "x"]), gts)
        offline = run_offline(bag, IMAGE_TOPIC, segmenter_for(model_dir, vocab), None, max_frames=frames)
    with Bag(tmp_path / "replay" / "results") as results:
        replayed = [results.deserialize(m) for m in results.messages({"/segmentation"})]
    assert len(replayed) == frames
    for msg, want in zip(replayed, offline.frames, strict=True):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == want.stamp_ns
        assert_same_results(bag_msg_to_result(msg), want.result)
    assert_same_metrics(from_json(summary["metrics"]), score(offline, gts, None, vocab))


def test_replayed_sequence_scores_the_nodes_tracks_as_offline_tracks_them(node, model_dir, tmp_path) -> None:
    """A sequence with track ids in its ground truth, replayed in lockstep: the node's published track ids
    score exactly as offline mode's tracker does. 240x180 frames: the node's tracks from earlier tests (other
    frame sizes) end, so both start from no tracks."""
    write_scene_bag(tmp_path / "bag", sequence_scenes(4, 240, 180, orbit_deg=3))
    summary = _replay(node, tmp_path / "replay", "--lockstep", bag=tmp_path / "bag")
    with Bag(tmp_path / "bag") as bag:
        gts, _ = ground_truth.from_topic(bag, GT_TOPIC)
        from partglee_ros.bag.evaluate import load_vocabulary, parse_args

        vocab = load_vocabulary(parse_args([str(tmp_path / "bag"), "--out", "x"]), gts)
        segmenter = segmenter_for(model_dir, vocab)
        offline = run_offline(bag, IMAGE_TOPIC, segmenter, None, tracker=ObjectTracker())
    tracking = summary["metrics"]["tracking"]
    assert tracking["frames"] == 4 and tracking["predicted_objects"] > 4
    assert_same_metrics(from_json(tracking), score(offline, gts, None, vocab)["tracking"])


def test_fast_replay_reports_drops_and_latency(node, tmp_path) -> None:
    """At 10x the recorded 10 Hz a frame arrives every 10 ms, far faster than the node segments: the
    node keeps only the newest frame, so some are dropped, and each answered one has a latency."""
    summary = _replay(node, tmp_path / "fast", "--rate", "10", "--max-frames", "5")
    assert summary["frames_read"] == 5
    assert summary["frames_dropped"] >= 1 and summary["frames_answered"] >= 1
    assert summary["frames_dropped"] + summary["frames_answered"] == 5
    assert summary["latency_ms"]["count"] == summary["frames_answered"]
    report = (tmp_path / "fast" / "report.md").read_text()
    assert (
        "End-to-end latency" in report
        and f"| frames dropped (no result) | {summary['frames_dropped']} |" in report
    )
    with Bag(tmp_path / "fast" / "results") as results:
        assert results.topics["/segmentation"].count == summary["frames_answered"]


def test_replay_without_a_node_says_so(tmp_path, capsys) -> None:
    rc = bag_eval(
        [str(SAMPLE_BAG), "--mode", "replay", "--out", str(tmp_path / "o"), "--objects", "mug"]
        + ["--publish-topic", "/nobody/listens", "--connect-timeout", "2", "--max-frames", "1"]
    )
    assert rc == 2 and "no node connected within 2 s" in capsys.readouterr().err


def _result_cdr(stamp: int) -> bytes:
    msg = result_to_bag_msg(SegmentationResult(4, 4, 0, []), header(stamp, "camera"))
    return bytes(bag_typestore().serialize_cdr(msg, SEGMENTATION_TYPE))


def _drain_while_posting(session: _Session, posted: bytes, expected: set[int], timeout: float) -> float:
    """Seconds _drain(expected) takes while a thread posts `posted` to the result callback every 10 ms."""
    stop = threading.Event()

    def post() -> None:
        while not stop.is_set():
            session._on_result(posted)
            time.sleep(0.01)

    thread = threading.Thread(target=post)
    thread.start()
    start = time.monotonic()
    try:
        _drain(session, expected, timeout)
        return time.monotonic() - start
    finally:
        stop.set()
        thread.join()


def test_results_for_frames_not_sent_neither_count_nor_keep_the_drain_waiting() -> None:
    """A node fed by another camera too publishes results for stamps this replay never sent: they reset the
    drain's quiet time, so it never ended. Now they are neither stored nor news, and even this replay's own
    results (a node answering one frame again and again) cannot hold a drain past DRAIN_LIMIT timeouts."""
    timeout = 0.3
    session = _Session(
        IMAGE_TYPE, ReplayOptions(result_topic="/drain_test/segmentation"), "/drain_test/image"
    )
    try:
        answered, unanswered, foreign = START_NS, START_NS + 1, START_NS + 2
        session.sent.update({answered: time.monotonic(), unanswered: time.monotonic()})
        elapsed = _drain_while_posting(session, _result_cdr(foreign), {answered}, timeout)
        assert timeout <= elapsed < 2 * timeout and session.results == {} and session.foreign > 10
        session._on_result(b"not a segmentation message")  # ignored, no exception in the executor thread
        elapsed = _drain_while_posting(session, _result_cdr(answered), {unanswered}, timeout)
        assert DRAIN_LIMIT * timeout <= elapsed < (DRAIN_LIMIT + 1) * timeout and list(session.results) == [
            answered
        ]
    finally:
        session.close()
