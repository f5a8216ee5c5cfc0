"""The launch file's arguments, the params file and the node's declared parameters agree, and the command
line the launch file stands for places the node in a namespace with remapped topics (issue #7)."""

from __future__ import annotations

import ast
import importlib
import os

import cv2
import numpy as np
import pytest
import yaml
from partglee_ros.msg import HierarchicalSegmentation
from partglee_ros.srv import Segment
from rcl_interfaces.srv import DescribeParameters, GetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from partglee_ros.ros.conversions import depth_array_to_msg, rgb_to_image_msg
from partglee_ros.ros.launch_arguments import (
    ARGUMENTS,
    LIST_FORMS,
    grasp_command,
    node_command,
    parameter_values,
    with_grasp_node,
)
from partglee_ros.ros.parameters import BY_NAME
from partglee_ros.runtime.segmenter import MAX_IMAGE_PIXELS
from tests.checkpoints import NOT_IN_THE_RUNTIME, deployed_model_dir
from tests.conftest import PYTHON, first_answer, spin_until
from tests.ros_testing import NODE_EXECUTABLE, REPO, noise_image, params_file, small_checkpoint


def test_params_file_sets_exactly_the_declared_parameters() -> None:
    data = yaml.safe_load((REPO / "config" / "partglee.yaml").read_text())
    assert set(data["/**"]["ros__parameters"]) == set(BY_NAME)
    for name, value in data["/**"]["ros__parameters"].items():
        assert type(value) is type(BY_NAME[name].default), f"{name}: {value!r} vs {BY_NAME[name].default!r}"
        # a node started without the file (ros2 run, another launch file) gets the same behaviour
        assert value == BY_NAME[name].default, (
            f"{name}: {value!r} in the file, {BY_NAME[name].default!r} declared"
        )


def test_every_launch_argument_maps_to_a_parameter_or_remap() -> None:
    remapped = {"image", "depth", "camera_info"}
    for name, (kind, target, _) in ARGUMENTS.items():
        assert kind in ("param", "remap"), name
        assert target in (BY_NAME if kind == "param" else remapped) or target == "use_sim_time", name
    # every node parameter can be set from the command line under its own name
    assert set(BY_NAME) <= set(ARGUMENTS)
    # and a list one's errors show its own form
    assert set(LIST_FORMS) == {name for name, p in BY_NAME.items() if isinstance(p.default, list)}
    source = (REPO / "launch" / "partglee.launch.py").read_text()
    tree = ast.parse(source)
    declared = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", "") == "DeclareLaunchArgument"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert declared == {"namespace", "node_name", "params_file", "dds_profile", "grasp"}, (
        "other arguments come from the ARGUMENTS table"
    )
    assert "ARGUMENTS.items()" in source and 'executable="partglee_node"' in source


def test_parameter_arguments_not_given_leave_the_params_file_alone() -> None:
    """Before, every parameter argument had a default that launch always passed, so `use_depth: true` or
    `backend: onnx` in a user's params file was silently overridden by `use_depth:=false`, `backend:=auto`."""
    cmd = node_command("node", "robot.yaml", {"use_depth": "", "backend": ""})
    assert "-p" not in cmd and cmd[:4] == ["node", "--ros-args", "--params-file", "robot.yaml"]
    cmd = node_command("node", "", {"use_depth": "TRUE", "object_threshold": "1", "model_path": "123"})
    assert "--params-file" not in cmd
    assert {"use_depth:=true", "object_threshold:=1.0", 'model_path:="123"'} <= set(cmd)
    assert parameter_values(
        {"objects": "[mug, 'coffee cup']", "use_sim_time": "true", "device": "cuda:1"}
    ) == {
        "objects": ["mug", "coffee cup"],
        "use_sim_time": True,
        "device": "cuda:1",
    }


