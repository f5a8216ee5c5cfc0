"""Shared test fixtures: an isolated ROS domain, an rclpy node in the test process, and real node
processes started the way `ros2 launch` would start them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def isolated_ros_domain() -> None:
    """Each test session gets its own DDS domain on loopback, so parallel runs never see each other."""
    os.environ["ROS_DOMAIN_ID"] = str(random.Random(os.getpid()).randint(1, 200))
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


@pytest.fixture(scope="module")
def ros_node() -> Iterator:
    """An rclpy node in the test process (requires the colcon build: `make test` does it)."""
    import rclpy
    from rclpy.node import Node

    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node(f"test_client_{os.getpid()}", context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def spin_until(node, predicate: Callable[[], bool], timeout: float) -> bool:
    """Spin `node` until predicate() is true or timeout seconds pass."""
    import rclpy

    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if predicate():
                return True
            executor.spin_once(timeout_sec=0.05)
        return predicate()
    finally:
        executor.remove_node(node)


def first_answer(
    node, call: Callable[[], object], tries: int, wait: float, output: Callable[[], str] | None = None
) -> object:
    """Call until a reply comes back, and return that call's future. A ready service has matched the
    client's requests, not always yet its replies: a reply sent before then is lost (ros2/rmw_fastrtps#842;
    a call in CI never returned). So only calls that change nothing, or nothing more when repeated, go here."""
    for _ in range(tries):
        future = call()
        if spin_until(node, future.done, wait):
            return future
    raise AssertionError(f"no reply to {tries} calls\n{output() if output else ''}")


class RosProcess:
    """A node in its own process; output goes to a log file that failing tests print."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        """``env``: variables added to this process's environment."""
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=os.environ | (env or {})
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def _process_starter(log_dir: Path) -> Iterator[Callable[..., RosProcess]]:
    started: list[RosProcess] = []

    def start(*args: str, name: str = "proc", env: dict[str, str] | None = None) -> RosProcess:
        proc = RosProcess([*args], log_dir / f"{name}-{len(started)}.log", env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture()
def start_process(tmp_path: Path) -> Iterator[Callable[..., RosProcess]]:
    """Start processes that are stopped when the test ends."""
    yield from _process_starter(tmp_path)


@pytest.fixture(scope="module")
def start_module_process(tmp_path_factory) -> Iterator[Callable[..., RosProcess]]:
    """Start processes shared by a module's tests (a node that takes seconds to load a model)."""
    yield from _process_starter(tmp_path_factory.mktemp("logs"))


PYTHON = sys.executable
