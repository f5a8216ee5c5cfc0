"""Score a checkpoint on held-out SynthParts scenes with the project's evaluators; writes metrics.json.

    .venv/bin/python -m benchmarks.eval_checkpoint --model models/default --split test --num-images 100 \
        --ci-subset 8 --out models/default/metrics.json --markdown runs/default/test_metrics.md

The model runs through the runtime (``load_segmenter``; PyTorch unless ``--backend``/``--precision`` say
otherwise, e.g. ``--backend onnx --precision int8`` scores the INT8 graph), the way the node runs it, with
low score thresholds (0.05) because AP integrates precision over the whole score range. The vocabulary is
every base and novel category with its part names (``jar: body, lid``), as a user would give it.
``--ci-subset K`` also scores the first K scenes alone: tests/test_training_default_model.py re-measures
exactly that subset and fails when the committed model (or the code around it) falls below it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks.machine import describe_cpu
from benchmarks.output_file import prepare_output_file
from partglee_ros import strict_json
from partglee_ros.runtime.backends.base import BackendError
from partglee_ros.runtime.factory import load_segmenter
from partglee_ros.runtime.postprocess import PostprocessConfig
from training.data.synthparts import load_split_config, split_scenes
from training.evaluation import CategorySplit, metrics_to_markdown
from training.evaluation.oracle_obj import largest_part_baseline
from training.validation import headline, segment_and_evaluate, synthparts_vocabulary, vocabulary_part_classes

SPLIT_CONFIG = "training/configs/synthparts.yaml"
EVAL_THRESHOLD = 0.05


def score(
    model_dir: str,
    split: str,
    num_images: int,
    split_config: str = SPLIT_CONFIG,
    backend: str = "torch",
    precision: str = "fp32",
) -> dict:
    """Full metrics of ``evaluate`` plus the headline numbers on the first ``num_images`` scenes."""
    cfg = load_split_config(split_config)
    cats = CategorySplit(cfg.base_categories, cfg.novel_categories)
    post = PostprocessConfig(object_threshold=EVAL_THRESHOLD, part_threshold=EVAL_THRESHOLD)
    segmenter = load_segmenter(model_dir, backend=backend, precision=precision, postprocess_config=post)
    vocabulary = synthparts_vocabulary([*cfg.base_categories, *cfg.novel_categories])
    segmenter.set_vocabulary(*vocabulary)
    scenes = list(split_scenes(split, cfg, limit=num_images))
    classes = vocabulary_part_classes(vocabulary)
    metrics = segment_and_evaluate(segmenter, scenes, cats, classes)
    # What knowing the object's class alone scores in Oracle-Obj: the floor to read the model's against.
    metrics["part_miou"]["oracle_obj_largest_part_baseline"] = largest_part_baseline(scenes, classes, cats)
    return {"headline": headline(metrics), "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default="models/default", help="checkpoint folder (config.json + model.safetensors)"
    )
    p.add_argument(
        "--split", default="test", choices=("val", "test"), help="SynthParts split to score (held out)"
    )
    p.add_argument("--num-images", type=int, default=100, help="first N scenes of the split")
    p.add_argument(
        "--ci-subset", type=int, default=0, help="also score the first K scenes (CI regression set)"
    )
    p.add_argument("--split-config", default=SPLIT_CONFIG, help="SynthParts split YAML")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx"), help="runtime backend")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "int8"),
        help="fp32, fp16 (torch on CUDA) or int8 (onnx: MODEL/model.int8.onnx)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (PyTorch backend)")
    p.add_argument("--out", help="write metrics JSON here")
    p.add_argument("--markdown", help="write the metric tables (Markdown) here")
    args = p.parse_args(argv)
    if args.num_images < 1 or args.ci_subset < 0:
        p.error("--num-images must be >= 1 and --ci-subset >= 0")
    for flag, path in (("--out", args.out), ("--markdown", args.markdown)):
        if path:
            prepare_output_file(p, flag, Path(path))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        result = score(
            args.model, args.split, args.num_images, args.split_config, args.backend, args.precision
        )
    except BackendError as err:  # --model: no checkpoint there, or one that does not load
        p.error(f"--model {args.model}: {' '.join(str(err).split())}")
    report = {
        "command": "python -m benchmarks.eval_checkpoint "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{describe_cpu()}, {torch.get_num_threads()} torch threads"
        + (", ONNX Runtime: one thread per usable CPU" if args.backend == "onnx" else ""),
        "backend": f"{args.backend} {args.precision}",
        "split": args.split,
        "num_images": args.num_images,
        "score_threshold": EVAL_THRESHOLD,
        **result,
    }
    if args.ci_subset:
        report["ci_subset"] = {
            "num_images": args.ci_subset,
            "headline": score(
                args.model, args.split, args.ci_subset, args.split_config, args.backend, args.precision
            )["headline"],
        }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(strict_json.dumps({k: report[k] for k in report if k != "metrics"}, indent=1))
    if args.out:
        Path(args.out).write_text(strict_json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(metrics_to_markdown(result["metrics"], per_category=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
