"""partglee_node --lifecycle: configure loads, activate processes, deactivate stops, activate resumes (issue #7)."""

from __future__ import annotations

import signal
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from partglee_ros.msg import HierarchicalSegmentation
from partglee_ros.srv import GetVocabulary, Segment
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from partglee_ros.ros.conversions import rgb_to_image_msg
from tests.conftest import first_answer, spin_until
from tests.ros_testing import NODE_EXECUTABLE, noise_image, params_file, partglee_command, small_checkpoint

QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _call(node, client, request, timeout: float = 120.0):
    """The response, or None when none came within ``timeout``.

    A service can report ready before DDS has matched its reply path, so a first request's reply can be
    lost on a loaded machine; callers decide whether asking again is safe."""
    assert spin_until(node, client.service_is_ready, 60)
    future = client.call_async(request)
    return future.result() if spin_until(node, future.done, timeout) else None


def _set_model_path(node, client, path: str):
    """The SetParameters result for model_path (setting it again is harmless, so a lost reply is asked again)."""
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=path)
    request = SetParameters.Request(parameters=[Parameter(name="model_path", value=value)])
    for _ in range(3):
        response = _call(node, client, request, timeout=30.0)
        if response is not None:
            return response.results[0]
    raise AssertionError("no SetParameters reply")


def test_lifecycle_transitions(ros_node, start_process, tmp_path) -> None:
    model = small_checkpoint(tmp_path / "model")
    cmd = partglee_command(params_file(tmp_path, object_threshold=0.0), model, image_topic="/lc/image")
    proc = start_process(cmd[0], "--lifecycle", *cmd[1:], name="lifecycle")
    change = ros_node.create_client(ChangeState, "/partglee/change_state")
    get = ros_node.create_client(GetState, "/partglee/get_state")
    results: list[HierarchicalSegmentation] = []
    ros_node.create_subscription(HierarchicalSegmentation, "/segmentation", results.append, QOS)
    pub = ros_node.create_publisher(Image, "/lc/image", QOS)
    diagnostics: list[dict[str, str]] = []
    ros_node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: diagnostics.extend({v.key: v.value for v in s.values} for s in m.status),
        QOS,
    )
    set_parameters = ros_node.create_client(SetParameters, "/partglee/set_parameters")

    def state() -> int:
        for _ in range(4):  # idempotent: ask again when a reply is lost
            response = _call(ros_node, get, GetState.Request(), timeout=30.0)
            if response is not None:
                return response.current_state.id
        raise AssertionError(f"no GetState reply in 2 min\n{proc.output()}")

    def transition(tid: int, target: int) -> None:
        response = _call(ros_node, change, ChangeState.Request(transition=Transition(id=tid)))
        if response is None:  # not idempotent: the state says whether it ran and only the reply was lost
            assert state() == target, proc.output()
        else:
            assert response.success, proc.output()

    def frame_gets_result(sec: int, timeout: float) -> bool:
        header = Header(frame_id="cam")
        header.stamp.sec = sec
        pub.publish(rgb_to_image_msg(noise_image(sec), header))
        return spin_until(ros_node, lambda: any(r.header.stamp.sec == sec for r in results), timeout)

    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    transition(Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)
    assert state() == State.PRIMARY_STATE_INACTIVE
    assert not frame_gets_result(1, 3.0), "an inactive node must not process frames"
    segment = ros_node.create_client(Segment, "/segment")
    answer = _call(ros_node, segment, Segment.Request(timeout=1.0), timeout=60.0)
    assert answer is not None and not answer.success and "not active" in answer.message, proc.output()
    transition(Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
    assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 30)
    assert frame_gets_result(2, 60.0), proc.output()
    transition(Transition.TRANSITION_DEACTIVATE, State.PRIMARY_STATE_INACTIVE)
    assert not frame_gets_result(3, 3.0)
    transition(Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
    assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 30)
    assert frame_gets_result(4, 60.0), proc.output()
    # counts since start over both activations: the second's slot counted received frames from 0 again
    diagnostics.clear()
    assert spin_until(ros_node, lambda: bool(diagnostics), 30)
    counts = diagnostics[-1]
    assert int(counts["frames_received"]) >= int(counts["frames_processed"]) == 2, counts
    # a request waiting for a frame is answered at deactivate, not left to its timeout
    waiting = segment.call_async(Segment.Request(timeout=120.0))
    spin_until(ros_node, lambda: False, 1.0)
    assert not waiting.done()
    transition(Transition.TRANSITION_DEACTIVATE, State.PRIMARY_STATE_INACTIVE)
    assert spin_until(ros_node, waiting.done, 30), proc.output()
    assert waiting.result().message == "the node was deactivated"
    # configured: what configure read cannot change under it
    refused = _set_model_path(ros_node, set_parameters, str(model))
    assert not refused.successful and "take effect at configure" in refused.reason, refused.reason
    transition(Transition.TRANSITION_CLEANUP, State.PRIMARY_STATE_UNCONFIGURED)
    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    assert _set_model_path(ros_node, set_parameters, str(model)).successful
    # configured again: revisions go on from the previous configuration's, never naming two vocabularies
    transition(Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)
    get_vocabulary = ros_node.create_client(GetVocabulary, "/get_vocabulary")
    vocabulary = _call(ros_node, get_vocabulary, GetVocabulary.Request(), timeout=30.0)
    assert vocabulary is not None and vocabulary.vocabulary.revision == 2, proc.output()
    transition(Transition.TRANSITION_CLEANUP, State.PRIMARY_STATE_UNCONFIGURED)
    assert proc.proc.poll() is None


