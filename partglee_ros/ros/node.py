"""partglee_node: camera images in, hierarchical object/part segmentations out.

A thin adapter over the ROS-free Segmenter. The subscription callback only drops the message into a
one-frame slot (latest frame wins); a worker thread converts, segments and publishes, so the executor is
never blocked by inference and services/parameters stay responsive. Bad frames are counted and logged
(throttled) and never stop the node.

Topics (relative, so namespaces and remaps place them):
  in:  image (sensor_msgs/Image) or <image>/compressed (after remapping `image`); optional depth (Image) + camera_info (CameraInfo)
  out: segmentation (partglee_ros/HierarchicalSegmentation), debug_image (Image, only while subscribed),
       segmentation/depth + segmentation/camera_info (the depth and camera_info nearest to the frame's stamp
       within depth_slop, republished unchanged with their own stamps), /diagnostics
Services: set_vocabulary, get_vocabulary, and segment (one frame for a query's own names: served from a
helper node in threads of its own, partglee_ros/ros/service_thread.py; queued for the inference thread,
partglee_ros/ros/segment_queries.py).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException
from rclpy.impl.rcutils_logger import RcutilsLogger
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from partglee_ros.msg import HierarchicalSegmentation
from partglee_ros.ros.conversions import object_parts_from_msgs, result_to_msg, rgb_to_image_msg
from partglee_ros.ros.dds_profile import LOST_DEPTH
from partglee_ros.ros.depth_sync import NearestStampBuffer, closest, stamp_ns, stamp_seconds
from partglee_ros.ros.frame_age import frame_age_ms
from partglee_ros.ros.frame_slot import LatestFrameSlot
from partglee_ros.ros.parameters import (
    BY_NAME,
    DEFAULT_MODEL,
    PARAMS,
    descriptor,
    postprocess_config,
    tracking_warning,
)
from partglee_ros.ros.process_lifetime import init_or_report, interrupted, own_flags
from partglee_ros.ros.segment_queries import PendingQueries, QueryAnswer, SegmentQuery
from partglee_ros.ros.service_thread import ServiceThread, request_timeout
from partglee_ros.ros.vocabulary_services import VocabularyServices
from partglee_ros.runtime.backends.base import BackendError
from partglee_ros.runtime.factory import fallback_log, load_segmenter
from partglee_ros.runtime.overlay import draw_overlay
from partglee_ros.runtime.segmenter import ImageError, Segmenter, validate_image
from partglee_ros.runtime.tracking import ObjectTracker, TrackingConfig
from partglee_ros.runtime.vocabulary import Vocabulary, VocabularyError, make_vocabulary, parse_object_parts
from partglee_ros.sensor_images import ImageDecodeError, compressed_image_to_rgb, quoted, raw_image_to_rgb
from partglee_ros.srv import Segment

NO_INPUT_WARNING_S = 5.0  # diagnostics warn when an active node has had no frame for this long
DepthPair = tuple[Image | None, CameraInfo | None]
ERROR_LOGS_PER_5S = 10  # frame error lines logged at most, whatever their kinds (each is counted anyway)
FINISH_FRAME_S = 60.0  # how long a timed-out request still waits for the frame the inference thread is on
INACTIVE = "the node is not active (lifecycle): it processes no frames"


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, missing or corrupt model); the message says what to fix."""


class _RuntimeLog(logging.Handler):
    """The package's Python log records (the runtime's warnings: backend auto falling back, a graph it cannot
    verify) as the node's ROS log lines, so they reach /rosout under its name instead of a bare stderr line;
    keeps auto's fallbacks for the `loaded` line and /diagnostics."""

    def __init__(self, logger: RcutilsLogger) -> None:
        super().__init__(logging.WARNING)
        self._logger = logger
        self.fallbacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.name == fallback_log.name:
            self.fallbacks.append(text)
        # one call per severity: rclpy refuses a second severity from the same line
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        else:
            self._logger.warning(text)


@contextlib.contextmanager
def runtime_log_to(logger: RcutilsLogger) -> Iterator[_RuntimeLog]:
    """Route the package's Python logging to ``logger`` while the block runs (model loading)."""
    package_log = logging.getLogger("partglee_ros")
    handler = _RuntimeLog(logger)
    package_log.addHandler(handler)
    try:
        yield handler
    finally:
        package_log.removeHandler(handler)


