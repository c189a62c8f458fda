"""franka_gripper_node: our gripper command (fr3_gripper/command, width in m) to franka_ros2.

The Franka Hand is driven through franka_msgs actions: an opening width becomes a Move
goal; a closing command (width below `grasp_below_m`) becomes a Grasp goal with a force
and wide tolerances, because the object's width is unknown. Only the newest command
matters: a command arriving while a goal runs replaces it once that goal ends.

/estop true refuses every command until it is false and calls franka_gripper's own stop
(`stop_service`, std_srvs/Trigger), which halts a move or grasp in progress; a goal that
was running is cancelled.

Where franka_msgs is not installed (franka_ros2 not sourced), the node stays up, says so
on /diagnostics and fr3_gripper/status, and refuses commands; it never crash-loops.
"""

from __future__ import annotations

import math
import threading
import time

from rclpy.action import ActionClient
from rclpy.node import Node
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import Trigger

from ros_vla.nodes.common import (
    COMMAND_QOS,
    STATUS_QOS,
    Diagnostics,
    Latest,
    declare,
    publish_json,
    run_node,
    start_worker,
)

try:
    from franka_msgs.action import Grasp, Move
except ImportError:
    Grasp = Move = None

MAX_WIDTH_M = 0.08


class FrankaGripperNode(Node):
    def __init__(self):
        super().__init__("franka_gripper")
        p = declare(self, grasp_action="franka_gripper/grasp", move_action="franka_gripper/move",
                    stop_service="franka_gripper/stop", speed_m_s=0.1, grasp_force_n=30.0, grasp_below_m=0.01,
                    grasp_epsilon_m=0.08, server_timeout_s=5.0, goal_timeout_s=10.0)
        self.p = p
        self.diag = Diagnostics(self, hardware_id="franka_hand")
        self.status_pub = self.create_publisher(String, "fr3_gripper/status", STATUS_QOS)
        self.command = Latest()
        self.new_command = threading.Event()
        self.estopped = threading.Event()
        self.stop_client = self.create_client(Trigger, p["stop_service"])
        self.create_subscription(Float64, "fr3_gripper/command", self.on_command, COMMAND_QOS)
        self.create_subscription(Bool, "estop", self.on_estop, COMMAND_QOS)
        if Grasp is None:
            self.grasp_client = self.move_client = None
            self.report("error", "franka_msgs is not installed: source franka_ros2's workspace; "
                                 "gripper commands are refused")
        else:
            self.grasp_client = ActionClient(self, Grasp, p["grasp_action"])
            self.move_client = ActionClient(self, Move, p["move_action"])
        self._running = True
        self._worker = start_worker(self, self.work, "gripper")

    def report(self, level: str, message: str, **extra):
        publish_json(self.status_pub, {"state": level, "message": message, **extra})
        self.diag.publish(level, message)

    def on_command(self, msg: Float64):
        self.command.set(msg.data)
        self.new_command.set()

    def on_estop(self, msg: Bool):
        if msg.data and not self.estopped.is_set():
            self.estopped.set()
            self.command.take()
            if self.stop_client.service_is_ready():
                self.stop_client.call_async(Trigger.Request()).add_done_callback(self.on_stopped)
                self.report("error", "emergency stop: gripper stopped, commands refused")
            else:
                self.report("error", f"emergency stop: commands refused; no '{self.p['stop_service']}' "
                                     "service to stop a motion in progress")
        elif not msg.data and self.estopped.is_set():
            self.estopped.clear()
            self.report("ok", "emergency stop released")

    def on_stopped(self, future):
        response = future.result()
        if response is not None and not response.success:
            self.report("error", f"franka_gripper could not stop: {response.message}")

    def work(self):
        while self._running:
            if not self.new_command.wait(timeout=0.1):
                continue
            self.new_command.clear()
            width = self.command.take()
            if width is None:
                continue
            if self.estopped.is_set():
                self.report("error", f"refused gripper width {width}: the emergency stop is engaged")
            elif self.grasp_client is None:
                self.report("error", f"refused gripper width {width}: franka_msgs is not installed")
            elif not math.isfinite(width) or not 0.0 <= width <= MAX_WIDTH_M:
                self.report("error", f"refused gripper width {width}: must be finite, 0..{MAX_WIDTH_M} m")
            else:
                self.execute(width)

    def execute(self, width: float):
        p = self.p
        if width < p["grasp_below_m"]:
            client, kind, action = self.grasp_client, "grasp", p["grasp_action"]
            goal = Grasp.Goal(width=width, speed=p["speed_m_s"], force=p["grasp_force_n"])
            goal.epsilon.inner = goal.epsilon.outer = p["grasp_epsilon_m"]
        else:
            client, kind, action = self.move_client, "move", p["move_action"]
            goal = Move.Goal(width=width, speed=p["speed_m_s"])
        if not client.wait_for_server(timeout_sec=p["server_timeout_s"]):
            self.report("error", f"no {kind} action server on '{action}': is franka_gripper running?")
            return
        accepted = self.wait(client.send_goal_async(goal), p["server_timeout_s"])
        if accepted is None or not accepted.accepted:
            self.report("error", f"{kind} to {width:.3f} m was rejected")
            return
        outcome = self.wait(accepted.get_result_async(), p["goal_timeout_s"], give_up=self.estopped.is_set)
        if self.estopped.is_set():
            accepted.cancel_goal_async()
            self.report("error", f"{kind} to {width:.3f} m cancelled by the emergency stop")
            return
        if outcome is None:
            self.report("error", f"{kind} to {width:.3f} m did not finish in {p['goal_timeout_s']:.0f} s")
            return
        result = outcome.result
        level = "ok" if result.success else "warn"
        self.report(level, f"{kind} to {width:.3f} m: " + ("done" if result.success else result.error),
                    kind=kind, width_m=width, success=result.success)

    @staticmethod
    def wait(future, timeout_s: float, give_up=lambda: False):
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline and not give_up():
            time.sleep(0.01)
        return future.result() if future.done() else None

    def close(self):
        self._running = False
        self._worker.join(timeout=2.0)


def main(args=None) -> int:
    return run_node(FrankaGripperNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
