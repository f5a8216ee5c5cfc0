"""rosbags typestores: one for writing (standard ROS 2 messages plus this package's own types) and one per
bag for reading.

The partglee_ros types are parsed from the package's msg/*.msg files (the same files colcon builds), so a
bag written here carries exactly the definitions a ROS 2 `ros2 bag play` expects. A bag is read with the
definitions it carries, because its messages were serialized with them: a bag recorded before a message
changed (a field added to ObjectInstance, say) would misparse under today's definitions.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache, lru_cache
from pathlib import Path

from rosbags.interfaces import MessageDefinitionFormat
from rosbags.interfaces.typing import Typesdict
from rosbags.typesys import Stores, TypesysError, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

PACKAGE = "partglee_ros"
SEGMENTATION_TYPE = f"{PACKAGE}/msg/HierarchicalSegmentation"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)


def msg_directory() -> Path:
    """msg/ of the source tree, else of the colcon install space (share/partglee_ros/msg)."""
    source = Path(__file__).resolve().parents[2] / "msg"
    if source.is_dir():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)) / "msg"
    except ImportError as err:
        raise FileNotFoundError(f"cannot find the {PACKAGE} msg/ directory (looked at {source})") from err


@cache
def package_types() -> Typesdict:
    """partglee_ros/msg/* as this package defines them now."""
    types: Typesdict = {}
    for path in sorted(msg_directory().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    return types


@cache
def bag_typestore() -> Typestore:
    """ROS 2 Kilted's standard types plus partglee_ros/msg/*, parsed once per process."""
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(package_types())
    return store


IDL_SEPARATOR = "=" * 80 + "\n"  # rosbag2 joins the .idl files of a type and the types it nests with this


def parse_definition(msgtype: str, fmt: MessageDefinitionFormat, text: str) -> Typesdict:
    """The types of one topic's embedded definition (the type and every type it nests); {} when the bag
    carries none (rosbag2 sqlite3 bags before Iron)."""
    if fmt == MessageDefinitionFormat.MSG and text.strip():
        return get_types_from_msg(text, msgtype)
    if fmt == MessageDefinitionFormat.IDL and text.strip():
        if not text.startswith(f"{IDL_SEPARATOR}IDL: "):
            return get_types_from_idl(text)
        types: Typesdict = {}
        for section in text.split(IDL_SEPARATOR)[1:]:  # each "IDL: pkg/msg/Name\n<idl>"
            name, _, idl = section.partition("\n")
            if not idl.strip():
                raise ValueError(f"{name.strip()} has no IDL text")
            types.update(get_types_from_idl(idl))
        return types
    return {}


def _reading_types(
    definitions: tuple[tuple[str, MessageDefinitionFormat, str], ...],
) -> tuple[Typesdict, list[str]]:
    types: Typesdict = {}
    warnings = []
    for msgtype, fmt, text in definitions:
        try:
            parsed = parse_definition(msgtype, fmt, text)
        except (TypesysError, ValueError) as err:
            warnings.append(
                f"the bag's definition of {msgtype} does not parse ({err}); decoded with this package's or "
                "ROS 2 Kilted's, if either has the type"
            )
            continue
        if not parsed and msgtype.startswith(f"{PACKAGE}/"):
            warnings.append(
                f"the bag carries no definition of {msgtype}; decoded with this package's current one, which "
                "misreads messages recorded with another"
            )
        clashes = sorted(name for name, fields in parsed.items() if types.get(name, fields) != fields)
        if clashes:
            warnings.append(
                f"the bag defines {', '.join(clashes)} differently on two topics; kept the first definition"
            )
        types.update({name: fields for name, fields in parsed.items() if name not in types})
    return types, warnings


@lru_cache(maxsize=8)
def _cached_store(
    definitions: tuple[tuple[str, MessageDefinitionFormat, str], ...],
) -> tuple[Typestore, tuple[str, ...]]:
    types, warnings = _reading_types(definitions)
    for fallback in (package_types(), get_typestore(Stores.ROS2_KILTED).fielddefs):
        types.update({name: fields for name, fields in fallback.items() if name not in types})
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    return store, tuple(warnings)


def reading_typestore(
    definitions: Iterable[tuple[str, MessageDefinitionFormat, str]], warnings: list[str]
) -> Typestore:
    """A typestore for one bag: each (msgtype, format, text) definition the bag carries, then, for types it
    does not define, this package's current ones and ROS 2 Kilted's. A definition that does not parse is
    reported in `warnings` and today's is used for it; of two topics that define a type differently, the
    first one's definition is kept, with a warning. Bags with the same definitions share one store (building
    one takes ~0.2 s), so callers must not register types in it."""
    store, found = _cached_store(tuple(definitions))
    warnings.extend(found)
    return store
