"""Training checkpoints without pickle: model weights and optimizer tensors in safetensors, the rest in JSON.

A checkpoint directory ``step_XXXXXXXX/`` holds the inference checkpoint (``model.safetensors`` +
``config.json``, loadable by ``partglee_ros.config.load_checkpoint``), ``optimizer.safetensors`` (AdamW
moments), ``rng_rank{R}.safetensors`` (each process's torch RNG, which the criterion's point sampling draws
from) and ``trainer_state.json`` (step, param groups, AMP scale). It is written to a temporary folder and
renamed, so a killed run never leaves a half-written checkpoint behind as the latest one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file

from partglee_ros.config import WEIGHTS_FILE, ModelConfig, readable_by_all, save_checkpoint
from training.distributed import DistContext, barrier

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def latest_checkpoint(root: Path) -> Path | None:
    """The most advanced complete checkpoint under ``root`` (None when there is none)."""
    done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def save_training_state(
    root: Path,
    step: int,
    model: torch.nn.Module,
    config: ModelConfig,
    optimizer: torch.optim.Optimizer,
    scaler_state: dict[str, Any] | None,
    ctx: DistContext,
    keep: int = 2,
) -> Path:
    """Collective under DDP: every rank saves its RNG, rank 0 the rest. Keeps the newest ``keep``."""
    final = checkpoint_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if ctx.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(ctx)
    rng_file = tmp / f"rng_rank{ctx.rank}.safetensors"
    save_file(_rng_tensors(), str(rng_file))
    readable_by_all(rng_file)
    barrier(ctx)
    if ctx.is_main:
        save_checkpoint(model, config, tmp)
        sd = optimizer.state_dict()
        tensors, scalars = {}, {}
        for pid, state in sd["state"].items():
            for key, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"{pid}.{key}"] = value.detach().contiguous()
                else:
                    scalars[f"{pid}.{key}"] = value
        save_file(tensors, str(tmp / OPTIMIZER_FILE))
        readable_by_all(tmp / OPTIMIZER_FILE)
        state = {"step": step, "param_groups": sd["param_groups"], "scalars": scalars, "scaler": scaler_state}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(p for p in root.glob("step_*") if not p.name.endswith(".tmp"))[:-keep]:
            shutil.rmtree(old)
    barrier(ctx)
    return final


def load_training_state(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext
) -> dict[str, Any]:
    """Restore weights, optimizer and this rank's RNG in place; returns the JSON state (``step``, ``scaler``)."""
    state = json.loads((path / STATE_FILE).read_text())
    load_model(model, str(path / WEIGHTS_FILE), strict=True, device=str(ctx.device))
    tensors = load_file(str(path / OPTIMIZER_FILE), device=str(ctx.device))
    per_param: dict[int, dict[str, Any]] = {}
    for flat, value in {**tensors, **state["scalars"]}.items():
        pid, key = flat.split(".", 1)
        per_param.setdefault(int(pid), {})[key] = value
    for entry in per_param.values():  # AdamW keeps its step counter on the CPU unless capturable
        if "step" in entry and torch.is_tensor(entry["step"]):
            entry["step"] = entry["step"].cpu()
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    rng_file = path / f"rng_rank{ctx.rank}.safetensors"
    if rng_file.is_file():
        rng = load_file(str(rng_file))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return state
