"""ServiceThread (partglee_ros/ros/service_thread.py) in process, with real rclpy: requests wait in threads of
their own while the owner's executor goes on, one beyond WAITING_REQUESTS is told "busy" at once, and a
callback that raises does not end the service."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from std_srvs.srv import Trigger

from partglee_ros.ros.service_thread import WAITING_REQUESTS, ServiceThread


def spin_until(executor: SingleThreadedExecutor, predicate: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


def test_waiting_requests_leave_the_owner_free_and_a_raising_callback_leaves_the_service_up() -> None:
    context = rclpy.Context()
    rclpy.init(context=context)
    owner = Node("owner", namespace="/st", context=context)
    client_node = Node("client", context=context)
    release = threading.Event()
    calls: list[int] = []

    def callback(request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("injected")
        release.wait(10)  # a request that waits, like segment for its frame
        response.success, response.message = True, f"call {len(calls)}"
        return response

    service = ServiceThread(owner, Trigger, "wait", callback)
    service.start()
    ticks: list[int] = []
    owner.create_timer(0.05, lambda: ticks.append(1))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(owner)
    executor.add_node(client_node)
    client = client_node.create_client(Trigger, "/st/wait")
    try:
        assert client.wait_for_service(timeout_sec=10)
        helper = ("owner_wait", "/st")
        spin_until(executor, lambda: helper in client_node.get_node_names_and_namespaces(), 10.0)
        assert helper in client_node.get_node_names_and_namespaces()  # names may show after the service
        raising = client.call_async(Trigger.Request())
        spin_until(executor, lambda: calls, 10.0)
        executor.spin_until_future_complete(raising, timeout_sec=0.5)
        assert not raising.done() and calls == [0]  # no reply to the request whose callback raised
        waiting = [client.call_async(Trigger.Request()) for _ in range(WAITING_REQUESTS)]
        spin_until(executor, lambda: len(calls) == 1 + WAITING_REQUESTS, 10.0)
        busy = client.call_async(Trigger.Request())
        executor.spin_until_future_complete(busy, timeout_sec=10.0)
        assert busy.done() and not busy.result().success and busy.result().message.startswith("busy: ")
        before = len(ticks)
        executor.spin_until_future_complete(waiting[0], timeout_sec=0.5)
        assert not any(f.done() for f in waiting) and len(ticks) > before, "the owner's executor stood still"
        release.set()
        for future in waiting:
            executor.spin_until_future_complete(future, timeout_sec=10.0)
        assert all(f.done() and f.result().success for f in waiting)
    finally:
        release.set()
        service.destroy()
        executor.shutdown()
        owner.destroy_node()
        client_node.destroy_node()
        rclpy.shutdown(context=context)
