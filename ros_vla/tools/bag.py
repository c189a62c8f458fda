"""`ros-vla record` and `ros-vla replay`: the robot's topics to and from rosbag2-compatible MCAP.

  ros-vla record [-o FILE] [--topics T ...] [--duration S] [--use-sim-time] [--json]
  ros-vla replay FILE [--rate R] [--loop] [--topics T ...] [--delay S] [--include-actuation] [--json]

Each runs one rclpy node in its own process (the CLI's). The recorder subscribes to every
advertised topic (or the --topics list), also to topics that appear later, with raw
subscriptions: messages stay the CDR bytes that came off the wire, with no deserialize and
re-serialize of camera images. Its callbacks only stamp and queue those bytes; a writer
thread writes the MCAP file (ros_vla/bagfile.py). The player republishes every message
at its recorded time offset, divided by --rate, and drives /clock so nodes with
use_sim_time follow the recording. It leaves out the controller command topics, /estop and
/safety/status (ACTUATION_TOPICS) unless asked: they would reach the robot's controllers
without the safety gate, a replayed /estop false would release a stop someone pressed, and
a replayed gate status would tell arm_motion the robot is armed when the live gate is not.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import rclpy
from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.subscription import MessageInfo
from rclpy.topic_or_service_is_hidden import topic_or_service_is_hidden
from rosgraph_msgs.msg import Clock

from ros_vla.bagfile import (
    BackgroundBagWriter,
    Bag,
    TopicQos,
    adapted_qos,
    lateness_stats,
    playback_events,
    topic_table,
)
from ros_vla.paths import use_project_dds_profile

# The graph's own bookkeeping, not robot data (rosbag2 leaves them out too).
EXCLUDED_TOPICS = ("/rosout", "/parameter_events")
# Replayed only with --include-actuation: they bypass the safety gate, release its stop, or speak for it.
ACTUATION_TOPICS = ("/fr3_arm_controller/joint_trajectory", "/fr3_gripper/command", "/cmd_vel", "/estop",
                    "/safety/status")
DISCOVERY_PERIOD_S = 0.2  # cheap: only new topics are looked at closely
# Deep enough to absorb a second of executor hiccups at /joint_states' 100 Hz.
RECORD_DEPTH = 100
REPLAY_DEPTH = 10
MAX_LATCHED_DEPTH = 100
CLOCK_TOPIC = "/clock"
CLOCK_PERIOD_S = 0.02  # /clock made from log times: 50 Hz, as the simulator publishes it
ACK_TIMEOUT_S = 2.0


def message_class(type_name: str):
    """The Python class of "pkg/msg/Type" (what rosidl_runtime_py's get_message does; that
    package is not among the ROS 2 wheels here)."""
    package, interface, name = type_name.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{interface}"), name)
    except (ImportError, AttributeError):
        raise LookupError(f"message type {type_name} is not installed here") from None


def _profile(qos: TopicQos, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if qos.transient_local else DurabilityPolicy.VOLATILE)


def _rmw_time(duration: Duration) -> dict:
    sec, nsec = divmod(duration.nanoseconds, 1_000_000_000)
    return {"sec": sec, "nsec": nsec}


def offered_qos(profile: QoSProfile) -> dict:
    """A publisher's QoS in the layout (and rmw enum numbers) rosbag2 stores per channel."""
    return {
        "history": int(profile.history), "depth": profile.depth,
        "reliability": int(profile.reliability), "durability": int(profile.durability),
        "deadline": _rmw_time(profile.deadline), "lifespan": _rmw_time(profile.lifespan),
        "liveliness": int(profile.liveliness),
        "liveliness_lease_duration": _rmw_time(profile.liveliness_lease_duration),
        "avoid_ros_namespace_conventions": bool(profile.avoid_ros_namespace_conventions),
    }


# ------------------------------------------------------------------------------ record


