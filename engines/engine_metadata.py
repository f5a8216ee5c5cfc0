"""What a TensorRT engine was built from and for, kept in ``<engine>.json`` next to the engine.

A serialized engine only runs on the TensorRT version and GPU it was built with, and only matches the ONNX
it was built from; loading a mismatching one fails late and cryptically (or, worse, runs an old model).
This module is pure Python so the runtime can decide *fresh / stale / rebuild* before importing TensorRT,
and tests can check that decision on machines without it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from partglee_ros.config import file_sha256, write_atomically

METADATA_VERSION = 2  # 2: the engine file's own sha256 (1 had none)
PRECISIONS = ("fp32", "fp16", "int8")
VOCABULARY_INPUTS = ("object_text", "part_text")


class EngineStaleError(RuntimeError):
    """The engine does not match its ONNX, this TensorRT or this GPU; the message lists each mismatch."""


@dataclass(frozen=True)
class Platform:
    """Where an engine is (to be) run: what TensorRT and the CUDA device report."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" (Orin), "8.9" (Ada), ...


@dataclass(frozen=True)
class Profile:
    """TensorRT optimization profile for one dynamic dimension: min <= opt <= max."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not all(type(v) is int for v in (self.min, self.opt, self.max)):
            raise ValueError(f"profile sizes must be integers, got {self}")
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"profile must satisfy 1 <= min <= opt <= max, got {self}")

    def contains(self, k: int) -> bool:
        return self.min <= k <= self.max


def _check_profiles(profiles: Mapping[str, Profile]) -> None:
    """One Profile per vocabulary input: what a build needs and what the runtime's limits read."""
    if not isinstance(profiles, Mapping) or set(profiles) != set(VOCABULARY_INPUTS):
        names = sorted(profiles) if isinstance(profiles, Mapping) else profiles
        raise ValueError(f"profiles must be given for {VOCABULARY_INPUTS}, got {names!r}")
    if not all(isinstance(p, Profile) for p in profiles.values()):
        raise ValueError(f"profiles must be Profile(min, opt, max), got {dict(profiles)!r}")


@dataclass(frozen=True)
class EngineMetadata:
    onnx_sha256: str
    engine_sha256: str | None  # None only in version-1 files, which are stale anyway
    platform: Platform
    precision: str
    profiles: dict[str, Profile]  # input name -> profile of its first (vocabulary) dimension
    image_shape: tuple[int, ...]  # the fixed (1, 3, H, W) input
    workspace_mib: int = 0
    int8_calibration_cache: str | None = None
    timing_cache: str | None = None  # the file the build read and updated; a rebuild uses it again
    metadata_version: int = METADATA_VERSION

    def __post_init__(self) -> None:
        """Checks what a comparison, the runtime's limits or a rebuild reads, so a corrupt file is found
        here (and the engine counted stale) rather than as a crash later."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check_profiles(self.profiles)
        if type(self.metadata_version) is not int:
            raise ValueError(f"metadata_version must be an integer, got {self.metadata_version!r}")
        if not isinstance(self.onnx_sha256, str):
            raise ValueError(f"onnx_sha256 must be a string, got {self.onnx_sha256!r}")
        if not (
            isinstance(self.engine_sha256, str) or (self.engine_sha256 is None and self.metadata_version == 1)
        ):
            raise ValueError(f"engine_sha256 must be a string, got {self.engine_sha256!r}")
        if type(self.workspace_mib) is not int or self.workspace_mib < 0:
            raise ValueError(f"workspace_mib must be an integer >= 0, got {self.workspace_mib!r}")
        for name in ("int8_calibration_cache", "timing_cache"):
            if not isinstance(getattr(self, name), str | None):
                raise ValueError(f"{name} must be a path or null, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineMetadata:
        data = dict(data)
        # Written (always empty) by earlier versions of this module; dropped so their engines stay valid.
        data.pop("extra", None)
        if "metadata_version" not in data:  # not defaulted: a file without it is not ours to trust
            raise KeyError("metadata_version")
        if data["metadata_version"] == 1:  # read, so a rebuild keeps its options; stale by its version
            data.setdefault("engine_sha256", None)
        data["platform"] = Platform(**data["platform"])
        data["profiles"] = {name: Profile(**p) for name, p in data["profiles"].items()}
        data["image_shape"] = tuple(data["image_shape"])
        return cls(**data)


def metadata_path(engine_path: Path) -> Path:
    """``model.engine`` -> ``model.engine.json`` (a suffix, so two engines in one folder never collide)."""
    return engine_path.with_name(engine_path.name + ".json")


def write_metadata(engine_path: Path, metadata: EngineMetadata) -> Path:
    """Written atomically: a reader never sees half a file."""
    path = metadata_path(engine_path)
    write_atomically(path, (json.dumps(metadata.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return path


def read_metadata(engine_path: Path) -> EngineMetadata:
    """Raises EngineStaleError when the file is missing or unreadable: an engine without metadata cannot be
    trusted, so it is treated like a stale one (and rebuilt when that is allowed)."""
    path = metadata_path(engine_path)
    if not path.is_file():
        raise EngineStaleError(f"engine metadata {path} is missing, so {engine_path.name} cannot be verified")
    try:
        return EngineMetadata.from_dict(json.loads(path.read_text()))
    # AttributeError: a list for a dict; RecursionError: absurdly nested JSON
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        raise EngineStaleError(f"engine metadata {path} is unreadable: {type(err).__name__}: {err}") from err


def mismatches(
    found: EngineMetadata, engine_sha256: str, onnx_sha256: str | None, platform: Platform
) -> list[str]:
    """Human-readable differences between what the engine was built for and what is here now.

    ``engine_sha256`` is the engine file's hash now: a file damaged or replaced since its build would
    otherwise be found only when TensorRT fails to deserialize it (or, replaced, would run unverified).
    ``onnx_sha256`` None skips the model check (no ONNX next to the engine). Precision is not compared: an
    engine runs in the precision it was built with.
    """
    problems = []
    if found.metadata_version != METADATA_VERSION:
        problems.append(f"metadata version {found.metadata_version} (this code writes {METADATA_VERSION})")
    elif found.engine_sha256 != engine_sha256:
        problems.append(
            f"engine file is not the one built (built as sha256 {found.engine_sha256[:12]}, the file is now "
            f"{engine_sha256[:12]}: damaged, replaced, or being rebuilt right now)"
        )
    if onnx_sha256 is not None and found.onnx_sha256 != onnx_sha256:
        problems.append(
            f"ONNX model changed (engine built from sha256 {found.onnx_sha256[:12]}, "
            f"the ONNX is now {onnx_sha256[:12]})"
        )
    built = found.platform
    if built.tensorrt_version != platform.tensorrt_version:
        problems.append(
            f"TensorRT version changed (built with {built.tensorrt_version}, "
            f"running {platform.tensorrt_version})"
        )
    if built.gpu_name != platform.gpu_name or built.compute_capability != platform.compute_capability:
        problems.append(
            f"GPU changed (built for {built.gpu_name} sm_{built.compute_capability}, "
            f"running on {platform.gpu_name} sm_{platform.compute_capability})"
        )
    return problems


@dataclass(frozen=True)
class BuildOptions:
    """How to build an engine; a rebuild reuses the stale engine's options so only the platform changes."""

    precision: str = "fp16"
    profiles: dict[str, Profile] = field(
        default_factory=lambda: {"object_text": Profile(1, 10, 100), "part_text": Profile(1, 20, 200)}
    )
    workspace_mib: int = 2048
    int8_calibration_cache: str | None = None
    timing_cache: str | None = None  # read if present, written after the build

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _check_profiles(self.profiles)
        if not (isinstance(self.workspace_mib, int) and self.workspace_mib > 0):
            raise ValueError(f"workspace must be a positive number of MiB, got {self.workspace_mib!r}")
        if self.precision == "int8" and not self.int8_calibration_cache:
            raise ValueError("int8 needs a calibration cache path (written by the first calibrated build)")

    @classmethod
    def from_metadata(cls, metadata: EngineMetadata) -> BuildOptions:
        return cls(
            metadata.precision,
            dict(metadata.profiles),
            metadata.workspace_mib,
            metadata.int8_calibration_cache,
            metadata.timing_cache,
        )


