"""Bags are decoded with the message definitions they carry: a bag recorded while ObjectInstance had another
field than today's must still give its ground truth, through every way a bag is opened."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from partglee_ros.bag import ground_truth
from partglee_ros.bag.bag_writer import STORAGES
from partglee_ros.bag.make_sample import sample_scenes
from partglee_ros.bag.reader import Bag
from partglee_ros.bag.segmentation_msgs import annotation_to_bag_msg, header
from partglee_ros.bag.typestore import (
    PACKAGE,
    SEGMENTATION_TYPE,
    bag_typestore,
    msg_directory,
    package_types,
    reading_typestore,
)
from training.data.hierarchy import ImageAnnotation

TOPIC = "/ground_truth/segmentation"
OBJECT_TYPE = f"{PACKAGE}/msg/ObjectInstance"
START_NS = 1_700_000_000 * 10**9


@pytest.fixture(scope="module")
def scenes() -> list[ImageAnnotation]:
    return sample_scenes(2, 320, 240)


def object_definition(version: str) -> str:
    """ObjectInstance as another partglee_ros had it: "newer" has one more field (a string after label),
    "older" has no track_id (as before tracking). A reader that uses today's definition misparses both."""
    lines = (msg_directory() / "ObjectInstance.msg").read_text().splitlines()
    if version == "older":
        return "\n".join(line for line in lines if not line.startswith("uint32 track_id"))
    at = next(i for i, line in enumerate(lines) if line.startswith("string label"))
    return "\n".join([*lines[: at + 1], "string note", *lines[at + 1 :]])


def foreign_store(version: str) -> Typestore:
    changed = object_definition(version)
    store = get_typestore(Stores.ROS2_KILTED)
    store.register({**package_types(), **get_types_from_msg(changed, OBJECT_TYPE)})
    return store


def foreign_message(store: Typestore, scene: ImageAnnotation, stamp: int) -> object:
    msg = annotation_to_bag_msg(scene, header(stamp, "camera"))
    object_fields = [name for name, _ in store.fielddefs[OBJECT_TYPE][1]]
    extra = {"note": "recorded elsewhere"}
    objects = [
        store.types[OBJECT_TYPE](
            **{name: extra[name] if name in extra else getattr(o, name) for name in object_fields}
        )
        for o in msg.objects
    ]
    fields = {
        name: getattr(msg, name) for name, _ in store.fielddefs[SEGMENTATION_TYPE][1] if name != "objects"
    }
    return store.types[SEGMENTATION_TYPE](**fields, objects=objects)


def write_foreign_bag(path: Path, storage: str, scenes: list[ImageAnnotation], version: str) -> list[bytes]:
    store = foreign_store(version)
    raws = []
    with Writer(path, version=9, storage_plugin=STORAGES[storage]) as writer:
        connection = writer.add_connection(TOPIC, SEGMENTATION_TYPE, typestore=store)
        for i, scene in enumerate(scenes):
            stamp = START_NS + i * 10**8
            raws.append(bytes(store.serialize_cdr(foreign_message(store, scene, stamp), SEGMENTATION_TYPE)))
            writer.write(connection, stamp, raws[-1])
    return raws


def assert_ground_truth(got: dict[int, ImageAnnotation], scenes: list[ImageAnnotation]) -> None:
    assert sorted(got) == [START_NS + i * 10**8 for i in range(len(scenes))]
    for stamp, scene in zip(sorted(got), scenes, strict=True):
        ann = got[stamp]
        assert [o.name for o in ann.objects] == [o.name for o in scene.objects]
        for o, want in zip(ann.objects, scene.objects, strict=True):
            assert np.array_equal(o.mask, want.mask) and np.array_equal(o.box, want.box)
            assert [p.name for p in o.parts] == [p.name for p in want.parts]
            assert all(np.array_equal(p.mask, w.mask) for p, w in zip(o.parts, want.parts, strict=True))


def misparses_today(raw: bytes, scene: ImageAnnotation) -> bool:
    try:
        msg = bag_typestore().deserialize_cdr(raw, SEGMENTATION_TYPE)
    except Exception:  # rosbags raises assorted errors for CDR that does not fit the definition
        return True
    return [o.label for o in msg.objects] != [o.name for o in scene.objects]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("version", ["newer", "older"])
