"""Write a small evaluation bag from SynthParts scenes: camera images plus their ground truth.

    python -m partglee_ros.bag.make_sample --out data/sample_bag/bag --frames 12 \\
        --sidecar data/sample_bag/ground_truth.json

regenerates the bundled sample (docs/BAG_EVAL.md) once `rm -r data/sample_bag/bag` has removed it: --out
must not exist.

The bag holds the images on /camera/color/image_raw (sensor_msgs/Image rgb8 or bgr8/mono8, or
sensor_msgs/CompressedImage on .../compressed) and the annotations on /ground_truth/segmentation
(partglee_ros/HierarchicalSegmentation, score 1), with equal header stamps; `--sidecar` also writes the same
annotations as PACO-style JSON keyed by `timestamp_ns`. Scenes come from the SynthParts test split
(training/configs/synthparts.yaml), so the frames were never seen in training. With `--orbit DEG` the frames
are one scene seen by a camera circling the table DEG degrees per frame, and the ground truth carries each
object's track id, so the bag evaluation also scores tracking (docs/BAG_EVAL.md):

    python -m partglee_ros.bag.make_sample --out /tmp/orbit_bag --frames 30 --orbit 2
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from partglee_ros.bag.bag_writer import STORAGES, BagWriter
from partglee_ros.bag.ground_truth import write_sidecar
from partglee_ros.bag.segmentation_msgs import annotation_to_bag_msg, header
from partglee_ros.bag.typestore import COMPRESSED_TYPE, IMAGE_TYPE, SEGMENTATION_TYPE, bag_typestore
from training.data.hierarchy import ImageAnnotation
from training.data.synthparts import generate_scene, load_split_config, split_scenes

REPO = Path(__file__).resolve().parents[2]
SPLIT_CONFIG = REPO / "training" / "configs" / "synthparts.yaml"
IMAGE_TOPIC = "/camera/color/image_raw"
GT_TOPIC = "/ground_truth/segmentation"
FRAME_ID = "camera_color_optical_frame"
START_NS = 1_700_000_000 * 10**9  # a fixed epoch keeps the generated bag byte-identical across runs
ENCODINGS = ("rgb8", "bgr8", "mono8", "png", "jpeg")


def image_message(rgb: np.ndarray, hdr: object, encoding: str) -> tuple[str, object]:
    """(message type, rosbags message) of one frame in a raw encoding or compressed as png/jpeg."""
    types = bag_typestore().types
    if encoding in ("png", "jpeg"):
        ok, buf = cv2.imencode(f".{encoding}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok, f"OpenCV cannot encode {encoding}"
        return COMPRESSED_TYPE, types[COMPRESSED_TYPE](header=hdr, format=encoding, data=buf.reshape(-1))
    convert = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "mono8": cv2.COLOR_RGB2GRAY}[encoding]
    array = np.ascontiguousarray(rgb if convert is None else cv2.cvtColor(rgb, convert))
    h, w = array.shape[:2]
    msg = types[IMAGE_TYPE](
        header=hdr,
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=array.strides[0],
        data=array.reshape(-1),
    )
    return IMAGE_TYPE, msg


def write_scene_bag(
    path: str | Path,
    scenes: Sequence[ImageAnnotation],
    storage: str = "mcap",
    encoding: str = "rgb8",
    rate_hz: float = 10.0,
    write_order: Sequence[int] | None = None,
    image_topic: str | None = None,
) -> list[int]:
    """Write scenes as a bag; returns each scene's header stamp (ns).

    Stamps advance by 1/rate in scene order. Frames are recorded in `write_order` (default: scene order)
    with log times advancing in that order, so a permuted order gives header stamps out of order, as a
    driver with jitter or a merged recording does."""
    period = round(1e9 / rate_hz)
    stamps = [START_NS + i * period for i in range(len(scenes))]
    order = list(write_order) if write_order is not None else list(range(len(scenes)))
    if sorted(order) != list(range(len(scenes))):
        raise ValueError("write_order must be a permutation of the scene indices")
    compressed = encoding in ("png", "jpeg")
    topic = image_topic or (f"{IMAGE_TOPIC}/compressed" if compressed else IMAGE_TOPIC)
    with BagWriter(path, storage) as writer:
        for slot, i in enumerate(order):
            log_ns = START_NS + slot * period + 5_000_000  # received 5 ms after exposure
            hdr = header(stamps[i], FRAME_ID)
            msgtype, msg = image_message(scenes[i].image, hdr, encoding)
            writer.write_msg(topic, msgtype, log_ns, msg)
            writer.write_msg(GT_TOPIC, SEGMENTATION_TYPE, log_ns, annotation_to_bag_msg(scenes[i], hdr))
    return stamps


def sample_scenes(frames: int, width: int, height: int, split: str = "test") -> list[ImageAnnotation]:
    return list(
        split_scenes(split, load_split_config(SPLIT_CONFIG), limit=frames, width=width, height=height)
    )


def sequence_scenes(
    frames: int, width: int, height: int, split: str = "test", orbit_deg: float = 2.0, index: int = 0
) -> list[ImageAnnotation]:
    """One scene of the split (its `index`-th) seen by a camera circling the table by `orbit_deg` per frame:
    a sequence whose ground truth carries track ids. Frames are images 1.. of their own (`image_id`, file
    name), as a sidecar JSON needs."""
    config = load_split_config(SPLIT_CONFIG)
    seed = config.seeds[split][0] + index
    categories = config.categories_for(split)
    return [
        dataclasses.replace(
            generate_scene(seed, width, height, categories, orbit=np.deg2rad(orbit_deg * i)),
            image_id=i + 1,
            file_name=f"synthparts_{seed:09d}_frame{i:04d}.png",
        )
        for i in range(frames)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="bag directory to create (must not exist)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--split", default="test", choices=("val", "test"), help="SynthParts split")
    parser.add_argument("--rate", type=float, default=10.0, help="recorded frame rate (Hz)")
    parser.add_argument("--storage", default="mcap", choices=tuple(STORAGES))
    parser.add_argument("--encoding", default="rgb8", choices=ENCODINGS, help="png/jpeg = CompressedImage")
    parser.add_argument("--sidecar", type=Path, help="also write the ground truth as PACO-style JSON here")
    parser.add_argument(
        "--orbit",
        type=float,
        metavar="DEG",
        help="a sequence instead: one scene, the camera circling it by DEG per frame (ground truth with track ids)",
    )
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    if args.out.exists():
        parser.error(f"{args.out} exists; remove it or choose another --out")
    if args.orbit is None:
        scenes = sample_scenes(args.frames, args.width, args.height, args.split)
    else:
        scenes = sequence_scenes(args.frames, args.width, args.height, args.split, args.orbit)
    stamps = write_scene_bag(args.out, scenes, args.storage, args.encoding, args.rate)
    if args.sidecar:
        write_sidecar(scenes, stamps, args.sidecar)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out}: {len(scenes)} frames of {args.width}x{args.height}, {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
