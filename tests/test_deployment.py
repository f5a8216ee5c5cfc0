"""A robot's model directory runs without PyTorch (docs/ENGINES.md, "Deploying without PyTorch").

The directory holds config.json, model.onnx and the text encoder's graph with its tokenizer, no weights. A
fresh process loads it, applies a vocabulary and segments a SynthParts scene, with an empty cache (a new
HOME): it must give exactly the instances the full model directory gives on ONNX Runtime (which uses the
same text encoder graph, checked against sentence-transformers in tests/test_onnx_text_encoder.py), and
export or cache nothing on the way. Once in this venv with PyTorch and the encoder packages made
unimportable, once in a venv that has only what `pip install partglee-ros` (no extras) installs.
"""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from partglee_ros.runtime.factory import load_segmenter
from partglee_ros.runtime.postprocess import PostprocessConfig
from partglee_ros.runtime.result import SegmentationResult
from tests.checkpoints import DEFAULT_MODEL, NOT_IN_THE_RUNTIME, deployed_model_dir
from tests.conftest import REPO
from training.data.synthparts import CATEGORIES, generate_scene

POST = PostprocessConfig(object_threshold=0.05, part_threshold=0.05)  # the weak bundled model finds some
OBJECTS = sorted(CATEGORIES)
PARTS = sorted({p for ps in CATEGORIES.values() for p in ps})


def instances(result: SegmentationResult) -> dict[str, np.ndarray]:
    """Every object and part of a result as arrays, to compare two results exactly."""
    found = [*result.objects, *result.parts()]
    return {
        "labels": np.array([getattr(x, "object_label", x.label) for x in found]),
        "scores": np.array([x.score for x in found], np.float32),
        "boxes": np.array([x.box for x in found], np.float32).reshape(-1, 4),
        "masks": np.array([x.mask for x in found], bool).reshape(-1, result.height, result.width),
    }


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """(the scene as .npy, what the full model directory finds in it)."""
    path = tmp_path_factory.mktemp("scene") / "image.npy"
    np.save(path, generate_scene(2000000, 640, 480).image)
    reference = load_segmenter(DEFAULT_MODEL, backend="onnx", postprocess_config=POST)
    reference.set_vocabulary(OBJECTS, PARTS)
    want = instances(reference.segment(np.load(path)))
    assert len(want["labels"]) >= 3, "too few instances to compare"
    return path, want


def segment_in_fresh_process(
    python: str, model_dir: Path, image: Path, tmp_path: Path, prelude: str = "", path: str = ""
) -> dict[str, np.ndarray]:
    """Run ``python`` (PYTHONPATH ``path``) on the model directory and image; its instances."""
    out = tmp_path / "got.npz"
    code = (
        f"{prelude}"
        "import sys\n"
        "import numpy as np\n"
        "from partglee_ros.runtime.factory import load_segmenter\n"
        "from partglee_ros.runtime.postprocess import PostprocessConfig\n"
        "from partglee_ros.runtime.result import SegmentationResult\n"
        f"{inspect.getsource(instances)}\n"
        f"seg = load_segmenter({str(model_dir)!r}, postprocess_config=PostprocessConfig(**{POST.__dict__!r}))\n"
        "assert seg.backend.name == 'onnx', seg.backend.name\n"
        f"seg.set_vocabulary({OBJECTS!r}, {PARTS!r})\n"
        f"np.savez({str(out)!r}, **instances(seg.segment(np.load({str(image)!r}))))\n"
        f"loaded = sorted(m for m in {NOT_IN_THE_RUNTIME!r} if sys.modules.get(m) is not None)\n"
        "assert not loaded, loaded\n"
    )
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": path}
    run = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert not (home / ".cache" / "partglee_ros").exists(), "the runtime exported or cached something"
    return dict(np.load(out))


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got["labels"]) == list(want["labels"])
    assert np.array_equal(got["masks"], want["masks"]) and np.array_equal(got["boxes"], want["boxes"])
    assert np.abs(got["scores"] - want["scores"]).max() <= 1e-6


def test_without_pytorch_importable(tmp_path: Path, scene) -> None:
    image, want = scene
    block = f"import sys\nsys.modules.update(dict.fromkeys({NOT_IN_THE_RUNTIME!r}))  # None: ImportError\n"
    got = segment_in_fresh_process(
        sys.executable, deployed_model_dir(tmp_path / "model"), image, tmp_path, prelude=block, path=str(REPO)
    )
    assert_same(got, want)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_in_a_venv_with_only_the_runtime_installed(tmp_path: Path, scene) -> None:
    """pip installs the package without extras (pinned by env/constraints.txt, from PyPI as scripts/setup.sh
    does; ~40 s, mostly from pip's cache) into a new venv: pyproject.toml's core dependencies suffice."""
    image, want = scene
    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ and egg-info there
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    for package in ("partglee_ros", "training", "engines"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "-c", str(REPO / "env" / "constraints.txt")]
    env = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": ""}
    install = subprocess.run([*pip, str(source)], capture_output=True, text=True, env=env, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    assert "onnxruntime==" in installed and "torch==" not in installed, installed
    got = segment_in_fresh_process(
        str(venv / "bin" / "python"), deployed_model_dir(tmp_path / "model"), image, tmp_path
    )
    assert_same(got, want)
