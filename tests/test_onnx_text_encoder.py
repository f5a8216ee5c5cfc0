"""MiniLM on ONNX Runtime gives the sentence-transformers embeddings, for every kind of name (issue #6)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.export_text_encoder import write_model_text_encoder
from partglee_ros.config import ONNX_FILE, TEXT_ENCODER_FILE, write_atomically
from partglee_ros.model.text_encoder import SentenceTextEncoder, sentence_model_path
from partglee_ros.runtime.factory import make_text_encoder, read_model_config
from partglee_ros.runtime.onnx_text_encoder import OnnxSentenceTextEncoder, cache_key
from tests.checkpoints import DEFAULT_MODEL
from tests.conftest import REPO

NAMES = [
    "mug",
    "handle",
    "mug:handle",  # prompted as "handle of a mug"
    "cutting_board",
    "remote control",
    "Griff der Tasse",
    "把手",
    "🙂 cup",
    "a",
    "x" * 600,  # beyond MiniLM's 256 tokens: truncated the same way
    "the long handle of the big blue enamel kettle on the stove",
]


@pytest.fixture(scope="module")
def encoders() -> tuple[SentenceTextEncoder, OnnxSentenceTextEncoder]:
    return SentenceTextEncoder(), OnnxSentenceTextEncoder.cached()


def test_same_embeddings_as_sentence_transformers(encoders) -> None:
    reference, onnx = encoders
    ref, got = reference.encode(NAMES), onnx.encode(NAMES)
    assert got.shape == ref.shape == (len(NAMES), reference.dim)
    assert got.dtype == ref.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-5
    # grouping by token count must not mix rows up
    assert np.array_equal(onnx.encode(NAMES[::-1]), got[::-1])
    assert onnx.encode([]).shape == (0, reference.dim)


def test_runtime_uses_the_onnx_encoder_for_minilm_models() -> None:
    encoder = make_text_encoder(read_model_config(DEFAULT_MODEL))
    assert isinstance(encoder.encoder, OnnxSentenceTextEncoder)


def test_a_model_directory_ships_its_text_encoder(tmp_path: Path, encoders, caplog) -> None:
    """export_onnx writes the MiniLM graph into the model directory (scripts/setup.sh does for the default
    model) and the runtime takes it from there. ``--if-stale`` keeps it only while the encoder's files are
    the ones it was exported from. A damaged one, another graph, or one whose info file does not match it
    falls back to the encoder's own files with a warning, found at load, not at the first vocabulary."""
    reference, _ = encoders
    config = read_model_config(DEFAULT_MODEL)
    encoder = make_text_encoder(config, DEFAULT_MODEL).encoder
    assert encoder.graph_file == DEFAULT_MODEL / TEXT_ENCODER_FILE
    assert np.abs(encoder.encode(NAMES) - reference.encode(NAMES)).max() <= 1e-5

    shipped = write_model_text_encoder(tmp_path, config)
    assert shipped == tmp_path / TEXT_ENCODER_FILE
    info = json.loads(shipped.with_suffix(".json").read_text())
    assert info["source_key"] == cache_key(sentence_model_path())
    written = shipped.stat().st_mtime_ns
    assert write_model_text_encoder(tmp_path, config, if_stale=True) == shipped
    assert shipped.stat().st_mtime_ns == written  # up to date: not exported again
    shipped.with_suffix(".json").write_text(json.dumps({**info, "source_key": "other encoder files"}))
    write_model_text_encoder(tmp_path, config, if_stale=True)
    assert json.loads(shipped.with_suffix(".json").read_text())["source_key"] == info["source_key"]
    graph = shipped.read_bytes()
    shipped.write_bytes(graph[:1000])  # damaged, under a matching info file
    assert write_model_text_encoder(tmp_path, config, if_stale=True) == shipped
    assert shipped.read_bytes() == graph
    assert write_model_text_encoder(tmp_path, dataclasses.replace(config, text_encoder="open_clip")) is None

    damaged = {
        "not an onnx graph": (b"not an onnx graph", info, "InvalidProtobuf|INVALID_PROTOBUF"),
        "another model's graph": ((DEFAULT_MODEL / ONNX_FILE).read_bytes(), info, "not a sentence encoder"),
        "an info file of another width": (
            graph,
            {**info, "dim": 512},
            r"shape \(384,\), its info says \(512,\)",
        ),
        "no info file": (graph, None, "No such file"),
    }
    for case, (content, case_info, message) in damaged.items():
        shipped.write_bytes(content)
        shipped.with_suffix(".json").unlink(missing_ok=True)
        if case_info is not None:
            shipped.with_suffix(".json").write_text(json.dumps(case_info))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            fallback = make_text_encoder(config, tmp_path).encoder
        assert fallback.graph_file != shipped, case
        assert str(shipped) in caplog.text and re.search(message, caplog.text), (case, caplog.text)

    # exported from other encoder files than the config's model_path, which is here: those files are used
    shipped.write_bytes(graph)
    shipped.with_suffix(".json").write_text(json.dumps({**info, "source_key": "other encoder files"}))
    named = dataclasses.replace(config, text_encoder_kwargs={"model_path": str(sentence_model_path())})
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert make_text_encoder(named, tmp_path).encoder.graph_file != shipped
    assert "exported from other encoder files" in caplog.text
    assert make_text_encoder(config, tmp_path).encoder.graph_file == shipped  # the bundled package: trusted


def test_export_is_cached_and_later_starts_skip_sentence_transformers(tmp_path, encoders, caplog) -> None:
    """The first start exports MiniLM and caches graph and tokenizer; a later start (a new process) loads
    them without importing sentence-transformers or PyTorch, with the same embeddings. A damaged cache is exported
    again with a warning, never fatal."""
    reference, _ = encoders
    first = OnnxSentenceTextEncoder.cached(cache_dir=tmp_path)
    assert first.graph_file is None
    graphs = list(tmp_path.glob("sentence-encoder-*.onnx"))
    assert len(graphs) == 1 and graphs[0].with_suffix(".json").is_file()
    probe = (
        "import sys, numpy; from partglee_ros.runtime.onnx_text_encoder import OnnxSentenceTextEncoder; "
        f"e = OnnxSentenceTextEncoder.cached(cache_dir={str(tmp_path)!r}); "
        f"numpy.save({str(tmp_path / 'emb.npy')!r}, e.encode({NAMES!r})); "
        "print(e.graph_file is not None, 'sentence_transformers' in sys.modules, 'torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.stdout.split() == ["True", "False", "False"], run.stdout + run.stderr
    cached = np.load(tmp_path / "emb.npy")
    assert np.abs(cached - reference.encode(NAMES)).max() <= 1e-5
    graphs[0].write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING):
        again = OnnxSentenceTextEncoder.cached(cache_dir=tmp_path)
    assert again.graph_file is None and "unusable" in caplog.text
    assert np.array_equal(again.encode(NAMES), first.encode(NAMES))
    assert OnnxSentenceTextEncoder.cached(cache_dir=tmp_path).graph_file == graphs[0]  # repaired
    graphs[0].with_suffix(".json").write_text('{"dim": 384}')  # valid JSON, settings missing
    assert OnnxSentenceTextEncoder.cached(cache_dir=tmp_path).graph_file is None


def test_a_failed_cache_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "graph.onnx"
    write_atomically(target, b"v1")
    with pytest.raises(TypeError):
        write_atomically(target, "not bytes")  # type: ignore[arg-type]

    def replace_fails(src: str, dst: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", replace_fails)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"v2")
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"v1"
