"""TensorRT engine handling (issue #6): metadata, the stale-engine decision, the operator-support checker,
and - only where TensorRT 10.x and CUDA work - a real engine build, run (in a fresh process) and rebuild.

The decision logic is pure Python and tested everywhere; no machine of this project's CI has TensorRT, so
the tests marked ``needs_tensorrt`` are skipped there (the skip reason says so).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engines.build_engine import (
    cached_calibration,
    check_tensorrt_version,
    save_timing_cache,
    tensorrt_logger,
)
from engines.build_engine import main as build_main
from engines.engine_metadata import (
    Action,
    BuildOptions,
    EngineMetadata,
    EngineStaleError,
    Platform,
    Profile,
    decide,
    metadata_path,
    read_metadata,
    write_metadata,
)
from engines.op_support import check_model, load_operator_list
from partglee_ros.config import file_sha256
from partglee_ros.runtime.backends.base import BackendError, parse_device
from partglee_ros.runtime.factory import make_backend

REPO = Path(__file__).resolve().parents[1]
ORIN = Platform("10.3.0", "Orin", "8.7")
PROFILES = {"object_text": Profile(1, 8, 64), "part_text": Profile(1, 16, 128)}


def _has_tensorrt_10_and_cuda() -> bool:
    """TensorRT 11 is refused by the build and the backend (test below), so only 10.x can run the GPU test."""
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import tensorrt
    import torch

    try:
        check_tensorrt_version(tensorrt.__version__)
    except RuntimeError:
        return False
    return torch.cuda.is_available()


needs_tensorrt = pytest.mark.skipif(
    not _has_tensorrt_10_and_cuda(),
    reason="needs TensorRT 10.x (the tensorrt package) and a CUDA GPU (not on this machine)",
)


def _fake_tensorrt(monkeypatch: pytest.MonkeyPatch, version: str) -> types.ModuleType:
    """A stand-in ``tensorrt`` module of this version, for the checks made before TensorRT is used."""
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


@pytest.fixture()
def built(tmp_path: Path) -> tuple[Path, Path]:
    """An ONNX file and an 'engine' with metadata saying it was built from it on ORIN in fp16.

    The decision only hashes the engine's bytes (TensorRT would parse them), so any bytes stand in here.
    """
    onnx_path, engine_path = tmp_path / "model.onnx", tmp_path / "model.engine"
    onnx_path.write_bytes(b"onnx graph v1")
    engine_path.write_bytes(b"serialized engine")
    write_metadata(
        engine_path,
        EngineMetadata(
            file_sha256(onnx_path),
            file_sha256(engine_path),
            ORIN,
            "fp16",
            PROFILES,
            (1, 3, 256, 320),
            1024,
            timing_cache="/opt/models/timing.cache",
        ),
    )
    return onnx_path, engine_path


def test_metadata_round_trip_next_to_the_engine(built) -> None:
    _, engine_path = built
    assert metadata_path(engine_path).name == "model.engine.json"
    meta = read_metadata(engine_path)
    assert meta.platform == ORIN and meta.precision == "fp16" and meta.profiles == PROFILES
    assert meta.image_shape == (1, 3, 256, 320)
    assert json.loads(metadata_path(engine_path).read_text())["platform"]["compute_capability"] == "8.7"


def test_fresh_engine_is_loaded(built) -> None:
    onnx_path, engine_path = built
    decision = decide(engine_path, onnx_path, ORIN, rebuild_stale=False)
    assert decision.action is Action.LOAD and decision.reasons == ()
    # what was checked travels with the decision: the backend holds the bytes it loads to that, not to a
    # .json read again later (an engine and .json pair swapped in between would load unchecked)
    assert decision.metadata == read_metadata(engine_path)


@pytest.mark.parametrize(
    ("change", "platform", "message"),
    [
        ("onnx", ORIN, r"ONNX model changed \(engine built from sha256 [0-9a-f]{12}"),
        (
            "",
            Platform("10.7.0", "Orin", "8.7"),
            r"TensorRT version changed \(built with 10.3.0, running 10.7.0\)",
        ),
        (
            "",
            Platform("10.3.0", "NVIDIA GeForce RTX 4090", "8.9"),
            r"GPU changed \(built for Orin sm_8.7",
        ),
    ],
)
def test_stale_engine_is_refused_naming_what_changed(built, change, platform, message) -> None:
    onnx_path, engine_path = built
    if change == "onnx":
        onnx_path.write_bytes(b"onnx graph v2")
    with pytest.raises(EngineStaleError, match=message) as info:
        decide(engine_path, onnx_path, platform, rebuild_stale=False)
    assert "refusing TensorRT engine" in str(info.value) and "rebuild_stale_engine:=true" in str(info.value)


def test_every_mismatch_is_listed_at_once(built) -> None:
    onnx_path, engine_path = built
    onnx_path.write_bytes(b"onnx graph v2")
    with pytest.raises(EngineStaleError) as info:
        decide(engine_path, onnx_path, Platform("10.7.0", "Thor", "11.0"), False)
    text = str(info.value)
    assert all(s in text for s in ("ONNX model changed", "TensorRT version", "GPU changed"))


def test_missing_or_corrupt_metadata_or_engine_is_stale(built) -> None:
    onnx_path, engine_path = built
    for text in ("{not json", "[" * 100_000 + "]" * 100_000):  # the second: RecursionError in json
        metadata_path(engine_path).write_text(text)
        with pytest.raises(EngineStaleError, match="unreadable"):
            decide(engine_path, onnx_path, ORIN, False)
    metadata_path(engine_path).unlink()
    with pytest.raises(EngineStaleError, match="metadata .* is missing"):
        decide(engine_path, onnx_path, ORIN, False)
    engine_path.unlink()
    with pytest.raises(EngineStaleError, match="does not exist"):
        decide(engine_path, onnx_path, ORIN, False)
    engine_path.write_bytes(b"")  # e.g. a copy that failed
    with pytest.raises(EngineStaleError, match="is empty"):
        decide(engine_path, onnx_path, ORIN, False)


def _corrupt(engine_path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(metadata_path(engine_path).read_text())
    change(data)
    metadata_path(engine_path).write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(profiles=[]), "AttributeError"),
        (lambda d: d["profiles"].pop("part_text"), r"profiles must be given for .* got \['object_text'\]"),
        (lambda d: d["profiles"].update(image={"min": 1, "opt": 1, "max": 1}), "profiles must be given"),
        (lambda d: d["profiles"].update(part_text=5), "TypeError"),
        (lambda d: d["profiles"]["part_text"].update(max=2.5), "profile sizes must be integers"),
        (lambda d: d["profiles"]["part_text"].update(min=0), "1 <= min <= opt <= max"),
        (lambda d: d.update(platform="Orin"), "TypeError"),
        (lambda d: d.update(onnx_sha256=3), "onnx_sha256 must be a string"),
        (lambda d: d.update(workspace_mib="lots"), "workspace_mib must be an integer"),
        (lambda d: d.update(timing_cache=7), "timing_cache must be a path or null"),
        (lambda d: d.update(precision="bf16"), "precision must be one of"),
        (lambda d: d.clear(), "KeyError"),
        (lambda d: d.pop("metadata_version"), "KeyError: 'metadata_version'"),
        (lambda d: d.update(metadata_version="2"), "metadata_version must be an integer"),
        (lambda d: d.update(engine_sha256=None), "engine_sha256 must be a string"),
    ],
    ids=[
        "profiles-a-list",
        "profile-missing",
        "profile-extra",
        "profile-not-a-mapping",
        "profile-float",
        "profile-zero",
        "platform-a-string",
        "sha-not-a-string",
        "workspace-not-an-int",
        "timing-cache-not-a-path",
        "precision-unknown",
        "empty",
        "version-missing",
        "version-a-string",
        "engine-sha-missing",
    ],
)
def test_corrupt_metadata_makes_the_engine_stale_not_a_crash(built, change, message) -> None:
    """Whatever the file holds, reading it gives EngineStaleError (refused, or rebuilt with the defaults),
    never an exception of another type, now or later when the runtime reads the profiles or rebuilds."""
    onnx_path, engine_path = built
    _corrupt(engine_path, change)
    with pytest.raises(EngineStaleError, match=f"unreadable: .*{message}"):
        read_metadata(engine_path)
    with pytest.raises(EngineStaleError, match="unreadable"):
        decide(engine_path, onnx_path, ORIN, rebuild_stale=False)
    assert decide(engine_path, onnx_path, ORIN, rebuild_stale=True).options == BuildOptions()


def test_metadata_of_earlier_versions_with_an_extra_field_is_still_read(built) -> None:
    _, engine_path = built
    _corrupt(engine_path, lambda d: d.update(extra={}))
    assert read_metadata(engine_path).profiles == PROFILES


@pytest.mark.parametrize("how", ["damaged", "replaced", "truncated"])
def test_engine_file_changed_since_its_build_is_stale(built, how) -> None:
    """Before, an engine damaged other than emptied was found only by TensorRT's deserializer, and one
    copied over without its .json ran unverified under the old engine's metadata."""
    onnx_path, engine_path = built
    data = engine_path.read_bytes()
    changed = {"damaged": b"X" + data[1:], "replaced": b"another engine", "truncated": data[:-3]}[how]
    engine_path.write_bytes(changed)
    with pytest.raises(
        EngineStaleError, match=r"engine file is not the one built \(built as sha256 [0-9a-f]{12}"
    ):
        decide(engine_path, onnx_path, ORIN, rebuild_stale=False)
    decision = decide(engine_path, onnx_path, ORIN, rebuild_stale=True)  # rebuilt with its own options
    assert decision.action is Action.REBUILD
    assert decision.options == BuildOptions("fp16", PROFILES, 1024, timing_cache="/opt/models/timing.cache")


