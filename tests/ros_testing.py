"""Helpers for tests that run partglee_node: a small seeded model checkpoint and the node's command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from partglee_ros.config import ModelConfig, save_checkpoint
from partglee_ros.model.partglee import build_model
from partglee_ros.ros.launch_arguments import node_command

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
