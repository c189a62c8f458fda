"""A ROS 2 client of the running stack, for the command line, the demo, benchmarks and tests.

It is an ordinary rclpy node in its own process: it sees exactly what any external ROS 2
tool would see over DDS, and it talks to the stack only through ros_vla_interfaces and
standard messages: task/status (TaskStatus), the run_task, skill/<executor> actions and the
cliport/affordance and attribute/check services, /instruction (String) as a person would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from ros_vla_interfaces.action import ExecuteSkill, RunTask
from ros_vla_interfaces.msg import TaskStatus
from ros_vla_interfaces.srv import AffordanceQuery, AttributeQuery
from sensor_msgs.msg import Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ros_vla import protocol
from ros_vla.nodes.actions import ActionCaller, ActionOutcome, call_service
from ros_vla.nodes.common import COMMAND_QOS, SENSOR_QOS, STATUS_QOS, skill_goal
from ros_vla.paths import use_project_dds_profile
from ros_vla.perception.ros_messages import image_array

CAMERA_TOPIC = "/{namespace}/camera/color/image_raw"


def status_dict(msg: TaskStatus) -> dict:
    """A TaskStatus as a plain dict (for printing, JSON reports and tests)."""
    return {"id": msg.id, "instruction": msg.instruction, "state": msg.state, "message": msg.message,
            "plan": list(msg.plan), "step": msg.step, "explanation": msg.explanation,
            "scores": [{"skill": s.skill, "llm": round(s.llm, 4), "affordance": round(s.affordance, 4),
                        "combined": round(s.combined, 4)} for s in msg.scores]}


class StackClient:
    """Starts rclpy (if needed) and spins a client node in a background thread."""

    def __init__(self, name: str = "ros_vla_client"):
        use_project_dds_profile()
        self._owns_rclpy = not rclpy.ok()
        if self._owns_rclpy:
            rclpy.init()
        self.node: Node = rclpy.create_node(name)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._lock = threading.Lock()
        self._closing = False
        self._statuses: list[dict] = []
        self._truth: String | None = None
        self._images: dict[str, Image] = {}
        self.instruction_pub = self.node.create_publisher(String, "/instruction", COMMAND_QOS)
        self.node.create_subscription(TaskStatus, "/task/status", self._on_status, STATUS_QOS)
        self.node.create_subscription(String, "/sim/ground_truth/objects", self._on_truth, COMMAND_QOS)
        self.task_action = ActionCaller(self.node, RunTask, "/run_task", "run_task")
        self._skill_actions: dict[str, ActionCaller] = {}
        self.affordance_client = self.node.create_client(AffordanceQuery, "/cliport/affordance")
        self.attribute_client = self.node.create_client(AttributeQuery, "/attribute/check")
        self.cancel_client = self.node.create_client(Trigger, "/cancel_task")
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass
        except Exception:
            if not self._closing:
                raise  # a real failure; during close() the node's handles vanish under the spin

    def _on_status(self, msg: TaskStatus):
        with self._lock:
            self._statuses.append(status_dict(msg))

    def _on_truth(self, msg: String):
        with self._lock:
            self._truth = msg

    def follow_json(self, topic: str, callback: Callable[[dict], None]):
        """Call `callback` with each JSON payload on a std_msgs/String topic (e.g. /arm/status)."""

        def parse(msg: String):
            try:
                callback(json.loads(msg.data))
            except json.JSONDecodeError:
                pass

        self.node.create_subscription(String, topic, parse, STATUS_QOS)

    def watch_camera(self, namespace: str):
        topic = CAMERA_TOPIC.format(namespace=namespace)

        def store(msg: Image):
            with self._lock:
                self._images[namespace] = msg

        self.node.create_subscription(Image, topic, store, SENSOR_QOS)

    def latest_image(self, namespace: str, newer_than_s: float = 0.0, timeout_s: float = 10.0) -> np.ndarray | None:
        """Newest RGB frame of a view, stamped after `newer_than_s` (ROS time of the stack)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                msg = self._images.get(namespace)
            if msg is not None and msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 > newer_than_s:
                return image_array(msg)
            time.sleep(0.05)
        return None

    def ground_truth(self, timeout_s: float = 10.0) -> dict | None:
        """Simulator ground truth: for evaluation and reports only."""
        msg = self.wait_for(lambda: self._truth, timeout_s)
        return json.loads(msg.data) if msg is not None else None

    def wait_for(self, condition: Callable[[], object], timeout_s: float, poll_s: float = 0.05,
                 give_up: Callable[[], bool] = lambda: False):
        """Poll `condition` (under the client's lock) until it is truthy, `give_up()` or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not give_up():
            with self._lock:
                value = condition()
            if value:
                return value
            time.sleep(poll_s)
        return None

    def wait_for_subscribers(self, timeout_s: float = 30.0, give_up: Callable[[], bool] = lambda: False) -> bool:
        """True once someone listens on /instruction (the stack is up)."""
        return bool(self.wait_for(lambda: self.instruction_pub.get_subscription_count() > 0, timeout_s,
                                  give_up=give_up))

    def wait_for_images(self, namespaces: list[str], timeout_s: float,
                        give_up: Callable[[], bool] = lambda: False) -> bool:
        """True once every view has delivered a frame (watch_camera first)."""
        return bool(self.wait_for(lambda: all(ns in self._images for ns in namespaces), timeout_s,
                                  give_up=give_up))

    def wait_until_idle(self, timeout_s: float, quiet_s: float = 2.0) -> bool:
        """True once every task seen on task/status has ended and none started for `quiet_s`."""
        def idle():
            last = {}
            for status in self._statuses:
                last[status["id"]] = status["state"]
            return all(state in protocol.TERMINAL_TASK_STATES for state in last.values())

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.wait_for(idle, deadline - time.monotonic()) is None:
                return False
            with self._lock:
                seen = len(self._statuses)
            time.sleep(quiet_s)
            with self._lock:
                if len(self._statuses) == seen and idle():
                    return True
        return False

    def say(self, text: str, timeout_s: float = 180.0,
            on_status: Callable[[dict], None] | None = None) -> dict | None:
        """Send an instruction and follow task/status until the task ends; returns the last status."""
        with self._lock:
            seen = len(self._statuses)
        self.instruction_pub.publish(String(data=text))
        task_id = None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                new, seen = self._statuses[seen:], len(self._statuses)
            for status in new:
                if task_id is None and status["instruction"] == text[:protocol.MAX_INSTRUCTION_CHARS]:
                    task_id = status["id"]
                if status["id"] != task_id:
                    continue
                if on_status is not None:
                    on_status(status)
                if status["state"] in protocol.TERMINAL_TASK_STATES:
                    return status
            time.sleep(0.05)
        return None

    def run_task(self, text: str, timeout_s: float = 180.0, on_status: Callable[[dict], None] | None = None,
                 cancel: threading.Event | None = None) -> ActionOutcome:
        """The instruction as a run_task goal: its feedback to `on_status` (a status dict), the
        goal canceled once `cancel` is set; the outcome's result is a RunTask.Result."""
        return self.task_action.call(RunTask.Goal(instruction=text), timeout_s, cancel=cancel,
                                     feedback=(lambda f: on_status(status_dict(f.status))) if on_status else None)

    def run_skill(self, executor: str, text: str, args: dict, timeout_s: float,
                  cancel: threading.Event | None = None) -> tuple[bool, str]:
        """One skill on the skill/<executor> action: (success, message)."""
        if executor not in self._skill_actions:
            self._skill_actions[executor] = ActionCaller(self.node, ExecuteSkill, f"/skill/{executor}",
                                                         f"'{executor}' skill")
        return self._skill_actions[executor].call(skill_goal(executor, text, args), timeout_s, cancel=cancel).verdict()

    def affordances(self, texts: list[str], timeout_s: float = 10.0) -> AffordanceQuery.Response | None:
        """CLIPort's p(success) per skill text, in one cliport/affordance call."""
        self.affordance_client.wait_for_service(timeout_sec=timeout_s)
        return call_service(self.affordance_client, AffordanceQuery.Request(texts=texts), timeout_s)

    def ask_attribute(self, question: str, timeout_s: float = 20.0) -> AttributeQuery.Response | None:
        """MIAVLM's answer to a yes/no question about an object, from attribute/check."""
        self.attribute_client.wait_for_service(timeout_sec=timeout_s)
        return call_service(self.attribute_client, AttributeQuery.Request(question=question), timeout_s)

    def cancel_task(self, timeout_s: float = 5.0) -> Trigger.Response | None:
        """Cancel the task the planner is running (/cancel_task), however it was sent."""
        return call_service(self.cancel_client, Trigger.Request(), timeout_s)

    def close(self):
        # Stop spinning before tearing down, or the spin thread races the node's destruction.
        self._closing = True
        self._executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()
        if self._owns_rclpy:
            rclpy.try_shutdown()
