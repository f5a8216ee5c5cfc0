"""`colcon test` runs this suite through CTest (CMakeLists.txt), as a ROS workspace's CI would.

The child run is narrowed with PYTEST_ADDOPTS, which pytest reads from the environment CTest passes on, to
one quick test: the whole suite inside the suite would take as long again. It runs in the real build folder
(colcon test needs the configured one), so the folder's earlier test results are put back afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

BUILD = REPO / "build" / "partglee_ros"
RESULT = BUILD / "test_results" / "partglee_ros" / "pytest.xml"
RESULTS = ("Testing", "test_results")  # what colcon test writes and colcon test-result reads here

pytestmark = pytest.mark.skipif(
    os.environ.get("PARTGLEE_UNDER_COLCON_TEST") == "1",
    reason="this run is colcon test itself (CMakeLists.txt); a nested one would rewrite its results",
)


@pytest.fixture
def restored_results(tmp_path: Path) -> Iterator[None]:
    """The build folder's test results as they were before the test, whatever it left there."""
    saved = tmp_path / "saved"
    saved.mkdir()
    for name in RESULTS:
        if (BUILD / name).is_dir():
            shutil.copytree(BUILD / name, saved / name, symlinks=True)
    yield
    for name in RESULTS:
        shutil.rmtree(BUILD / name, ignore_errors=True)
        if (saved / name).is_dir():
            shutil.copytree(saved / name, BUILD / name, symlinks=True)


def _colcon_test(selection: str, log_base: Path) -> subprocess.CompletedProcess:
    for name in RESULTS:  # test-result reads every result file there: only this run's may be
        shutil.rmtree(BUILD / name, ignore_errors=True)
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
        ["colcon", *common, "test-result", "--test-result-base", str(BUILD)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_colcon_test_runs_pytest_and_reports_its_results(tmp_path: Path, restored_results) -> None:
    # pytest failing (here: no test selected, its exit code 5) fails colcon test's result
    failed = _colcon_test("no_such_test_anywhere", tmp_path / "log")
    assert failed.returncode != 0, failed.stdout

    passed = _colcon_test("test_manifest_is_valid_format_3", tmp_path / "log")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    cases = ET.parse(RESULT).getroot().iter("testcase")
    assert [c.get("name") for c in cases] == ["test_manifest_is_valid_format_3"]
