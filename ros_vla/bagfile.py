"""ROS 2 bags in MCAP files, written the way rosbag2's MCAP storage plugin writes them.

No rclpy here: messages are already-serialized CDR bytes, so this module is the file
layer of `ros-vla record` / `ros-vla replay` (ros_vla/tools/bag.py) and usable by
training and evaluation code that only reads bags.

What makes a file readable by `ros2 bag play FILE.mcap`, `ros2 bag info` and Foxglove:
profile "ros2"; one schema per message type, named like "sensor_msgs/msg/Image", with
encoding "ros2msg" and the complete definition text (the type's .msg file, then every
nested type's, each after a line of 80 '=' and a "MSG: pkg/Type" line, exactly as
rosbag2's LocalMessageDefinitionSource builds it); channels with message encoding "cdr"
and the publishers' QoS in the metadata key "offered_qos_profiles". Without a "rosbag2"
metadata record rosbag2 reads that YAML as bag format version 8 (policies as rmw enum
numbers), which is what we write.
"""

from __future__ import annotations

import os
import queue
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from mcap.reader import make_reader
from mcap.writer import CompressionType, Writer

PROFILE = "ros2"
MESSAGE_ENCODING = "cdr"
LIBRARY = "ros_vla bag recorder"
DELIMITER = "=" * 80 + "\n"

# rmw enum numbers (rmw/types.h), as rosbag2 stores them in version-8 QoS YAML.
RELIABILITY_RELIABLE = 1
RELIABILITY_BEST_EFFORT = 2
DURABILITY_TRANSIENT_LOCAL = 1
DURABILITY_VOLATILE = 2
# Bags written by rosbag2 with a version >= 9 metadata record spell the policies out.
_POLICY_NAMES = {"reliable": RELIABILITY_RELIABLE, "best_effort": RELIABILITY_BEST_EFFORT,
                 "transient_local": DURABILITY_TRANSIENT_LOCAL, "volatile": DURABILITY_VOLATILE}

# About 10 s of the sim's three RGB-D views: a disk stall that long loses no message.
MAX_BACKLOG_BYTES = 512 * 2**20
LATCHED_TOPICS = ("/tf_static",)  # replayed transient local even if the bag has no QoS metadata


# ------------------------------------------------------------------ message definitions

# rosbag2's regular expressions: the type of each field of a .msg file, and the
# #include lines of an .idl file.
_MSG_FIELD_TYPE = re.compile(r"(?:^|\n)\s*([a-zA-Z0-9_/]+)(?:\[[^\]]*\])?\s+")
_IDL_INCLUDE = re.compile(r"(?:^|\n)#include\s+(?:\"|<)([a-zA-Z0-9_/]+)\.idl(?:\"|>)")
_PRIMITIVE_TYPES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
                    "int32", "uint32", "int64", "uint64", "string", "wstring"}
_ROS_NAME = r"[a-zA-Z][a-zA-Z0-9_]*"
_TYPE_NAME = re.compile(rf"^({_ROS_NAME})/(?:({_ROS_NAME})/)?({_ROS_NAME})$")


class DefinitionNotFound(Exception):
    """No .msg (or .idl) file for a type in any share directory searched."""


