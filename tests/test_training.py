"""Training loop: loss goes down, resume is exact, the CLI documents itself, and DDP keeps replicas equal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from training.data.hierarchy import ImageAnnotation, ObjectAnnotation, PartAnnotation
from training.dataset import Source, StepBatches, SynthPartsSource, mirrored_names
from training.schedule import ScheduleConfig, lr_factor
from training.train import build_parser
from training.train_config import load_train_config, parse_train_config

REPO = Path(__file__).resolve().parents[1]

# A model small enough to take a step in well under a second on one core (128x96 images).
TINY = {
    "model": "config/models/small.yaml",
    "model_overrides": {
        "input_size": [128, 96],
        "hidden_dim": 32,
        "mask_dim": 32,
        "ffn_dim": 64,
        "enc_layers": 1,
        "dec_layers": 2,
        "part_dec_layers": 2,
        "qformer_layers": 1,
        "num_queries": 10,
        "qformer_topk": 4,
        "num_parse_queries": 3,
        "backbone_kwargs": {"layers": [1, 1, 1, 1], "channels": [16, 16, 32, 32], "stem_width": 16},
        "loss": {"num_points": 256},
    },
    "datasets": [
        {
            "name": "synth",
            "type": "synthparts",
            "split_config": "training/configs/synthparts.yaml",
            "split": "train",
            "width": 128,
            "height": 96,
            "max_scenes": 4,
        }
    ],
    "train": {
        "steps": 4,
        "batch_size": 2,
        "lr": 1.0e-3,
        "threads": 1,
        "log_every": 1,
        "checkpoint_every": 100,
        "schedule": {"kind": "cosine", "warmup_steps": 1},
    },
}


def tiny_config(**train):
    raw = {**TINY, "train": {**TINY["train"], **train}}
    return parse_train_config(raw, REPO)


def _trainer(cfg, out: Path):
    from training.distributed import DistContext
    from training.loop import Trainer

    return Trainer(cfg, out, DistContext(), progress=False, tensorboard=False)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_decreases_on_a_fixed_scene(tmp_path: Path) -> None:
    cfg = tiny_config(steps=12, hflip=0.0, schedule={"kind": "constant"})
    cfg.datasets[0].options["max_scenes"] = 1  # one scene: the loss must fall as the model fits it
    _trainer(cfg, tmp_path).fit()
    log = np.genfromtxt(tmp_path / "train_log.csv", delimiter=",", names=True)
    assert len(log) == 12
    assert log["loss"][-3:].mean() < 0.85 * log["loss"][:3].mean(), log["loss"]


def test_resume_restores_exactly(tmp_path: Path) -> None:
    cfg = tiny_config(steps=4)
    straight = _trainer(cfg, tmp_path / "straight")
    straight.fit()

    first = _trainer(tiny_config(steps=4), tmp_path / "split")
    first.fit(stop_after=2)
    assert first.step == 2
    second = _trainer(tiny_config(steps=4), tmp_path / "split")
    assert second.resume() and second.step == 2
    second.fit()

    a, b = _params(straight.model), _params(second.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    fresh = _params(_trainer(tiny_config(steps=4), tmp_path / "fresh").model)
    assert any(not torch.equal(a[k], fresh[k]) for k in a), "training did not change the weights"
    # the CSV of the resumed run has each step exactly once
    steps = np.genfromtxt(tmp_path / "split" / "train_log.csv", delimiter=",", names=True)["step"]
    assert steps.tolist() == [1, 2, 3, 4]


def test_checkpoint_loads_for_inference(tmp_path: Path) -> None:
    from partglee_ros.config import load_checkpoint

    trainer = _trainer(tiny_config(steps=1), tmp_path)
    trainer.fit()
    model, config = load_checkpoint(tmp_path / "model")
    assert config == trainer.cfg.model
    # a node may run as another user than the trainer: every file is readable by all (safetensors writes 0600)
    written = [f for f in tmp_path.rglob("*") if f.is_file() and f.suffix in {".safetensors", ".json"}]
    assert {f.parent.name for f in written} >= {"model", "step_00000001"}, written
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in written), [oct(f.stat().st_mode) for f in written]
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


def test_init_fine_tunes_from_a_model_folder(tmp_path: Path) -> None:
    source = _trainer(tiny_config(steps=2), tmp_path / "source")
    source.fit()
    trained = _params(source.model)

    tuned = _trainer(tiny_config(steps=1, seed=7), tmp_path / "tuned")
    assert any(not torch.equal(v, trained[k]) for k, v in _params(tuned.model).items())
    tuned.init_weights(tmp_path / "source" / "model")
    assert all(torch.equal(v, trained[k]) for k, v in _params(tuned.model).items())
    tuned.fit()
    assert any(not torch.equal(v, trained[k]) for k, v in _params(tuned.model).items())

    raw = {**TINY, "model_overrides": {**TINY["model_overrides"], "hidden_dim": 64}}
    other = _trainer(parse_train_config(raw, REPO), tmp_path / "other")
    with pytest.raises(ValueError, match="hidden_dim"):
        other.init_weights(tmp_path / "source" / "model")


def test_cli_mistakes_are_one_line_errors_that_start_nothing(tmp_path: Path, capsys) -> None:
    """A bad file, flag or folder: exit 2 and one line, before any step (an override such as --steps 0
    once ran an "empty" training and wrote an untrained model with exit 0)."""
    from training.train import main as train_main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "model": str(REPO / TINY["model"])}))
    (tmp_path / "split.yaml").write_text((REPO / "training/configs/synthparts.yaml").read_text())
    raw = yaml.safe_load(config.read_text())
    raw["datasets"][0]["split_config"] = str(tmp_path / "split.yaml")
    config.write_text(yaml.safe_dump(raw))
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("train: [steps: 3\n")
    warmup = tmp_path / "warmup.yaml"
    warmup.write_text(yaml.safe_dump({**raw, "train": {**raw["train"], "schedule": {"min_lr_ratio": 5}}}))
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**raw, "val": {**raw["datasets"][0], "spilt": "val"}}))
    earlier = tmp_path / "earlier"
    (earlier / "checkpoints" / "step_00000002").mkdir(parents=True)
    broken_init = tmp_path / "broken_init"
    broken_init.mkdir()
    (broken_init / "config.json").write_text("{")
    out = ["--out", str(tmp_path / "out"), "--no-progress", "--no-tensorboard"]
    for args, message in [
        (["--config", str(tmp_path / "absent.yaml"), *out], "absent.yaml: FileNotFoundError"),
        (["--config", str(garbage), *out], "garbage.yaml: ParserError"),
        (
            ["--config", str(config), "--steps", "0", *out],
            "--steps 0: ValueError: steps and batch_size must be >= 1",
        ),
        (
            ["--config", str(config), "--lr", "nan", *out],
            "--lr nan: ValueError: lr must be a positive number, got nan",
        ),
        (
            ["--config", str(config), "--checkpoint-every", "0", *out],
            "--checkpoint-every 0: ValueError: checkpoint_every",
        ),
        (["--config", str(warmup), *out], "schedule min_lr_ratio must be in [0, 1], got 5"),
        (["--config", str(config), "--stop-after", "0", *out], "--stop-after must be >= 1"),
        (["--config", str(typo), *out], "unknown keys ['spilt'] for type synthparts"),
        (
            ["--config", str(config), "--out", str(earlier)],
            "holds checkpoints of an earlier run: --resume it",
        ),
        (
            ["--config", str(config), "--init", str(broken_init), *out],
            f"--init {broken_init}: ValueError: {broken_init}/config.json",
        ),
        (
            ["--config", str(config), "--init", str(tmp_path / "absent"), *out],
            f"--init {tmp_path / 'absent'}: FileNotFoundError",
        ),
    ]:
        assert train_main(args) == 2, args
        last = capsys.readouterr().err.splitlines()[-1]  # after the text encoder's loading bar, if any
        assert last.startswith("training: error: ") and message in last, (args, last)
    assert not (tmp_path / "out" / "model").exists()


def test_batches_depend_on_step_and_rank_only() -> None:
    src = SynthPartsSource(
        "s", {"split_config": str(REPO / "training/configs/synthparts.yaml"), "max_scenes": 50}
    )
    a = StepBatches([src], [1.0], 2, (320, 240), seed=3, rank=0)
    b = StepBatches([src], [1.0], 2, (320, 240), seed=3, rank=0)
    other_rank = StepBatches([src], [1.0], 2, (320, 240), seed=3, rank=1)
    ids = [x.image_id for x in a.annotations(7)[1]]
    assert ids == [x.image_id for x in b.annotations(7)[1]]
    assert ids != [x.image_id for x in other_rank.annotations(7)[1]]


class MouseSource(Source):
    """One image of a mouse with its left button on the left (PACO's side-specific part names)."""

    def __init__(self, part_vocab: list[str]) -> None:
        self.name, self.object_vocab, self.part_vocab = "mice", ["mouse"], part_vocab

    def __len__(self) -> int:
        return 1

    def get(self, index: int) -> ImageAnnotation:
        def rect(x0: int, x1: int) -> np.ndarray:
            mask = np.zeros((60, 80), bool)
            mask[10:30, x0:x1] = True
            return mask

        parts = [
            PartAnnotation(2, "left_button", rect(20, 40), 1),
            PartAnnotation(3, "right_button", rect(40, 60), 1),
        ]
        mouse = ObjectAnnotation(1, "mouse", rect(20, 60), parts)
        return ImageAnnotation(0, "m.png", 60, 80, [mouse], np.zeros((60, 80, 3), np.uint8))


@pytest.mark.parametrize(
    "labels", [["left_button", "right_button"], ["mouse:left_button", "mouse:right_button"]]
)
def test_a_flipped_image_trains_left_parts_as_left(labels: list[str]) -> None:
    """A mirrored mouse has its left button on the left again: the flip must swap the side-specific names,
    or half the drawn images teach 'right_button' where the other half teach 'left_button'."""
    batches = StepBatches([MouseSource(labels)], [1.0], 1, (80, 60), hflip_prob=1.0)
    parts = batches[0].targets[0]["parts"]
    centre_x = {
        labels[int(label)]: float(box[0]) * 96
        for label, box in zip(parts["labels"], parts["boxes"], strict=True)
    }
    assert centre_x[labels[0]] < 40 < centre_x[labels[1]], centre_x  # image 80 px wide, padded to 96


def test_only_names_with_both_sides_change_sides() -> None:
    names = ["left_button", "right_button", "left wing", "right wing", "left_leg", "bright_light", "leftover"]
    assert mirrored_names(names) == {
        "left_button": "right_button",
        "right_button": "left_button",
        "left wing": "right wing",
        "right wing": "left wing",
    }


def test_sampling_ratios_pick_sources_in_proportion() -> None:
    src = SynthPartsSource("s", {"split_config": str(REPO / "training/configs/synthparts.yaml")})
    batches = StepBatches([src, src], [3.0, 1.0], 1, (320, 240), seed=0)
    share = np.mean([batches.source_of(s) == 0 for s in range(4000)])
    assert abs(share - 0.75) < 0.03


def test_schedule_warmup_then_cosine() -> None:
    cfg = ScheduleConfig(kind="cosine", warmup_steps=10, warmup_factor=0.0, min_lr_ratio=0.1)
    assert lr_factor(0, 100, cfg) == 0.0
    assert lr_factor(5, 100, cfg) == pytest.approx(0.5)
    assert lr_factor(10, 100, cfg) == pytest.approx(1.0)
    assert lr_factor(55, 100, cfg) == pytest.approx(0.55)
    assert lr_factor(100, 100, cfg) == pytest.approx(0.1)
    step = ScheduleConfig(kind="step", milestones=[20, 40], gamma=0.5)
    assert [lr_factor(s, 100, step) for s in (19, 20, 45)] == [1.0, 0.5, 0.25]


def test_help_documents_every_option() -> None:
    parser = build_parser()
    text = subprocess.run(
        [sys.executable, "-m", "training", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
        for opt in action.option_strings:
            assert opt in text
    assert "torchrun" in text


# The SynthParts split config (synthparts.yaml) lives beside the training configs; it has no "datasets".
TRAIN_CONFIGS = [
    p
    for p in sorted((REPO / "training/configs").glob("*.yaml"))
    if "datasets" in yaml.safe_load(p.read_text())
]


def test_every_shipped_config_is_found() -> None:
    names = {p.stem for p in TRAIN_CONFIGS}
    assert {"small_synthparts", "small_synthparts_flat", "r50_joint"} <= names, names


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.stem)
def test_shipped_train_configs_parse(path: Path) -> None:
    cfg = load_train_config(path)
    assert cfg.datasets and cfg.optim.steps > 0


WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from safetensors.torch import save_file
    from training.distributed import init_distributed, shutdown
    from training.loop import Trainer
    from training.train_config import load_train_config

    out = Path(sys.argv[2])
    ctx = init_distributed("cpu")
    trainer = Trainer(load_train_config(sys.argv[1]), out, ctx, progress=False, tensorboard=False)
    trainer.fit()
    state = {k: v.detach().contiguous() for k, v in trainer.model.named_parameters()}
    save_file(state, str(out / f"replica{ctx.rank}.safetensors"))
    shutdown(ctx)
    """
)


def test_ddp_gloo_replicas_stay_identical(tmp_path: Path) -> None:
    """Parameters, not buffers: BatchNorm running statistics are per rank (DDP broadcasts rank 0's at each
    forward, and rank 0 writes the checkpoints)."""
    from safetensors.torch import load_file

    raw = {**TINY, "train": {**TINY["train"], "steps": 2}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # Own process group: on a timeout the workers are killed with torchrun, not left running.
    proc = subprocess.Popen(
        [*cmd, str(tmp_path / "worker.py"), str(tmp_path / "tiny.yaml"), str(tmp_path / "run")],
        cwd=REPO,
        env=env,
        start_new_session=True,
    )
    try:
        assert proc.wait(timeout=300) == 0, "torchrun failed"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    r0 = load_file(str(tmp_path / "run" / "replica0.safetensors"))
    r1 = load_file(str(tmp_path / "run" / "replica1.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
