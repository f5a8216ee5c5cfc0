"""Segmenter latency per backend: per-stage and end-to-end `segment()` at 640x480, K = 5 and 50, the time to
apply a new 50-name vocabulary, and the model's FLOPs with the lower bound they imply on this machine.

Every backend runs in the same process on the same image and vocabularies, interleaved per vocabulary size,
so they see the same machine load. Results go to stdout and, with --write, replace this script's section of
docs/BENCHMARKS.md (other sections are left alone).

    python -m benchmarks.bench_segmenter [--model models/default] [--runs 30] [--write]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import describe_cpu
from benchmarks.markdown_section import BENCHMARKS_DOC, report
from benchmarks.model_flops import count_flops
from engines.calibration import calibration_feeds
from engines.export_onnx import export_onnx, image_shape
from engines.quantize_onnx import quantize_onnx, synthparts_images
from partglee_ros.config import CONFIG_FILE, WEIGHTS_FILE, ModelConfig, load_checkpoint, save_checkpoint
from partglee_ros.model.partglee import build_model
from partglee_ros.model.text_encoder import build_text_encoder
from partglee_ros.runtime.backends.onnx_backend import DEFAULT_SPIN_US, OnnxBackend
from partglee_ros.runtime.backends.torch_backend import TorchBackend
from partglee_ros.runtime.factory import make_text_encoder
from partglee_ros.runtime.postprocess import PostprocessConfig
from partglee_ros.runtime.segmenter import Segmenter
from training.data.synthparts import CATEGORIES, generate_scene

REPO = Path(__file__).resolve().parents[1]
SECTION = "bench-segmenter"
STAGES = ("preprocess", "inference", "postprocess", "total")
IMAGE_SIZE = (640, 480)  # W, H
CALIBRATION_SCENES = 32  # as scripts/setup.sh quantizes the bundled model
# Names beyond SynthParts' own, to make 50-name vocabularies of plausible household objects and parts.
EXTRA_OBJECTS = (
    "cup",
    "plate",
    "bowl",
    "fork",
    "spoon",
    "chopsticks",
    "cutting board",
    "colander",
    "whisk",
    "grater",
    "peeler",
    "tongs",
    "rolling pin",
    "teapot",
    "thermos",
    "glass",
    "vase",
    "candle",
    "book",
    "laptop",
    "keyboard",
    "computer mouse",
    "phone",
    "remote control",
    "lamp",
    "clock",
    "stapler",
    "pen",
    "pencil",
    "ruler",
    "tape dispenser",
    "calculator",
    "headphones",
    "speaker",
    "charger",
    "flashlight",
    "toothbrush",
    "comb",
    "hairbrush",
    "towel",
    "sponge",
    "bucket",
    "basket",
    "box",
    "chair",
)
EXTRA_PARTS = (
    "rim",
    "base",
    "stem",
    "neck",
    "cap",
    "tip",
    "grip",
    "edge",
    "button",
    "hinge",
    "cord",
    "plug",
    "screen",
    "key",
    "wheel",
    "strap",
    "buckle",
    "bristles",
    "leg",
    "seat",
    "backrest",
    "armrest",
    "door",
    "knob",
    "rail",
    "wall",
    "corner",
    "top",
    "bottom",
    "side",
    "front",
    "rear",
    "panel",
    "cover",
    "frame",
    "pocket",
    "zipper",
    "clip",
    "ring",
    "loop",
    "shade",
    "bulb",
    "switch",
    "dial",
    "face",
    "hand",
)


@dataclass
class Setup:
    model_dir: Path
    description: str
    config: ModelConfig


def prepare_model(model: Path | None, workdir: Path) -> Setup:
    """models/default when it exists; otherwise the default model's architecture with random weights."""
    model = model or REPO / "models" / "default"
    if (model / CONFIG_FILE).is_file() and (model / WEIGHTS_FILE).is_file():
        config = ModelConfig.from_file(model / CONFIG_FILE)
        return Setup(model, f"`{model.relative_to(REPO) if model.is_relative_to(REPO) else model}`", config)
    torch.manual_seed(0)
    config = ModelConfig.from_file(REPO / "config" / "models" / "small.yaml")
    save_checkpoint(build_model(config).eval(), config, workdir)
    return Setup(workdir, "config/models/small.yaml with random weights (models/default not present)", config)


