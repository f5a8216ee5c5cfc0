"""grasp_node's `plan_grasps` service against a real partglee_node, each in its own process.

One request: grasp_node asks partglee_node's `segment` service for the names on its next camera frame (with
depth), plans on that frame and answers with poses in the frame's header, best first. The model is a random
small one, so the test checks the chain, not accuracy: every pose lies on the flat depth the camera sent.
"""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from partglee_ros.srv import PlanGrasps, Segment

from partglee_ros.ros.launch_arguments import grasp_command, with_grasp_node
from partglee_ros.ros.part_cloud import cloud_points
from partglee_ros.ros.service_thread import WAITING_REQUESTS
from tests.conftest import PYTHON, REPO, spin_until
from tests.ros_testing import RgbdCamera, params_file, partglee_command, small_checkpoint

PARAMS = {"object_threshold": 0.0, "part_threshold": 0.0, "max_objects": 5, "max_parts_per_object": 3}
TOPICS = {"image_topic": "/gs/image", "depth_topic": "/gs/depth", "camera_info_topic": "/gs/camera_info"}
DEPTH_M = 0.7
PARTS = ["handle", "body", "lid", "spout", "cap", "neck", "blade", "head"]  # config/partglee.yaml
GRASP_NODE = REPO / "install" / "partglee_ros" / "lib" / "partglee_ros" / "grasp_node"


