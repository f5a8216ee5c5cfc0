"""`colcon test` runs this suite through CTest (CMakeLists.txt), as a ROS workspace's CI would.

The child run is narrowed with PYTEST_ADDOPTS, which pytest reads from the environment CTest passes on, to
one quick test: the whole suite inside the suite would take as long again.
"""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import REPO

RESULT = REPO / "build" / "partglee_ros" / "test_results" / "partglee_ros" / "pytest.xml"


def _colcon_test(selection: str, log_base: Path) -> subprocess.CompletedProcess:
    RESULT.unlink(missing_ok=True)  # a previous run's file must not pass for this one
    env = {**os.environ, "PYTEST_ADDOPTS": f"-k {selection}"}
    common = ["--log-base", str(log_base)]
    paths = ["--base-paths", str(REPO), "--build-base", str(REPO / "build")]
    subprocess.run(
        ["colcon", *common, "test", *paths, "--install-base", str(REPO / "install")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return subprocess.run(
        ["colcon", *common, "test-result", "--test-result-base", str(REPO / "build" / "partglee_ros")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_colcon_test_runs_pytest_and_reports_its_results(tmp_path: Path) -> None:
    passed = _colcon_test("test_manifest_is_valid_format_3", tmp_path / "log")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    cases = ET.parse(RESULT).getroot().iter("testcase")
    assert [c.get("name") for c in cases] == ["test_manifest_is_valid_format_3"]

    # pytest failing (here: no test selected, its exit code 5) fails colcon test's result
    failed = _colcon_test("no_such_test_anywhere", tmp_path / "log")
    assert failed.returncode != 0, failed.stdout
