"""The MiniLM sentence encoder run by ONNX Runtime, for the time a vocabulary change takes.

Same embeddings as ``SentenceTextEncoder`` (max |diff| ~1e-7: the same weights) in about two thirds of its
time on 2 CPU cores (docs/BENCHMARKS.md). Two things make it faster: ONNX Runtime's lower per-operator cost,
and grouping names by token count, so no batch carries padding (short names padded to the longest one are
computed at its length) and no attention mask is needed.

The graph is exported from sentence-transformers once (~4 s) and cached on disk with its tokenizer, keyed by
the encoder's files; later starts load the cache with ONNX Runtime and ``tokenizers`` alone, without
importing sentence-transformers or loading the PyTorch weights (~5 s and ~300 MB less per node process).
A model directory can also carry the exported graph (``TEXT_ENCODER_FILE``, written by
``engines.export_onnx``); the runtime then uses it as it is, so a robot needs neither PyTorch nor the
encoder's package, not even for the first start.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from partglee_ros.config import CACHE_ROOT, file_sha256, write_atomically
from partglee_ros.model.text_encoder import TextEncoder, category_prompt, sentence_model_path
from partglee_ros.runtime.backends.onnx_backend import cpu_threads

log = logging.getLogger(__name__)
DEFAULT_CACHE_DIR = CACHE_ROOT / "text_encoder"
# Part of the cache key: bump when engines/export_text_encoder.py changes the exported graph or its settings.
EXPORT_VERSION = 1


def cache_key(model_path: Path) -> str:
    """sha256 over the encoder's files (names and contents) and EXPORT_VERSION."""
    digest = hashlib.sha256(f"export {EXPORT_VERSION}".encode())
    for path in sorted(p for p in model_path.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(model_path)}\0{file_sha256(path)}\0".encode())
    return digest.hexdigest()


def info_file(graph_file: Path) -> Path:
    """The JSON beside an exported encoder graph: dim, max_length, tokenizer, source_key."""
    return graph_file.with_suffix(".json")


def write_encoder_files(graph_file: Path, graph: bytes, info: dict[str, Any]) -> None:
    """Write a graph and its info file. The old info file goes first and the new one last, so an info file
    always belongs to the graph beside it: an interrupted write leaves a graph without one (not used)."""
    graph_file.parent.mkdir(parents=True, exist_ok=True)
    info_file(graph_file).unlink(missing_ok=True)
    write_atomically(graph_file, graph)
    write_atomically(info_file(graph_file), json.dumps(info).encode())


class OnnxSentenceTextEncoder(TextEncoder):
    """Build one with ``from_files`` (a graph shipped in a model directory) or ``cached``."""

    def __init__(self, graph: bytes, info: dict[str, Any], threads: int | None = None) -> None:
        """``graph``, ``info``: what ``engines.export_text_encoder.export_sentence_encoder`` returns.
        ValueError for a graph that is not such an encoder or does not give ``info["dim"]``-wide embeddings:
        found here, the caller can fall back, where the first vocabulary change would fail."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        # Workers busy-wait between operators (~10% faster here) but stop when the call ends: vocabulary
        # changes are rare, and between them the cores belong to the image backend.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_str(info["tokenizer"])
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(info["max_length"]))  # as sentence-transformers truncates
        self.dim = int(info["dim"])
        self.graph_file: Path | None = None  # where the graph was read from; None: exported by this process
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != ["input_ids"]:
            raise ValueError(f"not a sentence encoder graph: its inputs are {inputs}, not ['input_ids']")
        ids = np.array([self.tokenizer.encode(category_prompt("object")).ids], np.int64)
        shape = self.session.run(None, {"input_ids": ids})[0].shape
        if shape != (1, self.dim):
            raise ValueError(f"the graph gives embeddings of shape {shape[1:]}, its info says ({self.dim},)")

    @classmethod
    def from_files(cls, graph_file: Path, threads: int | None = None) -> OnnxSentenceTextEncoder:
        """An exported graph and its info file, as they are: needs neither the encoder's weights nor PyTorch."""
        info = json.loads(info_file(graph_file).read_text())
        encoder = cls(graph_file.read_bytes(), info, threads)
        encoder.graph_file = graph_file
        return encoder

    @classmethod
    def cached(
        cls,
        model_path: str | Path | None = None,
        threads: int | None = None,
        cache_dir: str | Path | None = DEFAULT_CACHE_DIR,
    ) -> OnnxSentenceTextEncoder:
        """The encoder at ``model_path`` (default: the bundled MiniLM), exported once and kept in
        ``cache_dir`` under a key of its files. ``cache_dir`` None: export every time, cache nothing."""
        model_path = sentence_model_path(model_path)
        graph_file = None
        if cache_dir is not None:
            graph_file = Path(cache_dir) / f"sentence-encoder-{cache_key(model_path)[:16]}.onnx"
        if graph_file is not None and graph_file.is_file() and info_file(graph_file).is_file():
            try:
                return cls.from_files(graph_file, threads)
            except Exception as err:  # a damaged cache is exported again, never fatal
                log.warning(
                    "text encoder cache %s unusable (%s: %s); exporting again",
                    graph_file,
                    type(err).__name__,
                    err,
                )
        from engines.export_text_encoder import export_sentence_encoder  # imports PyTorch

        graph, info = export_sentence_encoder(model_path)
        encoder = cls(graph, info, threads)
        if graph_file is not None:
            try:
                write_encoder_files(graph_file, graph, info)
            except OSError as err:
                log.warning("cannot cache the text encoder in %s: %s", graph_file.parent, err)
        return encoder

    def encode(self, names: list[str]) -> np.ndarray:
        if not names:
            return np.zeros((0, self.dim), np.float32)
        tokens = [e.ids for e in self.tokenizer.encode_batch([category_prompt(n) for n in names])]
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(tokens):
            by_length[len(ids)].append(i)
        out = np.empty((len(names), self.dim), dtype=np.float32)
        for rows in by_length.values():
            ids = np.array([tokens[i] for i in rows], dtype=np.int64)
            out[rows] = self.session.run(None, {"input_ids": ids})[0]
        return out
