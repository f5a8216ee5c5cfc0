"""The bundled Fast DDS profile (config/fastdds_large_data.xml): valid, what the launch file gives the node, and
effective: raw 640x480 camera frames published best-effort through it reach the node.

Without it, Fast DDS cuts such frames (0.9 MB, above its 0.5 MB default shared-memory segment) into UDP
fragments and best-effort delivery loses most of them (docs/BENCHMARKS.md); that side is machine-dependent
(socket buffers), so only the profile's side is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import tomllib
from diagnostic_msgs.msg import DiagnosticArray

from partglee_ros.ros.dds_profile import (
    DDS_PROFILE_ENV,
    bundled_dds_profile,
    dds_environment,
    default_dds_profile,
    use_bundled_dds_profile,
)
from partglee_ros.ros.launch_arguments import node_command
from tests.checkpoints import DEFAULT_MODEL
from tests.conftest import spin_until
from tests.ros_testing import NODE_EXECUTABLE, REPO, params_file

PROFILE = REPO / "config" / "fastdds_large_data.xml"
NS = "{http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles}"


def test_profile_routes_user_data_through_a_large_shared_memory_segment() -> None:
    root = ET.parse(PROFILE).getroot()
    transports = {t.findtext(f"{NS}transport_id"): t for t in root.iter(f"{NS}transport_descriptor")}
    kinds = {t.findtext(f"{NS}type"): t for t in transports.values()}
    assert set(kinds) == {"SHM", "UDPv4"}  # UDP stays for discovery and other machines
    assert int(kinds["SHM"].findtext(f"{NS}segment_size")) >= 8 * 2**20  # several 640x480 RGB frames
    (participant,) = root.iter(f"{NS}participant")
    assert participant.get("is_default_profile") == "true"
    rtps = participant.find(f"{NS}rtps")
    assert {t.text for t in rtps.iter(f"{NS}transport_id")} == set(transports)
    assert rtps.findtext(f"{NS}useBuiltinTransports") == "false"


def test_dds_environment(monkeypatch, tmp_path) -> None:
    assert dds_environment(str(PROFILE)) == {DDS_PROFILE_ENV: str(PROFILE)}
    assert dds_environment("") == {}
    with pytest.raises(FileNotFoundError, match="dds_profile"):
        dds_environment(str(tmp_path / "missing.xml"))
    bundled = bundled_dds_profile()  # the colcon install's copy of this file
    assert bundled is not None and bundled.read_bytes() == PROFILE.read_bytes()
    monkeypatch.delenv(DDS_PROFILE_ENV, raising=False)
    assert default_dds_profile() == str(bundled)
    use_bundled_dds_profile()
    assert os.environ[DDS_PROFILE_ENV] == str(bundled)
    monkeypatch.setenv(DDS_PROFILE_ENV, "/etc/robot/fastdds.xml")  # a user's own profile wins
    assert default_dds_profile() == "/etc/robot/fastdds.xml"
    use_bundled_dds_profile()
    assert os.environ[DDS_PROFILE_ENV] == "/etc/robot/fastdds.xml"


def test_bag_eval_command_line_replays_through_the_profile() -> None:
    """The console script and ``python -m`` both go through ``cli``, which sets the profile; ``main`` (what
    the tests call in-process) leaves the environment alone."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["partglee-bag-eval"] == "partglee_ros.bag.evaluate:cli"
    probe = (
        "import os, runpy, sys\n"
        "sys.argv = ['partglee-bag-eval', '--help']\n"
        "try:\n    runpy.run_module('partglee_ros.bag.evaluate', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print(os.environ.get({DDS_PROFILE_ENV!r}))"
    )
    env = {k: v for k, v in os.environ.items() if k != DDS_PROFILE_ENV}
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO)
    assert run.stdout.strip().splitlines()[-1] == str(bundled_dds_profile()), run.stdout + run.stderr


@pytest.mark.ros
def test_raw_640x480_frames_reach_the_node_through_the_profile(ros_node, start_process, tmp_path) -> None:
    """Counted after a warm-up burst: the node's first inferences (cold caches on a fresh machine) can hold
    both cores long enough for its depth-1 subscription to drop frames, which is not what this measures."""
    frames = 60
    params = params_file(tmp_path, publish_debug_image=False)
    values = {"model_path": str(DEFAULT_MODEL), "backend": "onnx", "image_topic": "/dds_profile/image"}
    node_cmd = node_command(str(NODE_EXECUTABLE), str(params), values, namespace="/dds_profile")
    node = start_process(*node_cmd, name="node", env=dds_environment(str(PROFILE)))
    seen: list[DiagnosticArray] = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", seen.append, 10)

    def received() -> int:
        ours = [s for d in seen for s in d.status if s.hardware_id.startswith("/dds_profile/")]
        values = {kv.key: kv.value for kv in ours[-1].values} if ours else {}
        return int(values.get("frames_received", 0))

    def burst(count: int) -> None:
        camera_cmd = [sys.executable, str(REPO / "tests" / "camera_peer.py"), "/dds_profile/image"]
        camera = start_process(
            *camera_cmd, "--frames", str(count), name="camera", env=dds_environment(str(PROFILE))
        )
        done = spin_until(ros_node, lambda: camera.proc.poll() is not None, 150)
        assert done, camera.output() + node.output()
        assert camera.proc.returncode == 0, camera.output()

    burst(10)
    assert spin_until(ros_node, lambda: received() > 0, 10), node.output()
    spin_until(ros_node, lambda: False, 2.0)  # the last warm-up frames are counted by the next diagnostics
    before = received()
    burst(frames)
    spin_until(ros_node, lambda: received() - before >= frames, 10)
    assert received() - before >= 0.9 * frames, f"{received() - before} of {frames} frames\n" + node.output()
