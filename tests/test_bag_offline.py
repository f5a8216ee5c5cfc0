"""Offline bag evaluation (issue #8): the sample bag, storages and encodings, damaged bags, odd bags."""

from __future__ import annotations

import json
import re
import shutil

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from partglee_ros.bag import ground_truth
from partglee_ros.bag.bag_writer import BagWriter
from partglee_ros.bag.evaluate import main as bag_eval
from partglee_ros.bag.make_sample import (
    FRAME_ID,
    IMAGE_TOPIC,
    START_NS,
    image_message,
    sample_scenes,
    write_scene_bag,
)
from partglee_ros.bag.offline import run_offline
from partglee_ros.bag.outcome import EvaluationRun, FrameOutcome
from partglee_ros.bag.reader import Bag, BagError, TopicError, read_frames
from partglee_ros.bag.report import score
from partglee_ros.bag.segmentation_msgs import annotation_to_bag_msg, bag_msg_to_result, header
from partglee_ros.bag.typestore import IMAGE_TYPE, SEGMENTATION_TYPE, bag_typestore
from partglee_ros.runtime.result import ObjectResult, PartResult, SegmentationResult
from partglee_ros.runtime.tracking import ObjectTracker
from partglee_ros.runtime.vocabulary import make_vocabulary
from partglee_ros.sensor_images import ImageDecodeError, raw_image_to_rgb
from tests.bag_testing import (
    GT_TOPIC,
    SAMPLE_BAG,
    SAMPLE_GT_JSON,
    assert_same_metrics,
    assert_same_results,
    cli_thresholds,
    from_json,
    noise_scene,
    published,
    segmenter_for,
    vocabulary_of,
)
from tests.ros_testing import small_checkpoint
from training.data.hierarchy import ImageAnnotation, ObjectAnnotation, PartAnnotation
from training.evaluation.report import evaluate
from training.validation import vocabulary_part_classes

FRAMES = 3  # model inference dominates: keep the frame count small
RENDER_DIFF_PX = 80  # of 76800: 0.1 %


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def scenes():
    """The scenes the sample bag was made from (its first FRAMES frames)."""
    return sample_scenes(12, 320, 240)


def test_sample_bag_holds_the_scenes_and_their_ground_truth(scenes) -> None:
    with Bag(SAMPLE_BAG) as bag:
        frames = list(read_frames(bag, bag.image_topic(None).name))
        from_topic, error = ground_truth.from_topic(bag, GT_TOPIC)
    assert error is None and len(frames) == len(scenes) == 12
    from_sidecar = ground_truth.from_sidecar(SAMPLE_GT_JSON)
    for frame, scene in zip(frames, scenes, strict=True):
        # the shading goes through numpy's SIMD transcendentals and OpenBLAS, both chosen per CPU: rendered on
        # an AVX-512 machine, up to 20 of this AVX2-made bag's 76800 pixels differ (identical with AVX2 forced)
        differ = np.count_nonzero((frame.rgb != scene.image).any(axis=-1))
        assert frame.rgb.shape == scene.image.shape and differ <= RENDER_DIFF_PX, differ
        for gts in (from_topic, from_sidecar):
            ann = gts[frame.stamp_ns]
            assert [o.name for o in ann.objects] == [o.name for o in scene.objects]
            for o, want in zip(ann.objects, scene.objects, strict=True):
                assert np.array_equal(o.mask, want.mask) and np.array_equal(o.box, want.box)
                assert [p.name for p in o.parts] == [p.name for p in want.parts]
                assert all(np.array_equal(p.mask, w.mask) for p, w in zip(o.parts, want.parts, strict=True))


