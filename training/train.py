"""Command line of ``python -m training``: load a training YAML, apply overrides, run (single process or
under torchrun), report where the checkpoints went."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml
from safetensors import SafetensorError

from partglee_ros import strict_json
from training.distributed import init_distributed, shutdown
from training.train_config import TrainConfig, load_train_config

EPILOG = """\
examples:
  python -m training --config training/configs/small_synthparts.yaml --out runs/default
  python -m training --config training/configs/small_synthparts.yaml --out runs/default --resume
  torchrun --nproc_per_node 8 -m training --config training/configs/r50_joint.yaml --out runs/r50

outputs in --out: checkpoints/step_XXXXXXXX/ (model.safetensors, config.json, optimizer.safetensors,
trainer_state.json), model/ (final weights + config, loadable by partglee_ros), train_log.csv,
eval_log.jsonl, tb/ (TensorBoard scalars: tensorboard --logdir OUT/tb).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train PartGLEE (or the flat baseline) from a YAML config. Under torchrun every process "
        "joins one DDP group (gloo on CPU, NCCL on GPU).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="training YAML (model, datasets with ratios, train, val)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config file stem>)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out/checkpoints"
    )
    p.add_argument(
        "--init",
        type=Path,
        help="start from this model folder's weights (config.json + model.safetensors of the same network) "
        "with a fresh optimizer and schedule: fine-tuning. Ignored when --resume finds a checkpoint",
    )
    p.add_argument("--steps", type=int, help="override train.steps (total optimizer steps)")
    p.add_argument(
        "--stop-after",
        type=int,
        help="stop (with a checkpoint) after this step; the LR schedule still spans --steps, so a later "
        "--resume continues the same run",
    )
    p.add_argument("--batch-size", type=int, help="override train.batch_size (images per process and step)")
    p.add_argument("--lr", type=float, help="override train.lr (base learning rate of AdamW)")
    p.add_argument("--seed", type=int, help="override train.seed (weights, batches, flips)")
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="auto: CUDA when available, else CPU",
    )
    p.add_argument("--threads", type=int, help="override train.threads (torch.set_num_threads per process)")
    p.add_argument("--num-workers", type=int, help="override train.num_workers (DataLoader processes)")
    p.add_argument("--eval-every", type=int, help="override train.eval_every (0: only after the last step)")
    p.add_argument("--checkpoint-every", type=int, help="override train.checkpoint_every (steps)")
    p.add_argument(
        "--no-amp", action="store_true", help="disable mixed precision on CUDA (never used on CPU)"
    )
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard event files")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to the CSV)")
    return p


# A user's mistake: one line and exit 2, not a traceback
USER_ERRORS = (OSError, ValueError, TypeError, KeyError, yaml.YAMLError, SafetensorError)


def _usage_error(text: str) -> int:
    print(f"training: error: {' '.join(text.split())}", file=sys.stderr)
    return 2


# Flags that override a train.<same name> value of the config file.
OVERRIDES = ("steps", "batch_size", "lr", "seed", "threads", "num_workers", "eval_every", "checkpoint_every")


def _given_overrides(args: argparse.Namespace) -> list[str]:
    """The override flags on the command line, as typed: the one a refused value came from is among them."""
    flags = [f"--{a.replace('_', '-')} {getattr(args, a)}" for a in OVERRIDES if getattr(args, a) is not None]
    return flags + (["--no-amp"] if args.no_amp else [])


def apply_overrides(cfg: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    o = cfg.optim
    for attr in OVERRIDES:
        value = getattr(args, attr)
        if value is not None:
            setattr(o, attr, value)
    if args.no_amp:
        o.amp = False
    o.__post_init__()  # the overrides are checked as the file's values are
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from training.loop import Trainer  # heavy imports after --help

    try:
        cfg = load_train_config(args.config)
    except USER_ERRORS as err:  # the config file
        return _usage_error(f"{args.config}: {type(err).__name__}: {err}")
    try:
        cfg = apply_overrides(cfg, args)
    except USER_ERRORS as err:  # a flag's value (the file's own values passed above)
        return _usage_error(f"{' '.join(_given_overrides(args))}: {type(err).__name__}: {err}")
    if args.stop_after is not None and args.stop_after < 1:
        return _usage_error("--stop-after must be >= 1")
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    # --out or the nearest of its folders that exists: a file there would fail only after the data is loaded
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        return _usage_error(f"--out {out}: {existing} is a file, not a folder")
    if not args.resume and any((out / "checkpoints").glob("step_*")):
        # pruning would keep the old run's newer checkpoints, and a later --resume would continue those
        return _usage_error(
            f"{out} holds checkpoints of an earlier run: --resume it, or choose another --out"
        )
    ctx = init_distributed(args.device)
    try:
        try:
            trainer = Trainer(
                cfg, out, ctx, progress=not args.no_progress, tensorboard=not args.no_tensorboard
            )
            resumed = args.resume and trainer.resume()
        except USER_ERRORS as err:  # datasets, --out, --resume's checkpoint
            return _usage_error(f"{type(err).__name__}: {err}")
        if args.init is not None and not resumed:
            try:
                trainer.init_weights(args.init)
            except USER_ERRORS as err:
                return _usage_error(f"--init {args.init}: {type(err).__name__}: {err}")
        if ctx.is_main:
            print(
                f"training {cfg.model.name} ({cfg.model.architecture}) on {ctx.device} x{ctx.world_size}, "
                f"{'resumed at' if resumed else 'from'} step {trainer.step} of {cfg.optim.steps} -> {out}",
                file=sys.stderr,
            )
        t0 = time.perf_counter()
        result = trainer.fit(args.stop_after)
        if ctx.is_main:
            result["wall_seconds_this_invocation"] = round(time.perf_counter() - t0, 1)
            print(strict_json.dumps(result), flush=True)
    finally:
        shutdown(ctx)
    return 0
