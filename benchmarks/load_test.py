"""Load test of partglee_node: images at a fixed rate (30 Hz by default) for N minutes.

Reports the processed rate, frames dropped (latest frame wins, so drops are expected whenever inference is
slower than the camera), latency p50/p95 (receive -> publish, from the node's messages), the age of each
result (the frame's stamp, taken when it was published, to the result's arrival here: what a planner waits
for, DDS transfer and the wait for the frame in progress included) and the node's resident memory at start
and end, and writes the table into docs/BENCHMARKS.md.

    . scripts/env.sh && python benchmarks/load_test.py --minutes 2 --rate 30
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from partglee_ros.msg import HierarchicalSegmentation
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import BENCHMARKS_DOC, report
from partglee_ros.ros.conversions import rgb_to_image_msg
from partglee_ros.ros.dds_profile import dds_environment
from partglee_ros.ros.launch_arguments import node_command
from training.data.synthparts import load_split_config, split_scenes

REPO = Path(__file__).resolve().parents[1]
EXECUTABLE = REPO / "install" / "partglee_ros" / "lib" / "partglee_ros" / "partglee_node"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: how much of the cores the node takes, not just its rate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=30.0, help="input frame rate (Hz)")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--backend", default="auto")
    parser.add_argument(
        "--torch-compile", action="store_true", help="node parameter torch_compile (use with --backend torch)"
    )
    parser.add_argument("--torch-threads", type=int, default=0, help="node parameter torch_threads")
    parser.add_argument("--onnx-threads", type=int, default=0, help="node parameter onnx_threads")
    parser.add_argument("--onnx-spin-threads", action="store_true", help="node parameter onnx_spin_threads")
    parser.add_argument("--max-rate", type=float, default=0.0, help="node parameter max_rate (Hz)")
    parser.add_argument(
        "--dds-profile",
        default="",
        help="Fast DDS profile for the publisher and the node, e.g. config/fastdds_large_data.xml "
        "(default: Fast DDS's own settings)",
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--out", type=Path, default=BENCHMARKS_DOC)
    args = parser.parse_args()
    os.environ.update(dds_environment(args.dds_profile))  # before rclpy.init; the node inherits it

    values = {"model_path": str(args.model), "backend": args.backend, "image_topic": "/load/image"}
    if args.torch_compile:
        values["torch_compile"] = "true"
    if args.torch_threads:
        values["torch_threads"] = str(args.torch_threads)
    if args.onnx_threads:
        values["onnx_threads"] = str(args.onnx_threads)
    if args.onnx_spin_threads:
        values["onnx_spin_threads"] = "true"
    if args.max_rate:
        values["max_rate"] = str(args.max_rate)
    try:  # typed and checked like launch arguments (e.g. --max-rate nan)
        cmd = node_command(str(EXECUTABLE), str(REPO / "config" / "partglee.yaml"), values)
    except ValueError as err:
        parser.error(str(err))
    log = open("/tmp/partglee_load_test.log", "wb")  # noqa: SIM115 - lives as long as the node
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    rclpy.init()
    node = Node("load_test")
    results: list[HierarchicalSegmentation] = []
    ages_ms: list[float] = []

    def on_result(msg: HierarchicalSegmentation) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        ages_ms.append((node.get_clock().now().nanoseconds * 1e-9 - stamp) * 1e3)
        results.append(msg)

    diagnostics: list[DiagnosticArray] = []
    node.create_subscription(
        HierarchicalSegmentation,
        "/segmentation",
        on_result,
        QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE),
    )
    node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    pub = node.create_publisher(Image, "/load/image", qos_profile_sensor_data)
    config = load_split_config(REPO / "training" / "configs" / "synthparts.yaml")
    frames = [
        rgb_to_image_msg(s.image, Header(frame_id="cam"))
        for s in split_scenes("test", config, limit=10, width=args.width, height=args.height)
    ]
    try:
        deadline = time.monotonic() + (600 if args.torch_compile else 180)  # a cold compile takes minutes
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline and proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.1)
        if pub.get_subscription_count() == 0:
            print("load test: node did not subscribe; see /tmp/partglee_load_test.log", file=sys.stderr)
            return 1
        time.sleep(2.0)
        rss_start, cpu_start = rss_mib(proc.pid), cpu_seconds(proc.pid)
        period, sent = 1.0 / args.rate, 0
        start = time.monotonic()
        end = start + args.minutes * 60
        while (now := time.monotonic()) < end:
            if now >= start + sent * period:
                msg = frames[sent % len(frames)]
                msg.header.stamp = node.get_clock().now().to_msg()
                pub.publish(msg)
                sent += 1
            rclpy.spin_once(node, timeout_sec=max(0.0, start + sent * period - time.monotonic()))
        cpu_end = cpu_seconds(proc.pid)
        settle = time.monotonic() + 5
        while time.monotonic() < settle:
            rclpy.spin_once(node, timeout_sec=0.1)
        rss_end = rss_mib(proc.pid)
        elapsed = args.minutes * 60
        latency = np.array([r.processing_time_ms for r in results]) if results else np.full(1, np.nan)
        stats = {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        proc.terminate()
        proc.wait(timeout=30)
    rows = [
        (
            "input",
            f"{args.width}x{args.height} at {args.rate:g} Hz for {args.minutes:g} min ({sent} frames sent)",
        ),
        ("model / backend", f"`{args.model.name}` / {args.backend} ({stats.get('backend', '?')} in use)"),
        ("frames received by the node", stats.get("frames_received", "?")),
        ("frames processed (published)", f"{len(results)} ({len(results) / elapsed:.2f} Hz)"),
        ("frames dropped (latest frame wins)", stats.get("frames_dropped", "?")),
        ("frames skipped (max_rate)", stats.get("frames_skipped", "?")),
        (
            "node CPU, cores busy on average (user + system)",
            f"{(cpu_end - cpu_start) / elapsed:.2f} of {len(os.sched_getaffinity(0))}",
        ),
        (
            "latency receive -> publish p50 / p95 (ms)",
            f"{np.percentile(latency, 50):.0f} / {np.percentile(latency, 95):.0f}",
        ),
        (
            "result age, frame stamp -> result received p50 / p95 (ms)",
            f"{np.percentile(ages_ms, 50):.0f} / {np.percentile(ages_ms, 95):.0f}" if ages_ms else "-",
        ),
        ("node RSS at start / end (MiB)", f"{rss_start:.0f} / {rss_end:.0f}"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    flags = f" --backend {args.backend}" if args.backend != "auto" else ""
    flags += " --torch-compile" if args.torch_compile else ""
    flags += f" --torch-threads {args.torch_threads}" if args.torch_threads else ""
    flags += f" --onnx-threads {args.onnx_threads}" if args.onnx_threads else ""
    flags += " --onnx-spin-threads" if args.onnx_spin_threads else ""
    flags += f" --max-rate {args.max_rate:g}" if args.max_rate else ""
    flags += f" --dds-profile {args.dds_profile}" if args.dds_profile else ""
    section = "load-test" + re.sub(r"[^a-z0-9]+", "-", flags).rstrip("-")  # one section per configuration
    body = (
        f"## Node load test{f' ({flags.strip()})' if flags else ''}\n\n"
        f"Machine: {describe_cpu()}, no GPU. Command: "
        f"`. scripts/env.sh && python benchmarks/load_test.py --minutes {args.minutes:g} --rate {args.rate:g}"
        f"{flags}`\n\n"
        f"| measure | value |\n|---|---|\n{table}\n"
    )
    report(body, section, write=True, path=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
