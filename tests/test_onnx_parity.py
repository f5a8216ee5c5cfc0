"""ONNX export and ONNX Runtime vs PyTorch parity (issue #6).

One exported graph serves every vocabulary size. Tolerances: tests/output_parity.py. Runs on models/default
when it exists, else the small random checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper

from engines.export_onnx import default_opset, export_onnx, image_shape, is_current
from engines.export_onnx import main as export_main
from engines.op_support import check_model, load_operator_list, operator_counts
from partglee_ros.config import (
    CODE_SHA256_KEY,
    TEXT_ENCODER_FILE,
    WEIGHTS_SHA256_KEY,
    ModelConfig,
    load_checkpoint,
    save_checkpoint,
    weights_digest,
)
from partglee_ros.model.ms_deform_attn import MSDeformAttn
from partglee_ros.runtime.backends.base import OUTPUT_NAMES, BackendError
from partglee_ros.runtime.backends.onnx_backend import DEFAULT_SPIN_US, OnnxBackend, cpu_threads
from partglee_ros.runtime.backends.torch_backend import TorchBackend
from partglee_ros.runtime.factory import load_segmenter, make_backend
from tests.checkpoints import parity_model_dir
from tests.output_parity import MASK_IOU_MIN, assert_outputs_match


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model_dir = parity_model_dir(tmp_path_factory.mktemp("model"))
    model, config = load_checkpoint(model_dir)
    onnx_path = export_onnx(model, config, model_dir / "model.onnx", weights_sha256=weights_digest(model_dir))
    return model, config, onnx_path


@pytest.fixture(scope="module")
def exported_grid_sample(exported):
    """The same model at opset 18, which has no DeformConv: deformable attention samples with GridSample."""
    model, config, onnx_path = exported
    return export_onnx(model, config, onnx_path.with_name("grid_sample.onnx"), opset=18)


@pytest.mark.parametrize("k", [1, 5, 50])
def test_onnxruntime_matches_pytorch_for_any_vocabulary_size(exported, k: int) -> None:
    model, config, onnx_path = exported
    torch_backend, ort_backend = TorchBackend(model), OnnxBackend(onnx_path)
    rng = np.random.default_rng(k)
    image = rng.normal(size=image_shape(config)).astype(np.float32)
    object_text = rng.normal(size=(k, config.text_dim)).astype(np.float32)
    part_text = rng.normal(size=(k + 3, config.text_dim)).astype(np.float32)
    ref = torch_backend.infer(image, object_text, part_text)
    got = ort_backend.infer(image, object_text, part_text)
    assert got["obj_logits"].shape[-1] == k and got["part_logits"].shape[-1] == k + 3
    assert_outputs_match(got, ref)


def test_export_has_dynamic_vocabulary_axes_and_passes_the_checker(exported) -> None:
    _, config, onnx_path = exported
    graph = onnx.load(str(onnx_path))
    onnx.checker.check_model(graph, full_check=True)
    dims = {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.graph.input
    }
    assert dims == {
        "image": list(image_shape(config)),
        "object_text": ["k_obj", config.text_dim],
        "part_text": ["k_part", config.text_dim],
    }
    assert max(i.version for i in graph.opset_import if i.domain in ("", "ai.onnx")) >= 17
    props = {p.key: p.value for p in graph.metadata_props}
    assert props["partglee.input_size"] == "x".join(map(str, config.input_size))


@pytest.mark.parametrize("opset", [18, 19])
def test_every_exported_operator_is_on_the_tensorrt_support_list(
    exported, exported_grid_sample, opset: int
) -> None:
    graph = onnx.load(str(exported[2] if opset == 19 else exported_grid_sample))
    counts = operator_counts(graph)
    # the deformable attention is really in the graph: one DeformConv or GridSample per module and level,
    # beside the Q-Former's one GridSample
    levels = sum(m.n_levels for m in exported[0].modules() if isinstance(m, MSDeformAttn))
    sampling = {19: {"DeformConv": levels, "GridSample": 1}, 18: {"DeformConv": 0, "GridSample": 1 + levels}}
    assert {op: counts.get(op, 0) for op in ("DeformConv", "GridSample")} == sampling[opset]
    assert check_model(graph, load_operator_list()) == []


def test_the_default_opset_follows_whether_onnxruntime_runs_deform_conv(monkeypatch) -> None:
    """scripts/setup.sh exports without --opset: an onnxruntime without the DeformConv kernel (older than
    this one, which has it) gets the GridSample graph it can load. Its refusal is stood in for here."""
    assert default_opset() == 19

    def no_deform_conv(model: bytes, *args: object, **kwargs: object) -> None:
        raise RuntimeError("NOT_IMPLEMENTED : Could not find an implementation for DeformConv(19) node")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_deform_conv)
    assert default_opset() == 18


def test_the_grid_sample_graph_matches_pytorch_too(exported, exported_grid_sample) -> None:
    model, config, _ = exported
    rng = np.random.default_rng(5)
    image = rng.normal(size=image_shape(config)).astype(np.float32)
    object_text = rng.normal(size=(5, config.text_dim)).astype(np.float32)
    part_text = rng.normal(size=(8, config.text_dim)).astype(np.float32)
    got = OnnxBackend(exported_grid_sample).infer(image, object_text, part_text)
    assert_outputs_match(got, TorchBackend(model).infer(image, object_text, part_text))


def test_an_onnxruntime_without_deform_conv_is_named_with_the_way_out(tmp_path: Path) -> None:
    """ONNX Runtime gained DeformConv in 2026; an older one cannot load the default export. Its error is
    made here with a DeformConv type that this one has no kernel for (bfloat16)."""
    path = tmp_path / "deform_conv.onnx"
    inputs = [("x", [1, 1, 4, 4]), ("W", [1, 1, 1, 1]), ("offset", [1, 2, 4, 4])]
    graph = helper.make_graph(
        [helper.make_node("DeformConv", [n for n, _ in inputs], ["y"])],
        "deform_conv",
        [helper.make_tensor_value_info(n, TensorProto.BFLOAT16, shape) for n, shape in inputs],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)]), path)
    with pytest.raises(BackendError, match="no DeformConv kernel .* export with --opset 18"):
        OnnxBackend(path)


def test_simplified_graph_is_smaller_and_computes_the_same(exported, tmp_path: Path) -> None:
    model, config, onnx_path = exported
    traced = export_onnx(model, config, tmp_path / "traced.onnx", simplify=False)
    assert len(onnx.load(str(onnx_path)).graph.node) < len(onnx.load(str(traced)).graph.node) / 2
    rng = np.random.default_rng(0)
    image = rng.normal(size=image_shape(config)).astype(np.float32)
    text = rng.normal(size=(4, config.text_dim)).astype(np.float32)
    simple, full = (
        OnnxBackend(onnx_path).infer(image, text, text),
        OnnxBackend(traced).infer(image, text, text),
    )
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(simple[name], full[name], rtol=0, atol=1e-4, err_msg=name)


def test_graph_from_other_weights_is_refused_and_auto_falls_back(exported, tmp_path: Path, caplog) -> None:
    model, config, onnx_path = exported
    assert make_backend(onnx_path.parent, "auto").name == "onnx"
    other = tmp_path / "retrained"
    changed = load_checkpoint(onnx_path.parent)[0]
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    save_checkpoint(changed, config, other)
    shutil.copy(onnx_path, other / "model.onnx")  # the graph of the old weights, left behind
    with pytest.raises(BackendError, match="exported from other weights"):
        make_backend(other, "onnx")
    with caplog.at_level(logging.WARNING):
        assert make_backend(other, "auto").name == "torch"
    assert "exported from other weights" in caplog.text
    weights = other / "model.safetensors"  # damaged weights beside a good graph: the weights are named
    weights.write_bytes(weights.read_bytes()[:100_000])
    with pytest.raises(BackendError, match="model.safetensors is damaged .* restore the weights file"):
        make_backend(other, "onnx")
    weights.unlink()  # a weights file that exists but cannot be read (reading it is an I/O error)
    weights.symlink_to("/proc/self/mem")
    with pytest.raises(BackendError, match=f"cannot read the model in {other}: .*Input/output error"):
        load_segmenter(other, backend="onnx")


def test_graph_traced_from_other_model_code_is_flagged(exported, tmp_path: Path, caplog) -> None:
    _, _, onnx_path = exported
    model_dir = tmp_path / "model"
    shutil.copytree(onnx_path.parent, model_dir)
    graph = onnx.load(str(model_dir / "model.onnx"))
    next(p for p in graph.metadata_props if p.key == CODE_SHA256_KEY).value = "0" * 64
    onnx.save(graph, str(model_dir / "model.onnx"))
    with caplog.at_level(logging.WARNING):
        assert make_backend(model_dir, "onnx").name == "onnx"  # same weights: usable, but said
    assert "traced from other model code" in caplog.text
    assert not is_current(model_dir / "model.onnx", model_dir)
    assert is_current(onnx_path, onnx_path.parent)


def _trace_a_tiny_graph(module: torch.nn.Module, args: tuple, path: str, **options: object) -> None:
    """Stands in for torch.onnx.export: writes a valid little graph where the export would write."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_failed_export_leaves_the_previous_graph_as_it_was(tmp_path: Path, monkeypatch) -> None:
    """The graph is written next to ``out`` and moved onto it only once annotated and checked: a failing
    step must not leave an unchecked graph without metadata where ``auto`` would load it, nor a temp file."""
    out = tmp_path / "model.onnx"
    out.write_bytes(b"the previous, checked graph")
    monkeypatch.setattr(torch.onnx, "export", _trace_a_tiny_graph)

    def check_fails(graph: onnx.ModelProto, full_check: bool = False) -> None:
        raise onnx.checker.ValidationError("made to fail")

    with monkeypatch.context() as patched:
        patched.setattr(onnx.checker, "check_model", check_fails)
        with pytest.raises(onnx.checker.ValidationError, match="made to fail"):
            export_onnx(torch.nn.Identity(), ModelConfig(), out, simplify=False, weights_sha256="ab")
    assert out.read_bytes() == b"the previous, checked graph"
    assert list(tmp_path.iterdir()) == [out]
    assert export_onnx(torch.nn.Identity(), ModelConfig(), out, simplify=False, weights_sha256="ab") == out
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}[WEIGHTS_SHA256_KEY] == "ab"
    assert list(tmp_path.iterdir()) == [out]