def vocabulary(k: int) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """K object names and K part names; SynthParts names first (with their parts) so a trained model
    detects something."""
    objects = (sorted(CATEGORIES) + [o for o in EXTRA_OBJECTS if o not in CATEGORIES])[:k]
    synth_parts = sorted({p for ps in CATEGORIES.values() for p in ps})
    parts = (synth_parts + [p for p in EXTRA_PARTS if p not in synth_parts])[:k]
    mapping = {o: [p for p in CATEGORIES[o] if p in parts] for o in objects if o in CATEGORIES}
    return objects, parts, mapping


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def time_segments(
    segmenters: dict[str, Segmenter], image: np.ndarray, runs: int, warmup: int
) -> dict[str, dict[str, list[float]]]:
    """Per-stage and end-to-end times of every segmenter, round-robin (run i of each backend back to back),
    so slow phases of a shared machine hit all backends alike instead of whichever ran then. Each round
    takes the backends in a new random order: in a fixed order, ORT ran 2-3 ms slower right after the
    compiled model (presumably its worker threads go on spinning for a moment after it returns)."""
    samples = {name: {s: [] for s in (*STAGES, "segment()")} for name in segmenters}
    counts: dict[str, list[tuple[int, int]]] = {name: [] for name in segmenters}
    rng = random.Random(0)
    for i in range(warmup + runs):
        for name in rng.sample(list(segmenters), len(segmenters)):
            seg = segmenters[name]
            t0 = time.perf_counter()
            result = seg.segment(image)
            wall = (time.perf_counter() - t0) * 1e3
            if i < warmup:
                continue
            for s in STAGES:
                samples[name][s].append(result.timings_ms[s])
            samples[name]["segment()"].append(wall)
            counts[name].append((len(result.objects), len(result.parts())))
    for name, c in counts.items():
        samples[name]["instances"] = [float(np.mean([o for o, _ in c])), float(np.mean([p for _, p in c]))]
    return samples


_FRESH = itertools.count()  # suffixes that make names never seen before, across all calls


def time_vocabulary_change(
    seg: Segmenter, runs: int, n_objects: int, n_parts: int, new_names: int | None = None
) -> list[float]:
    """Time ``set_vocabulary``; each run renames ``new_names`` of the names (all when None) to names never
    seen before, the rest repeat the previous run's (the text encoder caches embeddings per name)."""
    times = []
    all_objects, all_parts, _ = vocabulary(max(n_objects, n_parts))
    names = [*all_objects[:n_objects], *all_parts[:n_parts]]
    fresh = len(names) if new_names is None else new_names
    seg.set_vocabulary(all_objects[:n_objects], all_parts[:n_parts])  # the names that repeat are known
    for _ in range(runs):
        tag = next(_FRESH)
        current = [f"{name} {tag}" if i < fresh else name for i, name in enumerate(names)]
        t0 = time.perf_counter()
        seg.set_vocabulary(current[:n_objects], current[n_objects:])
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def model_flops(setup: Setup, k: int) -> int:
    """FLOPs of one forward with K object and K part names (``benchmarks.model_flops.count_flops``).
    grid_sample and element-wise ops are not counted: they are memory-bound and add no matmul work."""
    model, config = load_checkpoint(setup.model_dir)
    text = torch.zeros(k, config.text_dim)
    return count_flops(model, torch.zeros(image_shape(config)), text, text)


