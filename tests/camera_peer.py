"""A camera driver stand-in in its own process: publishes raw RGB frames best-effort (sensor-data QoS, as
camera drivers do) once the topic has a subscriber, and exits. Its DDS settings come from its environment,
as a real driver's would, so a test can check what a Fast DDS profile does to delivery."""

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("topic")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    rclpy.init()
    node = Node("camera_peer")
    pub = node.create_publisher(Image, args.topic, qos_profile_sensor_data)
    pixels = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    msg = Image(height=args.height, width=args.width, encoding="rgb8", step=3 * args.width)
    msg.data = pixels.tobytes()
    deadline = time.monotonic() + 120
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print("camera_peer: nobody subscribed", file=sys.stderr)
            return 1
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)  # let discovery finish on both sides
    start = time.monotonic()
    for i in range(args.frames):
        time.sleep(max(0.0, start + i / args.rate - time.monotonic()))
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
    print(f"camera_peer: sent {args.frames}", flush=True)
    time.sleep(1.0)  # a best-effort writer gone at once may take its last samples with it
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
