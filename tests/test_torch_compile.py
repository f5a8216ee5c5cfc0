"""The PyTorch backend's options: ``torch_compile`` (same outputs as eager, compiled once at load for every
vocabulary size, reported as ``torch.compile`` so diagnostics show which path runs) and ``torch_threads``.

Compilation is slow on 2 cores the first time (minutes); Inductor's on-disk cache makes later runs cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.export_onnx import image_shape
from partglee_ros.config import load_checkpoint
from partglee_ros.runtime.backends.base import BackendError
from partglee_ros.runtime.backends.torch_backend import (
    DEFAULT_CACHE_DIR,
    TorchBackend,
    use_persistent_inductor_cache,
)
from partglee_ros.runtime.factory import load_segmenter, make_backend
from tests.checkpoints import parity_model_dir
from tests.output_parity import assert_outputs_match


@pytest.fixture(scope="module")
def segmenters(tmp_path_factory):
    model_dir = parity_model_dir(tmp_path_factory.mktemp("model"))
    compiled = load_segmenter(model_dir, backend="torch", torch_compile=True)
    eager = TorchBackend(load_checkpoint(model_dir)[0])
    return model_dir, compiled, eager


def test_compiled_backend_is_named_and_compiles_at_load(segmenters) -> None:
    _, compiled, _ = segmenters
    assert compiled.backend.name == "torch.compile" and compiled.backend.device == "cpu"


@pytest.mark.parametrize(("k_obj", "k_part"), [(5, 9), (1, 4), (6, 1), (1, 1), (50, 50)])
def test_any_vocabulary_size_runs_the_graph_compiled_at_load_with_eager_outputs(
    segmenters, k_obj: int, k_part: int
) -> None:
    """No recompilation after load (it would stall the node for minutes on a vocabulary change): Dynamo
    is told to raise instead of recompiling."""
    model_dir, compiled, eager = segmenters
    _, config = load_checkpoint(model_dir)
    rng = np.random.default_rng(k_obj * 100 + k_part)
    image = rng.normal(size=image_shape(config)).astype(np.float32)
    object_text = rng.normal(size=(k_obj, config.text_dim)).astype(np.float32)
    part_text = rng.normal(size=(k_part, config.text_dim)).astype(np.float32)
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = compiled.backend.infer(image, object_text, part_text)
    assert got["obj_logits"].shape[-1] == k_obj and got["part_logits"].shape[-1] == k_part
    assert_outputs_match(got, eager.infer(image, object_text, part_text))


def test_compiled_code_is_cached_where_a_reboot_keeps_it(segmenters, monkeypatch) -> None:
    """Inductor's default cache is under /tmp; the backend moves it to ~/.cache unless the user chose one."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    in_use = use_persistent_inductor_cache()  # DEFAULT_CACHE_DIR unless this shell chose another
    assert cache_dir() == in_use and any(Path(in_use).iterdir())  # the compile at load wrote there
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # as Inductor leaves it
    assert use_persistent_inductor_cache() == str(DEFAULT_CACHE_DIR)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/opt/robot/inductor")  # the user's choice wins
    assert use_persistent_inductor_cache() == "/opt/robot/inductor"


def test_torch_compile_with_another_backend_is_ignored_with_a_warning(segmenters, caplog) -> None:
    model_dir, _, _ = segmenters
    # no graph exported in this model dir, so the onnx backend then fails on its own
    with caplog.at_level(logging.WARNING), pytest.raises(BackendError, match="model.onnx"):
        make_backend(model_dir, "onnx", torch_compile=True)
    assert "torch_compile does not apply to backend onnx" in caplog.text


def test_torch_threads_sets_pytorch_intra_op_threads(segmenters) -> None:
    model_dir, _, _ = segmenters
    before = torch.get_num_threads()
    try:
        segmenter = load_segmenter(model_dir, backend="torch", torch_threads=1)
        assert torch.get_num_threads() == segmenter.backend.threads == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(BackendError, match="threads must be >= 0"):
        make_backend(model_dir, "torch", torch_threads=-1)