def test_grasp_option_sets_use_depth_and_wires_grasp_node_to_the_outputs() -> None:
    assert with_grasp_node({"backend": "onnx"}) == {"backend": "onnx", "use_depth": "true"}
    assert with_grasp_node({"use_depth": "True"})["use_depth"] == "true"
    with pytest.raises(ValueError, match="grasp:=true needs use_depth"):
        with_grasp_node({"use_depth": "false"})
    with pytest.raises(
        ValueError, match="use_depth:='yes': expected true or false"
    ):  # a typo, not a conflict
        with_grasp_node({"use_depth": "yes"})
    cmd = grasp_command("grasp_node", "robot.yaml", namespace="/arm")
    assert cmd == [
        *("grasp_node", "--ros-args", "--params-file", "robot.yaml", "-r", "__ns:=/arm"),
        *("-r", "depth:=segmentation/depth", "-r", "camera_info:=segmentation/camera_info"),
    ]
    # simulated time and depth_slop (grasp_node matches depth by stamp too) reach both nodes; the node's
    # other parameters only the node
    values = {"use_sim_time": "true", "object_threshold": "0.4", "depth_slop": "0.1"}
    forwarded = ["-p", "use_sim_time:=true", "-p", "depth_slop:=0.1"]
    assert grasp_command("grasp_node", "", values)[-4:] == forwarded


def test_grasp_node_takes_the_depth_slop_argument_as_the_node_does(ros_node, start_process) -> None:
    """`grasp:=true depth_slop:=0.1` reaches grasp_node, which declares it with the node's range: left at
    its 0.05, grasp_node dropped every frame whose republished depth was 0.08 s off the colour frame."""
    grasp_node = REPO / "install" / "partglee_ros" / "lib" / "partglee_ros" / "grasp_node"
    cmd = grasp_command(str(grasp_node), "", {"depth_slop": "0.1"}, namespace="/slop")
    proc = start_process(PYTHON, *cmd, name="slop_grasp")
    get = ros_node.create_client(GetParameters, "/slop/partglee_grasp/get_parameters")
    describe = ros_node.create_client(DescribeParameters, "/slop/partglee_grasp/describe_parameters")
    ready = spin_until(ros_node, lambda: get.service_is_ready() and describe.service_is_ready(), 30)
    assert ready, proc.output()
    names = ["depth_slop"]
    value = first_answer(
        ros_node, lambda: get.call_async(GetParameters.Request(names=names)), 5, 5, proc.output
    )
    assert value.result().values[0].double_value == 0.1
    request = DescribeParameters.Request(names=names)
    (described,) = first_answer(ros_node, lambda: describe.call_async(request), 5, 5).result().descriptors
    (slop_range,) = described.floating_point_range
    assert (slop_range.from_value, slop_range.to_value) == BY_NAME["depth_slop"].range


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"use_depth": "yes"}, r"use_depth:='yes': expected true or false"),
        ({"max_objects": "2.5"}, r"max_objects:='2.5': expected int"),
        ({"object_threshold": "nan"}, "expected a finite number"),
        ({"objects": "mug"}, "expected a list of at least one object name"),
        # rcl: unset, a crash; [''] is no way out either: the node refuses an empty object name
        ({"objects": "[]"}, r"expected a list of at least one object name, e.g. \"\['mug', 'cup'\]\"$"),
        # the node drops '' entries of parts and object_parts
        ({"object_parts": "[]"}, r"at least one 'object: part, part' entry, .*\(\[''\] for none\)$"),
        ({"parts": "[]"}, r"at least one part name, e.g. \"\['handle', 'lid'\]\" \(\[''\] for none\)$"),
        # YAML reads `mug: handle` as a mapping: the user did give a list
        ({"object_parts": "[mug: handle]"}, r"as a mapping; quote each entry, e.g. \"\['mug: handle, body'"),
        ({"objects": "[mug: handle]"}, "as a mapping; a name cannot contain ':'"),
        ({"use_debug_image": "true", "publish_debug_image": "false"}, "disagree"),
        ({"image_topic": ""}, "image_topic:='' is not a topic name"),
        ({"depth_topic": "/camera/depth raw"}, "is not a topic name"),
        ({"use_depht": "true"}, r"unknown launch arguments: \['use_depht'\]"),
    ],
)
def test_bad_launch_arguments_are_one_line_before_the_node_starts(values, message) -> None:
    with pytest.raises(ValueError, match=message):
        node_command("node", "robot.yaml", values)


def test_launch_file_imports_names_this_package_defines() -> None:
    """`ros2 launch` cannot run here (no PyPI wheel), so at least its imports from this package must resolve."""
    tree = ast.parse((REPO / "launch" / "partglee.launch.py").read_text())
    imports = [
        n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module.startswith("partglee_ros")
    ]
    assert imports
    for node in imports:
        module = importlib.import_module(node.module)
        for alias in node.names:
            assert hasattr(module, alias.name), f"launch file: {node.module} has no {alias.name}"


