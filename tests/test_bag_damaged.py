"""Damaged bags: whatever the storage layer raises for flipped bytes, cut chunks or unusable metadata, the
reader gives a BagError after the messages before the damage (or reads around the damage with a warning),
and the evaluation keeps what it computed."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
from pathlib import Path

import pytest
import yaml
import zstandard
from mcap.reader import make_reader
from mcap.writer import Writer as McapWriter
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from partglee_ros.bag.evaluate import main as bag_eval
from partglee_ros.bag.make_sample import GT_TOPIC, IMAGE_TOPIC, START_NS, image_message, write_scene_bag
from partglee_ros.bag.reader import Bag, BagError
from partglee_ros.bag.segmentation_msgs import header
from partglee_ros.bag.typestore import bag_typestore
from tests.bag_testing import noise_scene
from tests.ros_testing import small_checkpoint

MCAP_MAGIC = b"\x89MCAP0\r\n"
FOOTER_BYTES = 8 + 29  # closing magic + footer record (opcode, length, two offsets, crc)
SCHEMA_OPCODE = 0x03


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("model"))


def write_zstd_bag(path: Path, frames: int, height: int, width: int) -> Path:
    """Camera frames in an mcap whose chunks are zstd-compressed (rosbags' storage compression, as
    `ros2 bag record --compression-mode storage` would give); returns the .mcap file."""
    store = bag_typestore()
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        connection = writer.add_connection(IMAGE_TOPIC, "sensor_msgs/msg/Image", typestore=store)
        for i in range(frames):
            stamp = START_NS + i * 10**8
            msgtype, msg = image_message(noise_scene(i, height, width).image, header(stamp, "c"), "rgb8")
            writer.write(connection, stamp, bytes(store.serialize_cdr(msg, msgtype)))
    return path / f"{path.name}.mcap"


def read_everything(path: Path) -> int:
    """Open the bag and read every message of every topic; the number read."""
    with Bag(path) as bag:
        return sum(1 for _ in bag.messages(set(bag.topics)))


def summary_offsets(data: bytes) -> list[int]:
    """Every byte of the summary section and footer, but of a Schema record only its opcode, length and id:
    a flipped definition is a warning, already tested (test_bag_definitions), and slow to parse."""
    at = struct.unpack_from("<Q", data, len(data) - FOOTER_BYTES + 9)[0]
    offsets = []
    while at < len(data) - FOOTER_BYTES:
        opcode, length = struct.unpack_from("<BQ", data, at)
        offsets += range(at, at + 11) if opcode == SCHEMA_OPCODE else range(at, at + 9 + length)
        at += 9 + length
    return offsets + list(range(len(data) - FOOTER_BYTES, len(data)))


def flipped(data: bytes, offset: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 0xFF
    return bytes(damaged)


def flip_last_chunk(mcap: Path) -> None:
    """Flip the zstd frame header of the last chunk of ``mcap`` (from write_zstd_bag): reading it raises
    ZstdError after the messages of the chunks before it."""
    with mcap.open("rb") as f:
        last = max(make_reader(f).get_summary().chunk_indexes, key=lambda c: c.chunk_start_offset)
    records_at = last.chunk_start_offset + 1 + 8 + 8 + 8 + 8 + 4 + 4 + len(last.compression) + 8
    assert (
        last.compression == "zstd" and mcap.read_bytes()[records_at : records_at + 4] == b"\x28\xb5\x2f\xfd"
    )
    mcap.write_bytes(flipped(mcap.read_bytes(), records_at))


def split_bag(first: Path, second: Path, split: Path) -> Path:
    """A bag split in two files, made by hand: ``first``'s bag directory with ``second``'s storage file added
    to its metadata.yaml's files (its message counts stay the first's)."""
    shutil.copytree(first, split)
    shutil.copy(second / f"{second.name}.mcap", split / f"{second.name}.mcap")
    meta = (split / "metadata.yaml").read_text()
    listed = f"  - {first.name}.mcap\n"
    (split / "metadata.yaml").write_text(meta.replace(listed, f"{listed}  - {second.name}.mcap\n"))
    return split


def set_metadata_counts(bag: Path, counts: dict[str, int]) -> None:
    """Write ``counts`` (topic: messages) into the bag's metadata.yaml, as a stale or hand-edited one has."""
    path = bag / "metadata.yaml"
    meta = yaml.safe_load(path.read_text())
    for topic in meta["rosbag2_bagfile_information"]["topics_with_message_count"]:
        topic["message_count"] = counts.get(topic["topic_metadata"]["name"], topic["message_count"])
    path.write_text(yaml.safe_dump(meta))


