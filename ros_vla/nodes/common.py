"""Small pieces every node uses: QoS profiles, /diagnostics, JSON status, the main() wrapper."""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from std_msgs.msg import String
from std_srvs.srv import SetBool

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


def offer_arming_service(node: Node):
    """`~/set_armed` (std_srvs/SetBool): arm or disarm like `ros2 param set <node> armed`,
    for tools that call services. The node's `armed` parameter callback does the work."""

    def set_armed(request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        result = node.set_parameters([Parameter("armed", value=bool(request.data))])[0]
        response.success = result.successful
        if not result.successful:
            response.message = result.reason
        else:
            response.message = ("arming: commands go to the robot once it is armed" if request.data
                                else "disarmed: dry run, commands go to the preview topics")
        return response

    return node.create_service(SetBool, "~/set_armed", set_armed)


class QueueWorker:
    """One worker thread handling queued items (goals, tasks, requests) one at a time, so
    callbacks only enqueue and long work never blocks the executor."""

    def __init__(self, node: Node, handle: Callable[[object], None], name: str):
        self._queue: queue.Queue = queue.Queue()
        self._handle = handle
        self._running = True
        self._thread = start_worker(node, self._loop, name)

    def put(self, item):
        self._queue.put(item)

    def _loop(self):
        while self._running:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self._handle(item)

    def close(self):
        self._running = False
        self._thread.join(timeout=2.0)


class Replies:
    """JSON replies arriving on a topic, for a worker waiting on the one for its request."""

    def __init__(self):
        self._queue: queue.Queue[dict] = queue.Queue()

    def put(self, reply: dict):
        self._queue.put(reply)

    def clear(self):
        """Forget replies to earlier requests; call before sending a new one."""
        while not self._queue.empty():
            self._queue.get_nowait()

    def wait(self, matches: Callable[[dict], bool], timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                reply = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if matches(reply):
                return reply
        return None


def run_pick_place_goal(publisher, arm_results: Replies, pick_xyz, pick_yaw: float, place_xyz, place_yaw: float,
                        timeout_s: float) -> tuple[bool, str]:
    """Send one arm/pick_place goal (fr3_link0) and wait for its arm/result: the skill
    nodes' side of the arm_motion protocol. (False, why) on refusal, failure or silence."""
    goal_id = uuid.uuid4().hex[:8]
    arm_results.clear()
    publish_json(publisher, {
        "id": goal_id, "frame": "fr3_link0",
        "pick": {"xyz": [float(v) for v in pick_xyz], "yaw": float(pick_yaw)},
        "place": {"xyz": [float(v) for v in place_xyz], "yaw": float(place_yaw)},
    })
    result = arm_results.wait(lambda reply: reply["id"] == goal_id, timeout_s)
    if result is None:
        return False, f"arm did not answer within {timeout_s:.0f} s"
    if not result["success"]:
        return False, f"arm: {result['message']}"
    return True, result["message"]


def run_skill_request(publisher, skill_results: Replies, skill: str, text: str, args: dict,
                      timeout_s: float) -> tuple[bool, str]:
    """Send one skill/request and wait for its skill/result: the planners' side of the
    skill protocol."""
    skill_id = uuid.uuid4().hex[:8]
    skill_results.clear()
    publish_json(publisher, {"id": skill_id, "skill": skill, "text": text, "args": args})
    result = skill_results.wait(lambda reply: reply["id"] == skill_id, timeout_s)
    if result is None:
        return False, f"no skill result within {timeout_s:.0f} s (is a skill executor running?)"
    return result["success"], result["message"]


def drive_to_station(goto_publisher, base_status: Replies, station: str, timeout_s: float) -> tuple[bool, str]:
    """base/goto a station and wait until base/status says it arrived there or gave up."""
    base_status.clear()
    goto_publisher.publish(String(data=station))

    def settled(status: dict) -> bool:
        arrived = status.get("state") == "arrived" and status.get("station_reached") == station
        return arrived or status.get("state") in ("failed", "refused", "stopped")

    status = base_status.wait(settled, timeout_s)
    if status is None:
        return False, f"base did not arrive within {timeout_s:.0f} s"
    if status["state"] == "arrived":
        return True, f"arrived at the {station}"
    return False, status.get("message", "base refused")


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
