"""Evaluate the segmenter on a recorded rosbag2 bag (mcap or sqlite3).

  offline: the Segmenter runs over every frame as fast as it can (no ROS needed):
    partglee-bag-eval data/sample_bag/bag --gt-topic /ground_truth/segmentation --out eval_out
  replay: the frames are published into a running partglee_node at the recorded pace times --rate, and
  what it publishes is recorded (needs the ROS environment):
    partglee-bag-eval BAG --mode replay --rate 1.0 --gt-json gt.json --out eval_out

Outputs under --out: report.md (metrics table, latency, overlays), metrics.json, latency_histogram.png,
per_class_ap.png, overlays/, and results/ (a bag with the segmentation messages, playable with
`ros2 bag play`). Exit status: 0 done, 2 bad arguments or setup (or ground truth that cannot be scored
against the frames: the outputs are written without metrics), 3 the bag is damaged and the outputs cover
only the frames before the damage.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from partglee_ros.bag import ground_truth
from partglee_ros.bag.bag_writer import STORAGES, BagWriter
from partglee_ros.bag.outcome import EvaluationRun, ReplayError
from partglee_ros.bag.reader import Bag, BagError
from partglee_ros.bag.report import score, write_report
from partglee_ros.ros.dds_profile import use_bundled_dds_profile
from partglee_ros.runtime.backends.base import BackendError
from partglee_ros.runtime.postprocess import PostprocessConfig
from partglee_ros.runtime.tracking import ObjectTracker, TrackingConfig
from partglee_ros.runtime.vocabulary import Vocabulary, make_vocabulary, parse_object_parts
from training.data.hierarchy import ImageAnnotation
from training.evaluation.split import CategorySplit

REPO = Path(__file__).resolve().parents[2]
EXIT_USAGE, EXIT_DAMAGED = 2, 3
POSTPROCESS_KEYS = ("object_threshold", "part_threshold", "nms_iou", "max_objects", "max_parts_per_object")


MODULE_COMMAND = "python -m partglee_ros.bag.evaluate"


class UsageError(RuntimeError):
    """Arguments or inputs that cannot work; printed without a traceback."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="partglee-bag-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("bag", type=Path, help="bag directory, or one .mcap/.db3 file")
    p.add_argument("--out", type=Path, required=True, help="output directory (its results/ must not exist)")
    p.add_argument("--mode", choices=("offline", "replay"), default="offline")
    p.add_argument("--image-topic", help="Image or CompressedImage topic (default: the only one in the bag)")
    gt = p.add_mutually_exclusive_group()
    gt.add_argument("--gt-topic", help="topic with partglee_ros/HierarchicalSegmentation ground truth")
    gt.add_argument("--gt-json", type=Path, help="PACO-style COCO JSON whose images have timestamp_ns")
    v = p.add_argument_group("vocabulary (default: the object and part names of the ground truth)")
    v.add_argument("--vocabulary", type=Path, help="YAML/JSON file with objects, parts, object_parts")
    v.add_argument("--objects", help="comma-separated object names")
    v.add_argument("--parts", help="comma-separated part names")
    v.add_argument("--object-parts", action="append", default=[], help="restriction like 'mug: handle, body'")
    v.add_argument(
        "--split-config", type=Path, help="YAML with base_categories/novel_categories for base/novel AP"
    )
    o = p.add_argument_group("offline mode")
    o.add_argument("--model", type=Path, default=REPO / "models" / "default", help="model directory")
    o.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx", "tensorrt"))
    o.add_argument("--device", default="cpu")
    o.add_argument(
        "--params-file",
        type=Path,
        help="node parameter YAML to take thresholds and tracking (tracking, track_iou, track_relabel_iou, "
        "track_max_missed, track_max_age) from",
    )
    o.add_argument("--object-threshold", type=float, help="overrides the params file")
    o.add_argument("--part-threshold", type=float, help="overrides the params file")
    r = p.add_argument_group("replay mode")
    r.add_argument("--rate", type=float, default=1.0, help="multiple of the recorded frame rate")
    r.add_argument("--publish-topic", default="", help="topic the node listens on (default: the bag's topic)")
    r.add_argument("--result-topic", default="/segmentation")
    r.add_argument("--vocabulary-service", default="/set_vocabulary")
    r.add_argument(
        "--keep-node-vocabulary", action="store_true", help="do not send the vocabulary to the node"
    )
    r.add_argument(
        "--lockstep", action="store_true", help="send each frame after the previous result (no drops)"
    )
    r.add_argument("--connect-timeout", type=float, default=60.0)
    r.add_argument("--drain-timeout", type=float, default=10.0)
    p.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    p.add_argument("--overlays", type=int, default=4, help="number of overlay images")
    p.add_argument("--storage", choices=tuple(STORAGES), default="mcap", help="results bag storage")
    p.add_argument("--no-results-bag", action="store_true")
    p.add_argument(
        "--with-images",
        action="store_true",
        help="the results bag also holds the frames read (the image topic, byte for byte), so it plays back in "
        "RViz without the source bag",
    )
    return p.parse_args(argv)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _yaml_mapping(path: Path, option: str) -> dict:
    """The top-level mapping of the YAML file given as `option` ({} when empty); UsageError in one line."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UsageError(f"{option} {path}: not valid YAML{where}: {problem}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"{option} {path}: cannot read it: {err}") from err
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError(f"{option} {path}: expected a mapping at the top level, got a {type(raw).__name__}")
    return raw


def load_vocabulary(args: argparse.Namespace, gts: dict[int, ImageAnnotation]) -> Vocabulary:
    """From --vocabulary, else --objects/--parts, else every name in the ground truth."""
    flags = args.objects is not None or args.parts is not None or args.object_parts
    if args.vocabulary and flags:  # one source: the flags were dropped silently
        raise UsageError("give --vocabulary or --objects/--parts/--object-parts, not both")
    if args.vocabulary:
        raw = _yaml_mapping(args.vocabulary, "--vocabulary")  # with objects, parts, object_parts
        mapping = raw.get("object_parts") or {}
        if isinstance(mapping, list):
            mapping = parse_object_parts(mapping)
        return make_vocabulary(raw.get("objects", []), raw.get("parts", []), mapping or None, revision=1)
    if args.objects is None and (args.parts is not None or args.object_parts):
        # before, they were dropped silently and the ground truth's whole vocabulary was scored
        raise UsageError(
            "--parts and --object-parts need --objects (without all of them: the ground truth's names)"
        )
    if args.objects is not None:
        return make_vocabulary(
            _names(args.objects),
            _names(args.parts),
            parse_object_parts(args.object_parts) or None,
            revision=1,
        )
    if not gts:
        raise UsageError(
            "no vocabulary: give --vocabulary or --objects/--parts (there is no ground truth to take it from)"
        )
    objects = sorted({o.name for a in gts.values() for o in a.objects})
    parts = sorted({p.name for a in gts.values() for p in a.parts()})
    return make_vocabulary(objects, parts, revision=1)


def node_parameters(args: argparse.Namespace) -> dict:
    """The ros__parameters of every section of --params-file ({} without one), as a node parameter file
    has them: `node_name: {ros__parameters: {name: value}}`."""
    values: dict = {}
    if args.params_file:
        for name, section in _yaml_mapping(args.params_file, "--params-file").items():
            body = {} if section is None else section  # an empty section sets nothing
            params = (body.get("ros__parameters") or {}) if isinstance(body, dict) else None
            if not isinstance(params, dict):
                raise UsageError(
                    f"--params-file {args.params_file}: section {name!r} is not a node's"
                    " 'ros__parameters: {name: value}' (config/partglee.yaml has the layout)"
                )
            values.update(params)
    return values


def tracker_from(values: dict) -> ObjectTracker | None:
    """The node's tracking, with its defaults where --params-file does not set it (None: tracking off)."""
    if not values.get("tracking", True):
        return None
    try:
        return ObjectTracker(TrackingConfig.from_parameters(values))
    except (TypeError, ValueError) as err:  # a value of the wrong type ('high') in --params-file
        raise UsageError(f"--params-file: {err}") from err