class Recorder(Node):
    """Subscribes to topics as they appear; each message goes to the background writer."""

    def __init__(self, writer: BackgroundBagWriter, topics: list[str] | None, use_sim_time: bool):
        super().__init__("ros_vla_record",
                         parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)])
        self._writer = writer
        self._wanted = set(topics) if topics else None
        self._recording: dict[str, object] = {}
        self._skipped: set[str] = set()  # warned about once, never subscribed
        self.first_message_at: float | None = None  # monotonic

    def discover(self) -> None:
        """Subscribe to every new topic that has a publisher; call periodically."""
        for topic, types in self.get_topic_names_and_types():
            if topic in self._recording or topic in self._skipped or not self._selected(topic):
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue  # only subscribers so far: its QoS offer is not known yet
            if len(types) != 1:
                self._skip(topic, f"advertised with several types {types}")
                continue
            try:
                msg_type = message_class(types[0])
            except (LookupError, ValueError) as error:
                self._skip(topic, str(error))
                continue
            offers = [offered_qos(p.qos_profile) for p in publishers]
            type_hash = str(publishers[0].topic_type_hash)
            self._writer.put_topic(topic, types[0], offers, "" if type_hash == "INVALID" else type_hash)
            qos = adapted_qos(topic, offers)
            self._recording[topic] = self.create_subscription(
                msg_type, topic, functools.partial(self._on_message, topic), _profile(qos, RECORD_DEPTH), raw=True)
            self.get_logger().info(f"recording {topic} [{types[0]}, {'reliable' if qos.reliable else 'best effort'}"
                                   f"{', transient local' if qos.transient_local else ''}]")

    def _selected(self, topic: str) -> bool:
        if self._wanted is not None:
            return topic in self._wanted
        return topic not in EXCLUDED_TOPICS and not topic_or_service_is_hidden(topic)

    def _skip(self, topic: str, why: str) -> None:
        self._skipped.add(topic)
        self.get_logger().warning(f"not recording {topic}: {why}")

    def _on_message(self, topic: str, data: bytes, info: MessageInfo) -> None:
        # Log time is the recorder's ROS time on receipt (sim time with --use-sim-time),
        # publish time the publisher's send stamp, as rosbag2 records them.
        self._writer.put_message(topic, self.get_clock().now().nanoseconds, info["source_timestamp"], data)
        if self.first_message_at is None:
            self.first_message_at = time.monotonic()


def _default_bag_name() -> str:
    return datetime.now().strftime("rosbag2_%Y_%m_%d-%H_%M_%S.mcap")