def without_topic_counts(mcap: Path) -> None:
    """Rewrite ``mcap`` with a Statistics record whose per-channel message counts are empty, as the mcap spec
    allows ("not available"): rosbags then gives every topic 0 messages. One message per zstd chunk."""
    data = mcap.read_bytes()
    summary = make_reader(io.BytesIO(data)).get_summary()
    with mcap.open("wb") as out:
        writer = McapWriter(out, chunk_size=1)
        writer.start(profile="ros2", library="test")
        schemas = {i: writer.register_schema(s.name, s.encoding, s.data) for i, s in summary.schemas.items()}
        channels = {
            i: writer.register_channel(c.topic, c.message_encoding, schemas[c.schema_id], c.metadata)
            for i, c in summary.channels.items()
        }
        for _, channel, message in make_reader(io.BytesIO(data)).iter_messages():
            writer.add_message(channels[channel.id], message.log_time, message.data, message.publish_time)
        writer._Writer__statistics.channel_message_counts.clear()  # the writer has no option for this
        writer.finish()


def compressed_per_file(bag: Path) -> Path:
    """``bag``'s storage file zstd-compressed whole, as `ros2 bag record --compression-mode file` leaves it;
    returns the compressed file."""
    (mcap,) = bag.glob("*.mcap")
    compressed = mcap.with_name(f"{mcap.name}.zstd")
    compressed.write_bytes(zstandard.ZstdCompressor().compress(mcap.read_bytes()))
    mcap.unlink()
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    info.update(relative_file_paths=[compressed.name], compression_mode="FILE", compression_format="zstd")
    for file in info["files"]:
        file["path"] = compressed.name
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return compressed


def test_flipped_bytes_give_only_bag_errors(tmp_path) -> None:
    """Each byte of the header, the first chunk's start and the summary, flipped in turn; and the same chunk
    bytes in a file without footer (read by the recovery scan). rosbags and the mcap reader raised
    OverflowError, MemoryError, OSError and ZstdError for these, which escaped as tracebacks."""
    mcap = write_zstd_bag(tmp_path / "bag", 3, 24, 32)
    data = mcap.read_bytes()
    cases = [(offset, data) for offset in [*range(8, 128), *summary_offsets(data)]]
    cases += [(offset, data[:-FOOTER_BYTES]) for offset in range(8, 128)]  # no footer: scanned
    damaged = tmp_path / "damaged.mcap"
    refused = 0
    for offset, original in cases:
        damaged.write_bytes(flipped(original, offset))
        try:
            read_everything(damaged)
        except BagError as err:
            assert "\n" not in str(err), (offset, str(err))
            refused += 1
    assert refused > 100  # the windows do hit damage (most bytes elsewhere are message data)
    damaged.write_bytes(MCAP_MAGIC)  # only the magic: rosbags raised TypeError
    with pytest.raises(BagError, match="damaged.mcap"):
        Bag(damaged)