def test_missing_model_exits_cleanly(start_process, tmp_path) -> None:
    cmd = partglee_command(params_file(tmp_path), tmp_path / "no_such_model")
    proc = start_process(*cmd, name="bad")
    assert proc.proc.wait(timeout=120) == 2
    log = proc.output()
    assert "cannot start: model directory not found" in log and "Traceback" not in log, log


def test_corrupt_weights_exit_cleanly(start_process, tmp_path) -> None:
    model = small_checkpoint(tmp_path / "model")
    (model / "model.safetensors").write_bytes(b"\x00not a safetensors file")
    proc = start_process(*partglee_command(params_file(tmp_path), model), name="corrupt")
    assert proc.proc.wait(timeout=120) == 2
    log = proc.output()
    assert "cannot load" in log and "model.safetensors" in log and "Traceback" not in log, log


def test_bad_parameter_override_exits_cleanly(start_process, tmp_path) -> None:
    cmd = partglee_command(params_file(tmp_path), small_checkpoint(tmp_path / "model"))
    proc = start_process(*cmd, "-p", "max_objects:=5000", name="bad_param")  # declared range: 1-1000
    assert proc.proc.wait(timeout=120) == 2
    log = proc.output()
    assert "cannot start" in log and "max_objects" in log and "Traceback" not in log, log


def test_backend_auto_falling_back_says_why_in_the_nodes_log_and_diagnostics(
    ros_node, start_process, tmp_path
) -> None:
    """A model.onnx auto cannot use (here not a graph at all; in the field one exported from other weights)
    makes it fall back to PyTorch. That was a bare stderr line: not on /rosout, not in the `loaded` line."""
    model = small_checkpoint(tmp_path / "model")
    (model / "model.onnx").write_bytes(b"not an ONNX graph")
    cmd = partglee_command(params_file(tmp_path), model, backend="auto")
    proc = start_process(*cmd, "-r", "__ns:=/fallback", name="fallback")
    diagnostics: list[dict[str, str]] = []
    ros_node.create_subscription(
        DiagnosticArray,
        "/diagnostics",
        lambda m: diagnostics.extend(
            {v.key: v.value for v in s.values} for s in m.status if s.hardware_id == "/fallback/partglee"
        ),
        QOS,
    )
    assert spin_until(ros_node, lambda: bool(diagnostics), 90), proc.output()
    reason = "backend auto: model.onnx not used, falling back to PyTorch: cannot load ONNX model"
    assert diagnostics[-1]["backend_fallback"].startswith(reason), diagnostics[-1]
    assert diagnostics[-1]["backend"] == "torch/cpu, fp32"
    lines = proc.output().splitlines()
    assert any(line.startswith("[WARN]") and f"[fallback.partglee]: {reason}" in line for line in lines), (
        lines
    )
    assert any(line.startswith("[INFO]") and f"on torch/cpu, fp32 ({reason}" in line for line in lines), lines