def postprocess_from(args: argparse.Namespace, values: dict) -> PostprocessConfig:
    """Thresholds from the node's parameters (`values`), overridden by the command line."""
    try:
        cfg = PostprocessConfig(**{k: values[k] for k in POSTPROCESS_KEYS if k in values})
        if args.object_threshold is not None:
            cfg.object_threshold = args.object_threshold
        if args.part_threshold is not None:
            cfg.part_threshold = args.part_threshold
        cfg.validate()
    except TypeError as err:  # a string where a number belongs: the comparison fails
        raise UsageError(f"--params-file: a threshold or limit is not a number ({err})") from err
    return cfg


def load_ground_truth(args: argparse.Namespace, bag: Bag) -> tuple[dict[int, ImageAnnotation], str | None]:
    if args.gt_topic:
        return ground_truth.from_topic(bag, args.gt_topic)
    if args.gt_json:
        return ground_truth.from_sidecar(args.gt_json), None
    return {}, None


def split_from(path: Path | None) -> CategorySplit | None:
    """Lists of object names only: a string "mug" was read as the objects m, u, g."""
    if path is None:
        return None
    raw = _yaml_mapping(path, "--split-config")
    lists = []
    for key in ("base_categories", "novel_categories"):
        names = raw.get(key)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UsageError(
                f"{path}: needs the lists base_categories and novel_categories of object names, like"
                f" [mug, kettle]; {key} is {names!r}"
            )
        lists.append(names)
    return CategorySplit(*lists)


