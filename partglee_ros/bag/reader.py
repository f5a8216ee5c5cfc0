"""Open a rosbag2 bag (directory, .mcap or .db3) with rosbags and read its camera frames robustly.

Real bags are not always clean. What is handled here, each with a message that names the problem:
- a bag directory without metadata.yaml (recording killed): its single .mcap/.db3 file is read directly;
- an .mcap without footer/summary (truncated): rosbags refuses it, so its records are scanned with the
  `mcap` stream reader up to the cut, and the messages before it are kept;
- a metadata.yaml that cannot be used (empty, not YAML, naming files that are not there) next to a single
  storage file: that file is read directly, with a warning naming the metadata;
- a metadata.yaml whose message counts are wrong (stale, or split files merged by hand): the storage files'
  own counts are used, with a warning naming the metadata; where a file does not count its messages per topic
  (an mcap Statistics record may leave that map empty), the metadata's are, with a warning naming that file;
- corruption met while reading (sqlite "malformed", a cut chunk, a flipped byte): `BagError` after the good
  messages, so a caller keeps its partial results. rosbags, sqlite3, zstd and the mcap reader raise an
  open-ended set of exceptions for damaged bytes (OverflowError, MemoryError, ZstdError, TypeError, ...), so
  every Exception from the storage layer is taken as damage and becomes a BagError naming its type and the
  storage file (of a split bag) where it was met;
- a missing topic: `TopicError` listing every topic with its type and count;
- a frame that does not decode: yielded with `error` set, never fatal;
- messages serialized with older (or newer) definitions of a type than this package's: each bag is decoded
  with the definitions it carries (`Bag.deserialize`), falling back to the current ones where it has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import yaml
from mcap.exceptions import EndOfFile
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.reader import DirectoryReader
from rosbags.typesys.store import Typestore

from partglee_ros.bag.segmentation_msgs import stamp_ns
from partglee_ros.bag.typestore import IMAGE_TYPES, reading_typestore
from partglee_ros.sensor_images import ImageDecodeError, image_to_rgb

STORAGE_SUFFIXES = (".mcap", ".db3")
# mcap schema encodings of ROS 2 message definitions
SCHEMA_FORMATS = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL}


class BagError(RuntimeError):
    """The bag cannot be opened, or reading stopped at damaged data; the message says where and why."""


class TopicError(BagError):
    """A requested topic is not in the bag (or has the wrong type)."""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int


@dataclass
class RawMessage:
    topic: str
    msgtype: str
    log_ns: int  # receive time recorded by the bag
    data: bytes  # CDR, exactly as recorded


@dataclass
class Frame:
    index: int  # position among the topic's messages as read
    log_ns: int
    stamp_ns: int  # header.stamp; -1 when the message did not deserialize
    frame_id: str
    msgtype: str
    raw: bytes
    rgb: np.ndarray | None = None
    error: str | None = None


def _storage_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in STORAGE_SUFFIXES)


def _storage_file(directory: Path) -> Path:
    """The one storage file of a bag directory without metadata.yaml."""
    files = _storage_files(directory)
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "no .mcap or .db3 file"
        raise BagError(f"{directory} has no metadata.yaml and {found}; pass one storage file as the bag")
    return files[0]


def error_line(err: Exception) -> str:
    """One line naming the exception's type: a damaged file raises anything from OverflowError to ZstdError."""
    text = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _counts_per_topic(storage: Any) -> bool:
    """Whether a storage file (rosbags' McapReader or Sqlite3Reader) counts its messages per topic: an mcap's
    Statistics record may leave its per-channel map empty ("not available"), and rosbags then gives every
    connection 0 messages though the file's total, and its chunk indexes, count them all."""
    return sum(c.msgcount for c in storage.connections) == storage.metadata.message_count


def _opened(target: Path) -> Reader:
    reader = Reader(target)
    reader.open()
    return reader


