"""partglee_node's max_rate, in its own process: a cap on frames segmented for the topics, changeable at run
time, that segment requests do not wait for."""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray
from partglee_ros.msg import HierarchicalSegmentation
from partglee_ros.srv import Segment
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from partglee_ros.ros.conversions import rgb_to_image_msg
from tests.conftest import first_answer, spin_until
from tests.ros_testing import noise_image, params_file, partglee_command, small_checkpoint

QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TOPIC = "/rated/image"
RATE_HZ, SEND_HZ, SEND_S = 2.0, 20.0, 4.0


def frame(sec: int) -> Image:
    header = Header(frame_id="camera_optical")
    header.stamp.sec = sec
    return rgb_to_image_msg(noise_image(sec % 1000), header)


def test_max_rate_caps_the_topic_and_requests_do_not_wait_for_it(ros_node, start_process, tmp_path) -> None:
    params = params_file(tmp_path, max_rate=RATE_HZ, object_threshold=0.0, part_threshold=0.0)
    proc = start_process(*partglee_command(params, small_checkpoint(tmp_path / "model"), image_topic=TOPIC))
    results: list[HierarchicalSegmentation] = []
    diagnostics: list[DiagnosticArray] = []
    pub = ros_node.create_publisher(Image, TOPIC, QOS)
    ros_node.create_subscription(HierarchicalSegmentation, "/segmentation", results.append, QOS)
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, QOS)
    segment = ros_node.create_client(Segment, "/segment")
    assert spin_until(ros_node, lambda: pub.get_subscription_count() > 0, 90), proc.output()
    assert spin_until(ros_node, segment.service_is_ready, 30), proc.output()
    first_answer(
        ros_node, lambda: segment.call_async(Segment.Request(timeout=-1.0)), 6, 5.0
    )  # refused at once

    # 80 frames at ~20 Hz: at most one per 0.5 s is segmented, each the newest when it is due
    sent_at: dict[int, float] = {}
    for sec in range(1, int(SEND_HZ * SEND_S) + 1):
        pub.publish(frame(sec))
        sent_at[sec] = time.monotonic()
        spin_until(ros_node, lambda: False, 1.0 / SEND_HZ)
    sending = sent_at[max(sent_at)] - sent_at[1]  # a loaded machine publishes slower than planned
    spin_until(ros_node, lambda: False, 1.5)  # the last due frame's result
    stamps = sorted(r.header.stamp.sec for r in results)
    # one frame when the first arrives, one per 0.5 s while they come, and slack for delivery delays;
    # uncapped, each inference (tens of ms) would take the newest frame: several per 0.5 s
    assert 2 <= len(stamps) <= RATE_HZ * sending + 3, (stamps, sending)
    assert spin_until(ros_node, lambda: len(diagnostics) >= 2, 10)
    values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values}
    assert values["max_rate"] == "2" and int(values["frames_skipped"]) > int(values["frames_dropped"]), values

    # one frame per 100 s from now on (dynamic): the next frame waits, a segment request does not
    parameters = AsyncParameterClient(ros_node, "/partglee")
    assert parameters.wait_for_services(30)
    lower = first_answer(
        ros_node, lambda: parameters.set_parameters([Parameter("max_rate", value=0.01)]), 6, 5.0
    )
    assert lower.result().results[0].successful
    pub.publish(frame(1000))
    spin_until(ros_node, lambda: False, 2.0)
    assert 1000 not in [r.header.stamp.sec for r in results], "max_rate 0.01 let a frame through at once"
    answer = segment.call_async(Segment.Request(timeout=20.0))
    spin_until(ros_node, lambda: False, 0.3)
    for sec in range(1001, 1100):
        pub.publish(frame(sec))
        if spin_until(ros_node, answer.done, 0.3):
            break
    assert answer.done() and answer.result().success, (
        answer.result().message if answer.done() else proc.output()
    )
    assert answer.result().segmentation.header.stamp.sec > 1000
    # the frame sent before the request is never segmented: not due, and too early for the request
    spin_until(ros_node, lambda: False, 1.0)
    assert 1000 not in [r.header.stamp.sec for r in results]