def interface_search_prefixes() -> list[Path]:
    """Install prefixes holding share/<package>/msg/*.msg: the ament prefixes (a sourced
    ROS 2) and this interpreter's prefix (message wheels install into the venv's share/)."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return prefixes + [Path(sys.prefix)]


def _definition_file(type_name: str, extension: str, prefixes: list[Path]) -> tuple[str, str]:
    """(package, file text) of `pkg/Type` or `pkg/msg/Type`."""
    match = _TYPE_NAME.match(type_name)
    if match is None:
        raise ValueError(f"not a ROS type name: '{type_name}'")
    package, namespace, name = match.group(1), match.group(2) or "msg", match.group(3)
    for prefix in prefixes:
        path = prefix / "share" / package / namespace / f"{name}{extension}"
        if path.is_file():
            return package, path.read_text()
    raise DefinitionNotFound(type_name)


def _dependencies(text: str, package: str, idl: bool) -> list[str]:
    if idl:
        return sorted(set(_IDL_INCLUDE.findall(text)))
    names = set()
    for field_type in _MSG_FIELD_TYPE.findall(text):
        if field_type not in _PRIMITIVE_TYPES:
            names.add(field_type if "/" in field_type else f"{package}/{field_type}")
    return sorted(names)


def _full_text(root: str, idl: bool, prefixes: list[Path]) -> str:
    """The root definition, then each nested one depth first (dependencies in sorted order,
    each type once): rosbag2's get_full_text."""
    extension, tag = (".idl", "IDL") if idl else (".msg", "MSG")
    seen: set[str] = set()

    def append(type_name: str, depth: int) -> str:
        if depth == 0:
            raise ValueError(f"message definitions nest too deeply below {root}")
        package, text = _definition_file(type_name, extension, prefixes)
        for dependency in _dependencies(text, package, idl):
            if dependency not in seen:
                seen.add(dependency)
                text += f"\n{DELIMITER}{tag}: {dependency}\n" + append(dependency, depth - 1)
        return text

    text = append(root, 50)
    return f"{DELIMITER}IDL: {root}\n{text}" if idl else text


def message_definition(type_name: str) -> tuple[str, str]:
    """(schema encoding, complete definition text) of a message type such as
    "sensor_msgs/msg/Image": "ros2msg" from .msg files, "ros2idl" if some .msg is missing
    (types generated from .idl only), or "unknown" with no text, as rosbag2 falls back."""
    prefixes = interface_search_prefixes()
    for idl, encoding in ((False, "ros2msg"), (True, "ros2idl")):
        try:
            return encoding, _full_text(type_name, idl, prefixes)
        except DefinitionNotFound:
            continue
        except ValueError:
            break
    return "unknown", ""


# ------------------------------------------------------------------------------ QoS


@dataclass(frozen=True)
class TopicQos:
    reliable: bool
    transient_local: bool


def qos_yaml(offers: list[dict]) -> str:
    """Channel metadata "offered_qos_profiles": one dict per publisher, in rosbag2's layout."""
    return yaml.safe_dump(offers, sort_keys=False) if offers else ""


def parse_qos_yaml(text: str) -> list[dict]:
    offers = yaml.safe_load(text) if text else None
    return offers if isinstance(offers, list) else []


def _policy(value) -> int:
    return _POLICY_NAMES.get(value, 0) if isinstance(value, str) else int(value)


def adapted_qos(topic: str, offers: list[dict]) -> TopicQos:
    """The QoS that connects to every publisher that offered `offers` (rosbag2's rule):
    reliable only if all of them are, transient local only if all of them are. With no
    offers known: reliable, and transient local for the latched topics."""
    if not offers:
        return TopicQos(reliable=True, transient_local=topic in LATCHED_TOPICS)
    return TopicQos(
        reliable=all(_policy(o.get("reliability", 0)) == RELIABILITY_RELIABLE for o in offers),
        transient_local=all(_policy(o.get("durability", 0)) == DURABILITY_TRANSIENT_LOCAL for o in offers),
    )


# ---------------------------------------------------------------------------- writing


@dataclass
class TopicStats:
    type_name: str
    messages: int = 0
    bytes: int = 0
    dropped: int = 0