def test_ground_truth_is_read_with_the_bags_own_definitions(scenes, tmp_path, storage, version) -> None:
    raws = write_foreign_bag(tmp_path / "bag", storage, scenes, version)
    assert misparses_today(raws[0], scenes[0])  # so this bag tells the bag's definitions from today's
    with Bag(tmp_path / "bag") as bag:
        assert bag.warnings == []
        got, error = ground_truth.from_topic(bag, TOPIC)
        first = bag.deserialize(next(bag.messages({TOPIC}))).objects[0]
    assert error is None
    if version == "newer":
        assert first.note == "recorded elsewhere"
    else:  # recorded before tracking: no track ids, read as 0 ("not tracked")
        assert not hasattr(first, "track_id") and all(
            o.track_id == 0 for a in got.values() for o in a.objects
        )
    assert_ground_truth(got, scenes)


def test_an_mcap_without_footer_is_read_with_its_schemas(scenes, tmp_path) -> None:
    write_foreign_bag(tmp_path / "bag", "mcap", scenes, "newer")
    mcap = tmp_path / "bag" / "bag.mcap"
    with mcap.open("r+b") as f:  # the footer and the end of the summary: every message is still whole
        f.truncate(mcap.stat().st_size - 20)
    with Bag(mcap) as bag:
        assert "no valid footer" in bag.warnings[0]
        got, error = ground_truth.from_topic(bag, TOPIC)
    assert error is not None and "truncated" in error
    assert_ground_truth(got, scenes)


def test_unparsable_or_contradicting_definitions_fall_back_with_a_warning() -> None:
    today = bag_typestore().fielddefs[SEGMENTATION_TYPE]
    warnings: list[str] = []
    store = reading_typestore([(SEGMENTATION_TYPE, MessageDefinitionFormat.MSG, "uint32[ broken")], warnings)
    assert store.fielddefs[SEGMENTATION_TYPE] == today
    assert len(warnings) == 1 and "does not parse" in warnings[0] and SEGMENTATION_TYPE in warnings[0]
    warnings = []
    headless = f"{'=' * 80}IDL: {SEGMENTATION_TYPE}"  # a joined IDL section cut after its header
    reading_typestore([(SEGMENTATION_TYPE, MessageDefinitionFormat.IDL, headless)], warnings)
    assert len(warnings) == 1 and "does not parse" in warnings[0]

    changed = object_definition("newer")
    warnings = []
    store = reading_typestore(
        [
            (OBJECT_TYPE, MessageDefinitionFormat.MSG, changed),
            (OBJECT_TYPE, MessageDefinitionFormat.MSG, (msg_directory() / "ObjectInstance.msg").read_text()),
        ],
        warnings,
    )
    assert "note" in dict(store.fielddefs[OBJECT_TYPE][1])  # the first topic's definition is kept
    assert len(warnings) == 1 and OBJECT_TYPE in warnings[0] and "differently" in warnings[0]


def test_a_partglee_type_without_definition_is_read_with_todays_and_a_warning() -> None:
    """rosbag2 sqlite3 bags before Iron carry no definitions: today's are all there is, said for each
    partglee_ros topic (standard types need no warning)."""
    warnings: list[str] = []
    store = reading_typestore(
        [
            (SEGMENTATION_TYPE, MessageDefinitionFormat.NONE, ""),
            ("sensor_msgs/msg/Image", MessageDefinitionFormat.NONE, ""),
        ],
        warnings,
    )
    assert store.fielddefs[SEGMENTATION_TYPE] == bag_typestore().fielddefs[SEGMENTATION_TYPE]
    assert len(warnings) == 1 and "no definition of " + SEGMENTATION_TYPE in warnings[0]


IDL = """module test_msgs {
  module msg {
    struct Note {
      string text;
      uint32 count;
    };
  };
};
"""


@pytest.mark.parametrize("joined", [False, True])
def test_idl_definitions_are_read_alone_or_as_rosbag2_joins_them(joined) -> None:
    text = f"{'=' * 80}\nIDL: test_msgs/msg/Note\n{IDL}" if joined else IDL
    warnings: list[str] = []
    store = reading_typestore([("test_msgs/msg/Note", MessageDefinitionFormat.IDL, text)], warnings)
    assert warnings == [] and [name for name, _ in store.fielddefs["test_msgs/msg/Note"][1]] == [
        "text",
        "count",
    ]