def matmul_gflops(seconds: float = 2.0) -> float:
    """Sustained fp32 GEMM throughput of this machine with torch's threads: the roofline a forward cannot beat."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - t0) / 1e9


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} / {percentile(values, 95):.1f}"


def render(
    setup: Setup,
    results: dict,
    vocab_times: dict,
    flops: dict,
    gflops: float,
    compile_s: float,
    args: argparse.Namespace,
    env: str,
) -> str:
    w, h = IMAGE_SIZE
    lines = [
        "## Segmenter latency (`segment()` at 640x480)",
        "",
        f"Measured by `python -m benchmarks.bench_segmenter --runs {args.runs} --write` on {env}.",
        f"Model: {setup.description}; network input {tuple(setup.config.input_size)} (W, H) letterboxed and "
        f"padded to {image_shape(setup.config)[2:]} (H, W). Image: SynthParts test scene 2000000 rendered at "
        f"{w}x{h}. Default post-processing (thresholds 0.3, up to 20 objects and 8 parts each). "
        "K = number of object names = number of part names. Times in ms, **median / p95** over "
        f"{args.runs} runs after {args.warmup} warm-up runs; backends run round-robin in one process, in a "
        "new random order each round.",
        "",
        "| backend | K | preprocess | inference | postprocess | total (stages) | segment() end-to-end | objects / parts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (backend, k), s in results.items():
        inst = f"{s['instances'][0]:.1f} / {s['instances'][1]:.1f}"
        cells = " | ".join(fmt(s[st]) for st in (*STAGES, "segment()"))
        lines.append(f"| {backend} | {k} | {cells} | {inst} |")
    lines += ["", "Speed-up over PyTorch eager (medians; inference stage / end-to-end):", ""]
    for k in args.k:
        for other in [name for name, size in results if name != "torch" and size == k]:
            ratios = [
                statistics.median(results[("torch", k)][stage])
                / statistics.median(results[(other, k)][stage])
                for stage in ("inference", "segment()")
            ]
            lines.append(f"- K = {k}, {other}: {ratios[0]:.2f}x / {ratios[1]:.2f}x")
    lines += [
        "",
        "`onnx` runs the graph `engines.export_onnx` writes (opset 19: deformable attention as DeformConv, "
        "simplified by onnxsim); `onnx, GridSample graph` is the export at `--opset 18`, which samples with "
        "GridSample instead (for runtimes without DeformConv). `onnx, int8` is `precision: int8`: that graph "
        f"with its convolutions in int8 (`engines.quantize_onnx`, calibrated on {CALIBRATION_SCENES} SynthParts "
        "validation scenes; accuracy in docs/ENGINES.md §1). `onnx, spinning threads` is the node "
        "parameter `onnx_spin_threads: true`: ONNX Runtime's idle workers busy-wait between operators, up to "
        f"`onnx_spin_us` = {DEFAULT_SPIN_US} us each time, instead of sleeping at once. "
        "`torch, compiled` is `backend: torch` with `torch_compile: true` (TorchInductor's C++ code for this "
        f"CPU); compiling it took {compile_s:.0f} s in this run (Inductor's on-disk cache makes a repeat "
        "start ~15 s, a cold one ~3 min on 2 cores).",
    ]
    lines += [
        "",
        "Applying a new vocabulary (`set_vocabulary`: validate, encode the names not seen before, swap; "
        "embeddings are cached per name). The runtime's MiniLM runs on ONNX Runtime with names grouped by "
        "token count (`partglee_ros/runtime/onnx_text_encoder.py`); the PyTorch sentence-transformers encoder "
        "(one padded batch) is timed beside it:",
        "",
    ]
    for label, times in vocab_times.items():
        lines.append(f"- {label}: {fmt(times)} ms (median / p95 of {len(times)})")
    lines += [
        "",
        "Model FLOPs per frame (torch FlopCounterMode; matmul/conv/attention, 2 per multiply-add): "
        + ", ".join(f"K = {k}: {f / 1e9:.2f} GFLOP" for k, f in flops.items())
        + f". This machine sustains {gflops:.0f} GFLOP/s on a 1024x1024 fp32 GEMM with torch's threads, so the "
        "network alone cannot run faster than "
        + ", ".join(f"{f / gflops / 1e6:.1f} ms (K = {k})" for k, f in flops.items())
        + " here; the rest of the inference time is memory-bound work (bilinear sampling, layout changes, "
        "element-wise ops) and framework overhead.",
    ]
    return "\n".join(lines) + "\n"


def environment() -> str:
    return (
        f"a {describe_cpu()} container, no GPU (torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads, onnxruntime "
        f"{__import__('onnxruntime').__version__})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="model dir (default: models/default, else random small)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--write", action="store_true", help=f"update {BENCHMARKS_DOC.relative_to(REPO)}")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        setup = prepare_model(args.model, Path(tmp))
        model, config = load_checkpoint(setup.model_dir)
        onnx_path = export_onnx(model, config, Path(tmp) / "model.onnx")
        grid_sample_path = export_onnx(model, config, Path(tmp) / "grid_sample.onnx", opset=18)
        # calibrated as scripts/setup.sh calibrates the bundled model's (validation scenes; the image is a test one)
        images = synthparts_images(Path(tmp) / "calibration", CALIBRATION_SCENES)
        int8_path = quantize_onnx(
            onnx_path,
            Path(tmp) / "model.int8.onnx",
            calibration_feeds(setup.model_dir, images, CALIBRATION_SCENES),
        )
        encoder = make_text_encoder(config, setup.model_dir)
        post = PostprocessConfig()
        compiled = TorchBackend(model, torch_compile=True)
        start = time.perf_counter()
        compiled.prepare(image_shape(config), config.text_dim)
        compile_s = time.perf_counter() - start
        segmenters = {
            "torch": Segmenter(TorchBackend(model), encoder, tuple(config.input_size), post),
            "torch, compiled": Segmenter(compiled, encoder, tuple(config.input_size), post),
            "onnx": Segmenter(OnnxBackend(onnx_path), encoder, tuple(config.input_size), post),
            "onnx, GridSample graph": Segmenter(
                OnnxBackend(grid_sample_path), encoder, tuple(config.input_size), post
            ),
            "onnx, int8": Segmenter(OnnxBackend(int8_path), encoder, tuple(config.input_size), post),
            "onnx, spinning threads": Segmenter(
                OnnxBackend(onnx_path, spin_threads=True), encoder, tuple(config.input_size), post
            ),
        }
        image = generate_scene(2000000, *IMAGE_SIZE).image
        results = {}
        for k in args.k:
            objects, parts, mapping = vocabulary(k)
            for seg in segmenters.values():
                seg.set_vocabulary(objects, parts, mapping)
            for name, samples in time_segments(segmenters, image, args.runs, args.warmup).items():
                results[(name, k)] = samples
                print(name, k, {s: fmt(v) for s, v in samples.items() if s != "instances"})
        seg = segmenters["onnx"]
        torch_text = Segmenter(
            seg.backend, build_text_encoder(config.text_encoder), tuple(config.input_size), post
        )
        vocab_times = {
            "50 object + 50 part names, all new": time_vocabulary_change(seg, 10, 50, 50),
            "50 names (25 objects + 25 parts), all new": time_vocabulary_change(seg, 10, 25, 25),
            "the same with the PyTorch encoder": time_vocabulary_change(torch_text, 10, 25, 25),
            "50 names, 5 of them new": time_vocabulary_change(seg, 10, 25, 25, new_names=5),
            "50 names, all used before (switching back)": time_vocabulary_change(
                seg, 10, 25, 25, new_names=0
            ),
        }
        flops = {k: model_flops(setup, k) for k in args.k}
    gflops = matmul_gflops()
    section = render(setup, results, vocab_times, flops, gflops, compile_s, args, environment())
    report(section, SECTION, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
