"""Learning curves of a training run (its ``train_log.csv``) as a PNG for the model card.

.venv/bin/python -m benchmarks.plot_curves models/default/train_log.csv docs/images/curves_default.png \
    --eval models/default/eval_log.jsonl
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


def plot(csv_path: str, png_path: str, title: str = "", eval_path: str | None = None) -> None:
    log = np.genfromtxt(csv_path, delimiter=",", names=True)
    step = log["step"]
    fig, axes = plt.subplots(1, 4 if eval_path else 3, figsize=(20 if eval_path else 15, 4))
    axes[0].plot(step, log["loss"], label="total (weighted, all layers)")
    axes[0].set_yscale("log")
    axes[0].set_title("training loss")
    for ax, level in zip(axes[1:3], ("obj", "part"), strict=True):
        for term in TERMS:
            name = f"{level}_{term}"
            if name in log.dtype.names:
                ax.plot(step, log[name], label=term)
        ax.set_title(f"{'object' if level == 'obj' else 'part'} terms, last decoder layer (unweighted)")
    if eval_path:
        evals = [json.loads(line) for line in Path(eval_path).read_text().splitlines() if line.strip()]
        for key in ("object_mask_ap_base", "part_mask_ap_base", "part_mask_ap_novel"):
            axes[3].plot([e["step"] for e in evals], [e[key] for e in evals], marker="o", label=key)
        axes[3].set_title("periodic eval on val scenes (mask AP)")
    lr_ax = axes[0].twinx()
    lr_ax.plot(step, log["lr"], color="grey", linestyle=":", label="lr")
    lr_ax.set_ylabel("learning rate")
    for ax in axes:
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
    args = p.parse_args()
    plot(args.csv, args.png, args.title, args.eval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