def test_version_1_metadata_is_stale_but_rebuilt_with_its_options(built) -> None:
    """Version 1 recorded no engine hash: its engines cannot be verified, but their options are kept."""
    onnx_path, engine_path = built
    _corrupt(engine_path, lambda d: (d.pop("engine_sha256"), d.update(metadata_version=1)))
    assert read_metadata(engine_path).engine_sha256 is None
    with pytest.raises(EngineStaleError, match=r"metadata version 1 \(this code writes 2\)"):
        decide(engine_path, onnx_path, ORIN, rebuild_stale=False)
    options = decide(engine_path, onnx_path, ORIN, rebuild_stale=True).options
    assert options == BuildOptions("fp16", PROFILES, 1024, timing_cache="/opt/models/timing.cache")


def test_stale_engine_whose_options_cannot_be_rebuilt_is_refused_with_the_reason(built) -> None:
    """int8 recorded without its calibration cache: a valid record of an engine, but no build options."""
    onnx_path, engine_path = built
    write_metadata(engine_path, dataclasses.replace(read_metadata(engine_path), precision="int8"))
    with pytest.raises(EngineStaleError, match="cannot be rebuilt with the options .* calibration cache"):
        decide(engine_path, onnx_path, Platform("10.7.0", "Orin", "8.7"), rebuild_stale=True)


