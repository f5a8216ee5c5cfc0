"""The INT8 graph for ONNX Runtime (engines.quantize_onnx) and `precision: int8` (issue #6).

Its outputs cannot be compared query by query with the fp32 graph's: the decoder's queries are the encoder's
top-scoring tokens, and a small change in the features picks other ones. So it is checked on what a user
sees: the objects segment() finds on SynthParts scenes (the bundled model where it exists).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime
import pytest

from engines.calibration import calibration_feeds
from engines.export_onnx import export_onnx
from engines.quantize_onnx import SPLIT_CONFIG, quantize_onnx, synthparts_images
from engines.quantize_onnx import main as quantize_main
from partglee_ros.config import (
    ONNX_FILE,
    ONNX_INT8_FILE,
    ONNX_INT8_SOURCE_KEY,
    WEIGHTS_FILE,
    WEIGHTS_SHA256_KEY,
    file_sha256,
    load_checkpoint,
    weights_digest,
)
from partglee_ros.runtime.backends.base import BackendError
from partglee_ros.runtime.factory import load_segmenter, make_backend
from tests.checkpoints import parity_model_dir
from tests.output_parity import mask_iou
from training.data.synthparts import load_split_config, split_scenes
from training.validation import synthparts_vocabulary

SPLIT = load_split_config(SPLIT_CONFIG)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A model folder with model.onnx and model.int8.onnx, calibrated on 8 SynthParts validation scenes."""
    directory = parity_model_dir(tmp_path_factory.mktemp("model"))
    model, config = load_checkpoint(directory)
    export_onnx(model, config, directory / ONNX_FILE, weights_sha256=weights_digest(directory))
    images = synthparts_images(tmp_path_factory.mktemp("calibration"), 8)
    quantize_onnx(directory / ONNX_FILE, directory / ONNX_INT8_FILE, calibration_feeds(directory, images, 8))
    return directory


def test_every_convolution_is_quantized_and_nothing_else(model_dir: Path) -> None:
    source = onnx.load(str(model_dir / ONNX_FILE))
    graph = onnx.load(str(model_dir / ONNX_INT8_FILE))
    onnx.checker.check_model(graph)
    producers = {out: node.op_type for node in graph.graph.node for out in node.output}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert len(convs) == sum(n.op_type == "Conv" for n in source.graph.node) > 0
    for conv in convs:  # activation and weight both come dequantized from int8
        assert producers.get(conv.input[0]) == producers.get(conv.input[1]) == "DequantizeLinear", conv.name
    # every quantized tensor is a convolution's input or output
    quantized = {n.output[0]: n.input[0] for n in graph.graph.node if n.op_type == "QuantizeLinear"}
    for dq in (n for n in graph.graph.node if n.op_type == "DequantizeLinear"):
        users = {n.op_type for n in graph.graph.node if dq.output[0] in n.input}
        source = quantized.get(dq.input[0])  # None: a weight, stored in int8
        assert users == {"Conv"} or producers.get(source) == "Conv", (dq.name, users)
    props = {p.key: p.value for p in graph.metadata_props}
    assert props[WEIGHTS_SHA256_KEY] == weights_digest(model_dir)
    assert props[ONNX_INT8_SOURCE_KEY] == file_sha256(model_dir / ONNX_FILE)
    assert not any(key.startswith("onnx.") for key in props)  # the quantizer's notes are dropped


