"""Model configuration and checkpoints: one dataclass builds a model; a checkpoint is safetensors + that config.

Keeping the config as plain JSON next to ``model.safetensors`` means a checkpoint can be inspected, diffed and
loaded without unpickling anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from partglee_ros.model.preprocess import encoder_tokens

if TYPE_CHECKING:
    from partglee_ros.model.partglee import PartGLEE

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"  # engines.export_onnx writes it, the runtime's onnx and auto backends read it
# Its convolutions in int8 for ONNX Runtime on CPU (engines.quantize_onnx), run with precision int8.
ONNX_INT8_FILE = "model.int8.onnx"
# The model's text encoder as a graph (MiniLM models; engines.export_onnx writes it with its tokenizer in
# the .json beside it): with ONNX_FILE it makes a model directory that runs without PyTorch.
TEXT_ENCODER_FILE = "text_encoder.onnx"
# The encoder levels the model code has (model/partglee.py ENCODER_STRIDES: 32, 16, 8); not configurable.
NUM_FEATURE_LEVELS = 3
# What the runtime derives once and keeps across reboots (compiled code, exported text encoder).
CACHE_ROOT = Path.home() / ".cache" / "partglee_ros"
WEIGHTS_SHA256_KEY = "partglee.weights_sha256"  # ONNX metadata: the weights a graph was exported from
CODE_SHA256_KEY = "partglee.model_code_sha256"  # ... and the model code it was traced from
ONNX_INT8_SOURCE_KEY = "partglee.int8_source_sha256"  # ... and, in an int8 graph, the graph it quantized


# Field annotations (strings, from __future__) -> the types a value read from JSON/YAML may have.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "str | None": (str, type(None)),
    "bool": (bool,),
    "dict[str, Any]": (dict,),
}


def _check_field_types(config: Any) -> None:
    """A value of the wrong type, or a size/count below 1, fails here, naming its key, rather than later with a
    puzzling message (num_heads: 0 was a ZeroDivisionError)."""
    for f in dataclasses.fields(config):
        allowed = _FIELD_TYPES.get(f.type, ())
        value = getattr(config, f.name)
        is_bool = isinstance(value, bool)  # bool is an int to isinstance, but 'true' is no layer count
        if allowed and (not isinstance(value, allowed) or (is_bool and bool not in allowed)):
            raise ValueError(f"{f.name} must be {f.type}, got {value!r}")
        if f.type == "int" and value < 1:  # every int here is a size or a count
            raise ValueError(f"{f.name} must be a positive integer, got {value!r}")


@dataclass
class LossConfig:
    """Loss and matching-cost weights (MaskDINO/PartGLEE values; Eq. 5 of the paper)."""

    class_weight: float = 4.0  # lambda_1 (focal loss on similarity scores)
    box_l1_weight: float = 5.0  # MaskDINO BOX_WEIGHT
    giou_weight: float = 2.0  # lambda_2 (paper) / MaskDINO GIOU_WEIGHT
    mask_weight: float = 5.0  # lambda_3, BCE on sampled points
    dice_weight: float = 5.0
    # lambda_4: the paper writes 5, the official code uses 0.1. We use the paper's value by default.
    restriction_weight: float = 5.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    num_points: int = 12544  # points sampled per mask (Mask2Former's 112*112)
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    # "independent": parts matched to any part target (paper). "parent_consistent": a part query may only be
    # matched to parts of the GT object its parent query was matched to (keeps the hierarchy in training).
    part_matching: str = "independent"
    dn_enabled: bool = False  # query denoising on object boxes/labels
    dn_num: int = 20
    dn_box_noise: float = 0.4
    dn_label_noise: float = 0.2

    def __post_init__(self) -> None:
        _check_field_types(self)


@dataclass
class ModelConfig:
    """Everything needed to build a PartGLEE (or the flat baseline) model."""

    name: str = "small"
    architecture: str = "hierarchical"  # "hierarchical" (PartGLEE) or "flat" (paper Fig. 4a baseline)
    # image encoder
    backbone: str = "resnet18"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs
    backbone_weights: str | None = None  # local safetensors file; no downloads
    hidden_dim: int = 256
    mask_dim: int = 256
    num_heads: int = 8
    ffn_dim: int = 2048
    num_feature_levels: int = NUM_FEATURE_LEVELS  # strides 8, 16, 32; recorded in checkpoints, must be 3
    enc_layers: int = 6
    enc_points: int = 4
    dropout: float = 0.0
    # runtime: the network input size (W, H) images are letterboxed into, and the text encoder whose
    # embedding space the model was trained in ("minilm" is offline; see model/text_encoder.py)
    input_size: tuple[int, int] = (320, 240)
    text_encoder: str = "minilm"
    text_encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    # early fusion (paper 3.1): bi-directional cross-attention image <-> text before the encoder
    early_fusion: bool = True
    text_dim: int = 384
    # object decoder
    num_queries: int = 300
    dec_layers: int = 9
    dec_points: int = 4
    # Q-Former (Eq. 2) and part decoder
    num_parse_queries: int = 10  # L
    qformer_layers: int = 3  # M
    qformer_topk: int = 100  # k object queries parsed into parts (k*L part queries)
    qformer_mode: str = "faithful"  # "faithful" | "box_features"
    qformer_box_grid: int = 7  # samples per side inside the parent box in box_features mode
    part_dec_layers: int = 6
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            unknown = set(self.loss) - {f.name for f in dataclasses.fields(LossConfig)}
            if unknown:
                raise ValueError(f"unknown loss config keys: {sorted(unknown)}")
            self.loss = LossConfig(**self.loss)
        if not isinstance(self.loss, LossConfig):
            raise ValueError(f"loss must be a mapping of loss settings, got {self.loss!r}")
        _check_field_types(self)
        size = self.input_size
        if (
            not isinstance(size, list | tuple)
            or len(size) != 2
            or not all(type(v) is int and v > 0 for v in size)
        ):
            raise ValueError(f"input_size must be two positive integers [width, height], got {size!r}")
        self.input_size = tuple(size)  # JSON/YAML give a list
        self.check_input_size(self.input_size)
        if self.num_feature_levels != NUM_FEATURE_LEVELS:
            raise ValueError(
                f"num_feature_levels must be {NUM_FEATURE_LEVELS} (the model's encoder uses strides 8, 16 "
                f"and 32), got {self.num_feature_levels!r}"
            )
        if self.architecture not in ("hierarchical", "flat"):
            raise ValueError(f"architecture must be 'hierarchical' or 'flat', got {self.architecture!r}")
        if self.qformer_mode not in ("faithful", "box_features"):
            raise ValueError(f"qformer_mode must be 'faithful' or 'box_features', got {self.qformer_mode!r}")
        if self.qformer_topk > self.num_queries:
            raise ValueError("qformer_topk cannot exceed num_queries")
        if self.hidden_dim % self.num_heads:
            raise ValueError("hidden_dim must be divisible by num_heads")
        if self.loss.part_matching not in ("independent", "parent_consistent"):
            raise ValueError(f"unknown part_matching {self.loss.part_matching!r}")

    def check_input_size(self, size: tuple[int, int]) -> None:
        """ValueError when an input of ``size`` (W, H) has fewer encoder tokens than object queries."""
        tokens = encoder_tokens(size[1], size[0])
        if tokens < self.num_queries:
            raise ValueError(
                f"input size {size[0]}x{size[1]} is too small for this model: its {tokens} encoder tokens are"
                f" fewer than its {self.num_queries} object queries (64x64 gives 84, 128x96 gives 252 tokens)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a model config must be a mapping of keys to values, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read a YAML or JSON file (YAML is a superset of JSON, so one parser serves both).

        Raises ValueError for a file that is not YAML/JSON or not a valid config, like every other check."""
        with open(path) as f:
            try:
                data = yaml.safe_load(f)
            except yaml.YAMLError as err:
                raise ValueError(f"{path} is not valid YAML/JSON: {err}") from err
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        with open(path, "w") as f:
            if path.suffix in (".yaml", ".yml"):
                yaml.safe_dump(self.to_dict(), f, sort_keys=False)
            else:
                json.dump(self.to_dict(), f, indent=2)


