"""safety_gate_node: the one way commands leave the stack for the robot's controllers.

Inputs (safe entry points: arm_motion and base_motion send here, and anyone else may):
  safety/joint_trajectory (JointTrajectory), safety/gripper (Float64 opening width, m),
  safety/cmd_vel (TwistStamped), /estop (Bool), /joint_states.
Outputs, while armed and not stopped: fr3_arm_controller/joint_trajectory,
  fr3_gripper/command, cmd_vel (TwistStamped, or Twist with cmd_vel_stamped false);
  while disarmed (dry run) the same commands go to arm/preview/joint_trajectory,
  arm/preview/gripper and base/preview/cmd_vel. safety/status (latched JSON, on every
  change and each monitor period), safety/refused (JSON per refused command), /diagnostics.

Every command is checked here whoever produced it (ros_vla.robot.gate): joint names,
finite values, position limits, each segment's speed (also from where the arm is now), the
tool inside the workspace along the whole path, the gripper's travel, the base's speed and
acceleration (limited at `rate_hz`, zero when its input goes stale), and header stamps
(stale, future, out-of-order and repeated commands are refused). A trajectory goes out
with positions and times only.

/estop true: the arm holds where it is, the base gets zero, every command is refused, and
where a `controller_manager` is named (the robot) its switch_controller deactivates
`stop_controllers`. With `rearm_after_estop` (the robot) a released stop resumes nothing:
arm again (`armed` parameter or ~/set_armed), which runs franka's error recovery
(`error_recovery_action`) and reactivates the controllers first.

Every second the gate also lists who else publishes on the controller topics: they
bypass it, and /diagnostics says so by name.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Twist, TwistStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_vla.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    STATUS_QOS,
    Diagnostics,
    Latest,
    QueueWorker,
    declare,
    offer_arming_service,
    publish_json,
    run_node,
)
from ros_vla.perception.ros_messages import duration_msg, time_seconds
from ros_vla.robot import panda
from ros_vla.robot.gate import (
    ArmGateLimits,
    Arming,
    StampCheck,
    gripper_problem,
    hold_point,
    joint_state_positions,
    trajectory_problems,
)
from ros_vla.robot.safety import BaseVelocityLimiter, Watchdog, WorkspaceBox, finite

try:
    from controller_manager_msgs.srv import SwitchController
except ImportError:
    SwitchController = None
try:
    from franka_msgs.action import ErrorRecovery
except ImportError:
    ErrorRecovery = None

REFUSAL_LOG_PERIOD_S = 1.0
HOLD_S = 0.05  # a hold is a one-point trajectory to where the arm is, this far ahead


def duration_s(duration) -> float:
    return duration.sec + duration.nanosec * 1e-9


class ControllerSwitch:
    """ros2_control's controller_manager (switch_controller) and franka_ros2's error
    recovery, called from the gate's worker thread; the executor completes the futures."""

    def __init__(self, node: Node, manager: str, controllers: list[str], recovery_action: str, timeout_s: float):
        from rclpy.action import ActionClient

        self.node = node
        self.controllers = controllers
        self.timeout_s = timeout_s
        self.switch = node.create_client(SwitchController, f"{manager.rstrip('/')}/switch_controller")
        self.recovery = (ActionClient(node, ErrorRecovery, recovery_action)
                         if recovery_action and ErrorRecovery is not None else None)
        self.recovery_action = recovery_action

    def _wait(self, future):
        deadline = time.monotonic() + self.timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        return future.result() if future.done() else None

    def set_active(self, active: bool) -> tuple[bool, str]:
        verb = "activate" if active else "deactivate"
        if not self.switch.wait_for_service(timeout_sec=self.timeout_s):
            return False, f"{self.switch.srv_name} is not available: controllers not {verb}d"
        request = SwitchController.Request(strictness=SwitchController.Request.BEST_EFFORT,
                                           timeout=Duration(sec=int(self.timeout_s)))
        if active:
            request.activate_controllers = self.controllers
        else:
            request.deactivate_controllers = self.controllers
        response = self._wait(self.switch.call_async(request))
        if response is None:
            return False, f"{self.switch.srv_name} did not answer in {self.timeout_s:.0f} s"
        if not response.ok:
            return False, f"controller_manager could not {verb} {self.controllers}: {response.message}"
        return True, f"{verb}d {self.controllers}"

    def recover(self) -> tuple[bool, str]:
        """franka's automatic error recovery, where configured; a missing server is no error
        (robots without it have nothing to recover)."""
        if self.recovery is None:
            return True, "no error recovery configured"
        if not self.recovery.wait_for_server(timeout_sec=self.timeout_s):
            return True, f"no error recovery server on '{self.recovery_action}'"
        handle = self._wait(self.recovery.send_goal_async(ErrorRecovery.Goal()))
        if handle is None or not handle.accepted:
            return False, "error recovery was rejected"
        if self._wait(handle.get_result_async()) is None:
            return False, f"error recovery did not finish in {self.timeout_s:.0f} s"
        return True, "errors recovered"