def test_offline_cli_on_sample_bag_reproduces_direct_evaluation(model_dir, tmp_path, capsys) -> None:
    """Direct: the bag's own frames and ground truth, not re-rendered scenes (those differ by a few pixels
    across CPUs, see above)."""
    with Bag(SAMPLE_BAG) as bag:
        image_topic = bag.image_topic(None).name
        frames = list(read_frames(bag, image_topic))
        gts, error = ground_truth.from_topic(bag, GT_TOPIC)
    assert error is None
    truth = [gts[frame.stamp_ns] for frame in frames]
    vocab = vocabulary_of(truth)  # the CLI takes every name of the ground truth topic (all 12 frames)
    direct = segmenter_for(model_dir, vocab)
    preds = [direct.segment(frame.rgb) for frame in frames[:FRAMES]]
    tracker = ObjectTracker()  # the node's default tracking, which the CLI applies too
    for pred in preds:
        tracker.update(pred)
    # a dataset evaluation's part classes (training.validation), of the published boxes (bag_testing.published)
    classes = vocabulary_part_classes((list(vocab.objects), list(vocab.parts), dict(vocab.object_parts)))
    want = evaluate(truth[:FRAMES], [published(p) for p in preds], part_classes=classes)
    assert want["part_miou"]["oracle_obj_kept"]["mIoU"] > 0  # a real comparison, not 0 == 0 everywhere

    out = tmp_path / "out"
    args = [str(SAMPLE_BAG), "--out", str(out), "--model", str(model_dir), "--backend", "torch"]
    args += ["--max-frames", str(FRAMES), "--gt-topic", GT_TOPIC, *cli_thresholds(tmp_path), "--with-images"]
    assert bag_eval(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["frames_scored"] == FRAMES and summary["fatal_error"] is None
    assert_same_metrics(from_json(summary["metrics"]), want)
    report = (out / "report.md").read_text()
    assert "| objects |" in report and "Segmenter time per frame" in report
    for name in ("latency_histogram.png", "per_class_ap.png", "overlays/frame_00000.png"):
        assert cv2.imread(str(out / name)) is not None, name
    with Bag(out / "results") as results:  # the results bag: the same detections, readable by rosbags
        msgs = [results.deserialize(m) for m in results.messages({"/segmentation"})]
        # --with-images: the frames scored, as recorded, so the bag plays back with its images
        copied = [(m.log_ns, m.data) for m in results.messages({image_topic})]
    assert copied == [(f.log_ns, f.raw) for f in frames[:FRAMES]]
    assert len(msgs) == FRAMES
    for msg, pred in zip(msgs, preds, strict=True):
        assert_same_results(bag_msg_to_result(msg), pred)
        assert [o.track_id for o in msg.objects] == [o.track_id for o in pred.objects]
    assert all(o.track_id > 0 for msg in msgs for o in msg.objects)


@pytest.mark.parametrize(
    ("storage", "encoding"),
    [
        ("mcap", "rgb8"),
        ("sqlite3", "rgb8"),
        ("sqlite3", "bgr8"),
        ("mcap", "bgr8"),
        ("mcap", "png"),
        ("sqlite3", "jpeg"),
        ("mcap", "mono8"),
    ],
)
def test_storages_and_encodings_decode_to_the_recorded_image(scenes, tmp_path, storage, encoding) -> None:
    write_scene_bag(tmp_path / "bag", scenes[:2], storage=storage, encoding=encoding)
    with Bag(tmp_path / "bag") as bag:
        topic = bag.image_topic(None)
        frames = list(read_frames(bag, topic.name))
    assert topic.msgtype.endswith("CompressedImage") == (encoding in ("png", "jpeg"))
    for frame, scene in zip(frames, scenes[:2], strict=True):
        assert frame.error is None and frame.rgb.shape == scene.image.shape
        if encoding == "jpeg":
            assert np.abs(frame.rgb.astype(int) - scene.image).mean() < 8  # lossy, but the same picture
        elif encoding == "mono8":
            grey = cv2.cvtColor(scene.image, cv2.COLOR_RGB2GRAY)
            assert np.array_equal(frame.rgb, np.repeat(grey[..., None], 3, axis=2))
        else:
            assert np.array_equal(frame.rgb, scene.image)


def _image_msg(array: np.ndarray, encoding: str, bigendian: int = 0):
    types = bag_typestore().types
    h, w = array.shape[:2]
    hdr = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c"
    )
    raw = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
    return types["sensor_msgs/msg/Image"](
        header=hdr, height=h, width=w, encoding=encoding, is_bigendian=bigendian, step=raw.size // h, data=raw
    )


