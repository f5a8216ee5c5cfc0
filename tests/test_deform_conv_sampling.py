"""Deformable attention traced as DeformConv (the default ONNX export) computes what grid_sample computes."""

from __future__ import annotations

import pytest
import torch

from partglee_ros.config import ModelConfig
from partglee_ros.model import build_model
from partglee_ros.model.ms_deform_attn import MSDeformAttn, _output_axis, deform_conv_sampling

LEVELS = [(32, 40), (16, 20), (8, 10)]


def _attention(seed: int, n_levels: int) -> MSDeformAttn:
    """Trained-like weights: offsets that reach past the map's border, attention that is not uniform."""
    torch.manual_seed(seed)
    attn = MSDeformAttn(64, n_levels, 4, 4)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.5)
    torch.nn.init.normal_(attn.attention_weights.weight)
    return attn.eval()


@pytest.mark.parametrize(
    ("levels", "n_q", "box"),
    [
        (LEVELS, None, False),  # the encoder: every pixel of every level is a query at its own point
        (LEVELS, 30, True),  # the decoders: queries at boxes
        ([(5, 3), (2, 2), (1, 1)], 7, True),  # maps smaller than the kernel, an odd query count
        ([(3, 7)], None, False),
    ],
)
def test_deform_conv_sampling_gives_grid_samples_values(levels: list, n_q: int | None, box: bool) -> None:
    attn = _attention(0, len(levels))
    n_q = n_q or sum(h * w for h, w in levels)
    value = torch.randn(2, sum(h * w for h, w in levels), 64)
    query = torch.randn(2, n_q, 64)
    # reference points partly off the map, so that samples fall outside it (zero padding)
    ref = torch.rand(2, n_q, len(levels), 4 if box else 2) * 1.2 - (0.0 if box else 0.1)
    with torch.no_grad():
        expected = attn(query, ref, value, levels)
        with deform_conv_sampling(attn):
            got = attn(query, ref, value, levels)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_the_whole_model_computes_the_same_with_deform_conv_sampling() -> None:
    torch.manual_seed(0)
    config = ModelConfig.from_file("config/models/small.yaml")
    model = build_model(config).eval()
    image, text = torch.randn(1, 3, 256, 320), torch.randn(6, config.text_dim)
    with torch.no_grad():
        expected = model(image, text, text)
        with deform_conv_sampling(model):
            got = model(image, text, text)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=1e-4, msg=name)
    assert sum(isinstance(m, MSDeformAttn) for m in model.modules()) > 2  # encoder and decoders


@pytest.mark.parametrize("kernel", [1, 4])
def test_each_convolution_axis_has_at_least_the_outputs_asked_for_and_at_most_twice(kernel: int) -> None:
    """Few spare outputs: each costs a sample per tap."""
    for size in range(1, 50):
        for target in range(1, 50):
            stride, pad, out = _output_axis(size, kernel, target)
            assert out == (size + 2 * pad - kernel) // stride + 1  # what DeformConv will make of them
            assert target <= out <= max(2 * target, 1), (size, target, stride, pad, out)


def test_deform_conv_sampling_is_switched_off_again_even_after_an_error() -> None:
    attn = _attention(1, 1)
    with pytest.raises(RuntimeError, match="made to fail"), deform_conv_sampling(attn):
        assert attn.deform_conv
        raise RuntimeError("made to fail")
    assert not attn.deform_conv


@pytest.mark.parametrize("box", [False, True])
def test_the_exported_deform_conv_follows_the_onnx_specification(tmp_path, box: bool) -> None:
    """ONNX's reference implementation of DeformConv (the spec, which TensorRT implements) computes what
    grid_sample computes: ONNX Runtime's kernel was modelled on torchvision's, so agreeing with it alone
    would not show the (y, x) order and the offset and mask layouts are the standard's."""
    from onnx.reference import ReferenceEvaluator

    from benchmarks.deformable_sampling import AttentionCall, export

    levels = [(4, 5), (2, 3)]
    call = AttentionCall(_attention(2, len(levels)), levels)
    n_q = 6 if box else sum(h * w for h, w in levels)
    inputs = (
        torch.randn(2, n_q, 64),
        torch.rand(2, n_q, len(levels), 4 if box else 2) * 1.2 - 0.1,
        torch.randn(2, sum(h * w for h, w in levels), 64),
    )
    path = export(call, inputs, tmp_path / "attention.onnx", opset=19)
    evaluator = ReferenceEvaluator(str(path))
    assert {node.op_type for node in evaluator.proto_.graph.node} >= {"DeformConv"}
    (got,) = evaluator.run(
        None, dict(zip(("query", "reference_points", "value"), (t.numpy() for t in inputs), strict=True))
    )
    with torch.no_grad():
        expected = call(*inputs)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=0, atol=1e-4)
