"""Small pieces every node uses: QoS profiles, /diagnostics, JSON status, the main() wrapper."""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import String

SENSOR_QOS = qos_profile_sensor_data
# Publishers of camera data are reliable so both best-effort (SensorDataQoS) and reliable
# subscribers (rviz, rosbag) connect, as realsense-ros does by default.
CAMERA_PUB_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
STATUS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)

LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN,
          "error": DiagnosticStatus.ERROR, "stale": DiagnosticStatus.STALE}


class Diagnostics:
    """Publishes one DiagnosticStatus per node on /diagnostics, immediately on problems."""

    def __init__(self, node: Node, hardware_id: str = "ros_vla"):
        self._node = node
        self._hardware_id = hardware_id
        self._pub = node.create_publisher(DiagnosticArray, "/diagnostics", STATUS_QOS)

    def publish(self, level: str, message: str, **values):
        status = DiagnosticStatus(
            level=LEVELS[level], name=f"ros_vla: {self._node.get_name()}", message=message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(array)
        if level == "error":
            self._node.get_logger().error(message)
        elif level == "warn":
            self._node.get_logger().warning(message)


def publish_json(publisher, payload: dict):
    publisher.publish(String(data=json.dumps(payload, separators=(",", ":"))))


def declare(node: Node, **defaults):
    """Declare parameters with defaults (config/*.yaml overrides them) and return their values."""
    values = {}
    for name, default in defaults.items():
        values[name] = node.declare_parameter(name, default).value
    return values


def run_node(factory: Callable[[], Node], args=None) -> int:
    """Spin a node until Ctrl-C or shutdown.

    Single-threaded on purpose: every callback here only stores or forwards a message
    (models and long motions run in worker threads), and rclpy's multi-threaded
    executor costs several times more CPU per message.
    """
    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        rclpy.spin(node, executor=SingleThreadedExecutor())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return 0


def start_worker(node: Node, target: Callable[[], None], name: str) -> threading.Thread:
    """Run a node's worker loop in a thread. A worker that dies takes the process with it
    (exit code 1), so launch respawn or the operator sees it instead of a silent zombie."""

    def guarded():
        try:
            target()
        except Exception:
            if not node.context.ok():
                return  # shutting down: publishers are already gone
            node.get_logger().fatal(f"worker '{name}' died:\n{traceback.format_exc()}")
            sys.stderr.flush()
            os._exit(1)

    thread = threading.Thread(target=guarded, name=name, daemon=True)
    thread.start()
    return thread


class Latest:
    """Thread-safe latest-value buffer: callbacks store, timers and workers read."""

    def __init__(self, value=None):
        self._value = value
        self._lock = threading.Lock()

    def set(self, value):
        with self._lock:
            self._value = value

    def get(self):
        with self._lock:
            return self._value

    def take(self):
        with self._lock:
            value, self._value = self._value, None
            return value
