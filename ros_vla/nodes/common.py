"""Small pieces every node uses: QoS profiles, /diagnostics, JSON status, the main() wrapper,
worker threads, the task journal, and the skill nodes' side of the skill/<executor> and
arm/pick_and_place actions (SkillServer, PickPlaceCaller)."""

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
from dataclasses import dataclass
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from ros_vla_interfaces.action import ExecuteSkill, PickPlace
from std_msgs.msg import String
from std_srvs.srv import SetBool

from ros_vla import protocol
from ros_vla.nodes.actions import ActionCaller, WorkerActionServer

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
    callbacks only enqueue and long work never blocks the executor.

    At most `max_pending` items wait: a flood of requests is refused (put returns False)
    instead of growing a backlog the robot would work through long after."""

    def __init__(self, node: Node, handle: Callable[[object], None], name: str, max_pending: int = 8):
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._handle = handle
        self._running = True
        self._thread = start_worker(node, self._loop, name)

    def put(self, item) -> bool:
        """Queue an item; False (and not queued) when `max_pending` are already waiting."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

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


def when_heard(node: Node, publisher, action: Callable[[], None], timeout_s: float = 10.0):
    """Call `action` once `publisher` has a subscriber, or after `timeout_s`. A message a
    node publishes as it starts (a respawn's "ready", a journal's report) is lost on a
    volatile topic: no subscriber has matched the new publisher yet."""
    started = time.monotonic()

    def check():
        if publisher.get_subscription_count() == 0 and time.monotonic() - started < timeout_s:
            return
        timer.cancel()
        action()

    timer = node.create_timer(0.5, check)


class TaskJournal:
    """The task a planner is carrying out, kept on disk
    ($ROS_HOME/ros_vla/<node>_domain<ROS_DOMAIN_ID>_task.json) so that a planner that died
    and respawned reports the interrupted task failed instead of leaving it "executing".

    The failure goes out through the planner's `publish_status(task_id, instruction, state,
    message)` once someone listens on `status_pub` (right after start the publisher is not
    yet matched) or after 10 s.
    """

    INTERRUPTED = "the planner restarted during this task (it died?): task failed, nothing more of it runs"

    def __init__(self, node: Node, status_pub, publish_status: Callable[[str, str, str, str], None]):
        home = Path(os.environ.get("ROS_HOME") or Path.home() / ".ros")
        name = f"{node.get_name()}_domain{os.environ.get('ROS_DOMAIN_ID', '0')}_task.json"
        self.path = home / "ros_vla" / name
        self._node = node
        interrupted = self._read()
        self.end()
        if interrupted is not None:
            when_heard(node, status_pub, lambda: publish_status(
                interrupted["id"], str(interrupted.get("instruction", "")), "failed", self.INTERRUPTED))

    def _read(self) -> dict | None:
        try:
            entry = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("id"), str) else None

    def begin(self, task_id: str, instruction: str):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"id": task_id, "instruction": instruction[:500]}))
        except OSError as err:  # a read-only home: the task runs, only a restart would go unreported
            self._node.get_logger().warn(f"cannot write the task journal {self.path}: {err}")

    def end(self):
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            self._node.get_logger().warn(f"cannot clear the task journal {self.path}: {err}")


@dataclass
class SkillRequest:
    """One skill for a skill node to run, from its skill/<executor> action or skill/request."""

    id: str
    skill: str
    text: str
    args: dict
    requested_at: float  # node clock, seconds: camera frames must be newer than this
    canceled: threading.Event
    answer: Callable[[bool, str], None]  # once, when the skill has ended
    report: Callable[[str, float], None] = lambda phase, progress: None  # phase, progress 0..1


def skill_goal(executor: str, text: str, args: dict) -> ExecuteSkill.Goal:
    """The ExecuteSkill goal for one skill call; argument values go as text."""
    return ExecuteSkill.Goal(skill=executor, text=text, args=[KeyValue(key=str(k), value=str(v))
                                                              for k, v in args.items()])


