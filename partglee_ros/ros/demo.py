"""The main demo: partglee_node on the bundled model, sample scenes played into it over ROS.

Starts the node as its own process (the command `ros2 launch partglee_ros partglee.launch.py` would run),
asks it for objects and parts through the set_vocabulary service, publishes the sample frames, receives
the hierarchical segmentations, then asks once, as a planner would, for the mugs' handles on the next frame
(the segment service), and writes overlay PNGs plus summary.md (objects, parts, latency) to the output
folder.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from partglee_ros.msg import HierarchicalSegmentation, ObjectParts
from partglee_ros.ros.conversions import msg_to_result, rgb_to_image_msg
from partglee_ros.ros.launch_arguments import node_command
from partglee_ros.runtime.overlay import draw_overlay
from partglee_ros.srv import Segment, SetVocabulary

REPO = Path(__file__).resolve().parents[2]
OBJECTS = ["mug", "kettle", "pot", "bottle", "knife", "hammer", "scissors", "jar", "wrench", "pan"]
PARTS = ["handle", "body", "lid", "spout", "blade", "head", "neck", "cap"]
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def sample_frames(count: int) -> list[tuple[np.ndarray, list[str]]]:
    """The bundled sample scenes: held-out SynthParts test scenes (base and novel objects), each with the
    names of the objects really in it."""
    from training.data.synthparts import load_split_config, split_scenes

    config = load_split_config(REPO / "training" / "configs" / "synthparts.yaml")
    return [(s.image, sorted(o.name for o in s.objects)) for s in split_scenes("test", config, limit=count)]


def spin_until(node: Node, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def planner_query(node: Node, pub: Publisher, rgb: np.ndarray, out: Path) -> str:
    """Ask the segment service for mugs' handles on the next frame, as a planner would: the topic's
    vocabulary stays as it is. Writes query_mug_handle.png; returns the summary line."""
    segment = node.create_client(Segment, "/segment")
    if not spin_until(node, segment.service_is_ready, 30):
        return "segment service: not available"
    future = segment.call_async(Segment.Request(objects=["mug"], parts=["handle"], timeout=30.0))
    # the answer comes from a frame received after the request, as a camera would keep sending them
    deadline, stamp = time.monotonic() + 60, 1000
    while not future.done() and time.monotonic() < deadline:
        header = Header(frame_id="demo_camera")
        header.stamp.sec, stamp = stamp, stamp + 1
        pub.publish(rgb_to_image_msg(rgb, header))
        spin_until(node, future.done, 0.3)
    if not future.done():
        return "segment service: no answer in 60 s"
    answer = future.result()
    print(f"demo: segment (mug: handle) -> success={answer.success}: {answer.message}")
    if answer.success:
        overlay = draw_overlay(rgb, msg_to_result(answer.segmentation))
        cv2.imwrite(
            str(out / "query_mug_handle.png"), cv2.cvtColor(np.hstack([rgb, overlay]), cv2.COLOR_RGB2BGR)
        )
    return f"planner query (segment service, mug: handle, on the next frame): {answer.message}"


def run(out: Path, model: Path, frames: int, executable: Path, threshold: float) -> int:
    """The demo proper; ``out`` exists (``main`` makes it, so a bad --out is a usage error)."""
    log_path = out / "node.log"

    values = {"model_path": str(model), "image_topic": "/demo/image"}
    values |= {"object_threshold": str(threshold), "part_threshold": str(threshold)}
    cmd = node_command(str(executable), str(REPO / "config" / "partglee.yaml"), values)
    print(f"demo: starting {' '.join(cmd)}")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    node = Node("partglee_demo")
    results: list[HierarchicalSegmentation] = []
    node.create_subscription(HierarchicalSegmentation, "/segmentation", results.append, QOS)
    pub = node.create_publisher(Image, "/demo/image", QOS)
    client = node.create_client(SetVocabulary, "/set_vocabulary")
    try:
        if (
            not spin_until(node, lambda: client.service_is_ready() or proc.poll() is not None, 120)
            or proc.poll()
        ):
            print(f"demo: node did not start; see {log_path}:\n{log_path.read_text()}", file=sys.stderr)
            return 1
        request = SetVocabulary.Request(objects=OBJECTS, parts=PARTS)
        request.object_parts = [ObjectParts(object="mug", parts=["handle", "body"])]
        future = client.call_async(request)
        if not spin_until(node, future.done, 60):
            print(f"demo: set_vocabulary did not answer in 60 s; see {log_path}", file=sys.stderr)
            return 1
        response = future.result()
        print(f"demo: set_vocabulary -> success={response.success}: {response.message}")
        spin_until(node, lambda: pub.get_subscription_count() > 0, 30)
        lines = [
            "# partglee_ros demo",
            "",
            f"model: `{model}` (see docs/MODEL_CARD.md for its accuracy); vocabulary: {response.message}; "
            f"score thresholds {threshold}",
            "",
            "| frame | objects in the scene | detected objects | parts (object:part) | node latency ms |",
            "|---|---|---|---|---|",
        ]
        latencies = []
        for i, (rgb, truth) in enumerate(sample_frames(frames)):
            header = Header(frame_id="demo_camera")
            header.stamp.sec = i + 1
            pub.publish(rgb_to_image_msg(rgb, header))
            if not spin_until(node, lambda s=i + 1: any(r.header.stamp.sec == s for r in results), 60):
                print(f"demo: no result for frame {i}; see {log_path}", file=sys.stderr)
                return 1
            msg = next(r for r in results if r.header.stamp.sec == i + 1)
            result = msg_to_result(msg)
            overlay = draw_overlay(rgb, result)
            cv2.imwrite(
                str(out / f"frame_{i:02d}.png"), cv2.cvtColor(np.hstack([rgb, overlay]), cv2.COLOR_RGB2BGR)
            )
            objects = ", ".join(f"{o.label} {o.score:.2f}" for o in result.objects) or "-"
            parts = ", ".join(f"{p.object_label} {p.score:.2f}" for p in result.parts()) or "-"
            latencies.append(msg.processing_time_ms)
            lines.append(
                f"| {i:02d} | {', '.join(truth)} | {objects} | {parts} | {msg.processing_time_ms:.0f} |"
            )
            print(
                f"demo: frame {i:02d}: {len(result.objects)} objects, {len(result.parts())} parts, {msg.processing_time_ms:.0f} ms"
            )
        lat = np.array(latencies)
        lines += [
            "",
            f"latency (receive -> publish, ms): median {np.median(lat):.0f}, p95 {np.percentile(lat, 95):.0f}",
            "",
            planner_query(node, pub, sample_frames(1)[0][0], out),
        ]
        (out / "summary.md").write_text("\n".join(lines) + "\n")
        print(
            f"demo: wrote {len(latencies)} overlays (frame_XX.png: input | overlay) and summary.md to {out}"
        )
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        proc.terminate()
        proc.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "out" / "demo", help="output folder")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default", help="model directory")
    parser.add_argument("--frames", type=int, default=8, help="number of sample frames")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.15,
        help="object and part score thresholds of the node (the bundled model's scores are low)",
    )
    parser.add_argument(
        "--node",
        type=Path,
        default=REPO / "install" / "partglee_ros" / "lib" / "partglee_ros" / "partglee_node",
    )
    args = parser.parse_args(argv)
    # checked before the node starts: otherwise a traceback from Popen, mkdir or np.percentile
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    if not 0.0 <= args.threshold <= 1.0:  # NaN too
        parser.error(f"--threshold must be in [0, 1], got {args.threshold}")
    if not (args.node.is_file() and os.access(args.node, os.X_OK)):
        parser.error(f"--node {args.node} is not an executable file (scripts/setup.sh builds partglee_node)")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"--out {args.out}: cannot make the folder: {err.strerror}")
    return run(args.out, args.model, args.frames, args.node, args.threshold)


if __name__ == "__main__":
    sys.exit(main())
