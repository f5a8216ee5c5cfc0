"""MiniLM on ONNX Runtime gives the sentence-transformers embeddings, for every kind of name (issue #6)."""

from __future__ import annotations

import pytest
import torch

from partglee_ros.model.text_encoder import SentenceTextEncoder
from partglee_ros.runtime.factory import make_text_encoder, read_model_config
from partglee_ros.runtime.onnx_text_encoder import OnnxSentenceTextEncoder
from tests.checkpoints import DEFAULT_MODEL

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
    return SentenceTextEncoder(), OnnxSentenceTextEncoder()


def test_same_embeddings_as_sentence_transformers(encoders) -> None:
    reference, onnx = encoders
    ref, got = reference.encode(NAMES), onnx.encode(NAMES)
    assert got.shape == ref.shape == (len(NAMES), reference.dim)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() <= 1e-5
    # grouping by token count must not mix rows up
    assert torch.equal(onnx.encode(NAMES[::-1]), got.flip(0))
    assert onnx.encode([]).shape == (0, reference.dim)


def test_runtime_uses_the_onnx_encoder_for_minilm_models() -> None:
    encoder = make_text_encoder(read_model_config(DEFAULT_MODEL))
    assert isinstance(encoder.encoder, OnnxSentenceTextEncoder)