def split_warnings(split: CategorySplit | None, vocab: Vocabulary) -> list[str]:
    """Split objects the vocabulary lacks are never scored: most likely a typo or another dataset's split."""
    unknown = sorted((split.base | split.novel) - set(vocab.objects)) if split is not None else []
    if not unknown:
        return []
    return [
        f"--split-config names objects that are not in the vocabulary (never scored): {', '.join(unknown)}"
    ]


def run_mode(
    args: argparse.Namespace,
    bag: Bag,
    topic: str,
    vocab: Vocabulary,
    writer,
    post: PostprocessConfig,
    tracker: ObjectTracker | None,
) -> EvaluationRun:
    """``post``, ``tracker``: offline mode's thresholds and tracking (the node's own in replay mode)."""
    if args.mode == "offline":
        from partglee_ros.bag.offline import run_offline
        from partglee_ros.runtime.factory import load_segmenter

        segmenter = load_segmenter(args.model, args.backend, args.device, postprocess_config=post)
        segmenter.apply_vocabulary(vocab)
        return run_offline(
            bag, topic, segmenter, writer, args.result_topic, args.max_frames, args.overlays, tracker
        )
    from partglee_ros.bag.replay import ReplayOptions, run_replay

    options = ReplayOptions(
        image_topic=args.publish_topic,
        result_topic=args.result_topic,
        rate=args.rate,
        vocabulary=None if args.keep_node_vocabulary else vocab,
        vocabulary_service=args.vocabulary_service,
        connect_timeout=args.connect_timeout,
        drain_timeout=args.drain_timeout,
        lockstep=args.lockstep,
    )
    return run_replay(bag, topic, options, writer, args.max_frames, args.overlays)