def test_namespaced_node_with_remapped_compressed_input(ros_node, start_process, tmp_path) -> None:
    model = small_checkpoint(tmp_path / "model")
    params = params_file(tmp_path, object_threshold=0.0)
    cmd = node_command(
        str(NODE_EXECUTABLE),
        str(params),
        {
            "model_path": str(model),
            "backend": "torch",
            "image_topic": "/robot/cam/image_raw",
            "depth_topic": "/robot/cam/depth",
            "camera_info_topic": "/robot/cam/info",
            "use_depth": "true",
            "compressed": "true",
        },
        namespace="/perception",
    )
    proc = start_process(*cmd, name="ns")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = ros_node.create_publisher(CompressedImage, "/robot/cam/image_raw/compressed", qos)
    results: list[HierarchicalSegmentation] = []
    ros_node.create_subscription(HierarchicalSegmentation, "/perception/segmentation", results.append, qos)
    assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 90), proc.output()
    services = dict(ros_node.get_service_names_and_types())
    assert "/perception/set_vocabulary" in services and "/perception/get_vocabulary" in services
    # the segment service's helper node takes the namespace, and the compressed topic is the one it waits on
    segment = ros_node.create_client(Segment, "/perception/segment")
    assert spin_until(ros_node, segment.service_is_ready, 30), proc.output()
    # node names travel on their own discovery topic: they may show a moment after the service
    helper = ("partglee_segment", "/perception")
    assert spin_until(ros_node, lambda: helper in ros_node.get_node_names_and_namespaces(), 30)
    future = segment.call_async(Segment.Request(timeout=1.0))
    assert spin_until(ros_node, future.done, 30), proc.output()
    waited = "timed out after 1 s waiting for a camera frame on /robot/cam/image_raw/compressed"
    assert future.result().message == waited

    # depth + camera_info 10 ms after the frame's stamp: matched within depth_slop and passed through
    depth_pub = ros_node.create_publisher(Image, "/robot/cam/depth", qos)
    # best effort, as image_transport publishes camera_info for a sensor-data camera
    info_pub = ros_node.create_publisher(CameraInfo, "/robot/cam/info", qos_profile_sensor_data)
    passed: list[Image] = []
    passed_sub = ros_node.create_subscription(Image, "/perception/segmentation/depth", passed.append, qos)
    assert spin_until(
        ros_node,
        lambda: (
            depth_pub.get_subscription_count()
            and info_pub.get_subscription_count()
            and passed_sub.get_publisher_count()
        ),
        30,
    )
    near = Header(frame_id="cam")
    near.stamp.sec, near.stamp.nanosec = 42, 10_000_000
    depth = np.full((240, 320), 700, np.uint16)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(noise_image(5), cv2.COLOR_RGB2BGR))
    assert ok
    msg = CompressedImage(header=Header(frame_id="cam"), format="jpeg", data=jpeg.tobytes())
    msg.header.stamp.sec = 42
    # up to three rounds: a message sent while only one side of a new DDS match is complete may be lost
    # (one CI run got no depth back); a node that never passes depth through fails all three
    for _ in range(3):
        depth_pub.publish(depth_array_to_msg(depth, near))
        info_pub.publish(CameraInfo(header=near, height=240, width=320))
        spin_until(ros_node, lambda: False, 0.5)
        before = len(results)
        pub.publish(msg)
        assert spin_until(ros_node, lambda before=before: len(results) > before, 60), proc.output()
        assert results[-1].header.stamp.sec == 42
        assert (results[-1].image_height, results[-1].image_width) == (240, 320)
        assert results[-1].objects
        if spin_until(ros_node, lambda: bool(passed), 5):
            break
    assert passed, proc.output()
    assert passed[0].header == near and passed[0].encoding == "16UC1"

    broken = CompressedImage(
        header=Header(frame_id="cam"), format="jpeg", data=np.arange(100, dtype=np.uint8).tobytes()
    )
    broken.header.stamp.sec = 43
    pub.publish(broken)
    assert spin_until(ros_node, lambda: "cannot decode compressed image" in proc.output(), 30), proc.output()
    # a PNG over the pixel limit is refused from its header (OPENCV_IO_MAX_IMAGE_PIXELS, set by the executable)
    ok, big = cv2.imencode(".png", np.zeros((4100, 4100, 3), np.uint8))
    assert ok
    pub.publish(CompressedImage(header=Header(frame_id="cam"), format="png", data=big.tobytes()))
    assert spin_until(ros_node, lambda: "over the limit" in proc.output(), 30), proc.output()
    msg.header.stamp.sec = 44
    pub.publish(msg)
    assert spin_until(ros_node, lambda: any(r.header.stamp.sec == 44 for r in results), 60), proc.output()