class _Progress:
    """One live status line on a terminal (rewritten in place); a line every few seconds in a log."""

    def __init__(self):
        self._interactive = sys.stderr.isatty()
        self._period_s = 0.5 if self._interactive else 5.0
        self._next = time.monotonic() + self._period_s

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def show(self, text: str) -> None:
        self._next = time.monotonic() + self._period_s
        print(f"\r{text}\033[K" if self._interactive else text, end="" if self._interactive else "\n",
              file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self._interactive:
            print(file=sys.stderr)


def record(path: Path, topics: list[str] | None, duration_s: float | None, use_sim_time: bool) -> dict:
    """Record until Ctrl-C, SIGTERM or `duration_s` after the first message (discovering the
    topics takes a second or more, which should not shorten the recording); returns the
    figures of the summary."""
    use_project_dds_profile()
    rclpy.init(args=[])
    writer = BackgroundBagWriter(path)
    recorder = Recorder(writer, topics, use_sim_time)
    executor = SingleThreadedExecutor()
    executor.add_node(recorder)
    progress = _Progress()
    next_discovery = time.monotonic()
    try:
        while rclpy.ok():
            first = recorder.first_message_at
            deadline = first + duration_s if duration_s and first is not None else float("inf")
            if time.monotonic() >= deadline:
                break
            if time.monotonic() >= next_discovery:
                recorder.discover()
                next_discovery = time.monotonic() + DISCOVERY_PERIOD_S
            executor.spin_once(timeout_sec=max(0.0, min(0.1, deadline - time.monotonic())))
            if progress.due():
                stats = writer.stats()
                recorded_s = time.monotonic() - first if first is not None else 0.0
                progress.show(f"recording {recorded_s:6.1f} s: {len(stats)} topics, "
                              f"{sum(s.messages for s in stats.values())} messages, "
                              f"{sum(s.bytes for s in stats.values()) / 1e6:.1f} MB, "
                              f"{writer.backlog_bytes / 1e6:.1f} MB queued")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        progress.finish()
        first = recorder.first_message_at
        elapsed = time.monotonic() - first if first is not None else 0.0
        executor.shutdown(timeout_sec=1.0)
        recorder.destroy_node()
        rclpy.try_shutdown()
        stats = writer.close()
    return {
        "file": str(path), "duration_s": round(elapsed, 3), "file_bytes": path.stat().st_size,
        "messages": sum(s.messages for s in stats.values()),
        "dropped": sum(s.dropped for s in stats.values()),
        "topics": {topic: {"type": s.type_name, "messages": s.messages, "bytes": s.bytes, "dropped": s.dropped}
                   for topic, s in sorted(stats.items())},
    }


def record_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ros-vla record",
        description="Record the robot's topics to a rosbag2-compatible MCAP file (ros2 bag play, Foxglove).")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="MCAP file to write (default: rosbag2_<date>-<time>.mcap here)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="record only these (default: every topic but /rosout and /parameter_events)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds, counted from the first message recorded")
    parser.add_argument("--use-sim-time", action="store_true",
                        help="log times from /clock instead of the system clock")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    args = parser.parse_args(argv)
    path = args.output or Path(_default_bag_name())
    if path.exists():
        print(f"{path} exists: not overwriting it", file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = record(path, args.topics, args.duration, args.use_sim_time)
    rows = {t: (s["type"], s["messages"], s["bytes"]) for t, s in summary["topics"].items()}
    print(f"wrote {path}: {summary['messages']} messages, {summary['file_bytes'] / 1e6:.1f} MB "
          f"in {summary['duration_s']:.1f} s")
    print(topic_table(rows, summary["duration_s"]))
    if summary["dropped"]:
        print(f"dropped {summary['dropped']} messages: the disk did not keep up", file=sys.stderr)
    if args.topics and (missing := sorted(set(args.topics) - set(summary["topics"]))):
        print(f"never seen: {' '.join(missing)}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------ replay


def _wait(seconds: float) -> None:
    if seconds > 0:
        time.sleep(seconds)


def replay(bag: Bag, topics: list[str], rate: float, loop: bool, delay_s: float) -> dict:
    """Publish the bag's `topics` on schedule; returns counts and how late messages went out."""
    use_project_dds_profile()
    rclpy.init(args=[])
    node = Node("ros_vla_replay")
    publishers = {}
    for topic in topics:
        info = bag.topics[topic]
        try:
            msg_type = message_class(info.type_name)
        except (LookupError, ValueError) as error:
            node.get_logger().warning(f"not replaying {topic}: {error}")
            continue
        # Latched topics keep every recorded message for late subscribers (each of several
        # /tf_static publishers latched its own), others the usual 10.
        depth = min(max(info.message_count, 1), MAX_LATCHED_DEPTH) if info.qos.transient_local else REPLAY_DEPTH
        publishers[topic] = node.create_publisher(msg_type, topic, _profile(info.qos, depth))
    # A recorded /clock is replayed like any topic; otherwise /clock is made from the log times.
    clock_publisher = None
    if CLOCK_TOPIC not in bag.topics:
        clock_publisher = node.create_publisher(Clock, CLOCK_TOPIC, REPLAY_DEPTH)
    sent = {topic: [0, 0] for topic in publishers}  # messages, bytes
    lateness_s: list[float] = []
    loops = 0
    started = finished = None
    try:
        _wait(delay_s)  # lets subscribers discover the new publishers before the first message
        started = time.monotonic()
        while rclpy.ok():
            start = time.monotonic()
            events = playback_events(bag.messages(list(publishers)), rate,
                                     CLOCK_PERIOD_S if clock_publisher else None)
            for event in events:
                due = start + event.offset_s
                _wait(due - time.monotonic())
                if not rclpy.ok():
                    break
                if event.message is None:
                    sec, nanosec = divmod(event.log_time_ns, 1_000_000_000)
                    clock_publisher.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))
                    continue
                publishers[event.message.topic].publish(event.message.data)
                lateness_s.append(time.monotonic() - due)
                sent[event.message.topic][0] += 1
                sent[event.message.topic][1] += len(event.message.data)
            loops += 1
            if not loop:
                break
        finished = time.monotonic()
        # Reliable subscribers get the last messages before the process (and its writers) ends.
        for publisher in publishers.values():
            publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    if started is None:
        elapsed = 0.0
    else:
        elapsed = (finished or time.monotonic()) - started
    return {"file": str(bag.path), "rate": rate, "loops": loops, "duration_s": round(elapsed, 3),
            "clock": "recorded" if clock_publisher is None else "from log times",
            "messages": sum(n for n, _ in sent.values()),
            "topics": {topic: {"messages": n, "bytes": size} for topic, (n, size) in sent.items()},
            **lateness_stats(lateness_s)}