def test_a_damaged_chunk_keeps_the_frames_before_it(model_dir, tmp_path, capsys) -> None:
    """640x480 frames, about one per 1 MiB chunk: the last chunk's zstd frame header is flipped. The frames
    of the chunks before it are evaluated and reported; the run ends in the reader's BagError (exit 3)."""
    flip_last_chunk(write_zstd_bag(tmp_path / "bag", 3, 480, 640))
    with Bag(tmp_path / "bag") as bag:
        expected = bag.topics[IMAGE_TOPIC].count - 1  # every frame but the one in the last chunk
    out = tmp_path / "out"
    args = [str(tmp_path / "bag"), "--out", str(out), "--model", str(model_dir), "--backend", "torch"]
    rc = bag_eval([*args, "--objects", "mug"])
    err = capsys.readouterr().err
    assert rc == 3 and "ZstdError" in err and "partial results written" in err, err
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["frames_read"] == summary["frames_answered"] == expected >= 1
    assert "ZstdError" in summary["fatal_error"] and "INCOMPLETE" in (out / "report.md").read_text()


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("metadata", ["", "{{{ not yaml", "- a\n- b\n", "foo: 1\n"])
def test_unusable_metadata_is_read_around(tmp_path, storage, metadata) -> None:
    """An empty or garbage metadata.yaml beside an intact storage file: the file is read directly and the
    warning names the metadata (an .mcap's was blamed on its footer; a .db3 could not be read at all)."""
    write_scene_bag(tmp_path / "bag", [noise_scene(i, 24, 32) for i in range(2)], storage=storage)
    (tmp_path / "bag" / "metadata.yaml").write_text(metadata)
    with Bag(tmp_path / "bag") as bag:
        assert bag.topics[IMAGE_TOPIC].count == 2
        assert read_everything(tmp_path / "bag") == 4  # frames and their ground truth
        assert len(bag.warnings) == 1 and "metadata.yaml cannot be used" in bag.warnings[0], bag.warnings
        assert "footer" not in bag.warnings[0] and "\n" not in bag.warnings[0]


def test_split_bag_names_its_damaged_file_or_its_metadata(tmp_path) -> None:
    """A bag split in two files: a damaged second file is named; with both intact and the metadata unusable
    the metadata is (no single file to fall back to)."""
    for name in ("a", "b"):
        write_scene_bag(tmp_path / name, [noise_scene(i, 24, 32) for i in range(2)])
    split = split_bag(tmp_path / "a", tmp_path / "b", tmp_path / "split")
    assert read_everything(split) == 8  # a valid split bag
    data = (split / "b.mcap").read_bytes()
    (split / "b.mcap").write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match="its storage file b.mcap is damaged"):
        Bag(split)
    (split / "b.mcap").write_bytes(data)
    (split / "metadata.yaml").write_text("{{{ not yaml")
    with pytest.raises(BagError, match=r"it holds a.mcap, b.mcap, so fix its metadata.yaml"):
        Bag(split)


def test_damage_in_a_split_bags_second_file_names_that_file(tmp_path) -> None:
    """Reading stops in the last chunk of a split bag's second file: the error names that file and the
    message in it; naming the bag directory left every file suspect."""
    write_zstd_bag(tmp_path / "a", 2, 480, 640)
    flip_last_chunk(write_zstd_bag(tmp_path / "b", 3, 480, 640))
    split = split_bag(tmp_path / "a", tmp_path / "b", tmp_path / "split")
    where = f"{split / 'b.mcap'}: reading stopped after 2 of its 3 messages on {IMAGE_TOPIC} (4 read in all)"
    with pytest.raises(BagError, match=f"^{re.escape(where)}: ZstdError"):
        read_everything(split)


def test_damage_in_a_bag_compressed_per_file_names_its_file(tmp_path) -> None:
    """rosbags reads a bag compressed per file from decompressed copies in a temporary directory: the error
    named the copy, gone once the bag is closed, not the bag's file."""
    write_zstd_bag(tmp_path / "bag", 3, 480, 640)
    flip_last_chunk(tmp_path / "bag" / "bag.mcap")
    compressed = compressed_per_file(tmp_path / "bag")
    where = f"{compressed}: reading stopped after 2 of its 3 messages on {IMAGE_TOPIC} (2 read in all)"
    with pytest.raises(BagError, match=f"^{re.escape(where)}: ZstdError"):
        read_everything(tmp_path / "bag")


