"""Learning curves of a training run (its ``train_log.csv``) as a PNG for the model card.

.venv/bin/python -m benchmarks.plot_curves models/default/train_log.csv docs/images/curves_default.png
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TERMS = ("cls", "mask", "dice", "giou", "l1")


def plot(csv_path: str, png_path: str, title: str = "") -> None:
    log = np.genfromtxt(csv_path, delimiter=",", names=True)
    step = log["step"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(step, log["loss"], label="total (weighted, all layers)")
    axes[0].set_yscale("log")
    axes[0].set_title("training loss")
    for ax, level in zip(axes[1:], ("obj", "part"), strict=True):
        for term in TERMS:
            name = f"{level}_{term}"
            if name in log.dtype.names:
                ax.plot(step, log[name], label=term)
        ax.set_title(f"{'object' if level == 'obj' else 'part'} terms, last decoder layer (unweighted)")
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
    args = p.parse_args()
    plot(args.csv, args.png, args.title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