def save_checkpoint(model: PartGLEE, config: ModelConfig, path: str | Path) -> Path:
    """Write ``path/model.safetensors`` and ``path/config.json``; returns the directory."""
    from safetensors.torch import save_model

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / WEIGHTS_FILE))
    readable_by_all(path / WEIGHTS_FILE)
    config.save(path / CONFIG_FILE)
    return path


def readable_by_all(path: Path) -> None:
    """Give a file safetensors wrote the mode of a plain file (safetensors leaves it 0600): a node may run as
    another user than the one who trained or copied the model, as for ``write_atomically``."""
    os.chmod(path, 0o644)


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[PartGLEE, ModelConfig]:
    """Build the model from ``config.json`` and load ``model.safetensors`` strictly (no pickle involved)."""
    from safetensors.torch import load_model

    from partglee_ros.model.partglee import build_model

    path = Path(path)
    config = ModelConfig.from_file(path / CONFIG_FILE)
    # weights come from the checkpoint, so the backbone's own weight file is not needed (nor required to exist)
    model = build_model(dataclasses.replace(config, backbone_weights=None))
    load_model(model, str(path / WEIGHTS_FILE), strict=True, device=device)
    model.eval()
    return model, config


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in blocks: weights and engines are hundreds of MB. (Not hashlib.file_digest:
    it needs Python 3.11, and ROS 2 Humble runs 3.10.)"""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """A reader (a node starting, another build) sees the old file or the new one, never half of one; a
    failed write leaves no temporary file behind. Readable by all, as a plain file would be: a node may run
    as another user than the one who wrote it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def weights_digest(model_dir: str | Path) -> str:
    """SHA-256 of a checkpoint's weights file: ties an exported graph to the weights it came from."""
    return file_sha256(Path(model_dir) / WEIGHTS_FILE)


def model_code_digest() -> str:
    """SHA-256 of the model package's source: a graph traced from other code may compute something else."""
    digest = hashlib.sha256()
    for source in sorted((Path(__file__).parent / "model").glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()