def test_export_cli_skips_a_graph_already_exported_from_these_weights(exported, capsys) -> None:
    """... and writes the text encoder's graph beside it, unless told not to."""
    model_dir = exported[2].parent
    shipped = model_dir / TEXT_ENCODER_FILE
    assert export_main(["--model", str(model_dir), "--if-stale", "--no-text-encoder"]) == 0
    out = capsys.readouterr().out
    assert "up to date" in out and "text encoder" not in out and not shipped.exists()
    assert export_main(["--model", str(model_dir), "--if-stale"]) == 0
    assert f"text encoder: {shipped}" in capsys.readouterr().out and shipped.with_suffix(".json").is_file()


def test_a_graph_is_stale_for_another_config_opset_or_a_damaged_file(
    exported, tmp_path: Path, capsys
) -> None:
    """--if-stale (scripts/setup.sh) must re-export these, or the runtime refuses the graph it kept."""
    model_dir = exported[2].parent
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", "model.safetensors", "model.onnx"):
        shutil.copy(model_dir / name, copy / name)
    assert is_current(copy / "model.onnx", copy) and not is_current(copy / "model.onnx", copy, opset=18)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "input_size": [640, 480]}))
    assert not is_current(copy / "model.onnx", copy)
    (copy / "model.onnx").write_bytes((model_dir / "model.onnx").read_bytes()[:5000])
    assert not is_current(copy / "model.onnx", copy)
    assert export_main(["--model", str(tmp_path / "absent")]) == 2
    assert "absent/config.json not found: --model names a checkpoint folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main(["--model", str(copy), "--opset", "16"])