def test_stale_engine_is_rebuilt_with_its_own_settings_when_configured(built) -> None:
    onnx_path, engine_path = built
    desktop = Platform("10.15.1", "NVIDIA GeForce RTX 4090", "8.9")
    decision = decide(engine_path, onnx_path, desktop, rebuild_stale=True)
    assert decision.action is Action.REBUILD
    assert any("TensorRT version changed" in r for r in decision.reasons)
    # the same precision, profiles, workspace and timing cache as the stale engine's build
    assert decision.options == BuildOptions("fp16", PROFILES, 1024, timing_cache="/opt/models/timing.cache")
    # a deleted engine is rebuilt as its metadata says; without metadata too, with the defaults
    engine_path.unlink()
    assert decide(engine_path, onnx_path, desktop, rebuild_stale=True).options == decision.options
    metadata_path(engine_path).unlink()
    assert decide(engine_path, onnx_path, ORIN, True).options == BuildOptions()


def test_stale_engine_without_its_onnx_cannot_be_rebuilt(built) -> None:
    onnx_path, engine_path = built
    onnx_path.unlink()
    with pytest.raises(EngineStaleError, match="cannot be rebuilt: ONNX model .* not found"):
        decide(engine_path, onnx_path, Platform("10.7.0", "Orin", "8.7"), rebuild_stale=True)


