"""ONNX export of the MiniLM sentence encoder, for ``partglee_ros.runtime.onnx_text_encoder``.

A change to the exported graph must bump the runtime's ``EXPORT_VERSION`` (its cache key). Kept apart from the
runtime module so that a node loading an exported graph imports neither PyTorch nor sentence-transformers:
only ``engines.export_onnx`` (``write_model_text_encoder``) and a cache miss in a model directory without
that graph (first start, or new encoder files) run this.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from partglee_ros.config import TEXT_ENCODER_FILE, ModelConfig
from partglee_ros.model.text_encoder import SentenceTextEncoder, sentence_model_path
from partglee_ros.runtime.onnx_text_encoder import cache_key, info_file, write_encoder_files

_EXPECTED_MODULES = ("Transformer", "Pooling", "Normalize")


class _MeanPooledEncoder(nn.Module):
    """Transformer -> mean over tokens -> L2 normalisation, i.e. the sentence-transformers pipeline of
    all-MiniLM-L6-v2 for a batch of equally long token sequences (no padding, so no mask)."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: Tensor) -> Tensor:
        tokens = self.transformer(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
        return nn.functional.normalize(tokens.last_hidden_state.mean(dim=1), dim=-1)


def export_sentence_encoder(model_path: Path) -> tuple[bytes, dict]:
    """(ONNX graph, {"dim", "max_length", "tokenizer"}) from the sentence-transformers model."""
    encoder = SentenceTextEncoder(model_path)
    sentence = encoder.model
    kinds = tuple(type(module).__name__ for module in sentence)
    if kinds != _EXPECTED_MODULES or sentence[1].get_config_dict().get("pooling_mode") != "mean":
        raise ValueError(f"only mean-pooled, normalised sentence encoders are exported, not {kinds}")
    graph = io.BytesIO()
    torch.onnx.export(
        _MeanPooledEncoder(sentence[0].auto_model).eval(),
        (torch.ones(2, 4, dtype=torch.long),),
        graph,
        dynamo=False,
        opset_version=17,
        input_names=["input_ids"],
        output_names=["embedding"],
        dynamic_axes={"input_ids": {0: "names", 1: "tokens"}},
    )
    info = {
        "dim": encoder.dim,
        "max_length": int(sentence.max_seq_length),
        "tokenizer": sentence.tokenizer.backend_tokenizer.to_str(),
    }
    return graph.getvalue(), info


def write_model_text_encoder(model_dir: Path, config: ModelConfig, if_stale: bool = False) -> Path | None:
    """Export a MiniLM model's text encoder into ``model_dir`` (TEXT_ENCODER_FILE + its .json), so the
    directory runs without PyTorch. None for other encoders (open_clip has no export here).

    ``if_stale``: keep a file exported from the same encoder files by the same export version."""
    if config.text_encoder != "minilm":
        return None
    encoder_path = sentence_model_path(config.text_encoder_kwargs.get("model_path"))
    key = cache_key(encoder_path)
    out = model_dir / TEXT_ENCODER_FILE
    if if_stale and out.is_file() and info_file(out).is_file():
        try:
            if json.loads(info_file(out).read_text()).get("source_key") == key:
                onnx.load(str(out))  # a damaged graph is exported again too
                return out
        except Exception:  # unreadable (OSError, JSON or protobuf errors): export again
            pass
    graph, info = export_sentence_encoder(encoder_path)
    write_encoder_files(out, graph, {**info, "source_key": key})
    return out