def test_onnxruntime_runs_the_convolutions_as_int8_kernels(model_dir: Path, tmp_path: Path) -> None:
    """The Q/DQ pairs are fused into QLinearConv: otherwise the graph would only add work to fp32 convs."""
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    onnxruntime.InferenceSession(str(model_dir / ONNX_INT8_FILE), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    source = onnx.load(str(model_dir / ONNX_FILE))
    assert ops.count("QLinearConv") == sum(n.op_type == "Conv" for n in source.graph.node)
    assert "Conv" not in ops


def _matched_objects(fp32, int8, scenes) -> tuple[int, int]:
    """(fp32 objects, those with an int8 object of the same label whose mask overlaps it by IoU >= 0.5)."""
    found = matched = 0
    for scene in scenes:
        ref, got = fp32.segment(scene.image), int8.segment(scene.image)
        for obj in ref.objects:
            found += 1
            ious = [mask_iou(obj.mask, o.mask) for o in got.objects if o.label == obj.label]
            matched += max(ious, default=0.0) >= 0.5
    return found, matched


def test_the_int8_graph_finds_the_objects_the_fp32_graph_finds(model_dir: Path, tmp_path: Path) -> None:
    """On 16 SynthParts test scenes at the node's default thresholds; 30 of 33 matched in a 30-scene run of the
    bundled model. A graph calibrated on black images (ranges of nothing) finds few of them."""
    vocabulary = synthparts_vocabulary([*SPLIT.base_categories, *SPLIT.novel_categories])
    fp32 = load_segmenter(model_dir, backend="onnx")
    int8 = load_segmenter(model_dir, backend="onnx", precision="int8")
    black = tmp_path / "black"
    black.mkdir()
    for i in range(4):
        cv2.imwrite(str(black / f"{i}.png"), np.zeros((480, 640, 3), np.uint8))
    miscalibrated = tmp_path / "miscalibrated.onnx"
    quantize_onnx(model_dir / ONNX_FILE, miscalibrated, calibration_feeds(model_dir, black, 4))
    broken = load_segmenter(model_dir, backend="onnx", precision="int8", engine_path=str(miscalibrated))
    for segmenter in (fp32, int8, broken):
        segmenter.set_vocabulary(*vocabulary)
    scenes = list(split_scenes("test", SPLIT, limit=16))
    found, matched = _matched_objects(fp32, int8, scenes)
    assert found >= 10 and matched >= 0.8 * found, (found, matched)
    found, matched = _matched_objects(fp32, broken, scenes)
    assert matched < 0.5 * found, (found, matched)


def test_precision_int8_picks_the_int8_graph_and_says_how_to_make_a_missing_one(
    model_dir: Path, tmp_path: Path, caplog
) -> None:
    assert make_backend(model_dir, "onnx", precision="int8").describe() == "onnx/cpu, int8"
    assert make_backend(model_dir, "auto", precision="int8").metadata[ONNX_INT8_SOURCE_KEY]
    assert make_backend(model_dir, "onnx").describe() == "onnx/cpu, fp32"  # what the node logs
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    (bare / ONNX_INT8_FILE).unlink()
    with pytest.raises(BackendError, match=r"needs the int8 graph .*python -m engines\.quantize_onnx"):
        make_backend(bare, "onnx", precision="int8")
    with caplog.at_level(logging.WARNING):  # auto goes on with the fp32 graph, and says so
        fallback = make_backend(bare, "auto", precision="int8")
    assert fallback.name == "onnx" and ONNX_INT8_SOURCE_KEY not in fallback.metadata
    assert f"{ONNX_INT8_FILE} not used, falling back to fp32" in caplog.text
    with pytest.raises(BackendError, match=r"int8 with ONNX Runtime is for the CPU; on cuda use a TensorRT"):
        make_backend(
            model_dir, "onnx", device="cuda", precision="int8"
        )  # before any CUDA provider is looked for
    with pytest.raises(BackendError, match="unknown precision 'int4'; choose one of fp32, fp16, int8"):
        make_backend(model_dir, "onnx", precision="int4")
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a graph of the other kind named by engine_path runs, with a word
        make_backend(model_dir, "onnx", precision="int8", engine_path=str(model_dir / ONNX_FILE))
    assert "is a float graph, but precision is int8" in caplog.text
    (bare / ONNX_FILE).unlink()  # auto with neither graph: PyTorch, in fp32
    assert make_backend(bare, "auto", precision="int8").name == "torch"
    # an input size the graphs were not exported for: auto runs PyTorch, in fp32 too
    segmenter = load_segmenter(model_dir, "auto", precision="int8", input_size=(160, 128))
    assert segmenter.backend.name == "torch"


def test_an_int8_graph_of_other_weights_is_refused_with_the_way_to_make_it_again(
    model_dir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    weights = bytearray((other / WEIGHTS_FILE).read_bytes())
    weights[-1] ^= 1  # another weight value, still a readable file
    (other / WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(
        BackendError,
        match=r"other weights .*then `python -m engines\.quantize_onnx --model .* --calib-images IMAGES`",
    ):
        make_backend(other, "onnx", precision="int8")


def test_cli_makes_the_graph_again_only_when_model_onnx_changed(
    model_dir: Path, tmp_path: Path, capsys
) -> None:
    work = tmp_path / "work"
    shutil.copytree(model_dir, work)
    images = synthparts_images(tmp_path / "images", 2)
    assert quantize_main(["--model", str(work), "--calib-images", str(images), "--if-stale"]) == 0
    assert "is up to date" in capsys.readouterr().out
    graph = onnx.load(str(work / ONNX_FILE))
    graph.metadata_props.add(key="note", value="exported again")
    onnx.save(graph, str(work / ONNX_FILE))
    assert quantize_main(["--model", str(work), "--synthparts", "2", "--if-stale"]) == 0
    assert "wrote" in capsys.readouterr().out
    props = {p.key: p.value for p in onnx.load(str(work / ONNX_INT8_FILE)).metadata_props}
    assert props[ONNX_INT8_SOURCE_KEY] == file_sha256(work / ONNX_FILE) and props["note"] == "exported again"


def test_cli_refuses_a_folder_without_images_and_a_model_without_a_graph(
    tmp_path: Path, model_dir, capsys
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    assert (
        quantize_main(["--model", str(model_dir), "--calib-images", str(empty), "--out", str(tmp_path / "x")])
        == 2
    )
    assert "no readable images in" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as exit_info:
        quantize_main(["--model", str(tmp_path), "--synthparts", "2"])
    assert exit_info.value.code == 2
    assert "export it first" in capsys.readouterr().err
