"""The training YAML: which model, which datasets in which proportions, and how to optimise.

Layout (every key of ``train`` and ``val`` is optional; see training/configs/*.yaml)::

    model: config/models/small.yaml          # a ModelConfig file, or an inline mapping;
    model_overrides: {loss: {num_points: 1024}}  # deep-merged on top of it
    datasets:                                # joint training: one dataset per step, drawn by ratio
      - {name: synthparts, type: synthparts, split_config: training/configs/synthparts.yaml, ratio: 1.0}
    val: {name: synthparts_val, type: synthparts, split_config: ..., split: val, num_images: 8}
    train: {steps: 600, batch_size: 2, lr: 5.0e-4, schedule: {kind: cosine, warmup_steps: 50}, ...}

Relative paths are resolved against the working directory first, then the config file's folder.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from partglee_ros.config import ModelConfig
from partglee_ros.runtime.postprocess import PostprocessConfig
from training.schedule import ScheduleConfig

DATASET_TYPES = ("synthparts", "paco", "coco", "partimagenet", "pascal_part")
# the options each type's reader takes (training/dataset.py build_source)
DATASET_OPTIONS = {
    "synthparts": {"split_config", "split", "width", "height", "max_scenes"},
    "paco": {"json", "image_dir"},
    "coco": {"json", "image_dir"},
    "partimagenet": {"json", "image_dir", "object_name"},
    "pascal_part": {"json", "voc_annotations_dir", "image_dir"},
}
# Without them a source builds (its vocabulary needs no pixels) and the run fails at the first image drawn;
# PACO and COCO find their images beside the JSON.
REQUIRED_OPTIONS = {
    "paco": {"json"},
    "coco": {"json"},
    "partimagenet": {"json", "image_dir"},
    "pascal_part": {"json", "image_dir"},
}


@dataclass
class DatasetSpec:
    """One training (or validation) source. ``options`` are passed to its reader (see training.dataset)."""

    name: str
    type: str
    ratio: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in DATASET_TYPES:
            raise ValueError(f"dataset {self.name!r}: type must be one of {DATASET_TYPES}, got {self.type!r}")
        if self.ratio <= 0:
            raise ValueError(f"dataset {self.name!r}: ratio must be > 0, got {self.ratio}")
        unknown = set(self.options) - DATASET_OPTIONS[self.type]
        if unknown:  # a typo ("spilt") would silently fall back to a default (the train split)
            raise ValueError(
                f"dataset {self.name!r}: unknown keys {sorted(unknown)} for type {self.type}; "
                f"it takes {sorted(DATASET_OPTIONS[self.type])}"
            )
        if missing := REQUIRED_OPTIONS.get(self.type, set()) - set(self.options):
            raise ValueError(f"dataset {self.name!r}: type {self.type} needs {sorted(missing)}")


@dataclass
class OptimConfig:
    steps: int = 1000
    batch_size: int = 2  # images per process and step
    lr: float = 1e-4
    backbone_lr_mult: float = 1.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad_norm: float = 1.0  # 0 disables clipping
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    amp: bool = True  # autocast + GradScaler, only ever on CUDA
    amp_dtype: str = "float16"  # "float16" | "bfloat16"
    seed: int = 0
    threads: int = 0  # torch.set_num_threads; 0 keeps torch's default
    num_workers: int = 0  # DataLoader workers preparing batches
    hflip: float = 0.5  # probability of a horizontal flip per image
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0: evaluate only at the end

    def __post_init__(self) -> None:
        if isinstance(self.schedule, dict):
            self.schedule = ScheduleConfig(**self.schedule)
        self.betas = tuple(self.betas)
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise ValueError(f"amp_dtype must be float16 or bfloat16, got {self.amp_dtype!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        for name in ("log_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "threads", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class ValConfig:
    """Periodic evaluation. Checked when the config is read: evaluation first runs after ``eval_every`` steps
    (or after the last one), where a mistake would end the run before its final model is written."""

    dataset: DatasetSpec
    num_images: int = 8
    object_threshold: float = 0.05  # low thresholds: AP integrates over the whole score range
    part_threshold: float = 0.05

    def __post_init__(self) -> None:
        if self.dataset.type != "synthparts":  # its split config names the base and novel categories
            raise ValueError(
                f"val dataset {self.dataset.name!r}: periodic evaluation runs on a synthparts split, "
                f"got type {self.dataset.type!r}"
            )
        if self.num_images < 1:
            raise ValueError(f"val num_images must be >= 1, got {self.num_images}")
        self.postprocess().validate()

    def postprocess(self) -> PostprocessConfig:
        """The Segmenter's settings for evaluation (validated by the Segmenter's own rules)."""
        return PostprocessConfig(object_threshold=self.object_threshold, part_threshold=self.part_threshold)


@dataclass
class TrainConfig:
    model: ModelConfig
    datasets: list[DatasetSpec]
    optim: OptimConfig
    val: ValConfig | None = None
    source: str = ""  # the YAML file it came from


def resolve_path(value: str, base: Path) -> Path:
    """Working-directory relative unless only the config folder has it (a missing path keeps the working
    directory's reading, so the reader's error names the path the user meant)."""
    p = Path(value)
    if p.is_absolute() or p.exists() or not (base / p).exists():
        return p
    return base / p


def deep_merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _dataset(raw: dict, base: Path) -> DatasetSpec:
    raw = dict(raw)
    known = {"name", "type", "ratio"}
    options = {k: v for k, v in raw.items() if k not in known}
    for key in ("split_config", "json", "image_dir", "voc_annotations_dir"):
        if key in options:
            options[key] = str(resolve_path(options[key], base))
    return DatasetSpec(raw.get("name", raw["type"]), raw["type"], float(raw.get("ratio", 1.0)), options)


def _strict(cls, raw: dict, where: str):
    names = {f.name for f in fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    return cls(**raw)


def parse_train_config(raw: dict, base: Path, source: str = "") -> TrainConfig:
    model_raw = raw.get("model")
    if isinstance(model_raw, str):
        with open(resolve_path(model_raw, base)) as f:
            model_raw = yaml.safe_load(f)
    if not isinstance(model_raw, dict):
        raise ValueError("'model' must be a ModelConfig file path or a mapping")
    model = ModelConfig.from_dict(deep_merge(model_raw, raw.get("model_overrides") or {}))
    datasets = [_dataset(d, base) for d in raw.get("datasets") or []]
    if not datasets:
        raise ValueError("'datasets' must list at least one training dataset")
    optim = _strict(OptimConfig, raw.get("train") or {}, "train")
    val = None
    if raw.get("val"):
        val_raw = dict(raw["val"])
        extra = {
            k: val_raw.pop(k) for k in ("num_images", "object_threshold", "part_threshold") if k in val_raw
        }
        val = ValConfig(_dataset(val_raw, base), **extra)
    return TrainConfig(model, datasets, optim, val, source)


def load_train_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    with open(path) as f:
        raw = yaml.safe_load(f)
    unknown = set(raw) - {"model", "model_overrides", "datasets", "val", "train"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {sorted(unknown)}")
    return parse_train_config(raw, path.parent, str(path))
