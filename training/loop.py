"""The training loop: AdamW + warmup/cosine LR, AMP on CUDA, gradient clipping, DDP, periodic checkpoints
and evaluation, a tqdm progress bar, TensorBoard scalars and a CSV log the model card's curves come from."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import load_model
from torch.nn.parallel import DistributedDataParallel
from torch.utils._pytree import tree_map
from tqdm import tqdm

from partglee_ros import strict_json
from partglee_ros.config import CONFIG_FILE, WEIGHTS_FILE, ModelConfig, save_checkpoint
from partglee_ros.model.partglee import PartGLEE, build_model
from partglee_ros.model.text_encoder import build_text_encoder
from training.checkpoint import latest_checkpoint, load_training_state, save_training_state
from training.criterion import SetCriterion
from training.dataset import Batch, StepBatches, SynthPartsSource, build_source, step_loader, to_device
from training.distributed import DistContext, all_reduce_mean, barrier
from training.evaluation import CategorySplit
from training.schedule import lr_factor
from training.train_config import OptimConfig, TrainConfig
from training.validation import evaluate_model, headline

LOG_FILE = "train_log.csv"
# ModelConfig fields a fine-tuning run may change: the loss, dropout, the input size, the name, and the
# backbone's initialisation file (the weights loaded with --init replace it anyway)
NOT_THE_NETWORK = frozenset({"loss", "dropout", "input_size", "name", "backbone_weights"})
EVAL_FILE = "eval_log.jsonl"
FINAL_DIR = "model"


def param_groups(model: torch.nn.Module, optim: OptimConfig) -> list[dict]:
    """Backbone at ``lr * backbone_lr_mult``; no weight decay on 1-d parameters (norms, biases). Learned
    embeddings are 2-d (level embedding, parsing queries, Q-Former memory positions, part box priors) and
    do get weight decay."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name.startswith("backbone."), p.ndim <= 1), []).append(p)
    out = []
    for (is_backbone, no_decay), params in sorted(groups.items()):
        mult = optim.backbone_lr_mult if is_backbone else 1.0
        out.append(
            {
                "params": params,
                "lr": optim.lr * mult,
                "lr_mult": mult,
                "weight_decay": 0.0 if no_decay else optim.weight_decay,
            }
        )
    return out


class CsvLog:
    """Append-only CSV; on resume, rows after the restored step are dropped (they will be redone). A row
    with a column the file lacks (a part loss first logged after object-only batches) widens the file;
    earlier rows leave that column empty."""

    def __init__(self, path: Path, keep_until: int | None) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                self.fields = reader.fieldnames
                rows = [r for r in reader if keep_until is not None and int(r["step"]) <= keep_until]
            if self.fields:
                self._rewrite(rows)

    def _rewrite(self, rows: list[dict]) -> None:
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        if self.fields is None:
            self.fields = list(row)
            self._rewrite([])
        elif not set(row) <= set(self.fields):
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
            self.fields += [k for k in row if k not in self.fields]
            self._rewrite(rows)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


def drop_eval_rows_after(path: Path, step: int) -> None:
    """Keep the evaluations of steps <= ``step`` in the JSON-lines log: a resumed run redoes the later ones
    (as CsvLog drops its later rows), which would otherwise appear twice."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(f"{row}\n" for row in rows))


def _final_terms(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Unweighted loss terms of the last decoder layer (``obj_cls``, ``part_dice``, ...)."""
    return {k: float(v) for k, v in terms.items() if k.split("_")[0] in ("obj", "part") and k.count("_") == 1}