def test_bayer_mono16_and_bad_images() -> None:
    rng = np.random.default_rng(3)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (9, 9), 4)
    mosaic = np.empty(smooth.shape[:2], np.uint8)  # RGGB: R at (0,0), G at (0,1)/(1,0), B at (1,1)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2] = smooth[0::2, 0::2, 0], smooth[0::2, 1::2, 1]
    mosaic[1::2, 0::2], mosaic[1::2, 1::2] = smooth[1::2, 0::2, 1], smooth[1::2, 1::2, 2]
    rgb = raw_image_to_rgb(_image_msg(mosaic, "bayer_rggb8"))
    assert np.abs(rgb[4:-4, 4:-4].astype(int) - smooth[4:-4, 4:-4]).mean() < 6
    swapped = raw_image_to_rgb(_image_msg(mosaic, "bayer_bggr8"))  # the wrong pattern swaps red and blue
    assert np.abs(swapped[4:-4, 4:-4].astype(int) - smooth[4:-4, 4:-4]).mean() > 6

    depth = np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 3
    for bigendian in (0, 1):
        data = depth.astype(">u2" if bigendian else "<u2")
        grey = raw_image_to_rgb(_image_msg(data, "mono16", bigendian))[..., 0]
        assert grey[0, 0] == 0 and grey[-1, -1] == 255 and np.all(np.diff(grey.reshape(-1).astype(int)) >= 0)

    bad = _image_msg(smooth, "rgb8")
    bad.step -= 1
    with pytest.raises(ImageDecodeError, match="step"):
        raw_image_to_rgb(bad)
    with pytest.raises(ImageDecodeError, match="unsupported encoding 'nv21'"):
        raw_image_to_rgb(_image_msg(smooth, "nv21"))