def test_an_empty_objects_list_says_so(start_process, tmp_path) -> None:
    """rcl leaves a list given as [] unset, and the node exited with "The parameter 'objects' is not
    initialized". No params file: with one, rcl keeps the file's list instead."""
    model = f"model_path:={tmp_path / 'model'}"  # not read: the vocabulary is checked first
    proc = start_process(
        str(NODE_EXECUTABLE), "--ros-args", "-p", "objects:=[]", "-p", model, name="no_objects"
    )
    assert proc.proc.wait(timeout=60) == 2, proc.output()
    log = proc.output()
    assert "cannot start: objects is an empty list: the vocabulary needs at least one object name" in log, log


@pytest.mark.parametrize("parts", ["[]", "['']"])
def test_an_empty_parts_list_starts_without_parts(start_process, tmp_path, parts: str) -> None:
    """A vocabulary may have no parts (set_vocabulary takes one); as parameters, [] failed as unset and
    [''] (the launch file's "none") as an empty name."""
    model = small_checkpoint(tmp_path / "model")
    values = {"objects": "[mug]", "parts": parts, "model_path": model, "backend": "torch"}
    args = [arg for name, value in values.items() for arg in ("-p", f"{name}:={value}")]
    proc = start_process(str(NODE_EXECUTABLE), "--ros-args", *args, name="no_parts")
    deadline = time.monotonic() + 90
    while "loaded " not in proc.output() and proc.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "vocabulary revision 1: 1 object, 0 parts" in proc.output(), proc.output()
    assert proc.proc.poll() is None, proc.output()