class Trainer:
    def __init__(
        self, cfg: TrainConfig, out: Path, ctx: DistContext, progress: bool = True, tensorboard: bool = True
    ) -> None:
        self.cfg, self.out, self.ctx = cfg, out, ctx
        self.progress, self.use_tb = progress, tensorboard
        o = cfg.optim
        if o.threads:
            torch.set_num_threads(o.threads)
        torch.manual_seed(o.seed)  # identical initial weights on every rank (DDP also broadcasts them)
        self.model: PartGLEE = build_model(cfg.model).to(ctx.device)
        self.model.train()
        self.text_encoder = build_text_encoder(cfg.model.text_encoder, **cfg.model.text_encoder_kwargs)
        self.sources = [build_source(d) for d in cfg.datasets]
        # built with the training sources: a val split config that cannot be read then stops the run before
        # step 1 (the CLI's one-line error), not at the first evaluation. ValConfig requires synthparts.
        self.val_source = (
            None if cfg.val is None else SynthPartsSource(cfg.val.dataset.name, cfg.val.dataset.options)
        )
        self.text = [
            (
                torch.from_numpy(self.text_encoder.encode(s.object_vocab)).to(ctx.device),
                torch.from_numpy(self.text_encoder.encode(s.part_vocab)).to(ctx.device),
            )
            for s in self.sources
        ]
        self.batches = StepBatches(
            self.sources,
            [d.ratio for d in cfg.datasets],
            o.batch_size,
            tuple(cfg.model.input_size),
            o.seed,
            ctx.rank,
            o.hflip,
        )
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o), lr=o.lr, betas=o.betas)
        cuda = ctx.device.type == "cuda"
        self.amp_dtype = getattr(torch, o.amp_dtype)
        self.amp = o.amp and cuda
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.criterion = SetCriterion(cfg.model.loss, flat=cfg.model.architecture == "flat")
        self.ckpt_root = out / "checkpoints"
        self.step = 0

    def resume(self) -> bool:
        """Restore the newest checkpoint under ``out/checkpoints``; False when there is none."""
        latest = latest_checkpoint(self.ckpt_root)
        if latest is None:
            return False
        state = load_training_state(latest, self.model, self.optimizer, self.ctx)
        if state.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        return True

    def init_weights(self, model_dir: Path) -> None:
        """Start from a trained model's weights (fine-tuning) with a fresh optimizer and schedule. The
        folder's config must describe the same network as the training config: weights are loaded strictly."""
        init_config = ModelConfig.from_file(model_dir / CONFIG_FILE)
        mine = {k: v for k, v in self.cfg.model.to_dict().items() if k not in NOT_THE_NETWORK}
        theirs = {k: v for k, v in init_config.to_dict().items() if k not in NOT_THE_NETWORK}
        differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if differ:
            raise ValueError(f"--init {model_dir}: its config differs from the training config in {differ}")
        load_model(self.model, str(model_dir / WEIGHTS_FILE), strict=True, device=str(self.ctx.device))

    def _set_lr(self, step: int) -> float:
        factor = lr_factor(step, self.cfg.optim.steps, self.cfg.optim.schedule)
        for g in self.optimizer.param_groups:
            g["lr"] = self.cfg.optim.lr * g["lr_mult"] * factor
        return self.cfg.optim.lr * factor

    def train_step(self, net: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict, float]:
        object_text, part_text = self.text[batch.source]
        with torch.autocast(self.ctx.device.type, dtype=self.amp_dtype, enabled=self.amp):
            outputs = net(batch.images, object_text, part_text, batch.targets)
        # The losses run in float32, also on the nested sets (aux layers, encoder proposals, denoising).
        outputs = tree_map(
            lambda v: v.float() if torch.is_tensor(v) and v.is_floating_point() else v, outputs
        )
        loss, terms = self.criterion(outputs, batch.targets, self.sources[batch.source].has_parts)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.cfg.optim.clip_grad_norm
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), terms, float(grad_norm)

    def save(self) -> Path:
        scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        return save_training_state(
            self.ckpt_root,
            self.step,
            self.model,
            self.cfg.model,
            self.optimizer,
            scaler,
            self.ctx,
            self.cfg.optim.keep_checkpoints,
        )

    def evaluate(self) -> dict | None:
        """Rank 0 scores the model on the validation images; the other ranks wait."""
        val, src = self.cfg.val, self.val_source
        result = None
        if val is not None and src is not None and self.ctx.is_main:
            split = CategorySplit(src.config.base_categories, src.config.novel_categories)
            images = [src.get(i) for i in range(min(val.num_images, len(src)))]
            metrics = evaluate_model(
                self.model,
                self.text_encoder,
                tuple(self.cfg.model.input_size),
                images,
                split,
                val.postprocess(),
                str(self.ctx.device),
            )
            result = {"step": self.step, **headline(metrics)}
            with open(self.out / EVAL_FILE, "a") as f:
                f.write(strict_json.dumps(result) + "\n")
        barrier(self.ctx)
        return result

    def fit(self, stop_after: int | None = None) -> dict:
        """Train to ``optim.steps``, or stop (with a checkpoint) after step ``stop_after`` as an interrupted
        run would: the LR schedule always spans ``optim.steps``, so a resumed run continues it exactly."""
        o, ctx = self.cfg.optim, self.ctx
        end = min(o.steps, stop_after) if stop_after is not None else o.steps
        main = ctx.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        barrier(ctx)
        log = CsvLog(self.out / LOG_FILE, self.step) if main else None
        if main:
            drop_eval_rows_after(self.out / EVAL_FILE, self.step)
        tb = None
        if main and self.use_tb:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step or None)
        net: torch.nn.Module = self.model
        if ctx.enabled:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            net = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        bar = tqdm(total=o.steps, initial=self.step, disable=not (self.progress and main), desc="train")
        last_eval = None
        t_last, step_last = time.perf_counter(), self.step
        for batch in step_loader(self.batches, self.step, end, o.num_workers):
            lr = self._set_lr(self.step)
            loss, terms, grad_norm = self.train_step(net, to_device(batch, ctx.device))
            self.step += 1
            logging = self.step % o.log_every == 0 or self.step == o.steps
            if logging:
                mean_loss = float(all_reduce_mean(loss, ctx))
                if main:
                    now = time.perf_counter()
                    row = {
                        "step": self.step,
                        "lr": lr,
                        "loss": mean_loss,
                        "grad_norm": grad_norm,
                        "sec_per_step": (now - t_last) / (self.step - step_last),
                        **_final_terms(terms),
                    }
                    t_last, step_last = now, self.step
                    log.write(row)
                    if tb is not None:
                        for k, v in row.items():
                            if k != "step":
                                tb.add_scalar(f"train/{k}", v, self.step)
            if main:
                bar.set_postfix(loss=f"{float(loss):.2f}", lr=f"{lr:.1e}")
                bar.update(1)
            if self.step % o.checkpoint_every == 0 or self.step == end:
                self.save()
            if (o.eval_every and self.step % o.eval_every == 0) or self.step == o.steps:
                last_eval = self.evaluate()
                if tb is not None and last_eval:
                    for k, v in last_eval.items():
                        if k != "step" and not math.isnan(v):
                            tb.add_scalar(f"val/{k}", v, self.step)
        bar.close()
        if main:
            save_checkpoint(self.model, self.cfg.model, self.out / FINAL_DIR)
            if tb is not None:
                tb.close()
        barrier(ctx)
        return {"step": self.step, "eval": last_eval}
