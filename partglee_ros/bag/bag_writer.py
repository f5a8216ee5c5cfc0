"""Write rosbag2 bags (mcap by default, or sqlite3) with rosbags: the results bag and the sample bag.

Messages are written as CDR bytes, so what the node published over ROS is stored byte for byte, and a
message built here is serialized once by the typestore.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rosbags.interfaces import Connection
from rosbags.rosbag2 import StoragePlugin, Writer

from partglee_ros.bag.typestore import bag_typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


class BagWriter:
    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"unknown storage {storage!r}; choose {' or '.join(STORAGES)}")
        self._writer = Writer(Path(path), version=9, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections: dict[str, Connection] = {}

    def write(self, topic: str, msgtype: str, log_ns: int, data: bytes) -> None:
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=bag_typestore())
        self._writer.write(self._connections[topic], log_ns, data)

    def write_msg(self, topic: str, msgtype: str, log_ns: int, msg: Any) -> None:
        self.write(topic, msgtype, log_ns, bytes(bag_typestore().serialize_cdr(msg, msgtype)))

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