def test_onnx_backend_refuses_missing_corrupt_and_wrong_shapes(exported, tmp_path: Path) -> None:
    _, config, onnx_path = exported
    with pytest.raises(BackendError, match="not found"):
        OnnxBackend(tmp_path / "absent.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(onnx_path.read_bytes()[:5000])
    with pytest.raises(BackendError, match="cannot load ONNX model"):
        OnnxBackend(corrupt)
    backend = OnnxBackend(onnx_path)
    text = np.zeros((3, config.text_dim), np.float32)
    n, c, h, w = image_shape(config)
    with pytest.raises(BackendError, match=r"does not fit .* which takes"):
        backend.infer(np.zeros((n, c, h + 32, w), np.float32), text, text)
    with pytest.raises(BackendError, match="object_text must be"):
        backend.infer(np.zeros((n, c, h, w), np.float32), np.zeros((0, config.text_dim), np.float32), text)
    with pytest.raises(BackendError, match="device must be 'cpu', 'cuda' or 'cuda:N' .* got 'tpu'"):
        OnnxBackend(onnx_path, device="tpu")
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(BackendError, match="no CUDA provider"):
            OnnxBackend(onnx_path, device="cuda")


def test_input_size_the_graph_was_not_exported_for_is_refused_at_load(exported) -> None:
    from partglee_ros.runtime.factory import load_segmenter

    _, config, onnx_path = exported
    width, height = config.input_size
    with pytest.raises(
        BackendError, match=r"graph takes images of shape .* leave input_width/input_height at 0"
    ):
        load_segmenter(onnx_path.parent, backend="onnx", input_size=(width * 2, height * 2))
    assert load_segmenter(onnx_path.parent, backend="onnx", input_size=(width, height)).backend.name == "onnx"
    # auto falls back to PyTorch, which takes any input size, rather than failing to start
    assert load_segmenter(onnx_path.parent, input_size=(width * 2, height * 2)).backend.name == "torch"


def test_a_graph_with_a_fixed_vocabulary_size_is_refused(exported, tmp_path: Path) -> None:
    graph = onnx.load(str(exported[2]))
    next(i for i in graph.graph.input if i.name == "object_text").type.tensor_type.shape.dim[0].dim_value = 5
    onnx.save(graph, str(tmp_path / "fixed_k.onnx"))
    with pytest.raises(BackendError, match="fixed vocabulary size in object_text"):
        OnnxBackend(tmp_path / "fixed_k.onnx")


def test_onnx_backend_closes_and_reopens_for_the_lifecycle(exported) -> None:
    """deactivate -> close() releases the session; activate -> open() gives the same outputs again."""
    _, config, onnx_path = exported
    backend = OnnxBackend(onnx_path)
    image = np.zeros(image_shape(config), np.float32)
    text = np.ones((2, config.text_dim), np.float32)
    before = backend.infer(image, text, text)
    backend.close()
    backend.close()  # cleanup after deactivate closes again
    with pytest.raises(BackendError, match="closed"):
        backend.infer(image, text, text)
    backend.open()
    after = backend.infer(image, text, text)
    spinning = OnnxBackend(onnx_path, spin_threads=True).infer(image, text, text)  # a scheduling option only
    for name in OUTPUT_NAMES:
        np.testing.assert_array_equal(before[name], after[name])
        np.testing.assert_allclose(before[name], spinning[name], rtol=0, atol=1e-5)


def test_onnx_threads_sets_the_session_threads_and_other_backends_options_warn(exported, caplog) -> None:
    """onnx_threads reaches ONNX Runtime (0 = the CPUs this process may use); an option of the PyTorch backend
    given with backend onnx is named as ignored rather than dropped silently."""
    _, _, onnx_path = exported
    model_dir = onnx_path.parent
    with caplog.at_level(logging.WARNING):
        one = make_backend(model_dir, "onnx", onnx_threads=1, torch_threads=1)
    assert one.session.get_session_options().intra_op_num_threads == one.threads == 1
    assert "torch_threads does not apply to backend onnx" in caplog.text
    default = make_backend(model_dir, "onnx").session.get_session_options().intra_op_num_threads
    assert default == cpu_threads() <= len(os.sched_getaffinity(0))
    with pytest.raises(BackendError, match="onnx threads must be >= 0"):
        make_backend(model_dir, "onnx", onnx_threads=-1)


def _segmenter_pairs(objects: list, other: list) -> list[tuple]:
    assert [o.label for o in objects] == [o.label for o in other]
    pairs = list(zip(objects, other, strict=True))
    for a, b in list(pairs):
        assert [p.object_label for p in a.parts] == [p.object_label for p in b.parts]
        pairs += list(zip(a.parts, b.parts, strict=True))
    return pairs


def test_segmenter_with_onnx_gives_the_same_objects_and_masks_as_torch(exported) -> None:
    from partglee_ros.runtime.factory import load_segmenter
    from partglee_ros.runtime.postprocess import PostprocessConfig
    from tests.ros_testing import noise_image
    from training.data.synthparts import CATEGORIES, generate_scene

    _, _, onnx_path = exported
    model_dir = onnx_path.parent
    # low thresholds so even the random checkpoint reports objects and parts to compare
    post = PostprocessConfig(
        object_threshold=0.05, part_threshold=0.05, max_objects=10, max_parts_per_object=4
    )
    seg_torch = load_segmenter(model_dir, backend="torch", postprocess_config=post)
    seg_onnx = load_segmenter(model_dir, backend="onnx", engine_path=str(onnx_path), postprocess_config=post)
    seg_onnx.text_encoder = seg_torch.text_encoder  # one encoder, loaded once
    objects = sorted(CATEGORIES)
    parts = sorted({p for ps in CATEGORIES.values() for p in ps})
    for seg in (seg_torch, seg_onnx):
        seg.set_vocabulary(objects, parts, {o: list(ps) for o, ps in CATEGORIES.items()})
    images = [generate_scene(seed, 640, 480).image for seed in (2000000, 2000001)] + [
        noise_image(3, 480, 640)
    ]
    compared = 0
    for image in images:
        a, b = seg_torch.segment(image), seg_onnx.segment(image)
        for x, y in _segmenter_pairs(a.objects, b.objects):
            assert abs(x.score - y.score) <= 1e-3
            assert np.abs(x.box - y.box).max() <= 1.0  # pixels at 640x480
            inter, union = np.logical_and(x.mask, y.mask).sum(), np.logical_or(x.mask, y.mask).sum()
            assert union == 0 or inter / union >= MASK_IOU_MIN
            compared += 1
    assert compared >= 3, "too few instances to compare"


def test_ort_profile_times_the_graphs_operators_per_thread_count(exported) -> None:
    from benchmarks.ort_profile import THREADS, profile

    _, _, onnx_path = exported
    ops, wall = profile(onnx_path, k=3, runs=2)
    graph_ops = set(operator_counts(onnx.load(str(onnx_path))))
    for threads in THREADS:
        times, calls = ops[threads]
        assert "DeformConv" in times and "Conv" in times and wall[threads] > 0
        # ORT fuses and rewrites nodes, so its kernel types need not match the file's; most must
        assert len(set(times) & graph_ops) >= 0.5 * len(graph_ops), (sorted(times), sorted(graph_ops))
        assert all(n >= 1 for n in calls.values())


def test_grid_sample_benchmark_times_the_graphs_calls_with_the_same_sampling(
    exported, exported_grid_sample
) -> None:
    """benchmarks.grid_sample_kernels must time what the GridSample graph runs: one shape per GridSample
    node of the opset-18 export, and a one-node ORT graph that samples exactly like F.grid_sample."""
    from benchmarks.grid_sample_kernels import THREADS, ort_grid_sample, recorded_calls, time_shape

    _, _, onnx_path = exported
    calls = recorded_calls(onnx_path.parent, k=3)
    assert sum(calls.values()) == operator_counts(onnx.load(str(exported_grid_sample)))["GridSample"]
    x_shape, grid_shape = max(calls, key=lambda c: np.prod(c[1]))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, grid_shape).astype(np.float32)  # some samples off the map: zero padding
    got = ort_grid_sample(x_shape, grid_shape, threads=1).run(None, {"x": x, "grid": grid})[0]
    ref = torch.nn.functional.grid_sample(torch.from_numpy(x), torch.from_numpy(grid), align_corners=False)
    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-5)
    times = time_shape(x_shape, grid_shape, runs=2)
    assert set(times) == {(r, t) for r in ("onnxruntime", "torch") for t in THREADS}
    assert all(ms > 0 for ms in times.values())