def test_int8_engine_of_another_onnx_is_not_rebuilt_on_its_old_calibration(built) -> None:
    """The calibration cache of an int8 engine holds its old graph's ranges; a rebuild from a new ONNX would
    reuse them silently (same tensor names after retraining), so it is refused with the recalibration
    command. A TensorRT or GPU change alone (same ONNX) is rebuilt as usual."""
    onnx_path, engine_path = built
    old = read_metadata(engine_path)
    write_metadata(
        engine_path,
        dataclasses.replace(old, precision="int8", int8_calibration_cache="/opt/models/int8.cache"),
    )
    desktop = Platform("10.15.1", "NVIDIA GeForce RTX 4090", "8.9")
    assert decide(engine_path, onnx_path, desktop, rebuild_stale=True).options.precision == "int8"
    onnx_path.write_bytes(b"onnx graph v2, retrained weights")
    with pytest.raises(EngineStaleError, match="int8 .* not rebuilt automatically.*/opt/models/int8.cache"):
        decide(engine_path, onnx_path, ORIN, rebuild_stale=True)


def test_calibration_text_is_fitted_to_the_profiles_opt_size() -> None:
    """TensorRT calibrates a dynamic input at its OPT shape and reads that many rows from the buffer it is
    given: fewer rows than that would be read out of bounds."""
    from engines.build_engine import fit_rows

    text = np.arange(12, dtype=np.float32).reshape(3, 4)
    longer = fit_rows(text, 7)
    assert longer.shape == (7, 4) and longer.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(longer, np.concatenate([text, text, text[:1]]))
    np.testing.assert_array_equal(fit_rows(text, 2), text[:2])


def test_calibration_feeds_are_the_segmenters_network_inputs(tmp_path: Path) -> None:
    """int8 ranges must be calibrated on what the runtime feeds: the same letterbox, the model's text."""
    import cv2

    from engines.calibration import calibration_feeds
    from partglee_ros.config import CONFIG_FILE, ModelConfig
    from partglee_ros.runtime.segmenter import letterbox

    ModelConfig(input_size=(320, 240)).save(tmp_path / CONFIG_FILE)
    images = tmp_path / "images"
    images.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (images / "notes.txt").write_text("not an image")
    [feed] = calibration_feeds(tmp_path, images, limit=10)
    np.testing.assert_array_equal(feed["image"], letterbox(rgb, (320, 240))[0])
    assert feed["object_text"].shape[1] == feed["part_text"].shape[1] == 384


def test_build_options_are_validated() -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile(1, 100, 10)
    with pytest.raises(ValueError, match="calibration cache"):
        BuildOptions(precision="int8")
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(BuildOptions(), precision="bf16")
    with pytest.raises(ValueError, match="workspace must be a positive number of MiB, got -1"):
        BuildOptions(workspace_mib=-1)


def test_build_engine_cli_checks_its_arguments_before_any_work(tmp_path: Path, capsys) -> None:
    """Bad options are usage errors, and without TensorRT the build says what it needs, in one line."""
    onnx_path = tmp_path / "model.onnx"
    onnx.save(_graph([helper.make_node("Relu", ["x"], ["y"])]), str(onnx_path))
    base = ["--onnx", str(onnx_path), "--engine", str(tmp_path / "model.engine")]
    for extra, message in [
        (["--k-obj", "0", "10", "5"], "min <= opt <= max"),
        (["--workspace-mib", "-1"], "workspace must be a positive number"),
        (["--calib-count", "0"], "--calib-count must be at least 1"),
    ]:
        with pytest.raises(SystemExit):
            build_main([*base, *extra])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_main(["--onnx", str(tmp_path / "absent.onnx"), "--engine", str(tmp_path / "e.engine")])
    assert "absent.onnx not found" in capsys.readouterr().err
    if importlib.util.find_spec("tensorrt") is None:
        assert build_main(base) == 2
        assert "needs the tensorrt Python package" in capsys.readouterr().err
    assert not (tmp_path / "model.engine").exists()


def test_only_tensorrt_10_is_accepted() -> None:
    """TensorRT 11 removed the FP16/INT8 builder flags and the INT8 calibrator: the build would stop with an
    AttributeError traceback, so any version but 10.x is refused with what to install."""
    for version in ("10.0.1", "10.3.0", "10.16.1.11"):
        check_tensorrt_version(version)
    for version in ("11.4.0.106", "8.6.2", "1.0", "100.0"):
        with pytest.raises(
            RuntimeError, match=rf"needs TensorRT 10.x, found {version} \(pip install 'tensorrt-cu12>=10,<11'"
        ):
            check_tensorrt_version(version)