def default_model_dir() -> Path:
    try:
        return Path(get_package_prefix("partglee_ros")) / DEFAULT_MODEL
    except PackageNotFoundError as err:
        raise StartupError("partglee_ros is not installed; set model_path") from err


class PartGleeMixin:
    """The node's behaviour, shared by the plain node and the lifecycle-managed one (the base class, Node or
    LifecycleNode, comes second in the MRO)."""

    # Whether parameters read at configure (model_path, backend, topics, ...) can be set while unconfigured:
    # a lifecycle node whose configure failed must be able to try again with other values.
    STATIC_WRITABLE = False

    def __init__(self, node_name: str = "partglee", **kwargs: Any) -> None:
        self._queries = PendingQueries()  # first: destroy_node() uses it when declaring a parameter fails
        super().__init__(node_name, **kwargs)
        for p in PARAMS:
            self.declare_parameter(p.name, p.default, descriptor(p, self.STATIC_WRITABLE))
        self.segmenter: Segmenter | None = None
        self._tracker = ObjectTracker()  # used by the inference thread only; configure() sets its config
        self._restart_tracks = threading.Event()  # tracking switched back on: the inference thread resets
        self._slot: LatestFrameSlot[tuple[Any, float]] = LatestFrameSlot()
        # ends a max_rate pause: a segment request wants a frame now, or the node stops (a changed max_rate
        # is read within 0.5 s)
        self._wake_worker = threading.Event()
        self._worker: threading.Thread | None = None
        self._stop_worker = threading.Event()  # one per worker: a late one never runs beside the next
        self._running = False
        self._processed = 0
        self._last_revision = 0  # of the vocabulary of the previous configuration: revisions never repeat
        self._errors = 0
        self._last_error = ""
        self._last_logged: dict[str, float] = {}  # error kind -> when it was last logged
        self._log_times: deque[float] = deque(maxlen=ERROR_LOGS_PER_5S)  # the latest error lines logged
        # frames received, processed, failed, published with and without depth at the previous diagnostics
        self._diag_counts = (0, 0, 0, 0, 0)
        # frames received, dropped and skipped by the slots of earlier activations: diagnostics count since
        # start, like processed and failed frames
        self._earlier_slots = (0, 0, 0)
        self._last_input = time.monotonic()  # when a new frame was last seen by the diagnostics
        self._latencies: deque[float] = deque(maxlen=200)
        self._ages: deque[float] = deque(maxlen=200)
        self._stamps_off_clock = 0
        self._backend_fallback = ""  # why backend auto did not use what it would have, for /diagnostics
        self._with_depth = 0  # use_depth: frames published with a matched depth + camera_info
        self._without_depth = 0  # ... and without (lost depth messages, skewed stamps)
        self._depth = NearestStampBuffer()
        self._camera_info = NearestStampBuffer()
        self._subscriptions_made: list = []
        self.add_on_set_parameters_callback(self._on_parameters)

    # ---- setup ---------------------------------------------------------------------------------------
    def value(self, name: str) -> Any:
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:
            # rcl leaves a list given as [] unset, since it cannot tell the list's type: empty is what was meant
            if isinstance(BY_NAME[name].default, list):
                return []
            raise

    def _initial_vocabulary(self) -> Vocabulary:
        if not self.value("objects"):
            raise StartupError("objects is an empty list: the vocabulary needs at least one object name")
        try:
            mapping = parse_object_parts([e for e in self.value("object_parts") if e.strip()])
            parts = [p for p in self.value("parts") if p.strip()]  # [''] is none, as for object_parts
            revision = self._last_revision + 1
            return make_vocabulary(self.value("objects"), parts, mapping, revision=revision)
        except VocabularyError as err:
            raise StartupError(f"default vocabulary parameters are invalid: {err}") from err

    def configure(self) -> None:
        """Load the model and vocabulary and create the interfaces; raises StartupError on bad setup."""
        if self.value("qos_reliability") not in ("best_effort", "reliable"):
            raise StartupError("qos_reliability must be best_effort or reliable")
        if (self.value("input_width") == 0) != (self.value("input_height") == 0):
            raise StartupError("set both input_width and input_height, or neither (0 = the model's own)")
        values = {p.name: self.value(p.name) for p in PARAMS}
        try:
            post = postprocess_config(values)
            self._tracker.config = TrackingConfig.from_parameters(values)
        except ValueError as err:
            raise StartupError(str(err)) from err
        if warning := tracking_warning(values):
            self.get_logger().warning(warning)
        model_dir = Path(self.value("model_path")) if self.value("model_path") else default_model_dir()
        size = (self.value("input_width"), self.value("input_height"))
        vocab = self._initial_vocabulary()
        try:
            with runtime_log_to(self.get_logger()) as runtime_log:
                self.segmenter = load_segmenter(
                    model_dir,
                    backend=self.value("backend"),
                    device=self.value("device"),
                    precision=self.value("precision"),
                    engine_path=self.value("engine_path"),
                    input_size=size if all(size) else None,
                    postprocess_config=post,
                    rebuild_stale_engine=self.value("rebuild_stale_engine"),
                    onnx_spin_threads=self.value("onnx_spin_threads"),
                    onnx_threads=self.value("onnx_threads"),
                    onnx_spin_us=self.value("onnx_spin_us"),
                    torch_compile=self.value("torch_compile"),
                    torch_threads=self.value("torch_threads"),
                )
        except BackendError as err:
            raise StartupError(str(err)) from err
        except Exception as err:  # a model that fails in a way no check foresaw: one line, not a traceback
            raise StartupError(f"cannot load {model_dir}: {type(err).__name__}: {err}") from err
        self._backend_fallback = "; ".join(runtime_log.fallbacks)
        try:
            self.segmenter.apply_vocabulary(vocab)
        except (BackendError, VocabularyError) as err:  # e.g. more names than a TensorRT engine was built for
            self.segmenter.backend.close()
            self.segmenter = None
            raise StartupError(f"default vocabulary: {err}") from err
        fallback = f" ({self._backend_fallback})" if self._backend_fallback else ""
        self.get_logger().info(
            f"loaded {model_dir} on {self.segmenter.backend.describe()}{fallback}; "
            f"input {self.segmenter.input_size[0]}x{self.segmenter.input_size[1]}; vocabulary {vocab.describe()}"
        )
        self.vocabulary_services = VocabularyServices(self, vocab, self.segmenter.apply_vocabulary)
        # started by the caller once the node is in its state: a plain node's first requests would
        # otherwise be told "not active" in the moment between configure() and activate()
        self.segment_service = ServiceThread(self, Segment, "segment", self._on_segment)
        self.seg_pub = self.create_publisher(HierarchicalSegmentation, "segmentation", 10)
        self.debug_pub = self.create_publisher(Image, "debug_image", 1)
        self.depth_pub = self.create_publisher(Image, "segmentation/depth", 10)
        self.info_pub = self.create_publisher(CameraInfo, "segmentation/camera_info", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.value("diagnostics_period"), self._publish_diagnostics)

    def release(self) -> None:
        """Undo configure(), or as much of it as happened: drop the interfaces and the model."""
        if getattr(self, "vocabulary_services", None) is not None:
            self._last_revision = self.vocabulary_services.active.revision
            self.vocabulary_services.destroy()
            self.vocabulary_services = None
        if getattr(self, "segment_service", None) is not None:
            self.segment_service.destroy()
            self.segment_service = None
        for name in ("seg_pub", "debug_pub", "depth_pub", "info_pub", "diag_pub"):
            if getattr(self, name, None) is not None:
                self.destroy_publisher(getattr(self, name))
                setattr(self, name, None)
        if getattr(self, "_diag_timer", None) is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self.segmenter is not None:
            self.segmenter.backend.close()
            self.segmenter = None

    def destroy_node(self) -> None:
        self._queries.close("the node is shutting down")  # so no request keeps the service's threads
        for name in ("segment_service", "vocabulary_services"):  # their helper nodes and threads too
            if getattr(self, name, None) is not None:
                getattr(self, name).destroy()
                setattr(self, name, None)
        super().destroy_node()

    def activate(self) -> None:
        """Subscribe and start the inference thread."""
        reliability = (
            ReliabilityPolicy.RELIABLE
            if self.value("qos_reliability") == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability)
        if self.value("compressed"):
            # image_transport's convention: <image topic>/compressed, after remapping the base name
            sub = self.create_subscription(CompressedImage, self._image_topic(), self._on_image, qos)
        else:
            sub = self.create_subscription(Image, "image", self._on_image, qos)
        self._subscriptions_made = [sub]
        if self.value("use_depth"):
            self._subscriptions_made += [
                self.create_subscription(Image, "depth", self._depth.add, qos),
                # the camera's QoS too: image_transport publishes camera_info like the image (best effort
                # for sensor data), and a reliable subscriber never matches a best-effort publisher
                self.create_subscription(
                    CameraInfo,
                    "camera_info",
                    self._camera_info.add,
                    QoSProfile(depth=10, reliability=reliability),
                ),
            ]
        self._queries.open()
        self._running = True
        self._earlier_slots = self._slot_counts()
        self._slot = LatestFrameSlot()
        self._last_input = time.monotonic()
        self._tracker.reset()  # frames from before a pause prove nothing about where objects are now
        # A worker still finishing a frame that outlasted deactivate()'s wait ends after it: its event stays set.
        self._stop_worker = threading.Event()
        self._worker = threading.Thread(
            target=self._work, args=(self._slot, self._stop_worker), name="partglee-inference", daemon=True
        )
        self._worker.start()

    def deactivate(self) -> None:
        """Stop processing: unsubscribe and end the inference thread."""
        self._running = False
        self._stop_worker.set()
        self._slot.close()
        self._wake_worker.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
        self._queries.close("the node was deactivated")
        for sub in self._subscriptions_made:
            self.destroy_subscription(sub)
        self._subscriptions_made = []

    # ---- callbacks -------------------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage, info: dict) -> None:
        # DDS's reception time orders frames against segment requests (segment_queries.py)
        self._slot.put((msg, time.monotonic(), info.get("received_timestamp") or time.time_ns()))

    def _on_parameters(self, params: list) -> SetParametersResult:
        # rclpy has already refused read-only parameters, wrong types and out-of-range values
        updates = {p.name: p.value for p in params}
        if self.segmenter is not None and (
            static := sorted(n for n in updates if n in BY_NAME and not BY_NAME[n].dynamic)
        ):
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(static)} take effect at configure: set them while the node is unconfigured "
                "(before configure, or after cleanup)",
            )
        values = {p.name: self.value(p.name) for p in PARAMS} | updates
        try:
            new_config = postprocess_config(values)
            new_tracking = TrackingConfig.from_parameters(values)
        except (ValueError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        if self.segmenter is not None:
            self.segmenter.config = new_config  # one reference swap; the next frame uses it
        self._tracker.config = new_tracking  # likewise
        if updates.get("tracking") is True and not self.value("tracking"):
            self._restart_tracks.set()
        if warning := tracking_warning(values):
            self.get_logger().warning(warning)
        return SetParametersResult(successful=True)

    def _work(self, slot: LatestFrameSlot, stop: threading.Event) -> None:
        """Segment frames from this activation's ``slot`` until its ``stop`` is set."""
        taken, busy = -1e9, 0.0  # when the last frame was taken (time.monotonic), and for how long (s)
        while not stop.is_set():
            rate = self.value("max_rate")
            slot.capped(rate > 0 and busy < 1.0 / rate)  # else frames left are the node's own drops
            self._hold_after(taken, stop)
            item = slot.take(timeout=0.5)
            for query in self._queries.take_with_images():
                self._answer(query, query.image, query.header, time.monotonic(), None)
            if item is None:
                continue
            msg, received, received_ns = item
            # not due: max_rate lowered while waiting, or a request ended the pause and wants a later frame
            if self._rate_wait(taken) > 0 and not self._queries.want_frame(received_ns):
                slot.skip()
                continue
            taken = time.monotonic()
            try:
                self._process(msg, received, received_ns)
            except (ImageDecodeError, ImageError) as err:
                self._report_error(f"bad image: {err}")
            except Exception as err:  # keep serving good frames whatever one frame did
                if not self.context.ok():  # Ctrl-C shut ROS down under this frame's publish: not its fault
                    break
                self._report_error(f"segmentation failed: {type(err).__name__}: {err}")
            busy = time.monotonic() - taken

    def _hold_after(self, taken: float, stop: threading.Event) -> None:
        """max_rate: wait until the next frame is due (1 / max_rate after the last one was ``taken``, at the
        rate set now) while the slot keeps only the newest frame; a segment request ends the wait, since it
        asked for the next frame, not the next due one."""
        while not stop.is_set():
            self._wake_worker.clear()
            left = self._rate_wait(taken)
            if left <= 0 or self._queries.waiting():
                return
            self._wake_worker.wait(min(left, 0.5))

    def _rate_wait(self, taken: float) -> float:
        """Seconds until max_rate, as set now, lets the next frame in."""
        rate = self.value("max_rate")
        return taken + 1.0 / rate - time.monotonic() if rate > 0 else 0.0

    def _report_error(self, text: str) -> None:
        """Count and log; each kind of error is logged once per 5 s, a new kind at once, and no more than
        ERROR_LOGS_PER_5S lines in all (a sender varying a string would make every error a new kind). The kind
        is the text with its numbers masked: the text carries per-frame sizes and byte counts."""
        self._errors += 1
        self._last_error = text
        kind = re.sub(r"\d+", "#", text)
        now = time.monotonic()
        recent = self._log_times
        if now - self._last_logged.get(kind, -1e9) >= 5.0 and (
            len(recent) < ERROR_LOGS_PER_5S or now - recent[0] >= 5.0
        ):
            if len(self._last_logged) >= 100:  # bounded, whatever the errors' texts
                self._last_logged.clear()
            self._last_logged[kind] = now
            recent.append(now)
            self.get_logger().warning(f"{text} (frame errors so far: {self._errors})")

    def _process(self, msg: Image | CompressedImage, received: float, received_ns: int) -> None:
        rgb = compressed_image_to_rgb(msg) if isinstance(msg, CompressedImage) else raw_image_to_rgb(msg)
        validate_image(rgb)  # a bad frame leaves the waiting queries to the next one
        t, early = stamp_seconds(msg.header), None
        # depth is matched now too: a slow frame's depth may have left the buffer when it is done
        if self.value("use_depth"):
            slop = self.value("depth_slop")
            early = (self._depth.nearest(t, slop), self._camera_info.nearest(t, slop))
        queries = self._queries.take_for_frame(received_ns)
        try:
            result = self.segmenter.segment(rgb)
            tracking = self.value("tracking")
            if self._restart_tracks.is_set() or not tracking:
                self._restart_tracks.clear()
                self._tracker.reset()  # re-enabled tracking starts afresh, not from masks of long ago
            if tracking:
                self._tracker.update(result, stamp_ns(msg.header))
            result.timings_ms["total"] = (time.monotonic() - received) * 1e3
            segmentation = result_to_msg(result, msg.header)
            # depth that arrived during inference may be closer; sent before the segmentation, so a consumer
            # that looks up the depth when the segmentation arrives (grasp_node) finds this frame's
            depth, info = self._matched_depth(t, early)
            if depth is not None:
                self.depth_pub.publish(depth)
                self.info_pub.publish(info)
                self._with_depth += 1
            elif early is not None:
                self._without_depth += 1
            self.seg_pub.publish(segmentation)
            self._processed += 1
            self._latencies.append(result.timings_ms["total"])
            age = frame_age_ms(self.get_clock().now().nanoseconds, msg.header)
            if age is None:
                self._stamps_off_clock += 1
            else:
                self._ages.append(age)
            for query in queries:
                if query.prepared is None:  # the active vocabulary: the topic's own result
                    query.finish(QueryAnswer(segmentation, depth=depth, camera_info=info))
                else:  # after the topic's result, which a query never delays
                    self._answer(query, rgb, msg.header, received, early)
            if self.value("publish_debug_image") and self.debug_pub.get_subscription_count() > 0:
                self.debug_pub.publish(rgb_to_image_msg(draw_overlay(rgb, result), msg.header))
        except Exception as err:
            for query in queries:
                if query.answer is None:
                    query.finish(QueryAnswer(error=f"segmentation failed: {type(err).__name__}: {err}"))
            raise

    def _matched_depth(self, t: float, early: DepthPair | None) -> DepthPair:
        """The depth and camera_info nearest to stamp ``t``, of those seen before inference (``early``) and
        now; both or neither."""
        if early is None:
            return None, None
        slop = self.value("depth_slop")
        depth = closest(t, early[0], self._depth.nearest(t, slop))
        info = closest(t, early[1], self._camera_info.nearest(t, slop))
        return (depth, info) if depth is not None and info is not None else (None, None)

    def _answer(
        self, query: SegmentQuery, rgb: np.ndarray, header: Header, started: float, early: DepthPair | None
    ) -> None:
        """Segment ``rgb`` with the query's names and hand it the result; never raises."""
        try:
            result = self.segmenter.segment(rgb, query.prepared)
            result.timings_ms["total"] = (time.monotonic() - started) * 1e3
            depth, info = self._matched_depth(stamp_seconds(header), early)
            query.finish(QueryAnswer(result_to_msg(result, header), depth=depth, camera_info=info))
        except Exception as err:
            query.finish(QueryAnswer(error=f"segmentation failed: {type(err).__name__}: {err}"))

    def _on_segment(self, request: Segment.Request, response: Segment.Response) -> Segment.Response:
        """File the request for the inference thread and wait for its answer; never raises."""
        arrived_ns = time.time_ns()  # before encoding its names: frames from now on are after it
        arrived = time.monotonic()
        if not self._running:
            return self._segment_failed(response, INACTIVE)
        try:
            timeout = request_timeout(request.timeout)
            query = self._segment_query(request, arrived_ns, arrived + timeout)
        except TimeoutError as err:  # encoding its names counts against its timeout
            return self._segment_failed(response, f"{_too_slow(timeout)}; {err}")
        except (VocabularyError, ImageDecodeError, ImageError, ValueError) as err:
            return self._segment_failed(response, f"rejected: {err}")
        except Exception as err:  # e.g. the text encoder failed
            return self._segment_failed(response, f"failed: {type(err).__name__}: {err}")
        left = timeout - (time.monotonic() - arrived)
        if left <= 0:
            return self._segment_failed(response, _too_slow(timeout))
        errors_before = self._errors
        if not self._queries.add(query):
            return self._segment_failed(response, INACTIVE)
        self._wake_worker.set()
        if query.image is not None:
            self._slot.wake()
        if not query.wait(left) and self._queries.withdraw(query):
            if query.image is not None:
                return self._segment_failed(
                    response, f"timed out after {timeout:g} s waiting for the inference thread"
                )
            failed = self._errors - errors_before
            why = f"; {failed} frames failed meanwhile, the last: {self._last_error}" if failed else ""
            waited = f"timed out after {timeout:g} s waiting for a camera frame on {self._image_topic()}"
            return self._segment_failed(response, waited + why)
        if not query.wait(FINISH_FRAME_S):  # taken just as the timeout passed: its frame is in progress
            return self._segment_failed(response, f"no answer {FINISH_FRAME_S:g} s after the frame was taken")
        answer = query.answer
        if answer.segmentation is None:
            return self._segment_failed(response, answer.error)
        seg = answer.segmentation
        response.success = True
        response.segmentation = seg
        response.depth = answer.depth or Image()
        response.camera_info = answer.camera_info or CameraInfo()
        parts = sum(len(o.parts) for o in seg.objects)
        names = "the active vocabulary" if query.prepared is None else _asked(query.prepared.vocabulary)
        response.message = (
            f"{len(seg.objects)} objects, {parts} parts in the frame stamped "
            f"{seg.header.stamp.sec}.{seg.header.stamp.nanosec:09d} ({names})"
        )
        if self.value("use_depth") and query.image is None and answer.depth is None:
            # a planner that needs depth must learn why it got none: a lost message, or skewed stamps
            response.message += (
                f"; no depth: none with a camera_info within depth_slop ({self.value('depth_slop'):g} s) of "
                "that stamp"
            )
        return response

    def _segment_query(self, request: Segment.Request, arrived_ns: int, deadline: float) -> SegmentQuery:
        """The request as the inference thread takes it; TimeoutError when its names are still being encoded
        at ``deadline`` (monotonic)."""
        prepared = None
        if request.objects:
            mapping = object_parts_from_msgs(request.object_parts)
            vocab = make_vocabulary(request.objects, request.parts, mapping, revision=0)
            prepared = self.segmenter.prepare(vocab, deadline)
        elif request.parts or request.object_parts:
            raise VocabularyError(
                "parts without objects: name the objects too, or nothing for the active vocabulary"
            )
        image = request.image
        if not (image.data or image.height or image.width or image.encoding):
            return SegmentQuery(prepared, arrived_ns)
        if image.encoding and not (image.height and image.width):  # not "no image": a client's bug
            raise ImageDecodeError(
                f"its image has encoding {quoted(image.encoding)} but is empty ({image.width}x{image.height}); "
                "leave every image field empty to be answered from the next camera frame"
            )
        rgb = raw_image_to_rgb(image)
        validate_image(rgb)
        return SegmentQuery(prepared, arrived_ns, rgb, image.header)

    def _segment_failed(self, response: Segment.Response, message: str) -> Segment.Response:
        response.success, response.message = False, message
        self.get_logger().warning(f"segment: {message}")
        return response

    def _image_topic(self) -> str:
        topic = self.resolve_topic_name("image")
        return topic + "/compressed" if self.value("compressed") else topic

    def _publish_diagnostics(self) -> None:
        lat = np.array(self._latencies) if self._latencies else np.zeros(1)
        ages = np.array(self._ages)
        status = DiagnosticStatus(
            name=f"{self.get_name()}: inference", hardware_id=self.get_fully_qualified_name()
        )
        status.level, status.message = self._health()
        vocab = self.segmenter.vocabulary if self.segmenter else None
        backend = self.segmenter.backend if self.segmenter else None
        received, dropped, skipped = self._slot_counts()
        status.values = [
            KeyValue(key="backend", value=backend.describe() if backend else ""),
            # why backend auto chose it ("" when it chose what it tries first)
            KeyValue(key="backend_fallback", value=self._backend_fallback),
            # "" for a GPU backend; on a CPU, a count far above the cores a container got shows misconfiguration
            KeyValue(key="cpu_threads", value=str(backend.threads or "") if backend else ""),
            KeyValue(key="frames_received", value=str(received)),
            KeyValue(key="frames_processed", value=str(self._processed)),
            KeyValue(key="frames_dropped", value=str(dropped)),
            KeyValue(key="frames_skipped", value=str(skipped)),  # by max_rate, on purpose
            KeyValue(key="max_rate", value=f"{self.value('max_rate'):g}"),
            KeyValue(key="frame_errors", value=str(self._errors)),
            KeyValue(key="last_error", value=self._last_error),
            KeyValue(key="latency_ms_p50", value=f"{np.percentile(lat, 50):.1f}"),
            KeyValue(key="latency_ms_p95", value=f"{np.percentile(lat, 95):.1f}"),
            # capture to publish; "" until a frame stamped on this node's clock (partglee_ros/ros/frame_age.py)
            KeyValue(key="frame_age_ms_p50", value=f"{np.percentile(ages, 50):.1f}" if ages.size else ""),
            KeyValue(key="frame_age_ms_p95", value=f"{np.percentile(ages, 95):.1f}" if ages.size else ""),
            KeyValue(key="frames_stamped_off_clock", value=str(self._stamps_off_clock)),
            # use_depth: frames published with and without a matched depth + camera_info; messages received
            KeyValue(key="frames_with_depth", value=str(self._with_depth)),
            KeyValue(key="frames_without_depth", value=str(self._without_depth)),
            KeyValue(key="depth_received", value=str(self._depth.received)),
            KeyValue(key="camera_info_received", value=str(self._camera_info.received)),
            KeyValue(key="vocabulary_revision", value=str(vocab.revision if vocab else 0)),
            KeyValue(key="active_tracks", value=str(self._tracker.active)),
        ]
        self.diag_pub.publish(DiagnosticArray(header=self._header_now(), status=[status]))

    def _slot_counts(self) -> tuple[int, int, int]:
        """Frames received, dropped and skipped since the node started, over all activations."""
        slot = self._slot
        now = (slot.received, slot.dropped, slot.skipped)
        return tuple(a + b for a, b in zip(self._earlier_slots, now, strict=True))

    def _health(self) -> tuple[bytes, str]:
        """Level and message from the frames since the previous diagnostics, so a failure that starts after
        hours of good frames, or a camera that stops, shows at once."""
        counts = (
            self._slot_counts()[0],
            self._processed,
            self._errors,
            self._with_depth,
            self._without_depth,
        )
        received, processed, failed, with_depth, without_depth = (
            c - before for c, before in zip(counts, self._diag_counts, strict=True)
        )
        self._diag_counts = counts
        now = time.monotonic()
        if received:
            self._last_input = now
        if not self._running:
            return DiagnosticStatus.OK, "inactive"
        if failed and not processed:
            return DiagnosticStatus.ERROR, f"every frame failed lately ({failed}): {self._last_error}"
        if failed:
            return (
                DiagnosticStatus.WARN,
                f"{failed} of {failed + processed} frames failed lately: {self._last_error}",
            )
        silent = now - self._last_input
        if silent > NO_INPUT_WARNING_S:
            return DiagnosticStatus.WARN, f"no input frames for {silent:.0f} s on {self._image_topic()}"
        if without_depth > with_depth:  # most frames: else a lost depth stream goes unnoticed
            message = (
                f"{without_depth} of {without_depth + with_depth} frames lately had no depth and camera_info "
                f"within depth_slop ({self.value('depth_slop'):g} s) on {self.resolve_topic_name('depth')} "
                f"({self._depth.received} received since start), {self.resolve_topic_name('camera_info')} "
                f"({self._camera_info.received}): {LOST_DEPTH}; else compare the stamps"
            )
            self.get_logger().warning(message, throttle_duration_sec=30.0)
            return DiagnosticStatus.WARN, message
        return DiagnosticStatus.OK, "running"

    def _header_now(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg())


def _too_slow(timeout: float) -> str:
    return f"timed out after {timeout:g} s encoding its names (fewer or shorter names encode faster)"


def _asked(vocab: Vocabulary, shown: int = 8) -> str:
    """'objects mug, kettle; parts handle': a request's names for its answer, the first ``shown`` per level."""

    def listed(names: tuple[str, ...]) -> str:
        more = f" and {len(names) - shown} more" if len(names) > shown else ""
        return ", ".join(names[:shown]) + more

    return f"objects {listed(vocab.objects)}" + (f"; parts {listed(vocab.parts)}" if vocab.parts else "")


class PartGleeNode(PartGleeMixin, Node):
    """Configures and activates itself at start-up."""


class PartGleeLifecycleNode(PartGleeMixin, LifecycleNode):
    """Managed: configure loads the model, activate starts processing, deactivate stops it and frees the
    accelerator's memory (the model moves back on activate), cleanup drops the model. Parameters read at
    configure can be set while unconfigured."""

    STATIC_WRITABLE = True

    # rclpy turns an exception in a transition into ERROR without logging it, and its default on_error
    # leaves whatever configure created; so every failure is logged, undone and reported as FAILURE.
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self.configure()
        except Exception as err:
            detail = str(err) if isinstance(err, StartupError) else f"{type(err).__name__}: {err}"
            self.get_logger().error(f"configure failed: {detail}")
            self.release()
            return TransitionCallbackReturn.FAILURE
        self.segment_service.start()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self.segmenter.backend.open()
            self.activate()
        except Exception as err:  # e.g. the accelerator's memory is taken by now
            self.get_logger().error(f"activate failed: {type(err).__name__}: {err}")
            self.deactivate()
            self.segmenter.backend.close()  # inactive holds no accelerator memory
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self.deactivate()
        self.segmenter.backend.close()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        if self._running:
            self.deactivate()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """Back to unconfigured with nothing left over, so configure can be tried again."""
        if self._running:
            self.deactivate()
        self.release()
        return TransitionCallbackReturn.SUCCESS


def _spin(node: Node) -> None:
    with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
        rclpy.spin(node)


def main(args: list[str] | None = None) -> int:
    """partglee_node; with --lifecycle (before --ros-args) the node waits for lifecycle transitions."""
    argv = list(args if args is not None else sys.argv)
    flags = own_flags(argv, "partglee_node", known=("--lifecycle",))
    if flags is None:
        return 2
    if interrupted():  # Ctrl-C during the imports
        return 0
    lifecycle = "--lifecycle" in flags
    if not init_or_report([a for a in argv if a != "--lifecycle"], "partglee_node"):
        return 2
    node, code = None, 0
    try:
        # declaring the parameters checks the overrides' types and ranges
        node = PartGleeLifecycleNode() if lifecycle else PartGleeNode()
        if not lifecycle:
            node.configure()
            node.activate()
            node.segment_service.start()
        if rclpy.ok():  # else Ctrl-C shut ROS down during the start-up: stop
            _spin(node)
    except (ParameterException, StartupError) as err:
        if rclpy.ok():
            (node.get_logger() if node else rclpy.logging.get_logger("partglee")).fatal(
                f"cannot start: {err}"
            )
            code = 2
    except Exception:
        if rclpy.ok():  # after Ctrl-C shut ROS down, what fails is the stop's doing, not an error
            raise
    finally:
        if node is not None:
            if not lifecycle:
                node.deactivate()
            node.destroy_node()
        rclpy.try_shutdown()
    return code