class BagWriter:
    """A rosbag2-compatible MCAP file. Not thread-safe: see BackgroundBagWriter."""

    def __init__(self, path: str | os.PathLike):
        # Uncompressed, like rosbag2's MCAP plugin by default: camera streams are tens of
        # MB/s, which zstd would not keep up with on a small CPU next to the robot's nodes.
        self._file = open(path, "wb")
        self._writer = Writer(self._file, compression=CompressionType.NONE)
        self._writer.start(profile=PROFILE, library=LIBRARY)
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._sequence: dict[str, int] = {}
        self.topics: dict[str, TopicStats] = {}

    def add_topic(self, topic: str, type_name: str, offers: list[dict], type_hash: str = "") -> None:
        if topic in self._channels:
            return
        if type_name not in self._schemas:
            encoding, text = message_definition(type_name)
            self._schemas[type_name] = self._writer.register_schema(type_name, encoding, text.encode())
        metadata = {"offered_qos_profiles": qos_yaml(offers)}
        if type_hash:
            metadata["topic_type_hash"] = type_hash
        self._channels[topic] = self._writer.register_channel(
            topic, MESSAGE_ENCODING, self._schemas[type_name], metadata)
        self._sequence[topic] = 0
        self.topics[topic] = TopicStats(type_name)

    def write(self, topic: str, log_time_ns: int, publish_time_ns: int, data: bytes) -> None:
        self._sequence[topic] += 1
        self._writer.add_message(self._channels[topic], log_time=log_time_ns, data=data,
                                 publish_time=publish_time_ns, sequence=self._sequence[topic])
        stats = self.topics[topic]
        stats.messages += 1
        stats.bytes += len(data)

    def close(self) -> None:
        """Write the summary and indexes, which players need to find topics and seek."""
        self._writer.finish()
        self._file.close()


