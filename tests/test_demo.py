"""The README's main job (`make demo` = scripts/demo.sh): the node on the bundled model in its own process,
sample frames over ROS, the vocabulary service, a planner's segment request, overlays and a summary. Run here with 2 frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2

from tests.ros_testing import REPO


def test_demo_runs_the_node_on_the_bundled_model_and_writes_overlays(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "partglee_ros.ros.demo", "--frames", "2", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "set_vocabulary -> success=True" in proc.stdout
    assert "segment (mug: handle) -> success=True" in proc.stdout
    assert "planner query" in (out / "summary.md").read_text()
    assert cv2.imread(str(out / "query_mug_handle.png")).shape == (240, 640, 3)
    summary = (out / "summary.md").read_text()
    assert "models/default" in summary and "| 01 |" in summary
    for i in range(2):
        image = cv2.imread(str(out / f"frame_{i:02d}.png"))
        assert image is not None and image.shape == (240, 640, 3)  # input | overlay, side by side
