"""The MiniLM sentence encoder run by ONNX Runtime, for the time a vocabulary change takes.

Same embeddings as ``SentenceTextEncoder`` (max |diff| ~1e-7: the same weights, exported once at start-up,
~3 s) in about two thirds of its time on 2 CPU cores (42.5 vs 62.8 ms for 50 new names, docs/BENCHMARKS.md).
Two things make it faster: ONNX Runtime's lower per-operator cost, and grouping names by token count, so no
batch carries padding (short names padded to the longest one are computed at its length) and no attention
mask is needed.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from partglee_ros.model.text_encoder import SentenceTextEncoder, TextEncoder, category_prompt
from partglee_ros.runtime.backends.onnx_backend import cpu_threads

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


class OnnxSentenceTextEncoder(TextEncoder):
    def __init__(self, model_path: str | Path | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        sentence = SentenceTextEncoder(model_path).model
        kinds = tuple(type(module).__name__ for module in sentence)
        if kinds != _EXPECTED_MODULES or sentence[1].get_config_dict().get("pooling_mode") != "mean":
            raise ValueError(f"only mean-pooled, normalised sentence encoders are exported, not {kinds}")
        self.tokenizer = sentence.tokenizer
        self.max_length = int(sentence.max_seq_length)
        self.dim = int(sentence.get_sentence_embedding_dimension())
        graph = io.BytesIO()
        example = torch.ones(2, 4, dtype=torch.long)
        torch.onnx.export(
            _MeanPooledEncoder(sentence[0].auto_model).eval(),
            (example,),
            graph,
            dynamo=False,
            opset_version=17,
            input_names=["input_ids"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "names", 1: "tokens"}},
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        # Workers busy-wait between operators (~10% faster here) but stop when the call ends: vocabulary
        # changes are rare, and between them the cores belong to the image backend.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])

    def encode(self, names: list[str]) -> Tensor:
        if not names:
            return torch.zeros(0, self.dim)
        prompts = [category_prompt(n) for n in names]
        tokens = self.tokenizer(prompts, truncation=True, max_length=self.max_length)["input_ids"]
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(tokens):
            by_length[len(ids)].append(i)
        out = np.empty((len(names), self.dim), dtype=np.float32)
        for rows in by_length.values():
            ids = np.array([tokens[i] for i in rows], dtype=np.int64)
            out[rows] = self.session.run(None, {"input_ids": ids})[0]
        return torch.from_numpy(out)