class SkillServer:
    """A skill node's side of the skill protocol for its executor (e.g. "pick_place"):
    - the skill/<executor> action (ros_vla_interfaces/ExecuteSkill): feedback, result, cancel;
    - skill/request -> skill/result (JSON, the compatibility layer for tools that speak it:
      protocol.py), for requests whose skill is this executor.
    Both reach `submit(request) -> str` in the executor; it queues the request for the node's
    worker, or returns why not (the request fails at once with that reason). `on_cancel` is
    called in the executor when a goal is canceled (request.canceled is already set)."""

    def __init__(self, node: Node, diag: Diagnostics, executor: str, submit: Callable[[SkillRequest], str],
                 on_cancel: Callable[[SkillRequest], None] = lambda request: None):
        self._node = node
        self._diag = diag
        self.executor = executor
        self._submit = submit
        self._on_cancel = on_cancel
        self._requests: dict[int, SkillRequest] = {}
        self.result_pub = node.create_publisher(String, "skill/result", STATUS_QOS)
        node.create_subscription(String, "skill/request", self._on_json_request, COMMAND_QOS)
        self.action = WorkerActionServer(node, ExecuteSkill, f"skill/{executor}", self._on_goal,
                                         on_cancel=lambda run: self._cancel(id(run)))

    def _now_s(self) -> float:
        return self._node.get_clock().now().nanoseconds * 1e-9

    def _on_goal(self, run) -> str:
        goal = run.goal
        if goal.skill and goal.skill != self.executor:
            return f"this is the '{self.executor}' skill's action; '{goal.skill[:40]}' skills have their own"
        request = SkillRequest(
            uuid.uuid4().hex[:8], goal.skill or self.executor, goal.text, {kv.key: kv.value for kv in goal.args},
            self._now_s(), run.cancel_requested,
            answer=lambda success, message: self._answered(id(run), lambda: run.finish(
                ExecuteSkill.Result(success=success, message=message), success)),
            report=lambda phase, progress: run.feedback(ExecuteSkill.Feedback(phase=phase, progress=float(progress))))
        self._requests[id(run)] = request
        why_not = self._submit(request)
        if why_not:
            self._requests.pop(id(run), None)
        return why_not

    def _answered(self, key: int, finish: Callable[[], None]):
        self._requests.pop(key, None)
        finish()

    def _cancel(self, key: int):
        request = self._requests.get(key)
        if request is not None:
            self._on_cancel(request)

    def _on_json_request(self, msg: String):
        try:
            payload = protocol.decode("skill_request", msg.data)
        except protocol.ProtocolError as err:
            self._diag.publish("error", f"skill request refused: {err}")
            return
        if payload["skill"] != self.executor:
            return

        def answer(success: bool, message: str, request_id=payload["id"]):
            publish_json(self.result_pub, {"id": request_id, "success": success, "message": message})

        request = SkillRequest(payload["id"], payload["skill"], payload["text"], payload["args"], self._now_s(),
                               threading.Event(), answer)
        why_not = self._submit(request)
        if why_not:
            answer(False, why_not)


class PickPlaceCaller:
    """A skill node's client of arm_motion's arm/pick_and_place action (fr3_link0)."""

    def __init__(self, node: Node):
        self._caller = ActionCaller(node, PickPlace, "arm/pick_and_place", "arm_motion pick-and-place")

    def run(self, pick_xyz, pick_yaw: float, place_xyz, place_yaw: float, timeout_s: float,
            request: SkillRequest) -> tuple[bool, str]:
        """(success, message); the skill request's cancel cancels the motion (the arm holds) and
        the arm's phases become the skill's feedback."""
        goal = PickPlace.Goal(frame_id="fr3_link0", pick_yaw=float(pick_yaw), place_yaw=float(place_yaw))
        goal.pick_position.x, goal.pick_position.y, goal.pick_position.z = (float(v) for v in pick_xyz)
        goal.place_position.x, goal.place_position.y, goal.place_position.z = (float(v) for v in place_xyz)
        outcome = self._caller.call(goal, timeout_s, cancel=request.canceled,
                                    feedback=lambda f: request.report(f.phase, f.progress))
        if outcome.result is None:
            return False, f"arm: {outcome.message}"
        if outcome.canceled:
            return False, f"canceled: {outcome.result.message}"
        if not outcome.result.success:
            return False, f"arm: {outcome.result.message}"
        return True, outcome.result.message


class FrameFilter:
    """A sensor subscription's callback that passes on only usable messages (a `problem`
    function such as ros_messages.image_problem says why not), so a malformed frame never
    replaces the newest good one; counts what it drops."""

    def __init__(self, store: Callable[[object], None], problem: Callable[[object], str]):
        self._store = store
        self._problem = problem
        self.rejected = 0
        self.last_problem = ""

    def __call__(self, msg):
        problem = self._problem(msg)
        if problem:
            self.rejected += 1
            self.last_problem = problem
            return
        self._store(msg)


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
