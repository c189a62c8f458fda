"""arm_motion_node: Cartesian goals in, safe joint trajectories out.

Inputs: the arm/pick_and_place action (ros_vla_interfaces/PickPlace: feedback per motion
step; cancel holds the arm where it is), arm/pose_goal (PoseStamped), arm/ee_delta
(TransformStamped, streamed by closed-loop policies), arm/gripper (Float64 width, from
policies), arm/pick_place (JSON, the compatibility layer: protocol.py), arm/joint_trajectory
(checked, then forwarded), /estop (Bool), /joint_states, and the safety gate's safety/status
(armed or dry run) and safety/refused.
Output: safety/joint_trajectory and safety/gripper, which safety_gate checks again and
forwards to the controllers while armed (to arm/preview/* in a dry run).
Every refusal goes to arm/status, /diagnostics and the goal's result (the action's, or
arm/result for a JSON goal).

Callbacks only queue goals; one worker thread plans and executes them, so a long
pick/place never blocks /estop, which aborts the goal at once (the safety gate and the
controllers hold the arm).
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from geometry_msgs.msg import PoseStamped, TransformStamped
from rclpy.node import Node
from ros_vla_interfaces.action import PickPlace
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_vla import protocol
from ros_vla.nodes.actions import WorkerActionServer
from ros_vla.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    STATUS_QOS,
    Diagnostics,
    Latest,
    QueueWorker,
    declare,
    publish_json,
    run_node,
    when_heard,
)
from ros_vla.perception.ros_messages import duration_msg, matrix_from_transform, time_seconds
from ros_vla.robot import panda
from ros_vla.robot.gate import joint_state_positions
from ros_vla.robot.motion import (
    MotionConfig,
    Plan,
    apply_ee_delta,
    check_pick_place_targets,
    pick_place_steps,
    plan_cartesian_line,
    plan_joint_move,
    plan_pose_goal,
)
from ros_vla.robot.safety import (
    JointLimits,
    Watchdog,
    WorkspaceBox,
    reorder_positions,
    validate_joint_trajectory,
)

ACCEPTED_FRAMES = ("fr3_link0", "")


class MotionAborted(Exception):
    pass


@dataclass
class Goal:
    kind: str  # "pose", "pick_place" or "trajectory"
    goal_id: str
    payload: object
    queued_at: float = field(default_factory=time.monotonic)
    # Told once how the goal ended (the action's result, or arm/result); later calls are ignored.
    answer: Callable[[bool, str], None] = lambda success, message: None
    canceled: threading.Event = field(default_factory=threading.Event)
    report: Callable[[str, float], None] = lambda phase, progress: None
    answered: bool = False

    def finish(self, success: bool, message: str):
        if not self.answered:
            self.answered = True
            self.answer(success, message)


class ArmMotionNode(Node):
    def __init__(self):
        super().__init__("arm_motion")
        p = declare(
            self, velocity_scale=0.4, workspace_min=[-0.2, -0.7, 0.0],
            workspace_max=[0.9, 0.7, 0.9], approach_height_m=0.12, place_clearance_m=0.03,
            ee_delta_timeout_s=0.5, ee_delta_period_s=0.1, joint_state_timeout_s=0.5, joint_state_wait_s=1.0,
            position_tolerance_rad=0.01, settle_timeout_s=3.0, gripper_settle_s=0.6,
            ready_pose=list(panda.READY_POSE),
        )
        self.cfg = MotionConfig(
            workspace=WorkspaceBox(tuple(p["workspace_min"]), tuple(p["workspace_max"])),
            velocity_scale=p["velocity_scale"], approach_height_m=p["approach_height_m"],
            place_clearance_m=p["place_clearance_m"],
        )
        self.limits = JointLimits()
        self.armed = False  # the safety gate's word, from safety/status; a dry run until it says
        self.ready_pose = np.asarray(p["ready_pose"], float)
        self.ee_delta_period_s = p["ee_delta_period_s"]
        self.ee_delta_watchdog = Watchdog(p["ee_delta_timeout_s"])
        self.joint_state_timeout_s = p["joint_state_timeout_s"]
        self.joint_state_wait_s = p["joint_state_wait_s"]
        self.position_tolerance = p["position_tolerance_rad"]
        self.settle_timeout_s = p["settle_timeout_s"]
        self.gripper_settle_s = p["gripper_settle_s"]
        self.diag = Diagnostics(self)

        self.trajectory_pub = self.create_publisher(JointTrajectory, "safety/joint_trajectory", COMMAND_QOS)
        self.gripper_pub = self.create_publisher(Float64, "safety/gripper", COMMAND_QOS)
        self.status_pub = self.create_publisher(String, "arm/status", STATUS_QOS)
        self.result_pub = self.create_publisher(String, "arm/result", STATUS_QOS)

        self.joint_state = Latest()
        self.joint_state_received = Latest(0.0)
        self.estopped = threading.Event()
        self.estop_engaged_at = -math.inf  # goals queued before it never run
        self.sent_stamp_s = Latest(None)  # stamp of the newest trajectory sent to the gate
        self.gate_refusal = Latest("")  # the gate refused that trajectory: why
        self.current_goal: Goal | None = None
        self.busy = threading.Event()  # a queued goal is executing: streamed deltas are refused
        self.holding_for_stale_delta = False
        self.ee_delta = Latest()
        self.create_subscription(JointState, "joint_states", self.on_joint_state, SENSOR_QOS)
        self.create_subscription(Bool, "estop", self.on_estop, COMMAND_QOS)
        self.create_subscription(PoseStamped, "arm/pose_goal", self.on_pose_goal, COMMAND_QOS)
        self.create_subscription(TransformStamped, "arm/ee_delta", self.on_ee_delta, COMMAND_QOS)
        self.create_subscription(String, "arm/pick_place", self.on_pick_place, COMMAND_QOS)
        self.create_subscription(JointTrajectory, "arm/joint_trajectory", self.on_joint_trajectory, COMMAND_QOS)
        self.create_subscription(Float64, "arm/gripper", self.on_gripper, COMMAND_QOS)
        self.create_subscription(String, "safety/status", self.on_gate_status, LATCHED_QOS)
        self.create_subscription(String, "safety/refused", self.on_gate_refusal, STATUS_QOS)
        self.create_timer(self.ee_delta_period_s, self.step_ee_delta)

        self.goals = QueueWorker(self, self.work, "motion")
        WorkerActionServer(self, PickPlace, "arm/pick_and_place", self.submit_pick_place,
                           lambda message: PickPlace.Result(success=False, message=message, gripper_width_m=math.nan))
        self.status_published = False
        when_heard(self, self.status_pub, self.announce_ready)

    # ----------------------------------------------------------------- inputs
    def on_gate_status(self, msg: String):
        try:
            armed = protocol.decode("safety_status", msg.data)["armed"]
        except protocol.ProtocolError as err:
            self.diag.publish("warn", f"ignoring a malformed safety/status: {err}")
            return
        if armed != self.armed:
            self.armed = armed
            self.get_logger().info("the safety gate is armed: motions reach the controller" if armed
                                   else "dry run: the safety gate is not armed")

    def on_gate_refusal(self, msg: String):
        """The gate refused a trajectory: if it is ours, the motion waiting for it fails now."""
        try:
            refusal = protocol.decode("safety_refusal", msg.data)
        except protocol.ProtocolError:
            return
        if refusal["command"] == "joint_trajectory" and refusal["stamp"] == self.sent_stamp_s.get():
            self.gate_refusal.set(refusal["reason"])

    def on_joint_state(self, msg: JointState):
        """Only well-formed states: one with NaN or missing joints must not become "where the arm is"."""
        _, problem = joint_state_positions(msg.name, msg.position)
        if problem:
            return
        self.joint_state.set(msg)
        self.joint_state_received.set(time.monotonic())

    def on_estop(self, msg: Bool):
        if msg.data and not self.estopped.is_set():
            self.estop_engaged_at = time.monotonic()
            self.estopped.set()
            self.publish_status("stopped", "emergency stop: holding position, goals refused until /estop is false")
            self.diag.publish("error", "emergency stop engaged")
        elif not msg.data and self.estopped.is_set():
            self.estopped.clear()
            self.publish_status("idle", "emergency stop released")
            self.diag.publish("ok", "emergency stop released")

    def on_pose_goal(self, msg: PoseStamped):
        if msg.header.frame_id not in ACCEPTED_FRAMES:
            self.refuse(f"pose goal frame '{msg.header.frame_id}' unsupported: give it in fr3_link0")
            return
        pose = msg.pose
        transform = TransformStamped().transform
        transform.translation.x, transform.translation.y, transform.translation.z = (
            pose.position.x, pose.position.y, pose.position.z)
        transform.rotation = pose.orientation
        try:
            target = matrix_from_transform(transform)
        except ValueError as err:
            self.refuse(f"pose goal refused: {err}")
            return
        self.queue_goal(Goal("pose", "", target))

    def on_ee_delta(self, msg: TransformStamped):
        """Keep only the newest displacement; the control timer executes it."""
        self.ee_delta.set(msg)

    def step_ee_delta(self):
        """Control tick for streamed displacements (the IK runs here, never in a callback);
        a stream that goes silent makes the arm hold instead of drifting."""
        msg = self.ee_delta.take()
        if msg is None:
            if self.ee_delta_watchdog.expired(time.monotonic()) and not self.holding_for_stale_delta:
                if self.ee_delta_watchdog.seconds_since_feed(time.monotonic()) != float("inf"):
                    self.holding_for_stale_delta = True
                    # A goal that started since owns the arm: holding would cut its motion short.
                    if not self.busy.is_set():
                        self.hold_position()
                        self.diag.publish("warn", "ee_delta stream went stale: holding position")
            return
        if msg.header.frame_id not in ACCEPTED_FRAMES:
            self.refuse(f"ee_delta frame '{msg.header.frame_id}' unsupported: give it in fr3_link0")
            return
        if self.estopped.is_set() or self.busy.is_set():
            self.refuse("ee_delta refused: " + ("emergency stop" if self.estopped.is_set() else "busy with a goal"))
            return
        q_now = self.current_positions()
        if q_now is None:
            self.refuse("ee_delta refused: no fresh /joint_states")
            return
        try:
            delta = matrix_from_transform(msg.transform)
        except ValueError as err:
            self.refuse(f"ee_delta refused: {err}")
            return
        plan = apply_ee_delta(q_now, delta[:3, 3], delta[:3, :3], self.ee_delta_period_s, self.cfg)
        if not plan.ok:
            self.refuse(f"ee_delta refused: {plan.message}")
            return
        self.ee_delta_watchdog.feed(time.monotonic())
        self.holding_for_stale_delta = False
        self.send_trajectory(plan)

    def on_pick_place(self, msg: String):
        try:
            request = protocol.decode("pick_place", msg.data)
        except protocol.ProtocolError as err:
            self.refuse(f"pick_place refused: {err}")
            return

        def answer(success: bool, message: str, goal_id=request["id"]):
            publish_json(self.result_pub, {"id": goal_id, "success": success, "message": message,
                                           "gripper_width_m": self.gripper_width()})

        goal = Goal("pick_place", request["id"], request, answer=answer)
        if request["frame"] not in ACCEPTED_FRAMES:
            self.refuse(f"pick_place frame '{request['frame']}' unsupported: use fr3_link0", goal)
            return
        self.queue_goal(goal)

    def submit_pick_place(self, run) -> str:
        """An arm/pick_and_place goal: checked like the JSON request, then queued."""
        goal = run.goal
        if goal.frame_id not in ACCEPTED_FRAMES:
            return f"pick_place frame '{goal.frame_id}' unsupported: use fr3_link0"
        request = {"id": uuid.uuid4().hex[:8], "frame": "fr3_link0",
                   "pick": {"xyz": [goal.pick_position.x, goal.pick_position.y, goal.pick_position.z],
                            "yaw": goal.pick_yaw},
                   "place": {"xyz": [goal.place_position.x, goal.place_position.y, goal.place_position.z],
                             "yaw": goal.place_yaw}}
        try:
            protocol.encode("pick_place", request)
        except protocol.ProtocolError as err:
            return f"pick_place refused: {err}"

        def answer(success: bool, message: str):
            width = self.gripper_width()
            run.finish(PickPlace.Result(success=success, message=message,
                                        gripper_width_m=math.nan if width is None else width), success)

        def report(phase: str, progress: float):
            run.feedback(PickPlace.Feedback(phase=phase, progress=float(progress)))

        if not self.queue_goal(Goal("pick_place", request["id"], request, answer=answer,
                                    canceled=run.cancel_requested, report=report)):
            return "pick_place refused: too many goals already waiting"
        return ""

    def on_gripper(self, msg: Float64):
        """Gripper width from a closed-loop policy: gated like every other command."""
        width = msg.data
        if self.estopped.is_set() or self.busy.is_set():
            self.refuse("gripper command refused: " + ("emergency stop" if self.estopped.is_set()
                                                          else "busy with a goal"))
        elif not (np.isfinite(width) and self.cfg.gripper_closed_m <= width <= self.cfg.gripper_open_m):
            self.refuse(f"gripper command {width} refused: must be finite, "
                            f"{self.cfg.gripper_closed_m}..{self.cfg.gripper_open_m} m")
        else:
            self.send_gripper(width)

    def on_joint_trajectory(self, msg: JointTrajectory):
        self.queue_goal(Goal("trajectory", "", msg))

    def queue_goal(self, goal: Goal) -> bool:
        if not self.goals.put(goal):
            self.refuse(f"{goal.kind} goal refused: too many goals already waiting", goal)
            return False
        return True

    # ----------------------------------------------------------------- state helpers
    def current_positions(self) -> np.ndarray | None:
        msg = self.joint_state.get()
        if msg is None or time.monotonic() - self.joint_state_received.get() > self.joint_state_timeout_s:
            return None
        try:
            arm = {n: q for n, q in zip(msg.name, msg.position) if n in panda.ARM_JOINT_NAMES}
            return reorder_positions(list(arm), list(arm.values()), panda.ARM_JOINT_NAMES)
        except ValueError:
            return None

    def positions_to_plan_from(self, what: str) -> np.ndarray:
        """The arm's fresh joint positions, waiting up to joint_state_wait_s for them: a plan
        must start where the arm is, and between two steps of a goal (the arm still) a
        driver's or a loaded machine's short gap in /joint_states is not worth failing for."""
        deadline = time.monotonic() + self.joint_state_wait_s
        while (q_now := self.current_positions()) is None:
            if self.estopped.is_set():
                raise MotionAborted(f"{what}: interrupted by emergency stop")
            if time.monotonic() > deadline:
                raise MotionAborted(f"{what}: no fresh /joint_states for {self.joint_state_wait_s:g} s; "
                                    f"not planning from an unknown position")
            time.sleep(0.02)
        return q_now

    def gripper_width(self) -> float | None:
        msg = self.joint_state.get()
        if msg is None:
            return None
        fingers = [q for n, q in zip(msg.name, msg.position) if n in panda.FINGER_JOINT_NAMES]
        return float(sum(fingers)) if len(fingers) == 2 else None

    # ----------------------------------------------------------------- outputs
    def announce_ready(self):
        """The first status, unless a goal has already said more."""
        if not self.status_published:
            self.publish_status("idle", "ready")

    def publish_status(self, state: str, message: str, **extra):
        self.status_published = True
        goal_id = self.current_goal.goal_id if self.current_goal else ""
        publish_json(self.status_pub, {"state": state, "message": message, "goal_id": goal_id,
                                       "armed": self.armed, **extra})

    def refuse(self, message: str, goal: Goal | None = None):
        self.publish_status("refused", message)
        self.diag.publish("error", message)
        if goal is not None:
            goal.finish(False, message)

    def trajectory_msg(self, plan: Plan) -> JointTrajectory:
        msg = JointTrajectory()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.joint_names = list(panda.ARM_JOINT_NAMES)
        for q, t in plan.points:
            msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in q], time_from_start=duration_msg(t)))
        return msg

    def send_trajectory(self, plan: Plan) -> bool:
        """Last check before the controller: the plan must pass the same validation the
        controller applies, from the arm's current state."""
        q_now = self.current_positions()
        points = [(q.tolist(), t) for q, t in plan.points]
        errors = validate_joint_trajectory(panda.ARM_JOINT_NAMES, points, self.limits,
                                           panda.ARM_JOINT_NAMES, q_current=q_now)
        if q_now is None or errors:
            self.refuse("trajectory refused: " + ("; ".join(errors) or "no joint state"), self.current_goal)
            return False
        self.publish_trajectory(self.trajectory_msg(plan))
        return True

    def publish_trajectory(self, msg: JointTrajectory):
        self.gate_refusal.set("")
        self.sent_stamp_s.set(time_seconds(msg.header.stamp))
        self.trajectory_pub.publish(msg)

    def send_gripper(self, width_m: float):
        self.gripper_pub.publish(Float64(data=float(width_m)))

    def hold_position(self) -> bool:
        """Replace whatever the controller is doing by staying where the arm is; False when
        that is unknown (no fresh /joint_states) and no hold was sent."""
        q_now = self.current_positions()
        if q_now is None:
            self.diag.publish("error", "cannot hold position: no fresh /joint_states")
            return False
        self.publish_trajectory(self.trajectory_msg(Plan([(q_now, 0.05)])))
        return True

    # ----------------------------------------------------------------- worker
    def work(self, goal: Goal):
        if not self.context.ok():
            return
        self.current_goal = goal
        self.busy.set()
        try:
            if self.estopped.is_set():
                raise MotionAborted("emergency stop is engaged")
            if goal.canceled.is_set():
                raise MotionAborted("canceled before it started")
            if goal.queued_at <= self.estop_engaged_at:
                raise MotionAborted("goal dropped: it was waiting when the emergency stop was engaged")
            if self.current_positions() is None:
                raise MotionAborted("no fresh /joint_states: is the robot driver running?")
            message = {"pose": self.run_pose_goal, "pick_place": self.run_pick_place,
                       "trajectory": self.run_trajectory}[goal.kind](goal.payload)
            self.publish_status("idle", message)
            goal.finish(True, message)
        except MotionAborted as err:
            if goal.canceled.is_set():  # asked for: not a refusal
                self.publish_status("idle", str(err))
                goal.finish(False, str(err))
            else:
                self.refuse(str(err), goal)
        except Exception as err:  # never let one bad goal kill the worker
            if not self.context.ok():
                return
            self.refuse(f"internal error: {err!r}", goal)
        finally:
            self.current_goal = None
            self.busy.clear()

    def execute(self, plan: Plan, what: str):
        if not plan.ok:
            raise MotionAborted(f"{what}: {plan.message}")
        self.publish_status("moving", what)
        if not self.send_trajectory(plan):
            raise MotionAborted(f"{what}: trajectory refused")
        if not self.armed:
            # Dry run: the planned motion is on arm/preview/joint_trajectory for inspection;
            # later steps would depend on the robot actually moving, so stop here.
            raise MotionAborted(f"dry run: '{what}' published on arm/preview/joint_trajectory, not executed "
                                f"(arm with: ros2 param set /safety_gate armed true)")
        q_goal, duration = plan.points[-1]
        deadline = time.monotonic() + duration + self.settle_timeout_s
        while time.monotonic() < deadline:
            if self.estopped.is_set():
                raise MotionAborted(f"{what}: interrupted by emergency stop")
            self.hold_if_canceled(what)
            if self.gate_refusal.get():
                raise MotionAborted(f"{what}: the safety gate refused it: {self.gate_refusal.get()}")
            q_now = self.current_positions()
            if q_now is None:
                self.hold_position()
                raise MotionAborted(f"{what}: joint states went stale; holding")
            if np.max(np.abs(q_now - q_goal)) < self.position_tolerance:
                return
            time.sleep(0.01)
        self.hold_position()
        raise MotionAborted(f"{what}: did not reach the goal in time (blocked or too slow); holding")

    def actuate_gripper(self, width_m: float, what: str) -> float:
        self.publish_status("moving", what)
        self.send_gripper(width_m)
        deadline = time.monotonic() + self.gripper_settle_s
        while time.monotonic() < deadline:
            if self.estopped.is_set():
                raise MotionAborted(f"{what}: interrupted by emergency stop")
            self.hold_if_canceled(what)
            time.sleep(0.02)
        return self.gripper_width() or 0.0

    def hold_if_canceled(self, what: str):
        """A canceled goal stops where the arm is: the hold replaces the trajectory under way."""
        goal = self.current_goal
        if goal is not None and goal.canceled.is_set():
            if self.hold_position():
                raise MotionAborted(f"canceled during '{what}': holding position")
            raise MotionAborted(f"canceled during '{what}'; no hold sent: no fresh /joint_states "
                                f"(the controller finishes its trajectory)")

    def run_pose_goal(self, target: np.ndarray) -> str:
        self.execute(plan_pose_goal(self.positions_to_plan_from("pose goal"), target, self.cfg), "pose goal")
        return "pose goal reached"

    def run_trajectory(self, msg: JointTrajectory) -> str:
        q_now = self.positions_to_plan_from("joint trajectory")
        points = [(list(pt.positions), pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9)
                  for pt in msg.points]
        errors = validate_joint_trajectory(list(msg.joint_names), points, self.limits, panda.ARM_JOINT_NAMES,
                                           q_current=q_now, velocity_scale=self.cfg.velocity_scale)
        if errors:
            raise MotionAborted("joint trajectory refused: " + "; ".join(errors))
        ordered = [(reorder_positions(msg.joint_names, q, panda.ARM_JOINT_NAMES), t) for q, t in points]
        self.execute(Plan(ordered), "joint trajectory")
        return "joint trajectory done"

    def run_pick_place(self, request: dict) -> str:
        pick, place = request["pick"], request["place"]
        problem = check_pick_place_targets(np.asarray(pick["xyz"], float), np.asarray(place["xyz"], float), self.cfg)
        if problem:
            raise MotionAborted(f"pick_place refused: {problem}")
        steps = pick_place_steps(pick["xyz"], float(pick.get("yaw", 0.0)), place["xyz"],
                                 float(place.get("yaw", 0.0)), self.cfg)
        for number, step in enumerate(steps):
            self.hold_if_canceled(step.name)  # between steps too: the next one must not start
            self.current_goal.report(step.name, number / len(steps))
            if step.kind == "gripper":
                width = self.actuate_gripper(step.width_m, step.name)
                if step.name == "grasp" and width < self.cfg.min_grasp_width_m:
                    self.actuate_gripper(self.cfg.gripper_open_m, "open after missed grasp")
                    self.execute(plan_joint_move(self.positions_to_plan_from("return"), self.ready_pose, self.cfg),
                                 "return")
                    raise MotionAborted(f"grasp missed: fingers closed to {width * 1000:.1f} mm")
                continue
            q_now = self.positions_to_plan_from(step.name)
            if step.kind == "line":
                self.execute(plan_cartesian_line(q_now, step.pose, self.cfg), step.name)
            elif step.kind == "joint":
                self.execute(plan_pose_goal(q_now, step.pose, self.cfg), step.name)
            else:
                self.execute(plan_joint_move(q_now, self.ready_pose, self.cfg), step.name)
        return "pick and place done"

    def close(self):
        self.goals.close()


def main(args=None) -> int:
    return run_node(ArmMotionNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