@pytest.fixture(scope="module")
def nodes(ros_node, start_module_process, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grasp_service")
    model = small_checkpoint(tmp / "model")
    params = params_file(tmp, **PARAMS)
    values = with_grasp_node(TOPICS)
    partglee = start_module_process(*partglee_command(params, model, **values), name="node")
    # as `ros2 launch partglee_ros partglee.launch.py grasp:=true` starts it (+ a parameter)
    grasp_cmd = grasp_command(str(GRASP_NODE), "")
    grasp = start_module_process(PYTHON, *grasp_cmd, "-p", "min_quality:=0.0", name="grasp")
    client = ros_node.create_client(PlanGrasps, "/plan_grasps")
    ready = spin_until(ros_node, client.service_is_ready, 90)
    assert ready, f"{partglee.output()}\n{grasp.output()}"
    camera = RgbdCamera(ros_node, TOPICS, np.full((240, 320), DEPTH_M, np.float32))
    assert spin_until(ros_node, camera.connected, 90), partglee.output()
    return client, camera, partglee, grasp


def ask(ros_node, client, camera: RgbdCamera | None, request: PlanGrasps.Request, first_sec: int = 0):
    """Call plan_grasps; with a camera, publish frames every 0.3 s until the answer comes."""
    future = client.call_async(request)
    if camera is None:
        assert spin_until(ros_node, future.done, 90), "plan_grasps did not answer"
    else:
        assert camera.publish_until(future.done, first_sec, 90), "plan_grasps did not answer"
    return future.result()


def test_plan_grasps_on_the_next_frame_for_the_requested_parts(ros_node, nodes) -> None:
    client, camera, partglee, grasp = nodes
    response = ask(
        ros_node, client, camera, PlanGrasps.Request(parts=["handle"], objects=["mug"], timeout=30.0), 100
    )
    assert response.success, f"{response.message}\n{partglee.output()}\n{grasp.output()}"
    seg = response.segmentation
    assert seg.header.stamp.sec >= 100 and seg.header.frame_id == "camera_optical"
    assert response.poses.header == seg.header
    assert len(response.poses.poses) == len(response.labels) == len(response.qualities) > 0
    assert set(response.labels) == {"mug:handle"}
    assert list(response.qualities) == sorted(response.qualities, reverse=True)
    for pose in response.poses.poses:
        assert pose.position.z == pytest.approx(DEPTH_M, abs=0.01)
    assert response.message.startswith(f"{len(response.poses.poses)} grasps on ")
    assert response.points.header == seg.header
    points = cloud_points(response.points)  # the handles' points, on the flat depth
    handles = {(o.id, p.id) for o in seg.objects if o.label == "mug" for p in o.parts if p.label == "handle"}
    assert len(points) > 0 and set(zip(points["object_id"], points["part_id"], strict=True)) <= handles
    np.testing.assert_allclose(points["z"], DEPTH_M, rtol=1e-6)


def test_parts_outside_the_active_vocabulary_fail_naming_them(ros_node, nodes) -> None:
    """No objects named: the active vocabulary (config/partglee.yaml) has no part 'grip' or 'wheel', so they
    are never looked for, and "0 grasps" would read as "not visible". Parts it has that the frame does not
    show stay a success with 0 grasps (the last request of the track_id test)."""
    client, camera, partglee, grasp = nodes
    request = PlanGrasps.Request(parts=["grip", "handle", "wheel"], timeout=30.0)
    response = ask(ros_node, client, camera, request, 200)
    assert not response.success and len(response.poses.poses) == 0, response.message
    assert response.message.startswith("the request's parts: the active vocabulary (revision "), (
        response.message
    )
    parts = ", ".join(PARTS)
    assert response.message.endswith(f"has no parts 'grip', 'wheel'; its parts: {parts}"), response.message


def test_object_names_outside_the_active_vocabulary_fail_naming_its_objects(
    ros_node, nodes, start_process
) -> None:
    """No objects named: the parts are looked for on grasp_node's object_names only, and the active
    vocabulary (config/partglee.yaml) has no object 'bike', so "0 grasps" would read as "not visible" here
    too; the reason says the name came from the object_names parameter, not the request. With a part it lacks
    as well, the reason names both."""
    _, camera, _, _ = nodes
    # partglee_node's services at the root
    remaps = ("-r", "__ns:=/picky", "-r", "segment:=/segment", "-r", "get_vocabulary:=/get_vocabulary")
    args = ["--ros-args", *remaps, "-p", "object_names:=[bike, mug]"]
    grasp = start_process(PYTHON, str(GRASP_NODE), *args, name="picky_grasp")
    client = ros_node.create_client(PlanGrasps, "/picky/plan_grasps")
    assert spin_until(ros_node, client.service_is_ready, 90), grasp.output()
    lacks = "no object 'bike'; its objects: mug, kettle, bottle, pan, knife, hammer"  # config/partglee.yaml
    response = ask(ros_node, client, camera, PlanGrasps.Request(parts=["handle"], timeout=30.0), 250)
    assert not response.success and len(response.poses.poses) == 0, response.message
    assert response.message.startswith("object_names: the active vocabulary (revision "), response.message
    assert response.message.endswith(f"has {lacks}"), response.message
    response = ask(ros_node, client, None, PlanGrasps.Request(parts=["grip"], timeout=30.0))
    both = f"has no part 'grip'; its parts: {', '.join(PARTS)}; and {lacks}"
    assert not response.success and response.message.endswith(both), response.message
    assert response.message.startswith("the request's parts and object_names: "), response.message


def test_a_track_id_selects_one_object_of_the_stream(ros_node, nodes) -> None:
    """partglee_node's tracks continue from one answer's frames to the next (stamps a second apart, within
    track_max_age): a track seen in one answer is asked for by id in the next, and only its parts are
    planned on. Every part name of the active vocabulary is asked for, so every object (5 at threshold 0)
    has parts to choose among."""
    client, camera, partglee, grasp = nodes
    first = ask(ros_node, client, camera, PlanGrasps.Request(parts=PARTS, timeout=30.0), 300)
    assert first.success, f"{first.message}\n{partglee.output()}\n{grasp.output()}"
    tracks = {o.track_id for o in first.segmentation.objects if o.parts}
    assert len(tracks) >= 2 and 0 not in tracks and len(set(cloud_points(first.points)["object_id"])) >= 2
    track = min(tracks)
    request = PlanGrasps.Request(parts=PARTS, track_id=track, timeout=30.0)
    response = ask(ros_node, client, camera, request, camera.last_sec + 1)
    assert response.success and f"of track {track} in the frame" in response.message, response.message
    (chosen,) = [o for o in response.segmentation.objects if o.track_id == track]
    assert len(response.poses.poses) > 0
    assert set(response.labels) <= {p.object_label for p in chosen.parts}
    points = cloud_points(response.points)
    assert set(points["object_id"]) == {chosen.id} and set(points["track_id"]) == {track}
    request.track_id = 4_000_000_000
    gone = ask(ros_node, client, camera, request, 500)
    assert gone.success and len(gone.poses.poses) == 0 and "(not in this frame)" in gone.message, gone.message


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"timeout": -1.0}, "timeout must be"),
        ({"timeout": float("inf")}, "timeout must be"),
        ({"objects": ["mug", "MUG"], "parts": ["handle"]}, "segment: rejected: "),
        ({"objects": ["mug"], "parts": ["handle"], "track_id": 3}, "track_id names an object"),
    ],
)
def test_bad_requests_get_the_reason(ros_node, nodes, request_fields: dict, reason: str) -> None:
    client, _, _, grasp = nodes
    response = ask(ros_node, client, None, PlanGrasps.Request(**request_fields))
    assert not response.success and response.message.startswith(reason), response.message
    assert grasp.proc.poll() is None


