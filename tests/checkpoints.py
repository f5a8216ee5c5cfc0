"""Model directories for runtime and engine tests (ROS-free): the bundled default model when it exists,
otherwise a small randomly initialised one with the same architecture."""

from __future__ import annotations

import shutil
from pathlib import Path

from partglee_ros.config import CONFIG_FILE, WEIGHTS_FILE
from tests.ros_testing import REPO, small_checkpoint

DEFAULT_MODEL = REPO / "models" / "default"


def default_model_exists() -> bool:
    return (DEFAULT_MODEL / CONFIG_FILE).is_file() and (DEFAULT_MODEL / WEIGHTS_FILE).is_file()


def parity_model_dir(directory: Path) -> Path:
    """A writable copy of models/default (tests write model.onnx next to it), or the small random one."""
    if not default_model_exists():
        return small_checkpoint(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copy(DEFAULT_MODEL / name, directory / name)
    return directory
