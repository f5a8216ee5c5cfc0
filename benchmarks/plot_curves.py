"""Learning curves of a training run (its ``train_log.csv``) as a PNG for the model card. A run continued by
a later stage (``--init`` fine-tuning from its weights: a new log whose steps start at 0 again) is drawn on
the same step axis after it, from a dashed line.

.venv/bin/python -m benchmarks.plot_curves models/default/train_log.csv docs/images/curves_default.png \
    --eval models/default/eval_log.jsonl \
    --then models/default/finetune/train_log.csv --then-eval models/default/finetune/eval_log.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TERMS = ("cls", "mask", "dice", "giou", "l1", "res")
EVAL_KEYS = ("object_mask_ap_base", "part_mask_ap_base", "part_mask_ap_novel")


def read_stages(csvs: list[str], evals: list[str | None]) -> tuple[dict, list[dict], list[float]]:
    """Each stage's rows after the previous stage's last step: columns (NaN where a stage lacks one),
    evaluations, and the step each stage starts at."""
    logs = [np.atleast_1d(np.genfromtxt(path, delimiter=",", names=True)) for path in csvs]
    if any(len(log) == 0 for log in logs):
        raise ValueError("a training log without rows: nothing to plot for that stage")
    names = list(dict.fromkeys(name for log in logs for name in log.dtype.names))
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    points, starts, offset = [], [], 0.0
    for log, eval_path in zip(logs, evals, strict=True):
        for name in names:
            if name == "step":
                columns[name].append(log["step"] + offset)
            else:
                columns[name].append(log[name] if name in log.dtype.names else np.full(len(log), np.nan))
        if eval_path:
            for line in Path(eval_path).read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    points.append({**entry, "step": entry["step"] + offset})
        starts.append(offset)
        offset += float(log["step"][-1])
    return {k: np.concatenate(v) for k, v in columns.items()}, points, starts


def plot(csvs: list[str], png_path: str, title: str = "", evals: list[str | None] | None = None) -> None:
    evals = evals if evals is not None else [None] * len(csvs)
    log, points, starts = read_stages(csvs, evals)
    step = log["step"]
    fig, axes = plt.subplots(1, 4 if points else 3, figsize=(20 if points else 15, 4))
    axes[0].plot(step, log["loss"], label="total (weighted, all layers)")
    axes[0].set_yscale("log")
    axes[0].set_title("training loss")
    for ax, level in zip(axes[1:3], ("obj", "part"), strict=True):
        for term in TERMS:
            name = f"{level}_{term}"
            if name in log:
                ax.plot(step, log[name], label=term)
        ax.set_title(f"{'object' if level == 'obj' else 'part'} terms, last decoder layer (unweighted)")
    if points:
        for key in EVAL_KEYS:
            axes[3].plot([e["step"] for e in points], [e[key] for e in points], marker="o", label=key)
        axes[3].set_title("periodic eval on val scenes (mask AP)")
    lr_ax = axes[0].twinx()
    lr_ax.plot(step, log["lr"], color="grey", linestyle=":", label="lr")
    lr_ax.set_ylabel("learning rate")
    for ax in axes:
        for start in starts[1:]:
            ax.axvline(start, color="black", linestyle="--", linewidth=0.8)
        ax.set_xlabel("step")
        ax.legend(loc="upper right", fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)


def main() -> int:
    p = argparse.ArgumentParser(description="Plot train_log.csv learning curves to a PNG.")
    p.add_argument("csv", help="train_log.csv written by python -m training")
    p.add_argument("png", help="output image")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--eval", help="eval_log.jsonl of the same run: adds a panel of the periodic val AP")
    p.add_argument(
        "--then",
        action="append",
        default=[],
        help="train_log.csv of a stage that continued the run (--init from its weights); repeatable, in order",
    )
    p.add_argument(
        "--then-eval", action="append", default=[], help="eval_log.jsonl of each --then stage, in order"
    )
    args = p.parse_args()
    if args.then_eval and len(args.then_eval) != len(args.then):
        p.error("give one --then-eval per --then, or none")
    evals = [args.eval, *(args.then_eval or [None] * len(args.then))]
    plot([args.csv, *args.then], args.png, args.title, evals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