def test_files_that_do_not_count_per_topic_leave_the_counts_to_the_metadata(tmp_path) -> None:
    """An mcap whose statistics do not count its messages per topic, as the spec allows: rosbags gives every
    topic 0 messages though all are read, the files' counts were taken over metadata.yaml's, and the evaluation
    refused the bag as empty."""
    write_scene_bag(tmp_path / "bag", [noise_scene(i, 24, 32) for i in range(3)])
    without_topic_counts(tmp_path / "bag" / "bag.mcap")
    with Bag(tmp_path / "bag") as bag:
        assert {t.name: t.count for t in bag.topics.values()} == {IMAGE_TOPIC: 3, GT_TOPIC: 3}
        assert bag.warnings == [
            f"{tmp_path / 'bag'}: bag.mcap does not count messages per topic; metadata.yaml's counts are used"
        ]
    assert read_everything(tmp_path / "bag") == 6


def test_damage_in_a_file_that_does_not_count_per_topic_names_that_file(tmp_path) -> None:
    """A split bag whose first file does not count its messages per topic (0 each, to rosbags) and is damaged
    in its last message: the second file was named. Reading all its topics, it holds its total; reading some,
    it cannot say how many of them it holds."""
    write_scene_bag(tmp_path / "a", [noise_scene(i, 24, 32) for i in range(3)])
    without_topic_counts(tmp_path / "a" / "a.mcap")
    flip_last_chunk(tmp_path / "a" / "a.mcap")  # the last frame's ground truth
    write_scene_bag(tmp_path / "b", [noise_scene(i, 24, 32) for i in range(3)])
    split = split_bag(tmp_path / "a", tmp_path / "b", tmp_path / "split")
    # the last frame's image and ground truth share a log time: rosbags reads both chunks before either
    both = f"{IMAGE_TOPIC}, {GT_TOPIC}"
    where = f"{split / 'a.mcap'}: reading stopped after 4 of its 6 messages on {both} (4 read in all)"
    with pytest.raises(BagError, match=f"^{re.escape(where)}: ZstdError"):
        read_everything(split)
    where = (
        f"{split / 'a.mcap'}: reading stopped in it or in a file after it (2 messages read in all on {GT_TOPIC},"
        " 0 of them in the files before it; it does not count its messages per topic)"
    )
    with Bag(split) as bag, pytest.raises(BagError, match=f"^{re.escape(where)}: ZstdError"):
        sum(1 for _ in bag.messages({GT_TOPIC}))


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_wrong_metadata_counts_give_way_to_the_files(tmp_path, storage) -> None:
    """metadata.yaml's counts are what the recorder last wrote; the files' own (an mcap's statistics, a
    db3's rows) are the ones read, and the metadata is named where they differ."""
    write_scene_bag(tmp_path / "bag", [noise_scene(i, 24, 32) for i in range(2)], storage=storage)
    set_metadata_counts(tmp_path / "bag", {IMAGE_TOPIC: 5, GT_TOPIC: 0})
    with Bag(tmp_path / "bag") as bag:
        assert {t.name: t.count for t in bag.topics.values()} == {IMAGE_TOPIC: 2, GT_TOPIC: 2}
        assert bag.warnings == [
            f"{tmp_path / 'bag'}/metadata.yaml has wrong message counts: {IMAGE_TOPIC} 5 (its files hold 2); "
            f"{GT_TOPIC} 0 (its files hold 2); the files' counts are used"
        ]


def test_a_stale_count_of_no_frames_does_not_stop_the_evaluation(model_dir, tmp_path, capsys) -> None:
    """metadata.yaml saying the image topic has no messages: the evaluation refused the bag ("nothing to
    evaluate") though its file holds the frames."""
    write_zstd_bag(tmp_path / "bag", 2, 24, 32)
    set_metadata_counts(tmp_path / "bag", {IMAGE_TOPIC: 0})
    out = tmp_path / "out"
    args = [str(tmp_path / "bag"), "--out", str(out), "--model", str(model_dir), "--backend", "torch"]
    rc = bag_eval([*args, "--objects", "mug"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"metadata.yaml has wrong message counts: {IMAGE_TOPIC} 0 (its files hold 2)" in err, err
    assert json.loads((out / "metrics.json").read_text())["frames_answered"] == 2
