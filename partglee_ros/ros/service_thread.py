"""A service whose requests may wait, on a helper node and executor of its own, in threads of their own.

partglee_node's `segment` waits for a camera frame that the node's own executor must go on receiving
meanwhile; grasp_node's `plan_grasps` waits for partglee_node's answer. rclpy cannot hand one callback
group to another executor, an async callback keeps its executor busy-polling while it waits, and a
MultiThreadedExecutor for the whole of partglee_node cost 10 % of the processed frame rate in the load test
(13.3-13.5 against 14.9-15.1 Hz, alternating one-minute runs). So such a service lives on a small helper
node (`<node>_<service>`, no parameters) whose executor's threads only wake for requests, and the owner
keeps its single-threaded executor (partglee_node: 14.1-14.4 Hz with the helper against 13.7-14.4 Hz
without, alternating).

Up to WAITING_REQUESTS requests wait at once; one more is answered at once with success=False ("busy")
instead of queueing behind them past its own timeout. Two threads beyond those stay free: one to answer
"busy", one to read the responses of clients the waiting callbacks call (they are read on a pool thread).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, ShutdownException
from rclpy.node import Node

WAITING_REQUESTS = 4
DEFAULT_TIMEOUT_S = 5.0  # a request's wait when it gives 0
MAX_TIMEOUT_S = 300.0


def request_timeout(value: float) -> float:
    """A request's `timeout` field -> seconds to wait; ValueError for a negative, absurd or non-finite one."""
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= MAX_TIMEOUT_S):
        raise ValueError(f"timeout must be 0 (= {DEFAULT_TIMEOUT_S:g} s) to {MAX_TIMEOUT_S:g} s, got {value}")
    return value or DEFAULT_TIMEOUT_S


class ServiceThread:
    """`srv_type` must have a response with `success` and `message` (for the "busy" answer)."""

    def __init__(self, owner: Node, srv_type: Any, name: str, callback: Callable[[Any, Any], Any]) -> None:
        # resolved by the owner, so its namespace and remaps (-r segment:=...) apply; the helper node takes
        # no global arguments, which would rename it like the owner (-r __node:=...)
        resolved = owner.resolve_service_name(name)
        self.node = Node(
            f"{owner.get_name()}_{name}",
            namespace=owner.get_namespace(),
            context=owner.context,
            use_global_arguments=False,
            start_parameter_services=False,
        )
        self.group = ReentrantCallbackGroup()  # also for the clients a callback waits on (grasp_node)
        self._callback = callback
        self._slots = threading.BoundedSemaphore(WAITING_REQUESTS)
        self.node.create_service(srv_type, resolved, self._serve, callback_group=self.group)
        self._executor = MultiThreadedExecutor(num_threads=WAITING_REQUESTS + 2, context=owner.context)
        self._executor.add_node(self.node)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=f"{name}-service", daemon=True)

    def start(self) -> None:
        """Serve; after the owner has made what its callback uses (clients on `node`)."""
        self._thread.start()

    def _serve(self, request: Any, response: Any) -> Any:
        if not self._slots.acquire(blocking=False):
            response.success = False
            response.message = f"busy: {WAITING_REQUESTS} requests are waiting already; ask again later"
            return response
        try:
            return self._callback(request, response)
        finally:
            self._slots.release()

    def _spin(self) -> None:
        while not self._stopped.is_set():
            try:
                self._executor.spin()
                return
            except (ExternalShutdownException, ShutdownException):
                return
            except Exception as err:  # the executor re-raises what a callback raised: log it, serve on
                # stopping: a request taken as destroy() shut the thread pool, or the context shut down
                # under the executor (Ctrl-C: "failed to initialize wait set: the given context is not valid")
                if self._stopped.is_set() or not self.node.context.ok():
                    return
                self.node.get_logger().error(f"service callback failed: {type(err).__name__}: {err}")

    def destroy(self) -> None:
        """Stop the threads and remove the helper node. rclpy waits for the callbacks in progress without a
        time limit, so the owner must end its waiting requests first."""
        self._stopped.set()
        self._executor.shutdown()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self.node.destroy_node()