def test_packed_yuv422_as_usb_cameras_send_it() -> None:
    """YUYV/UYVY (usb_cam's default) were refused. Encoded here with BT.601's video-range matrix (what
    OpenCV, and so cv_bridge, inverts), chroma shared by each pair of pixels."""
    rng = np.random.default_rng(5)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (9, 9), 4).astype(float)
    r, g, b = smooth[..., 0], smooth[..., 1], smooth[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u, v = (c.reshape(48, 32, 2).mean(axis=2) for c in (u, v))  # one U, one V per pair
    uyvy = np.stack([u, y[:, 0::2], v, y[:, 1::2]], axis=2).round().astype(np.uint8).reshape(48, 64, 2)
    yuyv = np.stack([y[:, 0::2], u, y[:, 1::2], v], axis=2).round().astype(np.uint8).reshape(48, 64, 2)
    for packed, encodings in ((uyvy, ("yuv422", "uyvy")), (yuyv, ("yuv422_yuy2", "yuyv"))):
        for encoding in encodings:
            rgb = raw_image_to_rgb(_image_msg(packed, encoding))
            assert rgb.shape == (48, 64, 3) and np.abs(rgb - smooth).mean() < 3, encoding
    assert np.abs(raw_image_to_rgb(_image_msg(uyvy, "yuyv")) - smooth).mean() > 6  # the byte order matters
    with pytest.raises(ImageDecodeError, match="yuv422 needs an even width, got 63"):
        raw_image_to_rgb(_image_msg(uyvy[:, :63], "yuv422"))


def test_out_of_order_and_varying_sizes_match_by_stamp(model_dir, scenes, tmp_path) -> None:
    """Frames recorded in shuffled order and at three sizes: each result is scored against its own scene."""
    picked = [scenes[3], sample_scenes(1, 200, 150)[0], sample_scenes(1, 400, 300)[0]]
    stamps = write_scene_bag(tmp_path / "bag", picked, write_order=[2, 0, 1])
    vocab = vocabulary_of(picked)
    segmenter = segmenter_for(model_dir, vocab)
    with Bag(tmp_path / "bag") as bag:
        gts, error = ground_truth.from_topic(bag, GT_TOPIC)
        run = run_offline(bag, "/camera/color/image_raw", segmenter, writer=None)
    assert error is None and [f.stamp_ns for f in run.frames] == [stamps[2], stamps[0], stamps[1]]
    preds = {s: segmenter.segment(scene.image) for s, scene in zip(stamps, picked, strict=True)}
    for frame in run.frames:
        assert_same_results(frame.result, preds[frame.stamp_ns])
    assert_same_metrics(score(run, gts), evaluate(picked, [published(preds[s]) for s in stamps]))


def test_truncated_mcap_keeps_the_frames_before_the_cut(tmp_path, capsys) -> None:
    # 640x480 frames: rosbags closes an mcap chunk after 1 MiB, so two frames per chunk and the cut
    # chunk is lost while the first survives.
    bag_dir = tmp_path / "bag"
    write_scene_bag(bag_dir, [noise_scene(i, 480, 640) for i in range(3)])
    mcap = bag_dir / "bag.mcap"
    with mcap.open("r+b") as f:
        f.truncate(int(mcap.stat().st_size * 0.8))
    with Bag(bag_dir) as bag:
        assert "no valid footer" in bag.warnings[0]
        got = []
        with pytest.raises(BagError, match="truncated"):
            got.extend(read_frames(bag, "/camera/color/image_raw"))
    assert len(got) == 2 and all(f.error is None for f in got)


def test_truncated_bag_cli_writes_partial_report(model_dir, tmp_path, capsys) -> None:
    bag_dir = tmp_path / "bag"
    write_scene_bag(bag_dir, [noise_scene(i, 480, 640) for i in range(3)])
    mcap = bag_dir / "bag.mcap"
    with mcap.open("r+b") as f:
        f.truncate(int(mcap.stat().st_size * 0.8))
    out = tmp_path / "out"
    args = [str(bag_dir), "--out", str(out), "--model", str(model_dir), "--backend", "torch"]
    rc = bag_eval([*args, "--objects", "mug,pot", "--parts", "handle,lid"])
    err = capsys.readouterr().err
    assert rc == 3 and "truncated" in err and "partial results written" in err
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["frames_answered"] == 2 and "truncated" in summary["fatal_error"]
    assert "INCOMPLETE" in (out / "report.md").read_text()
    with Bag(out / "results") as results:
        assert results.topics["/segmentation"].count == 2


def test_corrupt_sqlite_and_garbage_files_give_clear_errors(scenes, tmp_path, capsys) -> None:
    write_scene_bag(tmp_path / "bag", scenes[:2], storage="sqlite3")
    db3 = tmp_path / "bag" / "bag.db3"
    with db3.open("r+b") as f:
        f.truncate(db3.stat().st_size // 2)
    with pytest.raises(BagError, match="malformed"):
        Bag(tmp_path / "bag")
    garbage = tmp_path / "garbage.mcap"
    garbage.write_bytes(b"not an mcap file at all" * 10)
    with pytest.raises(BagError, match="garbage.mcap"):
        Bag(garbage)
    rc = bag_eval([str(tmp_path / "bag"), "--out", str(tmp_path / "o"), "--objects", "mug"])
    assert rc == 2 and "malformed" in capsys.readouterr().err


def test_missing_topics_list_what_the_bag_has(tmp_path, capsys) -> None:
    rc = bag_eval([str(SAMPLE_BAG), "--out", str(tmp_path / "o"), "--image-topic", "/camera/nope"])
    err = capsys.readouterr().err
    assert rc == 2 and "'/camera/nope' is not in" in err
    assert "/camera/color/image_raw (sensor_msgs/msg/Image, 12 msgs)" in err and GT_TOPIC in err
    rc = bag_eval([str(SAMPLE_BAG), "--out", str(tmp_path / "o"), "--gt-topic", "/ground_truth/nope"])
    assert rc == 2 and "'/ground_truth/nope' is not in" in capsys.readouterr().err
    with Bag(SAMPLE_BAG) as bag, pytest.raises(TopicError, match="expected sensor_msgs/msg/Image"):
        bag.image_topic(GT_TOPIC)


def test_bag_directory_without_metadata_is_read_from_its_storage_file(scenes, tmp_path) -> None:
    write_scene_bag(tmp_path / "bag", scenes[:2], storage="sqlite3")
    (tmp_path / "bag" / "metadata.yaml").unlink()
    with Bag(tmp_path / "bag") as bag:
        assert "metadata.yaml is missing" in bag.warnings[0]
        assert [f.error for f in read_frames(bag, "/camera/color/image_raw")] == [None, None]
    shutil.copy(SAMPLE_BAG / "bag.mcap", tmp_path / "single.mcap")  # a bare storage file is a bag too
    with Bag(tmp_path / "single.mcap") as bag:
        assert bag.topics["/camera/color/image_raw"].count == 12


def test_ground_truth_mistakes_are_named(model_dir, tmp_path, capsys) -> None:
    """Repeated stamps or image ids, annotations of no image, masks of another size than their image, a file
    that is not PACO JSON, a bad split file: exit 2 with the reason, no traceback. Ground truth that matches
    no frame: a warning naming it, and an error when none matches."""
    data = json.loads(SAMPLE_GT_JSON.read_text())
    base = [str(SAMPLE_BAG), "--model", str(model_dir), "--backend", "torch", "--objects", "mug"]

    def run(name: str, content: object, *extra: str) -> tuple[int, str]:
        path = tmp_path / f"{name}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        rc = bag_eval([*base, "--out", str(tmp_path / name), "--gt-json", str(path), *extra])
        return rc, capsys.readouterr().err

    repeated = json.loads(json.dumps(data))
    repeated["images"][2]["timestamp_ns"] = repeated["images"][1]["timestamp_ns"]
    rc, err = run("repeated", repeated)
    assert rc == 2 and "several images have the timestamp_ns" in err, err
    rc, err = run("no_images", {k: v for k, v in data.items() if k != "images"})
    assert rc == 2 and "no_images.json: missing key 'images'" in err, err
    rc, err = run("not_json", "{images: [")
    assert rc == 2 and "not_json.json: not valid JSON" in err, err
    split = tmp_path / "split.yaml"
    split.write_text("base_categories: [mug]\n")
    rc, err = run("split", data, "--split-config", str(split))
    assert rc == 2 and "needs the lists base_categories and novel_categories" in err, err
    # an image id twice, or an annotation naming no image: the ground truth of one frame went to another
    same_id = json.loads(json.dumps(data))
    same_id["images"][1]["id"] = same_id["images"][0]["id"]
    rc, err = run("same_id", same_id)
    assert rc == 2 and f"several images have the id [{data['images'][0]['id']}]" in err, err
    orphan = json.loads(json.dumps(data))
    orphan["annotations"][0]["image_id"] = 999
    rc, err = run("orphan", orphan)
    assert rc == 2 and "annotations name the image_id [999], which no image has" in err, err
    resized = json.loads(json.dumps(data))  # an image's size changed, its masks' RLE sizes not
    resized["images"][0].update(width=640, height=480)
    image_id, stamp = resized["images"][0]["id"], resized["images"][0]["timestamp_ns"]
    rc, err = run("resized", resized)
    assert rc == 2 and f"image {image_id} (timestamp_ns {stamp}) is 640x480, but the mask of" in err, err
    assert not (tmp_path / "resized").exists()  # refused before any output or inference

    shifted = json.loads(json.dumps(data))
    for image in shifted["images"][:2]:
        image["timestamp_ns"] += 1
    split.write_text("base_categories: [mug, teapot]\nnovel_categories: [kettle]\n")
    rc, err = run("shifted", shifted, "--split-config", str(split))
    assert rc == 0 and "warning: 2 of 12 ground-truth images match no frame's header stamp" in err, err
    assert "not in the vocabulary (never scored): kettle, teapot" in err, err
    assert json.loads((tmp_path / "shifted" / "metrics.json").read_text())["frames_scored"] == 10
    for image in shifted["images"]:  # the stamps of another recording
        image["timestamp_ns"] += 3600 * 10**9
    rc, err = run("elsewhere", shifted)
    assert rc == 2 and "no ground-truth image matches a frame of /camera/color/image_raw" in err, err
    assert (tmp_path / "elsewhere" / "report.md").is_file()


def test_vocabulary_flags_and_a_cut_bag_without_metadata(model_dir, tmp_path, capsys) -> None:
    """--parts without --objects was dropped silently (the ground truth's whole vocabulary was scored); a bag
    cut short without metadata.yaml warned that the lost frames' ground truth matched no frame."""
    base = [
        str(SAMPLE_BAG),
        "--model",
        str(model_dir),
        "--backend",
        "torch",
        "--gt-json",
        str(SAMPLE_GT_JSON),
    ]
    for flags in (["--parts", "handle"], ["--object-parts", "mug: handle"]):
        assert bag_eval([*base, "--out", str(tmp_path / "flags"), *flags]) == 2
        assert "--parts and --object-parts need --objects" in capsys.readouterr().err
    vocabulary = tmp_path / "vocabulary.yaml"
    vocabulary.write_text("objects: [mug]\n")
    assert (
        bag_eval(
            [*base, "--out", str(tmp_path / "both"), "--vocabulary", str(vocabulary), "--objects", "pot"]
        )
        == 2
    )
    assert "give --vocabulary or --objects/--parts/--object-parts, not both" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # argparse's exit
        bag_eval([*base, "--out", str(tmp_path / "none"), "--max-frames", "0"])
    assert "--max-frames: must be at least 1" in capsys.readouterr().err

    cut = tmp_path / "cut"
    cut.mkdir()
    data = (SAMPLE_BAG / "bag.mcap").read_bytes()
    (cut / "bag.mcap").write_bytes(data[: len(data) // 2])  # no metadata.yaml: frames counted by the scan
    vocab = ["--objects", "mug,pot", "--parts", "handle,lid", "--object-parts", "mug: handle"]
    rc = bag_eval([*base[1:], str(cut), "--out", str(tmp_path / "out"), *vocab])
    err = capsys.readouterr().err
    assert rc == 3 and "partial results written" in err and "match no frame" not in err, err
    report = (tmp_path / "out" / "report.md").read_text()
    assert "2 objects: mug, pot; 2 parts: handle, lid; mug: handle |" in report


def test_part_miou_is_scored_over_the_vocabulary_classes() -> None:
    """A kettle's lid over a mug's handle, the kettle's handle under it: in Oracle-Obj the lid becomes
    "mug:lid", a class of the vocabulary, and hides the handle. Scored over the labels that occur, "mug:lid"
    would be no class, the lid would be dropped and the handle under it would score IoU 1."""
    mug = np.zeros((20, 20), bool)
    mug[4:16, 4:16] = True
    handle = np.zeros_like(mug)
    handle[4:8, 4:16] = True
    box = np.array([4, 4, 16, 16], np.float32)
    gt = ImageAnnotation(
        1, "1.png", 20, 20, [ObjectAnnotation(1, "mug", mug, [PartAnnotation(2, "handle", handle, 1)])]
    )
    parts = [
        PartResult(2, "lid", "kettle:lid", 0.9, box, handle, 1),
        PartResult(3, "handle", "kettle:handle", 0.5, box, handle, 1),
    ]
    pred = SegmentationResult(20, 20, 1, [ObjectResult(1, "kettle", 0.9, box, mug, parts)])
    run = EvaluationRun("offline", "bag", "/image")
    run.frames.append(FrameOutcome(0, 7, 7, result=pred))
    vocabulary = make_vocabulary(["kettle", "mug"], ["handle", "lid"], revision=1)
    assert (
        score(run, {7: gt}, None, vocabulary)["part_miou"]["oracle_obj_kept"]["per_class"]["mug:handle"]
        == 0.0
    )
    assert score(run, {7: gt})["part_miou"]["oracle_obj_kept"]["per_class"]["mug:handle"] == 1.0


def _bag_with_ground_truth(path, scenes: list[ImageAnnotation], recorded) -> None:
    """Frames and their ground truth on GT_TOPIC; `recorded(i, msg)` gives the CDR written for scene i's."""
    with BagWriter(path) as writer:
        for i, scene in enumerate(scenes):
            stamp = START_NS + i * 10**8
            hdr = header(stamp, FRAME_ID)
            msgtype, image = image_message(scene.image, hdr, "rgb8")
            writer.write_msg(IMAGE_TOPIC, msgtype, stamp, image)
            writer.write(GT_TOPIC, SEGMENTATION_TYPE, stamp, recorded(i, annotation_to_bag_msg(scene, hdr)))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("partglee-bag-eval: error: ") and err.count("\n") == 1, err
    return err


def test_ground_truth_messages_that_do_not_decode_are_named(scenes, tmp_path, capsys) -> None:
    """A truncated ground-truth message (rosbags' SerdeError was a traceback) and one whose mask crop does not
    fit its box: refused before any inference, naming the topic, the message and its stamp where known."""
    serialize = bag_typestore().serialize_cdr

    def truncated(i: int, msg: object) -> bytes:
        raw = bytes(serialize(msg, SEGMENTATION_TYPE))
        return raw[: len(raw) // 2] if i == 1 else raw

    def bad_crop(i: int, msg: object) -> bytes:
        if i == 1:
            msg.objects[0].mask.encoding = "rgb8"
        return bytes(serialize(msg, SEGMENTATION_TYPE))

    for name, recorded, expected in (
        ("truncated", truncated, f"message 1 (logged at {START_NS + 10**8} ns) does not deserialize as"),
        (
            "bad_crop",
            bad_crop,
            f"message 1 (logged at {START_NS + 10**8} ns), stamp {START_NS + 10**8} ns: mask",
        ),
    ):
        _bag_with_ground_truth(tmp_path / name, scenes[:2], recorded)
        with (
            Bag(tmp_path / name) as bag,
            pytest.raises(ValueError, match=re.escape(f"{GT_TOPIC}: {expected}")),
        ):
            ground_truth.from_topic(bag, GT_TOPIC)
        out = tmp_path / f"{name}_out"
        assert bag_eval([str(tmp_path / name), "--out", str(out), "--gt-topic", GT_TOPIC]) == 2
        assert expected in _one_line_error(capsys) and not out.exists()


def test_setup_mistakes_are_one_line_before_any_work(tmp_path, capsys) -> None:
    """A vocabulary that is not YAML, a params file that is a list or whose section is, a split whose
    categories are one string (it became the objects m, u, g), --out naming a file, an image topic without
    messages: exit 2 with one line, no traceback, nothing written."""
    files = {
        "vocabulary.yaml": "objects: [mug\nparts: x\n",
        "list.yaml": "- a\n- b\n",
        "section.yaml": "partglee: [1, 2]\n",
        "split.yaml": "base_categories: mug\nnovel_categories: [kettle]\n",
        "threshold.yaml": "partglee:\n  ros__parameters:\n    object_threshold: high\n",
        "tracking.yaml": "partglee:\n  ros__parameters:\n    track_iou: high\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    for option, name, expected in (
        ("--vocabulary", "vocabulary.yaml", "vocabulary.yaml: not valid YAML at line 2, column 6"),
        ("--params-file", "list.yaml", "list.yaml: expected a mapping at the top level, got a list"),
        ("--params-file", "section.yaml", "section 'partglee' is not a node's 'ros__parameters"),
        ("--split-config", "split.yaml", "base_categories is 'mug'"),
        ("--params-file", "threshold.yaml", "--params-file: a threshold or limit is not a number"),
        ("--params-file", "tracking.yaml", "--params-file: could not convert string to float: 'high'"),
    ):
        vocabulary = [] if option == "--vocabulary" else ["--objects", "mug"]
        rc = bag_eval([str(SAMPLE_BAG), "--out", str(out), *vocabulary, option, str(tmp_path / name)])
        assert rc == 2 and expected in _one_line_error(capsys) and not out.exists()
    assert bag_eval([str(SAMPLE_BAG), "--out", str(tmp_path / "list.yaml"), "--objects", "mug"]) == 2
    assert "list.yaml is a file; give a directory" in _one_line_error(capsys)

    with Writer(tmp_path / "empty", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=bag_typestore())
    assert bag_eval([str(tmp_path / "empty"), "--out", str(out), "--objects", "mug"]) == 2  # was 0/0 frames
    assert f"{IMAGE_TOPIC} has no messages in" in _one_line_error(capsys) and not out.exists()


def test_ground_truth_of_another_size_is_reported_without_metrics(model_dir, tmp_path, capsys) -> None:
    """Sidecar ground truth rendered at 200x150 for 160x120 frames, found only when scoring: the report,
    metrics.json (without metrics), overlays (without the ground-truth panel) and results are still written,
    and the error names the stamps (it said "image 0", a position among the scored frames)."""
    stamps = write_scene_bag(tmp_path / "bag", [noise_scene(i, 120, 160) for i in range(2)])
    ground_truth.write_sidecar(sample_scenes(2, 200, 150), stamps, tmp_path / "gt.json")
    out = tmp_path / "out"
    args = [str(tmp_path / "bag"), "--out", str(out), "--model", str(model_dir), "--backend", "torch"]
    assert bag_eval([*args, "--gt-json", str(tmp_path / "gt.json"), *cli_thresholds(tmp_path)]) == 2
    err = _one_line_error(capsys)
    wanted = f"ground truth and frame differ in size at 2 stamp(s): {stamps[0]} ns (ground truth 200x150, frame 160x120)"
    assert wanted in err and "report.md has the rest" in err, err
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["frames_answered"] == summary["frames_scored"] == 2 and summary["metrics"] is None
    assert any(wanted in w for w in summary["warnings"])
    assert "No metrics: scoring failed" in (out / "report.md").read_text()
    assert cv2.imread(str(out / "overlays" / "frame_00000.png")).shape == (120, 160, 3)
    with Bag(out / "results") as results:
        assert results.topics["/segmentation"].count == 2