class BackgroundBagWriter:
    """A BagWriter fed through a queue and written by its own thread, so the subscription
    callbacks that call put_*() never wait for the disk.

    The queue is bounded in bytes: if the disk falls behind by more than MAX_BACKLOG_BYTES
    new messages are dropped (and counted per topic) instead of exhausting memory.
    """

    def __init__(self, path: str | os.PathLike):
        self._bag = BagWriter(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # ("topic", args) / ("message", args) / None
        self._lock = threading.Lock()  # guards the three fields below
        self._backlog = 0
        self._types: dict[str, str] = {}
        self._dropped: dict[str, int] = {}
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()

    def put_topic(self, topic: str, type_name: str, offers: list[dict], type_hash: str = "") -> None:
        with self._lock:
            self._types[topic] = type_name
        self._queue.put(("topic", (topic, type_name, offers, type_hash)))

    def put_message(self, topic: str, log_time_ns: int, publish_time_ns: int, data: bytes) -> None:
        """Queue a message (after its topic's put_topic), or count it as dropped."""
        with self._lock:
            if self._backlog + len(data) > MAX_BACKLOG_BYTES:
                self._dropped[topic] = self._dropped.get(topic, 0) + 1
                return
            self._backlog += len(data)
        self._queue.put(("message", (topic, log_time_ns, publish_time_ns, data)))

    @property
    def backlog_bytes(self) -> int:
        with self._lock:
            return self._backlog

    def stats(self) -> dict[str, TopicStats]:
        """Per topic: messages and bytes written so far, and messages dropped."""
        with self._lock:
            stats = {topic: TopicStats(type_name, dropped=self._dropped.get(topic, 0))
                     for topic, type_name in self._types.items()}
        for topic, written in list(self._bag.topics.items()):  # the writer thread adds to it
            stats[topic].messages, stats[topic].bytes = written.messages, written.bytes
        return stats

    def close(self) -> dict[str, TopicStats]:
        """Write what is queued, finish the file and return the final per-topic figures."""
        self._queue.put(None)
        self._thread.join()
        self._bag.close()
        if self._error is not None:
            raise RuntimeError(f"writing the bag failed: {self._error!r}") from self._error
        return self.stats()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            kind, args = item
            try:
                if self._error is None:  # after a failure only drain, so close() returns
                    (self._bag.add_topic if kind == "topic" else self._bag.write)(*args)
            except Exception as error:  # disk full, ...: reported by close()
                self._error = error
            if kind == "message":
                with self._lock:
                    self._backlog -= len(args[3])


# ---------------------------------------------------------------------------- reading


@dataclass
class BagTopic:
    name: str
    type_name: str
    offers: list[dict]
    message_count: int
    qos: TopicQos = field(init=False)

    def __post_init__(self):
        self.qos = adapted_qos(self.name, self.offers)


@dataclass
class BagMessage:
    topic: str
    log_time_ns: int
    publish_time_ns: int
    data: bytes


class Bag:
    """An MCAP bag opened for reading: its topics, and its messages in log-time order."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = open(self.path, "rb")
        self._reader = make_reader(self._file)
        summary = self._reader.get_summary()
        if summary is None:
            raise ValueError(f"{self.path}: no MCAP summary: the recorder was killed before it closed the file "
                             "(the mcap CLI's `mcap recover` rebuilds one)")
        counts = summary.statistics.channel_message_counts if summary.statistics else {}
        self.topics: dict[str, BagTopic] = {}
        for channel_id, channel in summary.channels.items():
            schema = summary.schemas.get(channel.schema_id)
            self.topics[channel.topic] = BagTopic(
                channel.topic, schema.name if schema else "",
                parse_qos_yaml(channel.metadata.get("offered_qos_profiles", "")), counts.get(channel_id, 0))

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
        for _, channel, message in self._reader.iter_messages(topics=None if topics is None else list(topics)):
            yield BagMessage(channel.topic, message.log_time, message.publish_time, message.data)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Bag:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --------------------------------------------------------------------------- playback


@dataclass
class PlaybackEvent:
    """Something to publish `offset_s` wall seconds after playback started: a recorded
    message, or (message None) a /clock tick carrying bag time `log_time_ns`."""

    offset_s: float
    log_time_ns: int
    message: BagMessage | None = None


def playback_events(messages: Iterable[BagMessage], rate: float,
                    clock_period_s: float | None = None) -> Iterator[PlaybackEvent]:
    """Recorded messages at their original spacing divided by `rate`, the first at offset 0.
    With `clock_period_s`, clock ticks are interleaved every `clock_period_s` wall seconds
    (bag time advancing `rate` times as fast) up to the last message."""
    if rate <= 0:
        raise ValueError(f"rate must be positive, not {rate}")
    first_ns = None
    next_tick = 0
    for message in messages:
        if first_ns is None:
            first_ns = message.log_time_ns
        offset_s = (message.log_time_ns - first_ns) / 1e9 / rate
        while clock_period_s is not None and next_tick * clock_period_s <= offset_s:
            tick_s = next_tick * clock_period_s
            yield PlaybackEvent(tick_s, first_ns + round(tick_s * rate * 1e9))
            next_tick += 1
        yield PlaybackEvent(offset_s, message.log_time_ns, message)


def lateness_stats(lateness_s: list[float]) -> dict[str, float]:
    """How late messages went out against their schedule, in milliseconds."""
    if not lateness_s:
        return {"lateness_median_ms": 0.0, "lateness_p99_ms": 0.0, "lateness_max_ms": 0.0}
    values = np.asarray(lateness_s) * 1e3
    return {"lateness_median_ms": round(float(np.median(values)), 3),
            "lateness_p99_ms": round(float(np.percentile(values, 99)), 3),
            "lateness_max_ms": round(float(values.max()), 3)}


def topic_table(rows: dict[str, tuple[str, int, int]], duration_s: float) -> str:
    """A summary table: topic, type, messages, MB and rate, from {topic: (type, messages, bytes)}."""
    width = max((len(t) for t in rows), default=5)
    lines = [f"{'topic':<{width}}  {'messages':>8}  {'MB':>8}  {'Hz':>6}  type"]
    for topic, (type_name, count, size) in sorted(rows.items()):
        rate = count / duration_s if duration_s > 0 else 0.0
        lines.append(f"{topic:<{width}}  {count:>8}  {size / 1e6:>8.1f}  {rate:>6.1f}  {type_name}")
    return "\n".join(lines)