def test_default_threads_follow_the_cpu_limit_of_the_process(exported, monkeypatch) -> None:
    """The default thread count is the CPUs the process may use (affinity, cgroup quota: joblib's count),
    not the host's cores; joblib's LOKY_MAX_CPU_COUNT stands in for a quota here."""
    _, _, onnx_path = exported
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "1")
    assert cpu_threads() == 1
    assert make_backend(onnx_path.parent, "onnx").session.get_session_options().intra_op_num_threads == 1


def test_spinning_workers_are_bounded_by_onnx_spin_us(exported) -> None:
    """onnx_spin_threads lets idle workers spin for up to onnx_spin_us (default 100 us) before they sleep;
    0 leaves ONNX Runtime's own limit; without spinning no spin time is set."""
    _, _, onnx_path = exported
    model_dir = onnx_path.parent

    def session_entry(key: str, **options) -> str:
        """The session's config value for ``key``, "" when it was not set."""
        session_options = make_backend(model_dir, "onnx", **options).session.get_session_options()
        try:
            return session_options.get_session_config_entry(key)
        except RuntimeError:  # ORT's answer for a key never set
            return ""

    spin, duration = "session.intra_op.allow_spinning", "session.intra_op.spin_duration_us"
    assert (session_entry(spin), session_entry(duration)) == ("0", "")
    assert session_entry(spin, onnx_spin_threads=True) == "1"
    assert session_entry(duration, onnx_spin_threads=True) == str(DEFAULT_SPIN_US) == "100"
    assert session_entry(duration, onnx_spin_threads=True, onnx_spin_us=500) == "500"
    assert session_entry(duration, onnx_spin_threads=True, onnx_spin_us=0) == ""
    with pytest.raises(BackendError, match="spin time must be >= 0"):
        make_backend(model_dir, "onnx", onnx_spin_threads=True, onnx_spin_us=-1)
    with pytest.raises(BackendError, match="unknown backend options"):
        make_backend(model_dir, "onnx", onnx_spin=True)


