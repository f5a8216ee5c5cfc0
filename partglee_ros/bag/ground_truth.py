"""Ground truth for bag frames, keyed by the image's header stamp (ns): from a topic in the bag carrying
HierarchicalSegmentation annotations, or from a sidecar PACO-style COCO JSON whose image entries have a
`timestamp_ns` key (the PACO readers ignore the extra key) and whose object annotations of a sequence carry
their `track_id`.

Ground truth that cannot be right is refused before any frame is segmented, naming where it is wrong: a
topic message that does not deserialize or whose masks do not fit their boxes (skipping it would leave its
frame unscored without a word), a sidecar whose image ids repeat or whose annotations name no image (their
masks would be scored against other frames), or whose masks are not the size of their image."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from partglee_ros.bag.reader import Bag, BagError, error_line
from partglee_ros.bag.segmentation_msgs import bag_msg_to_annotation, stamp_ns
from partglee_ros.bag.typestore import SEGMENTATION_TYPE
from partglee_ros.sensor_images import ImageDecodeError
from training.data.coco_io import read_paco_json, write_paco_json
from training.data.hierarchy import ImageAnnotation, part_label

STAMP_KEY = "timestamp_ns"


def from_topic(bag: Bag, topic: str) -> tuple[dict[int, ImageAnnotation], str | None]:
    """Annotations on `topic` by header stamp, and the read error that cut them short (None if complete)."""
    bag.require(topic, (SEGMENTATION_TYPE,))
    out: dict[int, ImageAnnotation] = {}
    digests: dict[int, bytes] = {}
    try:
        for index, message in enumerate(bag.messages({topic})):
            where = f"ground truth topic {topic}: message {index} (logged at {message.log_ns} ns)"
            try:
                msg = bag.deserialize(message)
            except Exception as err:  # rosbags raises assorted errors for malformed CDR
                raise ValueError(
                    f"{where} does not deserialize as {message.msgtype}: {error_line(err)}; fix the bag's"
                    " ground truth or give it as --gt-json"
                ) from err
            stamp = stamp_ns(msg.header)
            digest = hashlib.blake2b(message.data, digest_size=16).digest()
            if stamp in digests:  # the same message recorded twice is harmless; two different ones are not
                if digests[stamp] != digest:
                    raise ValueError(
                        f"ground truth topic {topic}: two different messages have the stamp {stamp} ns"
                    )
                continue
            digests[stamp] = digest
            try:
                out[stamp] = bag_msg_to_annotation(msg, image_id=len(out) + 1)
            except ImageDecodeError as err:
                raise ValueError(f"{where}, stamp {stamp} ns: {err}") from err
    except BagError as err:
        return out, f"ground truth topic {topic}: {err}"
    return out, None


def from_sidecar(path: str | Path) -> dict[int, ImageAnnotation]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file not found: {path}")
    try:
        data = json.loads(path.read_text())
        images = data["images"]
        missing = [img["id"] for img in images if STAMP_KEY not in img]
        if missing:
            raise ValueError(f"images {missing[:5]} have no {STAMP_KEY!r} key to match bag frames by")
        ids = [img["id"] for img in images]
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        if twice:
            raise ValueError(f"several images have the id {twice[:5]}: give each image its own id")
        orphans = sorted({a["image_id"] for a in data["annotations"]} - set(ids))
        if orphans:
            raise ValueError(f"annotations name the image_id {orphans[:5]}, which no image has")
        stamps = {img["id"]: int(img[STAMP_KEY]) for img in images}
        repeated = sorted(s for s, n in Counter(stamps.values()).items() if n > 1)
        if repeated:
            raise ValueError(f"several images have the {STAMP_KEY} {repeated[:5]}: one image per frame")
        annotations = read_paco_json(path, load_images=False)
        for ann in annotations:
            _check_mask_sizes(ann, stamps[ann.image_id])
        return {stamps[a.image_id]: a for a in annotations}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    except (KeyError, TypeError, ValueError) as err:  # a file that is not PACO-style COCO JSON
        what = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise ValueError(f"{path}: {what} (docs/BAG_EVAL.md: ground truth)") from err


def _check_mask_sizes(ann: ImageAnnotation, stamp: int) -> None:
    """Every mask the size of its image: an RLE carries its own size, which scoring would find only after the
    whole run."""
    for obj in ann.objects:
        for aid, name, mask in [(obj.id, obj.name, obj.mask)] + [
            (p.id, part_label(obj.name, p.name), p.mask) for p in obj.parts
        ]:
            if mask.shape != (ann.height, ann.width):
                raise ValueError(
                    f"image {ann.image_id} ({STAMP_KEY} {stamp}) is {ann.width}x{ann.height}, but the mask of"
                    f" annotation {aid} ({name}) is {mask.shape[1]}x{mask.shape[0]}: fix its segmentation's"
                    " size or the image's width/height"
                )


def write_sidecar(annotations: Sequence[ImageAnnotation], stamps: Sequence[int], path: str | Path) -> Path:
    """PACO-style JSON of `annotations` (no image files) with each image's header stamp added."""
    path = Path(path)
    if len({a.image_id for a in annotations}) != len(annotations):
        raise ValueError("sidecar ground truth needs a distinct image_id per frame")
    bare = [dataclasses.replace(a, image=None, depth=None) for a in annotations]
    written = write_paco_json(bare, path.parent, json_name=path.name)
    data = json.loads(written.read_text())
    by_id = {a.image_id: s for a, s in zip(annotations, stamps, strict=True)}
    for img in data["images"]:
        img[STAMP_KEY] = by_id[img["id"]]
    written.write_text(json.dumps(data))
    with contextlib.suppress(OSError):  # the writer makes images/ for image files; there are none here
        (path.parent / "images").rmdir()
    return written