def test_without_a_segment_service_the_request_fails_at_its_timeout(ros_node, start_process) -> None:
    args = ["--ros-args", "-r", "__ns:=/lonely", "-r", "segment:=/nowhere/segment"]
    grasp = start_process(PYTHON, str(GRASP_NODE), *args, name="lonely_grasp")
    client = ros_node.create_client(PlanGrasps, "/lonely/plan_grasps")
    assert spin_until(ros_node, client.service_is_ready, 90), grasp.output()
    started = time.monotonic()
    response = ask(ros_node, client, None, PlanGrasps.Request(parts=["handle"], timeout=2.0))
    assert not response.success and 2.0 <= time.monotonic() - started < 10
    assert response.message == "no segment service at /nowhere/segment: is partglee_node running there?"


def test_a_request_fails_soon_after_partglee_node_dies(ros_node, start_process, tmp_path) -> None:
    """A crashed partglee_node never answers its pending request: grasp_node notices the service leave the
    graph (Fast DDS's lease, ~20 s) instead of waiting out the timeout plus SEGMENT_ANSWER_S (125 s here)."""
    topics = {name: f"/crashing{topic}" for name, topic in TOPICS.items()}
    model = small_checkpoint(tmp_path / "model")
    command = partglee_command(params_file(tmp_path, **PARAMS), model, use_depth="true", **topics)
    partglee = start_process(*command, "-r", "__ns:=/crashing", name="doomed")
    grasp = start_process(PYTHON, str(GRASP_NODE), "--ros-args", "-r", "__ns:=/crashing", name="orphan")
    segment = ros_node.create_client(Segment, "/crashing/segment")
    client = ros_node.create_client(PlanGrasps, "/crashing/plan_grasps")
    ready = spin_until(ros_node, lambda: segment.service_is_ready() and client.service_is_ready(), 90)
    assert ready, f"{partglee.output()}\n{grasp.output()}"
    # until grasp_node has found partglee_node's service: a short request then times out waiting for a frame
    for _ in range(10):
        probe = ask(ros_node, client, None, PlanGrasps.Request(parts=["handle"], timeout=1.0))
        if "waiting for a camera frame" in probe.message:
            break
    assert "waiting for a camera frame" in probe.message, probe.message
    future = client.call_async(PlanGrasps.Request(parts=["handle"], timeout=60.0))  # no frames come
    spin_until(ros_node, lambda: False, 2.0)
    assert not future.done(), future.result().message if future.done() else ""
    partglee.proc.kill()
    killed = time.monotonic()
    assert spin_until(ros_node, future.done, 90), grasp.output()
    response = future.result()
    assert not response.success and "went away before answering" in response.message, response.message
    assert time.monotonic() - killed < 45, response.message


def test_concurrent_requests_are_answered_and_one_too_many_is_told_busy(ros_node, nodes) -> None:
    """Each waiting request holds a thread while partglee_node's answers are read on another: with all
    WAITING_REQUESTS waiting, the answers must still come (a deadlock here once), and one more is refused."""
    client, camera, partglee, grasp = nodes
    request = PlanGrasps.Request(parts=["handle"], objects=["mug"], timeout=30.0)
    futures = [client.call_async(request) for _ in range(WAITING_REQUESTS + 1)]
    done = camera.publish_until(lambda: all(f.done() for f in futures), 300, 90)
    assert done, f"{partglee.output()}\n{grasp.output()}"
    answers = [f.result() for f in futures]
    busy = [a for a in answers if a.message.startswith("busy: ")]
    assert len(busy) == 1 and not busy[0].success, [a.message for a in answers]
    assert sum(a.success for a in answers) == WAITING_REQUESTS, [a.message for a in answers]


def test_ctrl_c_while_a_request_waits_ends_grasp_node_at_once(ros_node, nodes, start_process) -> None:
    # partglee_node's services at the root
    remaps = ("-r", "__ns:=/quitting", "-r", "segment:=/segment", "-r", "get_vocabulary:=/get_vocabulary")
    args = ["--ros-args", *remaps]
    grasp = start_process(PYTHON, str(GRASP_NODE), *args, name="quitting_grasp")
    client = ros_node.create_client(PlanGrasps, "/quitting/plan_grasps")
    assert spin_until(ros_node, client.service_is_ready, 90), grasp.output()
    future = client.call_async(PlanGrasps.Request(parts=["handle"], timeout=60.0))  # no frames come
    spin_until(ros_node, lambda: False, 2.0)
    assert not future.done(), future.result().message if future.done() else ""
    started = time.monotonic()
    grasp.proc.send_signal(signal.SIGINT)
    assert grasp.proc.wait(timeout=60) == 0, grasp.output()
    assert time.monotonic() - started < 15, grasp.output()