class _RecoveredMcap:
    """An .mcap whose footer/summary is missing: records are scanned in file order up to the first damage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.topics: dict[str, TopicInfo] = {}
        self.definitions: list[tuple[str, MessageDefinitionFormat, str]] = []
        self.scan_error: str | None = None
        counts: dict[str, int] = {}
        types: dict[str, str] = {}
        for record in self._records():
            if isinstance(record, Channel):
                schema = self._schemas.get(record.schema_id)
                types[record.topic] = schema.name if schema else ""
                if schema and schema.encoding in SCHEMA_FORMATS:
                    text = schema.data.decode("utf-8", errors="replace")
                    self.definitions.append((schema.name, SCHEMA_FORMATS[schema.encoding], text))
                counts.setdefault(record.topic, 0)
            elif isinstance(record, Message) and record.channel_id in self._channels:
                counts[self._channels[record.channel_id]] += 1  # messages() skips unknown channels too
        self.topics = {t: TopicInfo(t, types[t], counts[t]) for t in sorted(counts)}
        if not self.topics and self.scan_error:
            raise BagError(f"{path}: not a readable mcap file: {self.scan_error}")

    def _records(self) -> Iterator[object]:
        self._schemas: dict[int, Schema] = {}
        self._channels: dict[int, str] = {}
        self.scan_error = None
        with self.path.open("rb") as stream:
            try:
                for record in StreamReader(stream, validate_crcs=True).records:
                    if isinstance(record, Schema):
                        self._schemas[record.id] = record
                    elif isinstance(record, Channel):
                        self._channels[record.id] = record.topic
                    yield record
            except EndOfFile:
                self.scan_error = "the file ends inside a record (truncated)"
            except Exception as err:  # damaged bytes: see the module docstring
                self.scan_error = error_line(err)

    def messages(self, topics: set[str]) -> Iterator[RawMessage]:
        for record in self._records():
            if isinstance(record, Message) and self._channels.get(record.channel_id) in topics:
                topic = self._channels[record.channel_id]
                yield RawMessage(topic, self.topics[topic].msgtype, record.log_time, bytes(record.data))
        if self.scan_error:
            raise BagError(f"{self.path}: file is cut or damaged after the messages read: {self.scan_error}")


class Bag:
    """A bag opened for reading; `warnings` lists what was worked around to open it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.warnings: list[str] = []
        self._reader: Reader | None = None
        self._recovered: _RecoveredMcap | None = None
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        if self.path.is_file() and self.path.suffix not in STORAGE_SUFFIXES:
            raise BagError(f"{self.path} is not a bag: expected a directory, .mcap or .db3 file")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            target = _storage_file(self.path)
            self.warnings.append(
                f"{self.path}/metadata.yaml is missing (recording interrupted?); read {target.name}"
            )
            self._open_file(target)
        elif self.path.is_dir():
            self._open_directory(self.path)
        else:
            self._open_file(self.path)
        self.typestore: Typestore = reading_typestore(self._definitions(), self.warnings)

    def _open_file(self, target: Path) -> None:
        try:
            self._reader = _opened(target)
        except Exception as err:  # damaged bytes: see the module docstring
            self._open_damaged(target, err)

    def _open_directory(self, directory: Path) -> None:
        """With metadata.yaml. When rosbags refuses the bag, its storage files are opened alone to tell a
        damaged file (named) from metadata that cannot be used (a single storage file is then read alone)."""
        try:
            self._reader = _opened(directory)
        except Exception as err:  # damaged bytes or metadata: see the module docstring
            bag_problem = error_line(err)
        else:
            self._check_counts(directory)
            return
        files = _storage_files(directory)
        if len(files) == 1:
            try:
                self._reader = _opened(files[0])
            except Exception as err:  # the file itself is damaged, whatever the metadata says
                self._open_damaged(files[0], err)
                return
            self.warnings.append(
                f"{directory}/metadata.yaml cannot be used ({bag_problem}); read {files[0].name} directly"
            )
            return
        for file in files:
            try:
                _opened(file).close()
            except Exception as err:  # damaged bytes: see the module docstring
                raise BagError(
                    f"cannot open bag {directory}: its storage file {file.name} is damaged: {error_line(err)}"
                ) from err
        found = ", ".join(p.name for p in files) or "no .mcap or .db3 file"
        raise BagError(
            f"cannot open bag {directory}: {bag_problem}; it holds {found}, so fix its metadata.yaml or pass"
            " one storage file as the bag"
        )

    def _open_damaged(self, target: Path, err: Exception) -> None:
        problem = error_line(err)
        if target.suffix != ".mcap":
            hint = " (an sqlite3 file cut short cannot be read at all)" if "malformed" in problem else ""
            raise BagError(f"cannot open bag {target}: {problem}{hint}") from err
        self._recovered = _RecoveredMcap(target)
        self.warnings.append(
            f"{target} has no valid footer/index ({problem}); its records were scanned directly"
            + (f" and end in damage: {self._recovered.scan_error}" if self._recovered.scan_error else "")
        )

    def _check_counts(self, directory: Path) -> None:
        """Warn where metadata.yaml's message counts are not the files': they are what the recorder last wrote
        (or what a hand-made split bag copied), and a wrong one would make the evaluation refuse a topic that
        has frames or skip the check for ground truth that no frame matched."""
        assert self._reader is not None
        counted = self._file_counts()
        if counted is None:
            uncounted = [p.name for p, storage in self._named_storages() if not _counts_per_topic(storage)]
            verb = "does" if len(uncounted) == 1 else "do"
            self.warnings.append(
                f"{directory}: {', '.join(uncounted)} {verb} not count messages per topic; metadata.yaml's counts"
                " are used"
            )
            return
        wrong = [
            f"{name} {info.msgcount} (its files hold {counted[name]})"
            for name, info in self._reader.topics.items()
            if info.msgcount != counted[name]
        ]
        if wrong:
            self.warnings.append(
                f"{directory}/metadata.yaml has wrong message counts: {'; '.join(wrong)}; the files' counts are"
                " used"
            )

    def _storages(self) -> list[Any]:
        """The storage files' readers (rosbags' McapReader or Sqlite3Reader), in the order they are read."""
        assert self._reader is not None
        storage = self._reader.storage
        return list(storage.storages) if isinstance(storage, DirectoryReader) else [storage]

    def _named_storages(self) -> list[tuple[Path, Any]]:
        """The storage files' readers with the files' paths, as the bag lists them: a bag compressed per file
        is read from decompressed copies in a temporary directory, gone once the bag is closed."""
        assert self._reader is not None
        storage = self._reader.storage
        if not isinstance(storage, DirectoryReader):
            return [(Path(storage.path), storage)]
        meta = yaml.safe_load((storage.path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        # rosbags opens each listed file by its name in the bag directory, in the listed order
        names = [PurePath(p).name for p in meta["relative_file_paths"]]
        return [(storage.path / name, s) for name, s in zip(names, storage.storages, strict=True)]

    def _file_counts(self) -> dict[str, int] | None:
        """Messages per topic as the storage files index them (an mcap's statistics, a db3's rows); None where
        a file does not count them per topic."""
        assert self._reader is not None
        counts = dict.fromkeys(self._reader.topics, 0)
        for storage in self._storages():
            if not _counts_per_topic(storage):
                return None
            for connection in storage.connections:
                if connection.topic in counts:
                    counts[connection.topic] += connection.msgcount
        return counts

    def _definitions(self) -> list[tuple[str, MessageDefinitionFormat, str]]:
        if self._recovered is not None:
            return self._recovered.definitions
        assert self._reader is not None
        return [(c.msgtype, c.msgdef.format, c.msgdef.data) for c in self._reader.connections]

    def deserialize(self, message: RawMessage) -> Any:
        """One message of this bag, decoded with the definition the bag carries for its type."""
        return self.typestore.deserialize_cdr(message.data, message.msgtype)

    @property
    def topics(self) -> dict[str, TopicInfo]:
        if self._recovered is not None:
            return self._recovered.topics
        assert self._reader is not None
        counts = self._file_counts()  # metadata.yaml's only where the files do not count (_check_counts)
        return {
            name: TopicInfo(name, info.msgtype or "", info.msgcount if counts is None else counts[name])
            for name, info in self._reader.topics.items()
        }

    def describe_topics(self) -> str:
        return "; ".join(f"{t.name} ({t.msgtype}, {t.count} msgs)" for t in self.topics.values()) or "none"

    def require(self, topic: str, msgtypes: tuple[str, ...]) -> TopicInfo:
        info = self.topics.get(topic)
        if info is None:
            raise TopicError(f"topic {topic!r} is not in {self.path}; available: {self.describe_topics()}")
        if info.msgtype not in msgtypes:
            raise TopicError(f"topic {topic!r} has type {info.msgtype}, expected {' or '.join(msgtypes)}")
        return info

    def image_topic(self, requested: str | None) -> TopicInfo:
        """The requested image topic, or the only Image/CompressedImage topic when none is requested."""
        if requested:
            return self.require(requested, IMAGE_TYPES)
        candidates = [t for t in self.topics.values() if t.msgtype in IMAGE_TYPES]
        if len(candidates) != 1:
            what = "no image topic" if not candidates else "several image topics"
            raise TopicError(
                f"{self.path} has {what}; choose one with --image-topic. Topics: {self.describe_topics()}"
            )
        return candidates[0]

    def messages(self, topics: set[str]) -> Iterator[RawMessage]:
        """Messages of `topics` in the bag's order (log time; file order for a recovered mcap).

        Raises BagError at damaged data, after yielding every message before it."""
        if self._recovered is not None:
            yield from self._recovered.messages(topics)
            return
        assert self._reader is not None
        connections = [c for c in self._reader.connections if c.topic in topics]
        count = 0
        try:
            for conn, log_ns, data in self._reader.messages(connections):
                count += 1
                yield RawMessage(conn.topic, conn.msgtype, log_ns, bytes(data))
        except Exception as err:  # damaged bytes: see the module docstring
            raise BagError(f"{self._stopped_at(topics, count)}: {error_line(err)}") from err

    def _stopped_at(self, topics: set[str], count: int) -> str:
        """Where reading stopped after ``count`` messages of ``topics``: rosbags reads a split bag's files one
        after the other, so their own counts tell the file it was in and the message there (the bag directory
        alone leaves every file suspect). A file that does not count its messages per topic holds its total
        when every topic of it is read; else reading stopped in it or in a file after it."""
        on = ", ".join(sorted(topics))
        read = 0
        named = self._named_storages()
        for position, (path, storage) in enumerate(named):
            if _counts_per_topic(storage):
                holds = sum(c.msgcount for c in storage.connections if c.topic in topics)
            elif all(c.topic in topics for c in storage.connections):
                holds = storage.metadata.message_count
            else:
                later = " or in a file after it" if position < len(named) - 1 else ""
                return (
                    f"{path}: reading stopped in it{later} ({count} messages read in all on {on}, {read} of them"
                    " in the files before it; it does not count its messages per topic)"
                )
            if count < read + holds:
                return (
                    f"{path}: reading stopped after {count - read} of its {holds} messages on {on}"
                    f" ({count} read in all)"
                )
            read += holds
        return f"{self.path}: reading stopped after all {count} messages its files index on {on}"

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_frame(index: int, message: RawMessage, bag: Bag) -> Frame:
    """Deserialize and convert one image message; failures are kept on the frame, not raised."""
    frame = Frame(index, message.log_ns, -1, "", message.msgtype, message.data)
    try:
        msg = bag.deserialize(message)
    except Exception as err:  # rosbags raises assorted errors for malformed CDR
        frame.error = f"cannot deserialize {message.msgtype}: {type(err).__name__}: {err}"
        return frame
    frame.stamp_ns, frame.frame_id = stamp_ns(msg.header), str(msg.header.frame_id)
    try:
        frame.rgb = image_to_rgb(msg, message.msgtype)
    except ImageDecodeError as err:
        frame.error = str(err)
    return frame


def read_frames(bag: Bag, topic: str, max_frames: int | None = None) -> Iterator[Frame]:
    """Frames of one image topic; a second frame with an already seen header stamp is marked as error,
    because results and ground truth are matched by stamp."""
    seen: set[int] = set()
    for index, message in enumerate(bag.messages({topic})):
        if max_frames is not None and index >= max_frames:
            return
        frame = decode_frame(index, message, bag)
        if frame.error is None and frame.stamp_ns in seen:
            frame.error = f"duplicate header stamp {frame.stamp_ns} ns (frames are matched by stamp)"
            frame.rgb = None
        seen.add(frame.stamp_ns)
        yield frame


@dataclass
class ReadLog:
    """What went wrong while reading, for the report."""

    warnings: list[str] = field(default_factory=list)
    frame_errors: list[tuple[int, str]] = field(default_factory=list)
    fatal: str | None = None  # the BagError that stopped reading; results before it are kept