def replay_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ros-vla replay",
        description="Republish a recorded MCAP bag with its original timing, and /clock for use_sim_time nodes.")
    parser.add_argument("file", type=Path)
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (2 = twice as fast)")
    parser.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="replay only these (a recorded /clock is always replayed: the recording's time base)")
    parser.add_argument("--delay", type=float, default=0.5,
                        help="seconds between creating the publishers and the first message, for discovery")
    parser.add_argument("--include-actuation", action="store_true",
                        help=f"also replay {', '.join(ACTUATION_TOPICS)}: controller commands past the safety "
                             "gate, the stop and the gate's word on arming (only where no robot is listening)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line at the end")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be positive")
    if not args.file.is_file():
        print(f"no such file: {args.file}", file=sys.stderr)
        return 2
    with Bag(args.file) as bag:
        topics = sorted(bag.topics)
        if args.topics:
            unknown = sorted(set(args.topics) - set(bag.topics))
            if unknown:
                print(f"not in {args.file}: {' '.join(unknown)}; it has: {' '.join(topics)}", file=sys.stderr)
                return 2
            topics = sorted(set(args.topics) | ({CLOCK_TOPIC} & set(bag.topics)))
        left_out = [] if args.include_actuation else sorted(set(topics) & set(ACTUATION_TOPICS))
        if left_out:
            print(f"not replaying {' '.join(left_out)}: they bypass or speak for the safety gate "
                  "(--include-actuation to replay them)", file=sys.stderr)
            topics = [t for t in topics if t not in left_out]
        summary = replay(bag, topics, args.rate, args.loop, args.delay)
        rows = {t: (bag.topics[t].type_name, s["messages"], s["bytes"]) for t, s in summary["topics"].items()}
    print(f"replayed {summary['messages']} messages from {args.file} in {summary['duration_s']:.1f} s "
          f"(rate {args.rate:g}, {summary['loops']} pass{'es' if summary['loops'] != 1 else ''}, "
          f"/clock {summary['clock']})")
    print(topic_table(rows, summary["duration_s"]))
    print(f"timing: messages went out {summary['lateness_median_ms']:.2f} ms late (median), "
          f"{summary['lateness_p99_ms']:.2f} ms (p99), {summary['lateness_max_ms']:.2f} ms (max)")
    if args.json:
        print(json.dumps(summary))
    return 0
