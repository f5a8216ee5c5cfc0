"""Parameters and FLOPs of every model config at 320x240 and 640x480, measured with torch's FlopCounterMode.

FlopCounterMode counts matrix multiplications and convolutions (2 FLOPs per multiply-add), which dominate
the model; bilinear sampling (grid_sample in deformable attention), norms and activations are not counted.
Inputs are padded to a multiple of 32 as the model expects (240 -> 256 rows). One image, inference mode, a
SynthParts-sized vocabulary (14 object and 21 part names).

    python benchmarks/model_flops.py [--configs small r50 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.output_file import prepare_output_file
from partglee_ros.config import ModelConfig
from partglee_ros.model import build_model
from partglee_ros.model.preprocess import padded_size

CONFIGS = Path(__file__).resolve().parents[1] / "config" / "models"
SIZES = {"320x240": (240, 320), "640x480": (480, 640)}
K_OBJ, K_PART = 14, 21


def count_flops(model: torch.nn.Module, images: Tensor, object_text: Tensor, part_text: Tensor) -> int:
    """FLOPs of one forward as FlopCounterMode counts them (matmuls, convolutions, attention; 2 per MAC).

    Grad mode stays on: under no_grad/inference_mode nn.MultiheadAttention takes a fused path the counter
    does not see, and FlopCounterMode's module tracker needs autograd-tracked tensors."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(images, object_text, part_text)
    return counter.get_total_flops()


def measure(config: ModelConfig) -> dict:
    model = build_model(config).eval()
    result = {"params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    for label, (h, w) in SIZES.items():
        ph, pw = padded_size(h, w)
        images = torch.randn(1, 3, ph, pw)
        object_text, part_text = torch.randn(K_OBJ, config.text_dim), torch.randn(K_PART, config.text_dim)
        result[f"GFLOPs_{label}"] = count_flops(model, images, object_text, part_text) / 1e9
    return result


def main(argv: list[str] | None = None) -> None:
    known = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=known,
        metavar="NAME",
        help=f"configs under config/models (default: all): {', '.join(known)}",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.json:
        prepare_output_file(parser, "--json", args.json)
    results = {}
    print("| config | params (M) | GFLOPs 320x240 | GFLOPs 640x480 |\n|---|---|---|---|")
    for name in args.configs or known:
        r = measure(ModelConfig.from_file(CONFIGS / f"{name}.yaml"))
        results[name] = r
        print(
            f"| {name} | {r['params_M']:.2f} | {r['GFLOPs_320x240']:.2f} | {r['GFLOPs_640x480']:.2f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