def test_tensorrt_11_is_refused_in_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The CLI prints one line and builds nothing; the backend raises BackendError (auto's fallback, the
    node's start-up error) before it looks at CUDA or the engine."""
    _fake_tensorrt(monkeypatch, "11.4.0.106")
    onnx_path = tmp_path / "model.onnx"
    onnx.save(_graph([helper.make_node("Relu", ["x"], ["y"])]), str(onnx_path))
    assert build_main(["--onnx", str(onnx_path), "--engine", str(tmp_path / "model.engine")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "build_engine: error: needs TensorRT 10.x, found 11.4.0.106 (pip install 'tensorrt-cu12>=10,<11'; "
        "on a Jetson: JetPack 6.1 or later)\n"
    )
    assert not (tmp_path / "model.engine").exists()
    with pytest.raises(BackendError, match=r"^backend 'tensorrt' needs TensorRT 10.x, found 11.4.0.106"):
        make_backend(tmp_path, "tensorrt", device="cuda:7", engine_path=str(tmp_path / "model.engine"))


@pytest.fixture()
def gpu_without_tensorrt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """TensorRTBackend's module as it is on an Orin with TensorRT 10.3, up to the first call into TensorRT
    itself (none is made before the engine is checked and, when stale, rebuilt)."""
    import torch

    from partglee_ros.runtime.backends import tensorrt_backend

    _fake_tensorrt(monkeypatch, "10.3.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(tensorrt_backend, "current_platform", lambda index: ORIN)
    return tensorrt_backend


@pytest.mark.parametrize(
    "error",
    [
        PermissionError(13, "Permission denied", "/opt/models/.model.engine.42.tmp"),
        ValueError("bad value"),
        AttributeError("'IBuilderConfig' object has no attribute 'x'"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_failed_rebuild_is_a_backend_error_whatever_it_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu_without_tensorrt: types.ModuleType, error: Exception
) -> None:
    """Only RuntimeError was caught: a read-only engine folder (OSError) went past auto's fallback and the
    node's start-up error as a traceback."""

    def failing_build(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(gpu_without_tensorrt, "build_engine", failing_build)
    onnx_path, engine_path = tmp_path / "model.onnx", tmp_path / "model.engine"
    onnx_path.write_bytes(b"onnx graph")  # no engine: rebuilt, and the build fails
    with pytest.raises(
        BackendError, match=rf"^rebuilding {engine_path} failed: {type(error).__name__}: "
    ) as caught:
        gpu_without_tensorrt.TensorRTBackend(engine_path, onnx_path, rebuild_stale=True)
    assert caught.value.__cause__ is error


def test_an_engine_that_cannot_be_read_for_its_check_is_a_backend_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu_without_tensorrt: types.ModuleType
) -> None:
    def unreadable(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "model.engine"))

    monkeypatch.setattr(gpu_without_tensorrt, "decide", unreadable)
    with pytest.raises(
        BackendError, match=r"^cannot check TensorRT engine .*model.engine: .*Permission denied"
    ):
        gpu_without_tensorrt.TensorRTBackend(tmp_path / "model.engine", tmp_path / "model.onnx")


def test_build_and_runtime_share_one_logger_with_the_plugins_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TensorRT keeps one logger per process; and a process that only deserializes (the node) must register
    the standard plugins itself, or an engine holding ModulatedDeformConv2d (opset-19 DeformConv) fails."""
    trt = _fake_tensorrt(monkeypatch, "10.3.0")
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})
    registered = []
    trt.init_libnvinfer_plugins = lambda logger, namespace: registered.append((logger, namespace)) or True
    tensorrt_logger.cache_clear()
    try:
        logger = tensorrt_logger()
        assert tensorrt_logger() is logger and registered == [(logger, "")]
    finally:
        tensorrt_logger.cache_clear()


def test_calibration_images_recalibrate_over_an_existing_cache(tmp_path: Path) -> None:
    """With images TensorRT is handed no cache, so it calibrates on them and overwrites the file: before,
    an existing cache was returned and the new images (after retraining) were silently ignored. Without
    images the cache is what calibrates."""
    cache = tmp_path / "calib.cache"
    assert cached_calibration(cache, calibrating=False) is None
    cache.write_bytes(b"TRT-calibration v1")
    assert cached_calibration(cache, calibrating=True) is None
    assert cached_calibration(cache, calibrating=False) == b"TRT-calibration v1"


def test_timing_cache_is_replaced_whole_and_a_write_failure_only_warns(tmp_path: Path, caplog) -> None:
    """It is written after the engine and its metadata: a full or read-only disk must not fail a finished
    build, nor leave half a cache or a temporary file behind."""
    path = tmp_path / "timing.cache"
    path.write_bytes(b"old")
    save_timing_cache(path, b"new timing data")
    assert path.read_bytes() == b"new timing data" and sorted(tmp_path.iterdir()) == [path]
    blocked = tmp_path / "a-directory"
    blocked.mkdir()  # os.replace cannot put a file there: an OSError after the temporary file is written
    with caplog.at_level(logging.WARNING, logger="engines.build_engine"):
        save_timing_cache(blocked, b"new timing data")
        save_timing_cache(path / "under-a-file", b"x")  # NotADirectoryError before anything is written
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        f"timing cache {blocked} not written",
        f"timing cache {path / 'under-a-file'} not written",
    ]
    assert sorted(tmp_path.iterdir()) == [blocked, path] and not any(blocked.iterdir())


def _graph(nodes: list, opset: int = 17, domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    k = helper.make_tensor("k", TensorProto.INT64, [1], [2])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[k])
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    return helper.make_model(graph, opset_imports=imports)


def test_operator_checker_flags_what_tensorrt_cannot_parse() -> None:
    ops = load_operator_list()
    assert (
        ops.tensorrt_version.startswith("10.")
        and "GridSample" in ops.supported
        and "Unique" in ops.unsupported
    )
    assert check_model(_graph([helper.make_node("Relu", ["x"], ["y"])]), ops) == []
    [problem] = check_model(_graph([helper.make_node("Unique", ["x"], ["y"])]), ops)
    assert "Unique" in problem and "unsupported" in problem
    topk = helper.make_node("TopK", ["x", "k"], ["y", "i"], sorted=0)
    assert any("sorted must be 1" in p for p in check_model(_graph([topk]), ops))
    custom = helper.make_node("MSDeformAttn", ["x"], ["y"], domain="com.example")
    assert any("needs a plugin" in p for p in check_model(_graph([custom], domains=("com.example",)), ops))
    assert any(
        "opset 8 outside" in p for p in check_model(_graph([helper.make_node("Relu", ["x"], ["y"])], 8), ops)
    )


def test_operator_checker_reads_constants_and_ranks_inside_subgraphs() -> None:
    """An If branch: its TopK's K is a value_ints Constant of the branch, its GridSample's input a 4-D
    value computed there; an unsupported op in the other branch is still found."""
    grid = helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 8, 8, 2])
    kept = [
        helper.make_node("Constant", [], ["kk"], value_ints=[2]),
        helper.make_node("TopK", ["x", "kk"], ["top", "idx"]),
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("GridSample", ["r", "grid"], ["y_then"]),
    ]
    then_out = helper.make_tensor_value_info("y_then", TensorProto.FLOAT, None)
    else_out = helper.make_tensor_value_info("y_else", TensorProto.FLOAT, None)
    then_branch = helper.make_graph(kept, "then", [], [then_out])
    else_branch = helper.make_graph([helper.make_node("Unique", ["x"], ["y_else"])], "else", [], [else_out])
    cond = helper.make_node("Constant", [], ["c"], value_int=1)
    branch = helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)
    model = _graph([cond, branch])
    model.graph.input.append(grid)
    problems = check_model(model)
    assert len(problems) == 1 and "Unique" in problems[0], problems


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_backend_without_tensorrt_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="needs the tensorrt Python package"):
        make_backend(tmp_path, "tensorrt", engine_path=str(tmp_path / "model.engine"))


def test_tensorrt_device_parameter_names_a_cuda_device(tmp_path: Path) -> None:
    assert [parse_device(d) for d in ("cpu", "cuda", "cuda:0", "cuda:3")] == [None, 0, 0, 3]
    for bad in ("cuda:x", "gpu1", "cuda:", "cuda:-1"):
        with pytest.raises(BackendError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
            parse_device(bad)
    # checked before anything is imported or loaded, so the message is about the device, not TensorRT
    with pytest.raises(BackendError, match="got 'cuda:one'"):
        make_backend(tmp_path, "tensorrt", device="cuda:one", engine_path=str(tmp_path / "model.engine"))


# Loads and runs an engine as the node does at start-up: in a process that never parsed an ONNX (so TensorRT's
# plugins are registered only if the backend does it). argv: engine, onnx, feeds .npz, outputs .npz.
RUN_ENGINE = """
import sys
from pathlib import Path

import numpy as np

from partglee_ros.runtime.backends.tensorrt_backend import TensorRTBackend

engine_path, onnx_path, feeds_path, out_path = map(Path, sys.argv[1:])
backend = TensorRTBackend(engine_path, onnx_path)
feeds = np.load(feeds_path)
outputs = {}
for name in feeds.files:
    if name.startswith("text"):
        got = backend.infer(feeds["image"], feeds[name], feeds[name])
        outputs.update({f"{output}/{name}": value for output, value in got.items()})
np.savez(out_path, **outputs)
"""


@needs_tensorrt
def test_tensorrt_engine_builds_runs_and_is_rebuilt_when_stale(tmp_path: Path) -> None:
    from engines.build_engine import build_engine
    from engines.export_onnx import export_onnx, image_shape
    from partglee_ros.config import load_checkpoint
    from partglee_ros.runtime.backends.onnx_backend import OnnxBackend
    from partglee_ros.runtime.backends.tensorrt_backend import TensorRTBackend
    from tests.ros_testing import small_checkpoint

    model, config = load_checkpoint(small_checkpoint(tmp_path))
    onnx_path = export_onnx(model, config, tmp_path / "model.onnx")  # default opset: DeformConv, a plugin
    engine_path = tmp_path / "model.engine"
    timing_cache = tmp_path / "timing.cache"
    build_engine(onnx_path, engine_path, BuildOptions("fp32", PROFILES, 1024, timing_cache=str(timing_cache)))
    assert timing_cache.is_file() and read_metadata(engine_path).timing_cache == str(timing_cache)
    rng = np.random.default_rng(0)
    feeds = {"image": rng.normal(size=image_shape(config)).astype(np.float32)}
    for k in (1, 5, 50):
        feeds[f"text{k}"] = rng.normal(size=(k, config.text_dim)).astype(np.float32)
    np.savez(tmp_path / "feeds.npz", **feeds)
    paths = [engine_path, onnx_path, tmp_path / "feeds.npz", tmp_path / "outputs.npz"]
    run = subprocess.run(
        [sys.executable, "-c", RUN_ENGINE, *map(str, paths)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    ort_backend = OnnxBackend(onnx_path)
    with np.load(tmp_path / "outputs.npz") as got:
        for k in (1, 5, 50):
            text = feeds[f"text{k}"]
            ref = ort_backend.infer(feeds["image"], text, text)
            assert np.abs(got[f"obj_logits/text{k}"] - ref["obj_logits"]).max() < 1e-2
            assert np.abs(got[f"obj_boxes/text{k}"] - ref["obj_boxes"]).max() < 1e-3
    # pretend the engine came from another TensorRT: refused, then rebuilt when allowed
    meta = read_metadata(engine_path)
    old = dataclasses.replace(meta, platform=dataclasses.replace(meta.platform, tensorrt_version="9.0.0"))
    write_metadata(engine_path, old)
    with pytest.raises(BackendError, match="TensorRT version changed"):
        TensorRTBackend(engine_path, onnx_path)
    TensorRTBackend(engine_path, onnx_path, rebuild_stale=True, device="cuda:0")
    rebuilt = read_metadata(engine_path)  # builds are not bit-identical: the engine's hash may differ
    assert dataclasses.replace(rebuilt, engine_sha256=meta.engine_sha256) == meta  # same platform, options
    assert rebuilt.engine_sha256 == file_sha256(engine_path)
    with engine_path.open("r+b") as f:  # damaged in place (a bad copy): refused before TensorRT reads it
        f.write(b"\0" * 64)
    with pytest.raises(BackendError, match="engine file is not the one built"):
        TensorRTBackend(engine_path, onnx_path)
