"""Helpers for tests that run partglee_node: a small seeded model checkpoint, the node's command line and a
camera publishing colour, depth and camera_info."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from partglee_ros.config import ModelConfig, save_checkpoint
from partglee_ros.model.partglee import build_model
from partglee_ros.ros.conversions import depth_array_to_msg, rgb_to_image_msg
from partglee_ros.ros.launch_arguments import node_command
from tests.conftest import spin_until

REPO = Path(__file__).resolve().parents[1]
NODE_EXECUTABLE = REPO / "install" / "partglee_ros" / "lib" / "partglee_ros" / "partglee_node"


def small_checkpoint(directory: Path, seed: int = 0) -> Path:
    """A randomly initialised small model: enough to test plumbing (not accuracy) without training."""
    torch.manual_seed(seed)
    config = ModelConfig.from_file(REPO / "config" / "models" / "small.yaml")
    save_checkpoint(build_model(config).eval(), config, directory)
    return directory


def params_file(directory: Path, **overrides: object) -> Path:
    """config/partglee.yaml with some values replaced (the node's own YAML format)."""
    data = yaml.safe_load((REPO / "config" / "partglee.yaml").read_text())
    data["/**"]["ros__parameters"].update(overrides)
    path = directory / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def partglee_command(params: Path, model_dir: Path, **launch_args: str) -> list[str]:
    values = {"model_path": str(model_dir), "backend": "torch", **launch_args}
    return node_command(str(NODE_EXECUTABLE), str(params), values)


def noise_image(seed: int, height: int = 240, width: int = 320) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class RgbdCamera:
    """Publishes 320x240 noise frames (seeded by their stamp's seconds) with a flat depth image and
    camera_info of the same stamp, depth first as drivers send it; on the launch arguments' topics."""

    K = [300.0, 0.0, 160.0, 0.0, 300.0, 120.0, 0.0, 0.0, 1.0]

    def __init__(self, node: Node, topics: dict[str, str], depth: np.ndarray) -> None:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.node, self.depth = node, depth  # uint16 mm or float32 m, 240x320
        self.image_pub = node.create_publisher(Image, topics["image_topic"], qos)
        self.depth_pub = node.create_publisher(Image, topics["depth_topic"], qos)
        self.info_pub = node.create_publisher(CameraInfo, topics["camera_info_topic"], qos)
        self.last_sec: int | None = None  # stamp of the last frame published

    def connected(self) -> bool:
        return all(p.get_subscription_count() for p in (self.image_pub, self.depth_pub, self.info_pub))

    def publish(self, sec: int) -> Image:
        header = Header(frame_id="camera_optical")
        header.stamp.sec = sec
        self.depth_pub.publish(depth_array_to_msg(self.depth, header))
        self.info_pub.publish(CameraInfo(header=header, height=240, width=320, k=self.K))
        spin_until(self.node, lambda: False, 0.05)
        image = rgb_to_image_msg(noise_image(sec), header)
        self.image_pub.publish(image)
        self.last_sec = sec
        return image

    def publish_until(self, done: Callable[[], bool], first_sec: int, timeout: float) -> bool:
        """Publish frames stamped first_sec, first_sec + 1, ... every 0.3 s until ``done()``: on a loaded
        machine a request may reach its node after the first of them. Returns ``done()``."""
        deadline, sec = time.monotonic() + timeout, first_sec
        while not done() and time.monotonic() < deadline:
            self.publish(sec)
            sec += 1
            spin_until(self.node, done, 0.3)
        return done()