def test_module_times_places_the_kernels_on_the_models_modules(exported) -> None:
    """benchmarks.module_times: nearly all of ORT's kernel time lands on a module, and every module it names
    is one PyTorch timed too (so the two columns compare the same code)."""
    from benchmarks.module_times import measure, module_of

    model, config, onnx_path = exported
    assert module_of("/model/pixel_decoder/layers.0/self_attn/GridSample", model) == "pixel_decoder.layers.0"
    assert module_of("/model/pixel_decoder/Resize", model) == "pixel_decoder (rest)"
    assert module_of("onnx::MatMul_123", model) is None
    rng = np.random.default_rng(0)
    feeds = {
        "image": rng.standard_normal(image_shape(config)).astype(np.float32),
        "object_text": rng.standard_normal((3, config.text_dim)).astype(np.float32),
        "part_text": rng.standard_normal((3, config.text_dim)).astype(np.float32),
    }
    eager, ort_ms, totals = measure(onnx_path, model, feeds, runs=2)
    assert ort_ms["not placed"] <= 0.05 * totals["kernels"], ort_ms
    assert set(ort_ms) - {"not placed"} <= set(eager), (sorted(ort_ms), sorted(eager))
    assert all(ms >= 0 for ms in eager.values()) and totals["eager"] > 0 and totals["ort"] > 0


def test_deformable_sampling_benchmark_exports_each_kind_of_module_both_ways(
    exported, tmp_path: Path
) -> None:
    """benchmarks.deformable_sampling: one call per kind of module (the encoder's at point references among
    them), each exported with one GridSample (opset 18) or one DeformConv (19) per level, both computing what
    the module computes in PyTorch."""
    from benchmarks.deformable_sampling import export, recorded_calls, time_call

    calls = recorded_calls(exported[2].parent, k=3)
    kinds = [name.split(".layers.")[0] for name in calls]
    assert "pixel_decoder" in kinds and len(set(kinds)) == len(kinds) > 1
    for name, (call, inputs) in calls.items():
        graphs = {
            op: export(call, inputs, tmp_path / f"{name}.{op}.onnx", opset)
            for op, opset in (("GridSample", 18), ("DeformConv", 19))
        }
        for op, path in graphs.items():
            assert operator_counts(onnx.load(str(path))).get(op) == len(call.spatial_shapes), (name, op)
        ms, errors = time_call(call, inputs, graphs, runs=1)
        assert set(ms) == {"eager", "eager, deform_conv2d", *graphs} and all(t > 0 for t in ms.values())
        assert max(errors.values()) < 1e-4, (name, errors)