def evaluate_bag(args: argparse.Namespace, command: str) -> tuple[EvaluationRun, Path]:
    """Run one evaluation and write every output; raises UsageError/BagError/... before any frame, and
    UsageError after writing the outputs when the ground truth matches no frame or cannot be scored."""
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a directory (it is made if missing)")
    results_bag = None if args.no_results_bag else args.out / "results"
    if results_bag is not None and results_bag.exists():
        raise UsageError(f"{results_bag} exists; choose another --out or remove it")
    values = node_parameters(args)
    post, tracker = postprocess_from(args, values), tracker_from(values)  # bad values: before any output
    with Bag(args.bag) as bag:
        topic = bag.image_topic(args.image_topic).name
        frames_in_bag = bag.topics[topic].count
        if frames_in_bag == 0:
            raise UsageError(
                f"{topic} has no messages in {args.bag}: nothing to evaluate; choose another --image-topic."
                f" Topics: {bag.describe_topics()}" + "".join(f"; {w}" for w in bag.warnings)
            )
        gts, gt_error = load_ground_truth(args, bag)
        vocab = load_vocabulary(args, gts)
        split = split_from(args.split_config)
        setup_warnings = split_warnings(split, vocab)
        args.out.mkdir(parents=True, exist_ok=True)
        writer = BagWriter(results_bag, args.storage) if results_bag is not None else None
        try:
            run = run_mode(args, bag, topic, vocab, writer, post, tracker)
            if writer is not None and args.with_images:
                copy_frames(bag, topic, writer, len(run.frames))
        finally:
            if writer is not None:
                writer.close()
    run.log.warnings += setup_warnings
    # with every frame read, these match none (with --max-frames or damage they may be further on; a
    # damaged bag's frame count comes from the same cut-short scan, so its lost frames do not show there)
    complete = len(run.frames) == frames_in_bag and not run.log.fatal
    if gt_error:
        run.log.warnings.append(gt_error)
        run.log.fatal = run.log.fatal or gt_error
    unmatched = sorted(set(gts) - {f.stamp_ns for f in run.frames}) if complete else []
    if unmatched:
        run.log.warnings.append(
            f"{len(unmatched)} of {len(gts)} ground-truth images match no frame's header stamp (ns) on {topic}:"
            f" {', '.join(map(str, unmatched[:5]))}{' ...' if len(unmatched) > 5 else ''}"
        )
    try:
        metrics, scoring_error = score(run, gts, split, vocab), None
    except ValueError as err:  # ground truth that does not fit the frames: the rest of the report stands
        metrics, scoring_error = None, f"no metrics: {err}"
        run.log.warnings.append(scoring_error)
    report = write_report(run, gts, metrics, vocab, args.out, command, results_bag)
    if scoring_error:
        raise UsageError(f"{scoring_error}; {report} has the rest")
    if gts and len(unmatched) == len(gts):
        raise UsageError(
            f"no ground-truth image matches a frame of {topic} by header stamp (nanoseconds); {report} has"
            " the rest"
        )
    return run, report


def copy_frames(bag: Bag, topic: str, writer: BagWriter, count: int) -> None:
    """The first ``count`` messages of ``topic`` (the frames the run read) into the results bag, as recorded
    and at their log times: `ros2 bag play` then gives each segmentation with its frame."""
    try:
        for index, message in enumerate(bag.messages({topic})):
            if index >= count:
                return
            writer.write(topic, message.msgtype, message.log_ns, message.data)
    except BagError:  # where the run stopped reading too: its report says so already
        return


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the report's command line as it was typed: the installed entry point, or the module
    program = "partglee-bag-eval" if Path(sys.argv[0]).name == "partglee-bag-eval" else MODULE_COMMAND
    command = shlex.join([*program.split(), *(sys.argv[1:] if argv is None else argv)])
    try:
        run, report = evaluate_bag(args, command)
    except (UsageError, BagError, ReplayError, BackendError, FileNotFoundError, ValueError) as err:
        print(f"partglee-bag-eval: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"{run.mode}: {len(run.answered)}/{len(run.frames)} frames answered, {len(run.dropped)} dropped; {report}"
    )
    for warning in run.log.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if run.log.fatal:
        print(f"partglee-bag-eval: error: {run.log.fatal} (partial results written)", file=sys.stderr)
        return EXIT_DAMAGED
    return 0


def cli() -> int:
    """The command line: replayed raw images go through the bundled Fast DDS profile unless one is named
    (docs/BAG_EVAL.md), set before the replay's first participant; ``main`` leaves the environment alone."""
    use_bundled_dds_profile()
    return main()


if __name__ == "__main__":
    raise SystemExit(cli())