class Action(Enum):
    LOAD = "load"
    REBUILD = "rebuild"


@dataclass(frozen=True)
class Decision:
    action: Action
    reasons: tuple[str, ...]  # why a rebuild is needed (empty for LOAD)
    options: BuildOptions | None = None  # for REBUILD: the stale engine's settings (or defaults)
    metadata: EngineMetadata | None = None  # for LOAD: what was checked, for the load to hold the bytes to


def decide(
    engine_path: Path,
    onnx_path: Path | None,
    platform: Platform,
    rebuild_stale: bool,
) -> Decision:
    """Load a fresh engine, rebuild a stale one when allowed, otherwise raise EngineStaleError naming
    every mismatch and how to fix it."""
    onnx_hash = file_sha256(onnx_path) if onnx_path is not None and onnx_path.is_file() else None
    previous = None
    if not engine_path.is_file() or engine_path.stat().st_size == 0:
        reasons = [f"engine {engine_path} {'is empty' if engine_path.is_file() else 'does not exist'}"]
        # its metadata still says how it was built (an int8 engine is rebuilt as int8, or refused below)
        with contextlib.suppress(EngineStaleError):
            previous = read_metadata(engine_path)
    else:
        try:
            previous = read_metadata(engine_path)
            reasons = mismatches(previous, file_sha256(engine_path), onnx_hash, platform)
        except EngineStaleError as err:
            reasons = [str(err)]
    if not reasons:
        return Decision(Action.LOAD, (), metadata=previous)
    if rebuild_stale:
        if onnx_hash is None:
            raise EngineStaleError(
                f"engine {engine_path.name} is stale ({'; '.join(reasons)}) and cannot be rebuilt: "
                f"ONNX model {onnx_path} not found"
            )
        if previous is not None and previous.precision == "int8" and previous.onnx_sha256 != onnx_hash:
            # Its calibration cache holds the old graph's ranges: under the same tensor names (new weights)
            # TensorRT would reuse them silently, and the int8 engine would lose accuracy.
            raise EngineStaleError(
                f"int8 engine {engine_path.name} is stale ({'; '.join(reasons)}) and is not rebuilt "
                f"automatically: its calibration cache {previous.int8_calibration_cache} belongs to the old "
                f"ONNX. Recalibrate: `python -m engines.build_engine --onnx {onnx_path} --engine {engine_path} "
                "--precision int8 --calib-images DIR --calib-cache NEW_CACHE`"
            )
        try:
            options = BuildOptions.from_metadata(previous) if previous is not None else BuildOptions()
        except ValueError as err:  # e.g. int8 recorded without its calibration cache
            raise EngineStaleError(
                f"engine {engine_path.name} is stale ({'; '.join(reasons)}) and cannot be rebuilt with the "
                f"options its metadata records: {err}"
            ) from err
        return Decision(Action.REBUILD, tuple(reasons), options)
    raise EngineStaleError(
        f"refusing TensorRT engine {engine_path}: {'; '.join(reasons)}. Rebuild it with "
        f"`python -m engines.build_engine --onnx {onnx_path} --engine {engine_path}` or set "
        "rebuild_stale_engine:=true"
    )