def test_launch_defaults_start_the_bundled_model(ros_node, start_process, tmp_path) -> None:
    """No model_path: the params file's '' reaches the node as an empty string (the bundled model), not
    null; the file's other values hold where no argument is given, and a given one overrides the file."""
    params = params_file(tmp_path, max_objects=7, use_depth=True, object_threshold=0.25)
    cmd = node_command(str(NODE_EXECUTABLE), str(params), {"object_threshold": "1"}, namespace="/defaults")
    proc = start_process(*cmd, name="defaults")
    assert spin_until(ros_node, lambda: "loaded " in proc.output() or proc.proc.poll() is not None, 90)
    assert proc.proc.poll() is None, proc.output()
    assert "share/partglee_ros/models/default" in proc.output()
    client = ros_node.create_client(GetParameters, "/defaults/partglee/get_parameters")
    assert spin_until(ros_node, client.service_is_ready, 30), proc.output()
    future = client.call_async(GetParameters.Request(names=["max_objects", "use_depth", "object_threshold"]))
    assert spin_until(ros_node, future.done, 30), proc.output()
    got = future.result().values
    assert (got[0].integer_value, got[1].bool_value, got[2].double_value) == (7, True, 1.0)


def test_node_executable_caps_compressed_frames_at_the_runtime_limit() -> None:
    source = (REPO / "nodes" / "partglee_node").read_text()
    assert f'"OPENCV_IO_MAX_IMAGE_PIXELS", str({MAX_IMAGE_PIXELS // 4096} * 4096)' in source


# Put first on a node's PYTHONPATH: makes the packages a robot's runtime-only install lacks unimportable and
# reports every attempt to import one, so a fallback that reaches for them cannot pass unnoticed.
BLOCKER = """import sys
BLOCKED = {blocked!r}
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            print(f"blocked import of {{name}}", file=sys.stderr, flush=True)
            raise ImportError(f"{{name}} is not installed here")
        return None
sys.meta_path.insert(0, _Blocker())
print("import blocker active", file=sys.stderr, flush=True)
"""


def test_node_runs_a_deployed_model_directory_without_pytorch(ros_node, start_process, tmp_path) -> None:
    """docs/ENGINES.md, "Deploying without PyTorch": config.json, model.onnx and the text encoder's graph,
    in a node process that cannot import PyTorch or the encoder's packages, with an empty cache."""
    model = deployed_model_dir(tmp_path / "model")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER.format(blocked=NOT_IN_THE_RUNTIME))
    env = {"PYTHONPATH": f"{site}:{os.environ.get('PYTHONPATH', '')}", "HOME": str(tmp_path / "home")}
    params = params_file(tmp_path, object_threshold=0.0)
    values = {"model_path": str(model), "backend": "onnx", "image_topic": "/deployed/image"}
    proc = start_process(*node_command(str(NODE_EXECUTABLE), str(params), values), name="deployed", env=env)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub = ros_node.create_publisher(Image, "/deployed/image", qos)
    results: list[HierarchicalSegmentation] = []
    ros_node.create_subscription(HierarchicalSegmentation, "/segmentation", results.append, qos)
    up = spin_until(ros_node, lambda: pub.get_subscription_count() > 0 or proc.proc.poll() is not None, 90)
    assert up and proc.proc.poll() is None, proc.output()
    header = Header(frame_id="cam")
    header.stamp.sec = 7
    frame = rgb_to_image_msg(noise_image(7), header)
    for _ in range(30):  # a frame sent before discovery has matched both ends is lost: send until one is back
        pub.publish(frame)
        if spin_until(ros_node, lambda: bool(results) or proc.proc.poll() is not None, 2):
            break
    assert results and results[0].header.stamp.sec == 7, proc.output()
    assert results[0].objects, "no objects at threshold 0"
    assert "import blocker active" in proc.output(), proc.output()  # the blocker was loaded
    assert "blocked import" not in proc.output() and "PyTorch" not in proc.output(), proc.output()
    assert not (tmp_path / "home" / ".cache" / "partglee_ros").exists()
