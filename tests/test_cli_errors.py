"""Command-line mistakes give one error line and exit 2 (argparse's parser.error), never a traceback, a silent
no-op or an error found only after the work is done. Every case fails before loading a model or data."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def usage_error(capsys: pytest.CaptureFixture[str], main: Callable, argv: list[str]) -> str:
    """Run a CLI's ``main(argv)``; check it exits 2 with one error line (after argparse's usage, if any)
    and no traceback; return that line."""
    try:
        code = main(argv)
    except SystemExit as exc:  # parser.error
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    return errors[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """An existing plain file, where a folder is wanted."""
    path = tmp_path / "file"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize("frames", ["0", "-3"])
def test_demo_needs_at_least_one_frame(capsys: pytest.CaptureFixture[str], frames: str) -> None:
    from partglee_ros.ros.demo import main

    assert "--frames must be >= 1" in usage_error(capsys, main, ["--frames", frames])


def test_demo_checks_the_node_executable_before_starting_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from partglee_ros.ros.demo import main

    line = usage_error(capsys, main, ["--node", "/nonexistent", "--out", str(tmp_path / "out")])
    assert "--node /nonexistent is not an executable file" in line


def test_demo_refuses_an_out_that_is_a_file(capsys: pytest.CaptureFixture[str], a_file: Path) -> None:
    from partglee_ros.ros.demo import main

    line = usage_error(capsys, main, ["--node", sys.executable, "--out", str(a_file)])
    assert f"--out {a_file}: cannot make the folder" in line


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("model.onnx", None),
        ("model.onnx", b"hello world\n"),
        ("model.onnx", b""),
        ("model.json", b'{"a": 1}'),
        pytest.param(
            "model.onnxtxt",
            b"garbage",
            marks=pytest.mark.filterwarnings("ignore:The onnxtxt format is experimental"),
        ),
    ],
    ids=["missing", "not-onnx", "empty", "json", "onnxtxt"],
)
def test_op_support_cannot_read_is_exit_2_not_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: bytes | None
) -> None:
    """Exit 1 means "the graph has problems": a file that is no graph (in the format its suffix names) is a
    usage error."""
    from engines.op_support import main

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert str(path) in usage_error(capsys, main, [str(path)])


def test_eval_checkpoint_missing_model_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.eval_checkpoint import main

    line = usage_error(capsys, main, ["--model", "/nonexistent", "--num-images", "1"])
    assert "--model /nonexistent: model directory not found" in line


@pytest.mark.parametrize("split", ["bogus", "train"])
def test_eval_checkpoint_scores_held_out_splits_only(capsys: pytest.CaptureFixture[str], split: str) -> None:
    from benchmarks.eval_checkpoint import main

    line = usage_error(capsys, main, ["--split", split])
    assert f"argument --split: invalid choice: '{split}'" in line


class _Evaluated(Exception):
    """Raised by the stand-in for ``score``: the evaluation started."""


def test_eval_checkpoint_checks_outputs_before_evaluating(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, a_file: Path
) -> None:
    from benchmarks import eval_checkpoint

    out = tmp_path / "missing" / "metrics.json"

    def score(*args: object) -> dict:
        assert out.parent.is_dir(), "the folder of --out is made before the evaluation"
        raise _Evaluated

    monkeypatch.setattr(eval_checkpoint, "score", score)
    with pytest.raises(_Evaluated):
        eval_checkpoint.main(["--out", str(out)])
    line = usage_error(capsys, eval_checkpoint.main, ["--out", str(a_file / "metrics.json")])
    assert f"--out {a_file / 'metrics.json'}: cannot make its folder" in line
    line = usage_error(capsys, eval_checkpoint.main, ["--markdown", str(tmp_path)])
    assert f"--markdown {tmp_path} is a folder" in line


@pytest.mark.parametrize("opset", ["16", "25"])
def test_export_onnx_checks_the_opset_range_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, opset: str
) -> None:
    """Before the checkpoint (here missing) is looked at: above the exporter's maximum torch traces the whole
    model and prints its IR before failing."""
    from engines.export_onnx import MAX_OPSET, MIN_OPSET, main

    line = usage_error(capsys, main, ["--model", str(tmp_path / "model"), "--opset", opset])
    assert f"--opset must be in {MIN_OPSET}..{MAX_OPSET}" in line


def test_visualize_unknown_category_lists_the_known_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from training.data.visualize import main

    line = usage_error(capsys, main, ["--out", str(tmp_path / "vis"), "--categories", "mug", "nosuch"])
    assert "invalid choice: 'nosuch'" in line and "'mug'" in line
    assert not (tmp_path / "vis").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "FileNotFoundError"),
        ("not json", "JSONDecodeError"),
        ('{"a": 1}', "KeyError: 'categories'"),
        ("[1, 2]", "TypeError"),
    ],
    ids=["missing", "not-json", "no-categories", "a-list"],
)
def test_visualize_paco_json_that_cannot_be_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, reason: str
) -> None:
    from training.data.visualize import main

    path = tmp_path / "annotations.json"
    if content is not None:
        path.write_text(content)
    line = usage_error(capsys, main, ["--out", str(tmp_path / "vis"), "--paco-json", str(path)])
    assert f"cannot read --paco-json {path} as PACO/COCO JSON: {reason}" in line


def test_visualize_paco_json_without_its_images(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from training.data.visualize import main

    path = tmp_path / "annotations.json"
    path.write_text(
        '{"categories": [{"id": 1, "name": "mug"}], "annotations": [],'
        ' "images": [{"id": 1, "file_name": "a.png", "height": 8, "width": 8}]}'
    )
    line = usage_error(capsys, main, ["--out", str(tmp_path / "vis"), "--paco-json", str(path)])
    assert f"1 of its images are not in {tmp_path / 'images'} (e.g. a.png)" in line


def test_model_flops_unknown_config_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.model_flops import main

    line = usage_error(capsys, main, ["--configs", "small", "nosuch"])
    assert "invalid choice: 'nosuch'" in line and "'small'" in line


@pytest.mark.parametrize("frames", ["0", "-1"])
def test_make_sample_needs_at_least_one_frame(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, frames: str
) -> None:
    from partglee_ros.bag.make_sample import main

    out = tmp_path / "bag"
    assert "--frames must be >= 1" in usage_error(capsys, main, ["--out", str(out), "--frames", frames])
    assert not out.exists()


def _one_line(command: str) -> str:
    return " ".join(command.replace("\\\n", " ").split())


def test_make_sample_example_is_the_bundled_sample_of_bag_eval_md() -> None:
    from partglee_ros.bag import make_sample

    example = re.search(r"^ +(python -m \S+make_sample .*?)\n\n", make_sample.__doc__, re.M | re.S)
    assert example is not None
    command = _one_line(example.group(1))
    assert "--out data/sample_bag/bag " in command
    assert command in _one_line((REPO / "docs" / "BAG_EVAL.md").read_text())


def test_train_refuses_an_out_that_is_a_file(capsys: pytest.CaptureFixture[str], a_file: Path) -> None:
    from training.train import main

    config = str(REPO / "training" / "configs" / "small_synthparts.yaml")
    for out in (a_file, a_file / "run"):
        line = usage_error(capsys, main, ["--config", config, "--out", str(out)])
        assert line == f"training: error: --out {out}: {a_file} is a file, not a folder"


def test_train_examples_name_existing_configs() -> None:
    from training.train import EPILOG

    configs = re.findall(r"--config (\S+)", EPILOG)
    assert configs and all((REPO / c).is_file() for c in configs), configs


@pytest.mark.parametrize("argv", [["--num-images", "0"], ["--ci-subset", "-1"]])
def test_eval_checkpoint_counts_are_checked_first(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    from benchmarks import eval_checkpoint

    assert "--num-images must be >= 1" in usage_error(capsys, eval_checkpoint.main, argv)


@pytest.mark.parametrize("threshold", ["nan", "1.5"])
def test_demo_threshold_is_a_score(capsys: pytest.CaptureFixture[str], threshold: str) -> None:
    from partglee_ros.ros.demo import main

    assert "--threshold must be in [0, 1]" in usage_error(capsys, main, ["--threshold", threshold])