@pytest.mark.parametrize(
    ("executable", "arguments", "message"),
    [
        # an unset shell variable
        ("partglee_node", "--ros-args -r image:=", "Couldn't parse remap rule: '-r image:='"),
        ("partglee_node", "--ros-args --params-file {broken}", "Couldn't parse params file"),
        ("grasp_node", "--ros-args -r segment:=", "Couldn't parse remap rule"),
        ("grasp_node", "--ros-args -p min_quality:=abc", "expecting type 'DOUBLE': min_quality"),
        ("grasp_node", "--ros-args -p depth_slop:=-1.0", "depth_slop out of range"),  # was accepted
        ("partglee_node", "--lifecyle --ros-args", "unknown argument '--lifecyle'"),  # ran unmanaged
        ("grasp_node", "--lifecycle --ros-args", "unknown argument '--lifecycle'"),
        (
            "partglee_node",
            "--ros-args --lifecycle",
            "unknown ROS arguments ['--lifecycle'] (its own flags go",
        ),
    ],
)
def test_malformed_ros_arguments_exit_cleanly(
    start_process, tmp_path, executable, arguments, message
) -> None:
    """rcl's own argument errors (raised from rclpy.init) and grasp_node's refused overrides ended in
    tracebacks with exit code 1; they are one line and exit code 2 like every other start-up error."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**:\n  ros__parameters: {backend: [unclosed\n")
    args = arguments.format(broken=broken).split()
    proc = start_process(str(NODE_EXECUTABLE.with_name(executable)), *args, name="malformed")
    assert proc.proc.wait(timeout=60) == 2, proc.output()
    log = proc.output()
    assert message in log and "cannot start" in log and "Traceback" not in log, log


def test_second_ctrl_c_during_shutdown_does_not_kill_the_node(ros_node, start_process, tmp_path) -> None:
    """A terminal delivers Ctrl-C to `ros2 launch` and the node alike, so a second press reached the node
    halfway through its clean-up and killed it by signal (exit -2 after 0.1 s, the model never released)."""
    cmd = partglee_command(
        params_file(tmp_path), small_checkpoint(tmp_path / "model"), image_topic="/twice/i"
    )
    proc = start_process(*cmd, "-r", "__ns:=/twice", name="twice")
    client = ros_node.create_client(Segment, "/twice/segment")
    camera = ros_node.create_publisher(Image, "/twice/i", 1)
    # running: the segment service's helper answers only once the node is active (a request then times out)
    assert spin_until(ros_node, client.service_is_ready, 90), proc.output()
    future = client.call_async(Segment.Request(timeout=0.1))
    assert spin_until(ros_node, future.done, 30) and camera.get_subscription_count() == 1, proc.output()
    proc.proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(timeout=60) == 0, proc.output()


@pytest.mark.parametrize("moment", ["imports", "model load"])
def test_ctrl_c_during_start_up_is_a_clean_stop(start_process, tmp_path, moment) -> None:
    """Ctrl-C before the node was up (a slow model load, a mistaken launch) ended in a KeyboardInterrupt
    traceback and exit -2."""
    cmd = partglee_command(params_file(tmp_path), small_checkpoint(tmp_path / "model"))
    proc = start_process(*cmd, name="early")
    if moment == "imports":
        time.sleep(0.3)
    else:  # just after the model is loaded: activate() and the services' start follow
        deadline = time.monotonic() + 60
        while "loaded " not in proc.output() and time.monotonic() < deadline:
            time.sleep(0.005)
    proc.proc.send_signal(signal.SIGINT)
    assert proc.proc.wait(timeout=60) == 0, proc.output()
    assert "Traceback" not in proc.output(), proc.output()


def test_failed_configure_is_logged_and_leaves_nothing(ros_node, start_process, tmp_path) -> None:
    cmd = partglee_command(params_file(tmp_path), tmp_path / "no_such_model", image_topic="/lcbad/image")
    proc = start_process(cmd[0], "--lifecycle", *cmd[1:], "-r", "__ns:=/lcbad", name="lifecycle_bad")
    change = ros_node.create_client(ChangeState, "/lcbad/partglee/change_state")
    assert spin_until(ros_node, change.service_is_ready, 60), proc.output()
    configure = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE))
    # a failed configure changes nothing, so a lost reply is asked again (ros2/rmw_fastrtps#842)
    response = first_answer(ros_node, lambda: change.call_async(configure), 3, 40, proc.output).result()
    assert not response.success, proc.output()
    assert "configure failed: model directory not found" in proc.output()
    get = ros_node.create_client(GetState, "/lcbad/partglee/get_state")
    state = _call(ros_node, get, GetState.Request())
    assert state is not None and state.current_state.id == State.PRIMARY_STATE_UNCONFIGURED
    services = dict(ros_node.get_service_names_and_types())
    assert "/lcbad/set_vocabulary" not in services, sorted(services)
    # tried again with a model that exists: the manager need not respawn the process
    set_parameters = ros_node.create_client(SetParameters, "/lcbad/partglee/set_parameters")
    assert _set_model_path(ros_node, set_parameters, str(small_checkpoint(tmp_path / "model"))).successful
    response = _call(ros_node, change, configure)
    assert response is None or response.success, proc.output()
    assert _call(ros_node, get, GetState.Request()).current_state.id == State.PRIMARY_STATE_INACTIVE
    assert proc.proc.poll() is None


def test_configure_failing_after_its_services_exist_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    """In process, with a fault injected after the services and publishers exist: a failed configure must undo
    them, so a second configure makes exactly one set of interfaces (no duplicate services)."""
    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from partglee_ros.ros.node import PartGleeLifecycleNode

    model = small_checkpoint(tmp_path / "model")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = PartGleeLifecycleNode(
        context=context,
        namespace="/inproc",
        parameter_overrides=[Parameter("model_path", value=str(model)), Parameter("backend", value="torch")],
    )
    try:

        def broken_timer(*args, **kwargs):
            raise RuntimeError("injected: no timer")

        monkeypatch.setattr(node, "create_timer", broken_timer)
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert node.segmenter is None and node.vocabulary_services is None
        assert not [s.srv_name for s in node.services if "vocabulary" in s.srv_name]
        assert node.seg_pub is None and node.diag_pub is None
        monkeypatch.undo()
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        names = [s.srv_name for s in node.services]
        assert sum(n.endswith("get_vocabulary") for n in names) == 1 and node.segmenter is not None, names
        # set_vocabulary and segment are served by helper nodes: the failed configure left none behind
        helpers = [n for n, _ in node.get_node_names_and_namespaces() if n.startswith(f"{node.get_name()}_")]
        assert sorted(helpers) == [f"{node.get_name()}_segment", f"{node.get_name()}_set_vocabulary"], helpers
        helper = node.vocabulary_services._set  # its thread is what a leak keeps running
        node.destroy_node()  # its helper nodes go with it (the set_vocabulary one once stayed, serving)
        assert not helper._thread.is_alive(), "the set_vocabulary helper still serves"
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
