"""grasp_node: 3D grasp targets for requested parts (e.g. "handle") from segmentations + depth.

Inputs (relative topics): segmentation (HierarchicalSegmentation), depth (16UC1 mm or 32FC1 m, aligned to the
colour image) and camera_info (K and D for raw images, P with `rectified`, as image_geometry reads it); remap them to what partglee_node republishes with each result
(segmentation/depth, segmentation/camera_info; README), matched to each segmentation by nearest stamp within
`depth_slop`. Outputs, all in the image's frame with the image's stamp: grasp_targets (PoseArray, best
first), grasp_target (PoseStamped, the best), grasp_markers (MarkerArray for RViz), part_points
(PointCloud2 of the requested parts' cleaned points with their object and part ids and the object's track id;
part_cloud.py; published while subscribed). Each pose: position =
the part's estimated centre, z axis = approach along the camera ray, y axis = closing direction across the
part's principal axis. No collision checking and no gripper model: a planner must add both.

Service plan_grasps (PlanGrasps): on request, asks partglee_node's `segment` service (relative name
`segment`, remap it like the topics) for the requested names on its next camera frame, with that frame's
depth, and answers with the grasps on it (a `track_id` restricts them to one tracked object); served from a helper node (partglee_ros/ros/service_thread.py)
so the topics go on while a request waits. Without named objects the request uses partglee_node's active
vocabulary, read from its `get_vocabulary` service (relative name, remap it with `segment`): a requested part
or an `object_names` object it lacks, or a part its object_parts allow under none of those objects, fails the
request (0 grasps would read as "not visible"); the topics warn once instead.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any

import rclpy
from geometry_msgs.msg import Point, Pose, PoseArray, PoseStamped, Quaternion, Vector3
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor, SetParametersResult
from rclpy.client import Client
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from partglee_ros.geometry import GraspPose, Intrinsics, plan_grasp
from partglee_ros.geometry.grasp import SteadyGrasps
from partglee_ros.msg import HierarchicalSegmentation, ObjectInstance, PartInstance
from partglee_ros.msg import Vocabulary as VocabularyMsg
from partglee_ros.ros.conversions import ImageConversionError, depth_msg_to_array
from partglee_ros.ros.dds_profile import LOST_DEPTH
from partglee_ros.ros.depth_sync import NearestStampBuffer, stamp_seconds
from partglee_ros.ros.part_cloud import PartPoints, part_cloud
from partglee_ros.ros.process_lifetime import init_or_report, interrupted, own_flags
from partglee_ros.ros.service_thread import ServiceThread, request_timeout
from partglee_ros.runtime.vocabulary import normal_name
from partglee_ros.sensor_images import paste_mask_crop
from partglee_ros.srv import GetVocabulary, PlanGrasps, Segment

# beyond the frame wait: partglee_node's inference and its own margin (FINISH_FRAME_S)
SEGMENT_ANSWER_S = 65.0
MIN_FRAME_WAIT_S = 0.1  # left for the frame when finding the service took nearly all of the timeout
SERVICE_GONE_S = 1.0  # the segment service absent from the graph this long: its node is gone, no answer comes
VOCABULARY_READ_S = 1.0  # get_vocabulary answers at once (no inference): a re-read after the frame waits this
# the topics read the vocabulary at most this often (a lost reply, a bag's revisions)
VOCABULARY_RETRY_S = 5.0
SHOWN_NAMES = 20  # of a list of the vocabulary's names (parts, objects, pairs) shown in a reason
RECEIVED_LATELY_S = 5.0  # an input with nothing received for this long is said to have none
Target = tuple[str, GraspPose]


def pose_msg(grasp: GraspPose) -> Pose:
    x, y, z, w = (float(v) for v in grasp.orientation)
    px, py, pz = (float(v) for v in grasp.position)
    return Pose(position=Point(x=px, y=py, z=pz), orientation=Quaternion(x=x, y=y, z=z, w=w))


def markers(header: Header, targets: list[tuple[str, GraspPose]]) -> MarkerArray:
    """An approach arrow, a centre sphere and a label per target; DELETEALL first so stale ones vanish."""
    out = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    for i, (label, grasp) in enumerate(targets):
        p = grasp.position
        start = p - 0.10 * grasp.approach
        colour = ColorRGBA(r=float(1 - grasp.quality), g=float(grasp.quality), b=0.2, a=1.0)
        arrow = Marker(header=header, ns="approach", id=i, type=Marker.ARROW, action=Marker.ADD, color=colour)
        arrow.points = [Point(x=float(a), y=float(b), z=float(c)) for a, b, c in (start, p)]
        arrow.scale = Vector3(x=0.01, y=0.02, z=0.03)
        sphere = Marker(header=header, ns="centre", id=i, type=Marker.SPHERE, action=Marker.ADD, color=colour)
        sphere.pose = pose_msg(grasp)
        sphere.scale = Vector3(x=0.02, y=0.02, z=0.02)
        text = Marker(header=header, ns="label", id=i, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.pose.position = Point(x=float(p[0]), y=float(p[1]) - 0.04, z=float(p[2]))
        text.scale.z, text.color = 0.03, ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = f"{label} q={grasp.quality:.2f}"
        out.markers += [arrow, sphere, text]
    return out


def matching_parts(
    msg: HierarchicalSegmentation, wanted: set[str], objects: set[str], track_id: int = 0
) -> list[tuple[ObjectInstance, PartInstance]]:
    """(object, part) for the parts named in ``wanted`` of the objects named in ``objects`` (empty: of any
    object), and of the object with ``track_id`` only (0: any)."""
    chosen = [o for o in msg.objects if (not objects or o.label in objects) and track_id in (0, o.track_id)]
    return [(o, p) for o in chosen for p in o.parts if p.label in wanted]


def _shown(names: list[str], separator: str = ", ") -> str:
    """The first SHOWN_NAMES of ``names``: a reason stays one readable line for a vocabulary of hundreds."""
    shown = separator.join(names[:SHOWN_NAMES]) or "none"
    if len(names) > SHOWN_NAMES:
        shown += f"{separator}... ({len(names) - SHOWN_NAMES} more)"
    return shown


def _lacks(kind: str, wanted: set[str], names: list[str]) -> str:
    """'no <kind> ...; its <kind>s: ...' for the names in ``wanted`` that ``names`` lacks, '' for none."""
    missing = sorted(wanted - {normal_name(n) for n in names})
    if not missing:
        return ""
    listed = ", ".join(repr(n) for n in missing)
    return f"no {kind}{'s' * (len(missing) > 1)} {listed}; its {kind}s: {_shown(names)}"


def _unpaired(wanted: set[str], objects: set[str], vocabulary: VocabularyMsg) -> str:
    """'no object:part pair ...; its object_parts: ...' for the parts in ``wanted`` that the vocabulary has but
    whose object_parts allow under none of the ``objects`` it has (no ``objects``: none of its objects), ''
    for none: partglee_node looks for a part only under the objects that may have it."""
    parts = [normal_name(p) for p in vocabulary.parts]
    allowed = {normal_name(r.object): [normal_name(p) for p in r.parts] for r in vocabulary.object_parts}
    known = [normal_name(o) for o in vocabulary.objects]
    looked = [o for o in known if o in objects] if objects else known  # objects it lacks: _lacks
    never = [p for p in sorted(wanted) if p in parts and all(p not in allowed.get(o, parts) for o in looked)]
    if not looked or not never:
        return ""
    pairs = [repr(f"{o}:{p}") for p in never for o in looked]
    # each object in a pair has a restriction: one without allows every part
    restricted = [f"{o}: {', '.join(allowed[o])}" for o in looked]
    return (
        f"no object:part pair{'s' * (len(pairs) > 1)} {_shown(pairs)}; its object_parts: "
        f"{_shown(restricted, '; ')}"
    )


def vocabulary_lacks(
    wanted: set[str], objects: set[str], vocabulary: VocabularyMsg, parts_from: str = "part_names"
) -> tuple[str, str]:
    """Where the names ``vocabulary`` cannot find came from (``parts_from`` for ``wanted``, the object_names
    parameter for ``objects``: 'part_names and object_names') and why it cannot find ``wanted`` parts of
    ``objects``; both '' when it can. A part or object it lacks, or a part it allows under none of the objects,
    is never looked for, so no grasps on it would mean "never looked for", not "not visible"."""
    found = [
        (sources, reason)
        for sources, reason in (
            ([parts_from], _lacks("part", wanted, list(vocabulary.parts))),
            (["object_names"], _lacks("object", objects, list(vocabulary.objects))),
            (
                [parts_from, "object_names"] if objects else [parts_from],
                _unpaired(wanted, objects, vocabulary),
            ),
        )
        if reason
    ]
    if not found:
        return "", ""
    sources = dict.fromkeys(source for names, _ in found for source in names)
    why = f"the active vocabulary (revision {vocabulary.revision}) has " + "; and ".join(r for _, r in found)
    return " and ".join(sources), why


def _kind(client: Client) -> str:
    """The service's name in messages, as partglee_node calls it (the client's own may be remapped)."""
    return "segment" if client.srv_type is Segment else "get_vocabulary"


UNIT = FloatingPointRange(from_value=0.0, to_value=1.0)
# `object_names:=[]` leaves the parameter unset (rcl reads an empty list so): any object, as its default
ANY_OBJECT = Parameter("object_names", value=[""])


def part_names_problem(names: list[str] | None) -> str:
    """Why part_names (None: unset, which is what rcl makes of `part_names:=[]`) names no part to look for,
    '' when it does: a name that is empty once its whitespace is collapsed matches no part label."""
    example = "name the parts to grasp, e.g. part_names:=[handle]"
    if not names:
        return f"part_names is empty: {example}"
    empty = [f"#{i}" for i, name in enumerate(names) if not normal_name(name)]
    if empty:
        entries = f"entries {', '.join(empty)} are" if len(empty) > 1 else f"entry {empty[0]} is"
        return f"part_names {entries} empty: {example}"
    return ""


class GraspNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("partglee_grasp", **kwargs)
        self._stopping = threading.Event()  # first: rclpy destroys a node whose parameters were refused too
        # before the declarations: it checks the overrides too, so a bad one ends the start-up (main)
        self.add_on_set_parameters_callback(self._on_parameters)
        self.declare_parameter(
            "part_names", ["handle"], ParameterDescriptor(description="generic part names to grasp")
        )
        self.declare_parameter(
            "object_names",
            [""],
            ParameterDescriptor(description="only parts of these objects ('' or [] = any object)"),
        )
        # ranges in the descriptors: rclpy then refuses a bad value at start-up as well as at run time
        self.declare_parameter(
            "min_quality",
            0.2,
            ParameterDescriptor(
                description="drop candidates below this quality", floating_point_range=[UNIT]
            ),
        )
        self.declare_parameter(
            "depth_slop",
            0.05,
            ParameterDescriptor(description="max stamp difference (s)", floating_point_range=[UNIT]),
        )
        self.declare_parameter(
            "rectified",
            False,
            ParameterDescriptor(
                description="the images are rectified (image_rect): back-project with camera_info's P; "
                "false (image_raw): with K and the distortion D"
            ),
        )
        self._depth = NearestStampBuffer()
        self._info = NearestStampBuffer()
        # when the last depth and the last camera_info came, and when a segmentation last found both
        # (time.monotonic()): a segmentation left without them is told why (_unmatched)
        self._arrived = {"depth": -math.inf, "camera_info": -math.inf}
        self._matched_at = -math.inf
        # The newest segmentation still without its depth/camera_info: planned when they arrive (the three
        # topics are delivered independently, so the segmentation may come first).
        self._pending: HierarchicalSegmentation | None = None
        self._steady = SteadyGrasps()  # a tracked part's grasp stays turned and end-on (or not) as it was
        # the topics' vocabulary check: the active vocabulary as last read, the read in flight and when it was
        # sent, and the (revision, part_names, object_names) last warned about
        self._known: VocabularyMsg | None = None
        self._reading: Future | None = None
        self._read_sent = -math.inf
        self._warned: tuple[int, frozenset[str], frozenset[str]] | None = None
        self._depth_sub = self.create_subscription(Image, "depth", self._on_depth, 10)
        self._info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, 10)
        self.create_subscription(HierarchicalSegmentation, "segmentation", self._on_segmentation, 10)
        self.poses_pub = self.create_publisher(PoseArray, "grasp_targets", 10)
        self.best_pub = self.create_publisher(PoseStamped, "grasp_target", 10)
        self.marker_pub = self.create_publisher(MarkerArray, "grasp_markers", 10)
        self.cloud_pub = self.create_publisher(PointCloud2, "part_points", 10)
        self._plan_service = ServiceThread(self, PlanGrasps, "plan_grasps", self._on_plan_grasps)
        self._segment = self._plan_service.node.create_client(
            Segment, self.resolve_service_name("segment"), callback_group=self._plan_service.group
        )
        # on the helper node too: its executor reads the replies, also for calls from the topics' callbacks
        self._vocabulary = self._plan_service.node.create_client(
            GetVocabulary,
            self.resolve_service_name("get_vocabulary"),
            callback_group=self._plan_service.group,
        )
        self._plan_service.start()

    def _on_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Refuses part_names that name no part, at start-up and at run time: the node would run, and fail or
        find nothing on every frame."""
        for param in params:
            if param.name == "part_names" and (reason := part_names_problem(param.value)):
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def destroy_node(self) -> None:
        self._stopping.set()  # ends waiting requests, which the service's executor waits for
        if getattr(self, "_plan_service", None) is not None:  # not made when its parameters were refused
            self._plan_service.destroy()
            self._plan_service = None
        super().destroy_node()

    def _on_depth(self, msg: Image) -> None:
        self._depth.add(msg)
        self._arrived["depth"] = time.monotonic()
        self._plan_pending()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._info.add(msg)
        self._arrived["camera_info"] = time.monotonic()
        self._plan_pending()

    def _on_segmentation(self, msg: HierarchicalSegmentation) -> None:
        if self._pending is not None:  # its depth never came, and a newer frame replaces it
            self.get_logger().warning(self._unmatched(self._pending), throttle_duration_sec=5.0)
        self._pending = msg
        self._plan_pending()

    def _unmatched(self, msg: HierarchicalSegmentation) -> str:
        """Why ``msg`` found no depth or camera_info, as far as the node can tell: nothing publishes them,
        none came lately or only this frame's did not (both: lost in transport, the usual cause with large
        depth images), or none fits any frame's stamp (the stamps differ)."""
        t, slop = stamp_seconds(msg.header), self.get_parameter("depth_slop").value
        now = time.monotonic()
        missing, reasons, lost = [], [], False
        for kind, buffer, subscription in (
            ("depth", self._depth, self._depth_sub),
            ("camera_info", self._info, self._info_sub),
        ):
            if buffer.nearest(t, slop) is not None:
                continue
            missing.append(kind)
            topic = subscription.topic_name
            if not subscription.get_publisher_count():
                reasons.append(f"no publisher of {topic} matches (check the remap)")
                continue
            if now - self._arrived[kind] > RECEIVED_LATELY_S:
                reasons.append(
                    f"none received on {topic} in the last {RECEIVED_LATELY_S:g} s (partglee_node republishes "
                    "it only with use_depth:=true)"
                )
                lost |= kind == "depth"
                continue
            off = stamp_seconds(buffer.nearest(t, math.inf).header) - t
            nearest = (
                f"the nearest on {topic} is stamped {abs(off):.3f}s {'after' if off > 0 else 'before'} it"
            )
            if now - self._matched_at > RECEIVED_LATELY_S:
                reasons.append(
                    f"{nearest}, and no segmentation found its {kind} in the last {RECEIVED_LATELY_S:g} s: the "
                    "stamps differ by more than depth_slop (raise it if the camera stamps them that far apart)"
                )
            else:
                reasons.append(f"{nearest}, while other segmentations found theirs: this one's did not come")
                lost |= kind == "depth"
        text = f"no {' or '.join(missing)} within {slop}s of segmentation at {t:.3f}: {'; '.join(reasons)}"
        return f"{text}; {LOST_DEPTH}" if lost else text

    def _plan_pending(self) -> None:
        """Plan on the waiting segmentation once its depth and camera_info are both there."""
        if self._pending is None:
            return
        t, slop = stamp_seconds(self._pending.header), self.get_parameter("depth_slop").value
        depth_msg, info = self._depth.nearest(t, slop), self._info.nearest(t, slop)
        if depth_msg is None or info is None:
            return
        msg, self._pending, self._matched_at = self._pending, None, time.monotonic()
        try:
            self._plan(msg, depth_msg, info)
        except Exception as err:  # one bad message must not take the node down
            if not self.context.ok():  # Ctrl-C shut ROS down under this frame's publish: not its fault
                return
            self.get_logger().error(
                f"grasp planning failed: {type(err).__name__}: {err}", throttle_duration_sec=5.0
            )

    def _plan(self, msg: HierarchicalSegmentation, depth_msg: Image, info: CameraInfo) -> None:
        wanted, objects = self._wanted([], [])
        self._warn_if_not_in_vocabulary(msg.vocabulary_revision, wanted, objects)
        try:
            targets, clouds = self._grasps(msg, depth_msg, info, wanted, objects)
        except ValueError as err:
            self.get_logger().warning(str(err), throttle_duration_sec=5.0)
            return
        header = msg.header
        self.poses_pub.publish(PoseArray(header=header, poses=[pose_msg(g) for _, g in targets]))
        if targets:
            self.best_pub.publish(PoseStamped(header=header, pose=pose_msg(targets[0][1])))
        self.marker_pub.publish(markers(header, targets))
        if self.cloud_pub.get_subscription_count():
            self.cloud_pub.publish(part_cloud(header, clouds))

    def _warn_if_not_in_vocabulary(self, revision: int, wanted: set[str], objects: set[str]) -> None:
        """Once per vocabulary revision, part_names and object_names: a part or object the segmentation's
        vocabulary lacks leaves grasp_targets empty for good, which would otherwise look like the part is out
        of sight."""
        vocabulary = self._vocabulary_at(revision)
        key = (revision, frozenset(wanted), frozenset(objects))
        if vocabulary is None or key == self._warned:
            return
        parameters, lacks = vocabulary_lacks(wanted, objects, vocabulary)
        if lacks:
            self._warned = key
            self.get_logger().warning(f"{parameters}: {lacks}; grasp_targets stay empty")

    def _vocabulary_at(self, revision: int) -> VocabularyMsg | None:
        """The active vocabulary if it is at ``revision``, else None while it is read (get_vocabulary, not
        waited for: the topics go on; no partglee_node there, as with a bag, means no check)."""
        if self._reading is not None and self._reading.done():
            self._known, self._reading = self._reading.result().vocabulary, None
        if self._known is not None and self._known.revision == revision:
            return self._known
        now = time.monotonic()
        if now - self._read_sent < VOCABULARY_RETRY_S:
            return None
        if self._reading is not None:  # its reply was lost, or its node is gone
            self._vocabulary.remove_pending_request(self._reading)
            self._reading = None
        if self._vocabulary.service_is_ready():
            self._reading, self._read_sent = self._vocabulary.call_async(GetVocabulary.Request()), now
        return None

    def _wanted(self, parts: list[str], objects: list[str]) -> tuple[set[str], set[str]]:
        """Part names and object names (empty: any) from a request, or else from the parameters."""
        # written as partglee_node's labels are: whitespace collapsed, Unicode composed
        wanted = set(parts) or set(self.get_parameter("part_names").value)
        named = objects or self.get_parameter_or("object_names", ANY_OBJECT).value
        return {normal_name(n) for n in wanted}, {normal_name(n) for n in named if n.strip()}

    def _grasps(
        self,
        msg: HierarchicalSegmentation,
        depth_msg: Image,
        info: CameraInfo,
        wanted: set[str],
        objects: set[str],
        track_id: int = 0,
    ) -> tuple[list[Target], list[PartPoints]]:
        """Grasp candidates on the wanted parts, best first, and the cleaned points of every wanted part with
        usable depth; ValueError when the depth cannot be used."""
        try:
            depth = depth_msg_to_array(depth_msg)
        except ImageConversionError as err:
            raise ValueError(f"bad depth image: {err}") from err
        frames = {msg.header.frame_id, depth_msg.header.frame_id, info.header.frame_id} - {""}
        if len(frames) > 1:  # same size but another camera: poses off by the baseline, in the wrong frame
            raise ValueError(
                f"depth ({depth_msg.header.frame_id}), camera_info ({info.header.frame_id}) and image "
                f"({msg.header.frame_id}) are in different frames; depth must be aligned to the colour image "
                "(e.g. aligned_depth_to_color)"
            )
        if depth.shape != (msg.image_height, msg.image_width):
            raise ValueError(
                f"depth is {depth.shape[1]}x{depth.shape[0]} but the image is {msg.image_width}x{msg.image_height};"
                " depth must be aligned to the colour image"
            )
        intrinsics = Intrinsics.from_camera_info(info, depth.shape, self.get_parameter("rectified").value)
        min_quality, t = self.get_parameter("min_quality").value, stamp_seconds(msg.header)
        targets: list[Target] = []
        clouds: list[PartPoints] = []
        for obj, part in matching_parts(msg, wanted, objects, track_id):
            try:
                mask = paste_mask_crop(part.box, part.mask, msg.image_height, msg.image_width)
                result = plan_grasp(mask, depth, intrinsics, depth_msg.encoding)
            except ValueError as err:  # a malformed mask (ImageDecodeError)
                self.get_logger().warning(f"{part.object_label}: {err}", throttle_duration_sec=5.0)
                continue
            if result.geometry is not None:
                clouds.append(PartPoints(obj.id, part.id, obj.track_id, result.geometry.points))
            if result.pose is None:
                self.get_logger().debug(f"{part.object_label} #{part.id}: no grasp ({result.reason})")
            elif result.pose.quality >= min_quality:
                pose = self._steady.steady((obj.track_id, part.object_label), result.geometry, t)
                targets.append((part.object_label, pose))
        targets.sort(key=lambda item: -item[1].quality)
        return targets, clouds

    def _on_plan_grasps(
        self, request: PlanGrasps.Request, response: PlanGrasps.Response
    ) -> PlanGrasps.Response:
        """Ask partglee_node for one fresh frame and plan on it; never raises."""
        try:
            response.message = self._plan_on_request(request, response)
            response.success = True
        except (ValueError, TimeoutError) as err:
            response.success, response.message = False, str(err)
        except Exception as err:  # keep serving whatever one request did
            response.success, response.message = False, f"failed: {type(err).__name__}: {err}"
        if response.success:  # rclpy fixes a logging call site's severity: one call per level
            self.get_logger().info(f"plan_grasps: {response.message}")
        else:
            self.get_logger().warning(f"plan_grasps: {response.message}")
        return response

    def _plan_on_request(self, request: PlanGrasps.Request, response: PlanGrasps.Response) -> str:
        timeout = request_timeout(request.timeout)
        named_parts = [p for p in request.parts if p.strip()]
        named_objects = [o for o in request.objects if o.strip()]
        if request.track_id and named_objects:
            raise ValueError(
                "track_id names an object of the active vocabulary's stream (the only tracked one): "
                "name no objects with it"
            )
        wanted, objects = self._wanted(named_parts, named_objects)
        deadline = time.monotonic() + timeout
        self._wait_for_service(self._segment, deadline)
        # named objects: ask for exactly these names; else the active vocabulary, which must have the parts
        # and the object_names parameter's objects
        vocabulary = None
        parts_from = "the request's parts" if named_parts else "part_names"
        if not named_objects:  # checked before a frame is awaited for nothing
            self._wait_for_service(self._vocabulary, deadline)
            vocabulary = self._active_vocabulary(max(deadline, time.monotonic() + MIN_FRAME_WAIT_S))
            sources, lacks = vocabulary_lacks(wanted, objects, vocabulary, parts_from)
            if lacks:
                raise ValueError(f"{sources}: {lacks}")
        ask = Segment.Request(timeout=max(deadline - time.monotonic(), MIN_FRAME_WAIT_S))
        if named_objects:
            ask.objects, ask.parts = named_objects, sorted(wanted)
        answer = self._call(self._segment, ask, time.monotonic() + ask.timeout + SEGMENT_ANSWER_S)
        if not answer.success:
            raise ValueError(f"segment: {answer.message}")
        if vocabulary is not None and answer.segmentation.vocabulary_revision != vocabulary.revision:
            # set_vocabulary came while the frame was awaited: the frame's vocabulary, if it is still active
            vocabulary = self._active_vocabulary(time.monotonic() + VOCABULARY_READ_S)
            sources, lacks = vocabulary_lacks(wanted, objects, vocabulary, parts_from)
            if vocabulary.revision == answer.segmentation.vocabulary_revision and lacks:
                raise ValueError(f"{sources}: {lacks}")
        if not answer.depth.data:
            raise ValueError(
                f"partglee_node sent no depth with the frame ({answer.message}): it needs use_depth:=true and "
                "depth + camera_info stamped within its depth_slop of the colour frames"
            )
        seg = answer.segmentation
        targets, clouds = self._grasps(
            seg, answer.depth, answer.camera_info, wanted, objects, request.track_id
        )
        response.poses = PoseArray(header=seg.header, poses=[pose_msg(g) for _, g in targets])
        response.labels = [label for label, _ in targets]
        response.qualities = [float(g.quality) for _, g in targets]
        response.segmentation = seg
        response.points = part_cloud(seg.header, clouds)
        found = len(matching_parts(seg, wanted, objects, request.track_id))
        stamp = f"{seg.header.stamp.sec}.{seg.header.stamp.nanosec:09d}"
        names = ", ".join(sorted(wanted))
        if request.track_id:
            names += f" of track {request.track_id}"
            if not any(o.track_id for o in seg.objects):
                names += " (the frame has no track ids: is partglee_node's tracking on?)"
            elif not any(o.track_id == request.track_id for o in seg.objects):
                names += " (not in this frame)"
        return f"{len(targets)} grasps on {found} parts named {names} in the frame stamped {stamp}"

    def _active_vocabulary(self, answer_by: float) -> VocabularyMsg:
        return self._call(self._vocabulary, GetVocabulary.Request(), answer_by).vocabulary

    def _wait_for_service(self, client: Client, deadline: float) -> None:
        """Within the request's timeout: discovery lags behind a fresh start of either node, by seconds on a
        loaded machine; polled so that shutdown ends the wait."""
        while not client.service_is_ready():
            if self._stopping.wait(0.05):
                raise TimeoutError("grasp_node is shutting down")
            if time.monotonic() > deadline:
                raise ValueError(
                    f"no {_kind(client)} service at {client.service_name}: is partglee_node running there?"
                )

    def _call(self, client: Client, request: Any, answer_by: float) -> Any:
        """Polled, not a done callback: that would need one more free executor thread (service_thread.py).
        Ends early when the service leaves the graph (partglee_node crashed: DDS notices within its lease,
        ~20 s with Fast DDS's defaults), since a request to a dead server never completes."""
        future = client.call_async(request)
        seen = time.monotonic()  # when the service was last in the graph
        while not future.done():
            if self._stopping.wait(0.05):
                raise TimeoutError("grasp_node is shutting down")
            now = time.monotonic()
            if client.service_is_ready():
                seen = now
            elif now - seen > SERVICE_GONE_S:
                client.remove_pending_request(future)
                raise TimeoutError(
                    f"{_kind(client)} service at {client.service_name} went away before answering:"
                    " did partglee_node stop?"
                )
            if now > answer_by:
                client.remove_pending_request(future)
                raise TimeoutError(f"{_kind(client)} service at {client.service_name} did not answer")
        return future.result()


def main(args: list[str] | None = None) -> int:
    argv = list(args if args is not None else sys.argv)
    if own_flags(argv, "grasp_node") is None:
        return 2
    if interrupted():  # Ctrl-C during the imports
        return 0
    if not init_or_report(argv, "grasp_node"):
        return 2
    node, code = None, 0
    try:
        node = GraspNode()  # declaring the parameters checks the overrides' types and ranges
        if rclpy.ok():  # else Ctrl-C shut ROS down during the start-up: stop
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ParameterException as err:
        if rclpy.ok():
            rclpy.logging.get_logger("partglee_grasp").fatal(f"cannot start: {err}")
            code = 2
    except Exception:
        if rclpy.ok():  # after Ctrl-C shut ROS down, what fails is the stop's doing, not an error
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
