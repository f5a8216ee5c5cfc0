"""Offline mode: the Segmenter over every frame of the image topic, as fast as it runs."""

from __future__ import annotations

from partglee_ros.bag.bag_writer import BagWriter
from partglee_ros.bag.outcome import EvaluationRun, overlay_indices
from partglee_ros.bag.reader import Bag, BagError, read_frames
from partglee_ros.bag.segmentation_msgs import bag_msg_to_result, header, result_to_bag_msg
from partglee_ros.bag.typestore import SEGMENTATION_TYPE
from partglee_ros.runtime.segmenter import ImageError, Segmenter
from partglee_ros.runtime.tracking import ObjectTracker


def run_offline(
    bag: Bag,
    image_topic: str,
    segmenter: Segmenter,
    writer: BagWriter | None,
    result_topic: str = "/segmentation",
    max_frames: int | None = None,
    overlays: int = 4,
    tracker: ObjectTracker | None = None,
) -> EvaluationRun:
    """Segment every frame; each result is written to `writer` at its frame's log time with its header, and
    kept in its published form (the node's message: tight mask boxes, float32 scores).
    With a `tracker` the results carry track ids, as the node's (tracking on) would."""
    run = EvaluationRun("offline", str(bag.path), image_topic)
    run.log.warnings += bag.warnings
    count = bag.topics[image_topic].count
    keep = overlay_indices(min(count, max_frames or count), overlays)
    try:
        for frame in read_frames(bag, image_topic, max_frames):
            outcome = run.add_frame(frame, frame.index in keep)
            if frame.error is not None:
                continue
            try:
                result = segmenter.segment(frame.rgb)
            except ImageError as err:
                outcome.error = str(err)
                run.log.frame_errors.append((frame.index, str(err)))
                continue
            if tracker is not None:
                tracker.update(result, frame.stamp_ns)
            msg = result_to_bag_msg(result, header(frame.stamp_ns, frame.frame_id))
            # scored as the node publishes it, as replay scores it: boxes become the masks' tight boxes
            outcome.result, outcome.latency_ms = bag_msg_to_result(msg), result.timings_ms["total"]
            if writer is not None:
                writer.write_msg(result_topic, SEGMENTATION_TYPE, frame.log_ns, msg)
    except BagError as err:
        run.stop(err)
    return run