class SafetyGateNode(Node):
    def __init__(self):
        super().__init__("safety_gate")
        p = declare(
            self, armed=True, rearm_after_estop=False, rate_hz=50.0, velocity_scale=0.5,
            workspace_min=[-0.2, -0.7, 0.0], workspace_max=[0.9, 0.7, 0.9], joint_state_timeout_s=0.5,
            max_command_age_s=0.5, max_trajectory_points=1000, max_linear=0.5, max_angular=1.0,
            max_linear_accel=0.5, max_angular_accel=1.5, cmd_timeout_s=0.5, cmd_vel_stamped=True,
            controller_manager="", stop_controllers=["fr3_arm_controller"], error_recovery_action="",
            service_timeout_s=2.0, monitor_period_s=1.0,
        )
        self.limits = ArmGateLimits(
            workspace=WorkspaceBox(tuple(p["workspace_min"]), tuple(p["workspace_max"])),
            velocity_scale=p["velocity_scale"], max_points=p["max_trajectory_points"])
        self.arming = Arming(p["armed"], p["rearm_after_estop"])
        self.lock = threading.Lock()  # arming is changed by callbacks and by the controller worker
        self.period_s = 1.0 / p["rate_hz"]
        self.joint_state_timeout_s = p["joint_state_timeout_s"]
        self.limiter = BaseVelocityLimiter(p["max_linear"], p["max_angular"], p["max_linear_accel"],
                                           p["max_angular_accel"])
        self.base_watchdog = Watchdog(p["cmd_timeout_s"])
        self.trajectory_stamps = StampCheck(p["max_command_age_s"], p["max_command_age_s"])
        self.base_stamps = StampCheck(p["max_command_age_s"], p["max_command_age_s"])
        self.diag = Diagnostics(self)
        self.refused = {"joint_trajectory": 0, "gripper": 0, "cmd_vel": 0, "joint_states": 0}
        self.refusal_log: dict[str, tuple[float, int]] = {}  # command -> (last logged, refused since)
        self.controllers = "unmanaged"  # or: active, stopping, stopped, starting
        self.bypassing: dict[str, list[str]] = {}

        self.cmd_vel_stamped = bool(p["cmd_vel_stamped"])
        cmd_type = TwistStamped if self.cmd_vel_stamped else Twist
        self.trajectory_pub = self.create_publisher(JointTrajectory, "fr3_arm_controller/joint_trajectory",
                                                    COMMAND_QOS)
        self.gripper_pub = self.create_publisher(Float64, "fr3_gripper/command", COMMAND_QOS)
        self.cmd_pub = self.create_publisher(cmd_type, "cmd_vel", COMMAND_QOS)
        self.preview_trajectory_pub = self.create_publisher(JointTrajectory, "arm/preview/joint_trajectory",
                                                            COMMAND_QOS)
        self.preview_gripper_pub = self.create_publisher(Float64, "arm/preview/gripper", COMMAND_QOS)
        self.preview_cmd_pub = self.create_publisher(cmd_type, "base/preview/cmd_vel", COMMAND_QOS)
        self.status_pub = self.create_publisher(String, "safety/status", LATCHED_QOS)
        self.refused_pub = self.create_publisher(String, "safety/refused", STATUS_QOS)

        self.joint_state = Latest()  # (q in ARM_JOINT_NAMES order, monotonic arrival time)
        self.base_command = Latest()
        self.create_subscription(JointState, "joint_states", self.on_joint_state, SENSOR_QOS)
        self.create_subscription(Bool, "estop", self.on_estop, COMMAND_QOS)
        self.create_subscription(JointTrajectory, "safety/joint_trajectory", self.on_trajectory, COMMAND_QOS)
        self.create_subscription(Float64, "safety/gripper", self.on_gripper, COMMAND_QOS)
        self.create_subscription(TwistStamped, "safety/cmd_vel", self.on_cmd_vel, COMMAND_QOS)
        self.add_on_set_parameters_callback(self.on_parameters)
        offer_arming_service(self)

        self.switch = None
        if p["controller_manager"]:
            if SwitchController is None:
                self.diag.publish("error", "controller_manager_msgs is not installed: /estop cannot stop the "
                                           "controllers (source ros2_control's workspace)")
            else:
                controllers = [c for c in p["stop_controllers"] if c]
                self.switch = ControllerSwitch(self, p["controller_manager"], controllers,
                                               p["error_recovery_action"], p["service_timeout_s"])
                self.controllers = "active"
        # Deep enough that no stop is ever dropped: filling it takes minutes of /estop toggling.
        self.worker = QueueWorker(self, self.switch_controllers, "controllers", max_pending=10_000)
        self.create_timer(self.period_s, self.control_base)
        self.create_timer(p["monitor_period_s"], self.monitor)
        self.publish_status("ready" if self.arming.armed else "dry run: not armed")

    # ----------------------------------------------------------------- state and reports
    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def fresh_q(self) -> np.ndarray | None:
        latest = self.joint_state.get()
        if latest is None or time.monotonic() - latest[1] > self.joint_state_timeout_s:
            return None
        return latest[0]

    def publish_status(self, message: str):
        with self.lock:
            state = {"armed": self.arming.armed, "estop": self.arming.estopped,
                     "forwarding": self.arming.forwarding}
        publish_json(self.status_pub, {**state, "controllers": self.controllers, "message": message,
                                       "refused": dict(self.refused), "bypassing": self.bypassing})

    def refuse(self, command: str, reason: str, stamp_s: float = 0.0):
        """Every refusal goes on safety/refused; the log and /diagnostics get at most one per
        command kind and second (with how many more), so a flood does not become a load."""
        self.refused[command] += 1
        publish_json(self.refused_pub, {"command": command, "stamp": stamp_s, "reason": reason[:1000]})
        now = time.monotonic()
        last_logged, unlogged = self.refusal_log.get(command, (-math.inf, 0))
        if now - last_logged < REFUSAL_LOG_PERIOD_S:
            self.refusal_log[command] = (last_logged, unlogged + 1)
            return
        more = f" ({unlogged} more refused in the last {now - last_logged:.0f} s)" if unlogged else ""
        self.refusal_log[command] = (now, 0)
        self.diag.publish("error", f"refused {command}: {reason}"[:1000] + more)

    def monitor(self):
        """Name everyone who publishes on a controller topic but the gate: they bypass it."""
        bypassing = {}
        for publisher in (self.trajectory_pub, self.gripper_pub, self.cmd_pub):
            others = sorted({f"{info.node_namespace.rstrip('/')}/{info.node_name}"
                             for info in self.get_publishers_info_by_topic(publisher.topic_name)
                             if (info.node_name, info.node_namespace) != (self.get_name(), self.get_namespace())})
            if others:
                bypassing[publisher.topic_name] = others
        if bypassing != self.bypassing and bypassing:
            self.diag.publish("warn", "commands that bypass the safety gate can reach the controllers: "
                              + "; ".join(f"{topic} from {', '.join(nodes)}" for topic, nodes in bypassing.items()))
        self.bypassing = bypassing
        with self.lock:
            message = ("emergency stop" if self.arming.estopped else
                       "forwarding to the controllers" if self.arming.forwarding else "dry run: not armed")
        self.publish_status(message)

    # ----------------------------------------------------------------- inputs
    def on_joint_state(self, msg: JointState):
        q, problem = joint_state_positions(msg.name, msg.position, self.limits.joint_limits,
                                           self.limits.joint_state_tolerance_rad)
        if problem:
            self.refused["joint_states"] += 1
            return
        self.joint_state.set((q, time.monotonic()))

    def on_estop(self, msg: Bool):
        if msg.data:
            with self.lock:
                was_forwarding = self.arming.forwarding
                engaged = self.arming.engage_estop()
                disarmed = not self.arming.armed
            if not engaged:
                return
            if disarmed:
                self.set_parameters([Parameter("armed", value=False)])  # so arming again is a change
            q_now = self.fresh_q()
            if was_forwarding and q_now is not None:
                self.trajectory_pub.publish(self.hold_trajectory(q_now))
            self.publish_velocity(self.cmd_pub, (0.0, 0.0, 0.0))
            self.limiter.reset()
            self.diag.publish("error", "emergency stop engaged: holding, base stopped, every command refused")
            self.publish_status("emergency stop engaged")
            if self.switch is not None and not self.worker.put("stop"):
                self.diag.publish("error", "emergency stop: cannot queue the controller stop; commands are "
                                           "refused, use the hardware stop if the robot moves")
        else:
            with self.lock:
                released = self.arming.release_estop()
                armed = self.arming.armed
            if released:
                message = "emergency stop released" + ("" if armed else ": arm again to resume")
                self.diag.publish("ok", message)
                self.publish_status(message)

    def on_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name != "armed":
                continue
            if not param.value:
                with self.lock:
                    self.arming.armed = False
                self.get_logger().warning("disarmed: dry run, commands go to the preview topics")
                continue
            with self.lock:
                refusal = self.arming.arm_refusal()
                already = self.arming.armed
            if refusal:
                return SetParametersResult(successful=False, reason=refusal)
            if not already and not self.worker.put("start"):
                return SetParametersResult(successful=False, reason="busy switching controllers; try again")
        return SetParametersResult(successful=True)

    def on_trajectory(self, msg: JointTrajectory):
        stamp_s = time_seconds(msg.header.stamp)
        with self.lock:
            estopped = self.arming.estopped
        if estopped:
            self.refuse("joint_trajectory", "the emergency stop is engaged", stamp_s)
            return
        problems = []
        for number, point in enumerate(msg.points[:self.limits.max_points]):
            for field in ("velocities", "accelerations", "effort"):
                if not finite(list(getattr(point, field))):
                    problems.append(f"point {number}: {field} are not finite")
        points = [(list(point.positions), duration_s(point.time_from_start)) for point in msg.points]
        problems += trajectory_problems(list(msg.joint_names), points, self.fresh_q(), self.limits)
        content = (tuple(msg.joint_names), tuple((tuple(q), t) for q, t in points[:self.limits.max_points]))
        stamp_problem = self.trajectory_stamps.problem(stamp_s, self.now_s(), content)
        if stamp_problem:
            problems.append(stamp_problem)
        if problems:
            self.refuse("joint_trajectory", "; ".join(problems), stamp_s)
            return
        self.trajectory_stamps.accept(stamp_s, content)
        out = JointTrajectory(header=msg.header, joint_names=list(msg.joint_names),
                              points=[JointTrajectoryPoint(positions=list(p.positions),
                                                           time_from_start=p.time_from_start) for p in msg.points])
        with self.lock:
            forwarding = self.arming.forwarding
        (self.trajectory_pub if forwarding else self.preview_trajectory_pub).publish(out)

    def on_gripper(self, msg: Float64):
        with self.lock:
            estopped, forwarding = self.arming.estopped, self.arming.forwarding
        problem = "the emergency stop is engaged" if estopped else gripper_problem(msg.data, self.limits)
        if problem:
            self.refuse("gripper", problem)
            return
        (self.gripper_pub if forwarding else self.preview_gripper_pub).publish(Float64(data=float(msg.data)))

    def on_cmd_vel(self, msg: TwistStamped):
        stamp_s = time_seconds(msg.header.stamp)
        command = (msg.twist.linear.x, msg.twist.linear.y, msg.twist.angular.z)
        if self.base_stamps.is_repeat(stamp_s, command):
            # A sender on sim time may tick twice in one clock step: the same command again
            # changes nothing, and must not keep the watchdog fed either.
            return
        problem = self.base_stamps.problem(stamp_s, self.now_s(), command)
        if not problem and not finite(command):
            problem = f"velocity {command} is not finite"
        if problem:
            # The sender has moved on from its last accepted command (or is broken): keeping
            # that one in force until the watchdog fires overshoots; the base slows down instead.
            self.base_command.set((0.0, 0.0, 0.0))
            self.refuse("cmd_vel", problem, stamp_s)
            return
        self.base_stamps.accept(stamp_s, command)
        self.base_command.set(command)
        self.base_watchdog.feed(time.monotonic())

    # ----------------------------------------------------------------- outputs
    def hold_trajectory(self, q_now: np.ndarray) -> JointTrajectory:
        msg = JointTrajectory(joint_names=list(panda.ARM_JOINT_NAMES))
        msg.header.stamp = self.get_clock().now().to_msg()
        q_hold, hold_s = hold_point(q_now, self.limits, HOLD_S)
        msg.points = [JointTrajectoryPoint(positions=[float(v) for v in q_hold],
                                           time_from_start=duration_msg(hold_s))]
        return msg

    def publish_velocity(self, publisher, velocity):
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.angular.z = (float(v) for v in velocity)
        if self.cmd_vel_stamped:
            msg = TwistStamped(twist=twist)
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = "base_link"
        else:
            msg = twist
        publisher.publish(msg)

    def control_base(self):
        """Every period: the limited newest command, or zero when it went stale or under /estop."""
        with self.lock:
            estopped, forwarding = self.arming.estopped, self.arming.forwarding
        if estopped:
            self.limiter.reset()
            self.publish_velocity(self.cmd_pub, (0.0, 0.0, 0.0))
            return
        command = self.base_command.get()
        if command is None or self.base_watchdog.expired(time.monotonic()):
            self.limiter.reset()
            velocity = (0.0, 0.0, 0.0)
        else:
            velocity = self.limiter.step(*command, dt=self.period_s)
        self.publish_velocity(self.cmd_pub if forwarding else self.preview_cmd_pub, velocity)

    # ----------------------------------------------------------------- the robot's controllers
    def switch_controllers(self, action: str):
        """Worker: "stop" deactivates the controllers (retried while the stop lasts), "start"
        recovers errors and activates them, then arms."""
        if action == "stop":
            self.controllers = "stopping"
            while True:
                ok, message = self.switch.set_active(False) if self.switch else (True, "no controller manager")
                if ok:
                    self.controllers = "stopped"
                    self.diag.publish("warn", f"emergency stop: {message}")
                    break
                self.diag.publish("error", f"emergency stop: {message}; retrying (the gate refuses every "
                                           "command meanwhile; use the hardware stop if the robot moves)")
                with self.lock:
                    if not self.arming.estopped:
                        break
                time.sleep(1.0)
            self.publish_status(f"emergency stop: controllers {self.controllers}")
            return
        if self.switch is not None and self.controllers != "active":
            self.controllers = "starting"
            for step in (self.switch.recover, lambda: self.switch.set_active(True)):
                ok, message = step()
                if not ok:
                    self.controllers = "stopped"
                    self.diag.publish("error", f"not armed: {message}")
                    self.set_parameters([Parameter("armed", value=False)])
                    self.publish_status(f"not armed: {message}")
                    return
            self.controllers = "active"
        with self.lock:
            if self.arming.estopped:
                return
            self.arming.armed = True
        self.get_logger().warning("ARMED: commands go to the controllers")
        self.publish_status("armed")

    def close(self):
        self.worker.close()


def main(args=None) -> int:
    return run_node(SafetyGateNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
