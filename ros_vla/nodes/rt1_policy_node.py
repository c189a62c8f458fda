"""rt1_policy_node: the RT-1 closed-loop skill. Camera frames in; arm, gripper and base
commands out, at a fixed rate, until the policy says terminate.

Input: the skill/<skill_name> action (ExecuteSkill, default skill/rt1; or skill/request
JSON whose skill is `skill_name`); its text is the instruction. The
instruction is embedded once per skill (all-MiniLM-L6-v2). With `start_move_s` > 0 the arm
first goes to `start_joint_positions` (arm/joint_trajectory, taking start_move_s), the pose
the policy's demonstrations began in, and the policy starts once it is there. Then every
tick of the control timer (`rate_hz`, 3 Hz as in RT-1) runs one policy step on the newest
camera frame and sends what it decided (ros_vla.rt1.control):
  arm mode:  arm/ee_delta (TransformStamped, fr3_link0: the TCP displacement this step),
             arm/gripper (Float64 width, when it changes), zero base/cmd_vel;
  base mode: base/cmd_vel (TwistStamped, base_link: the step's displacement / period);
  terminate: zero base/cmd_vel and the skill succeeds.
A skill that runs past `max_duration_s` fails and stops; /estop and canceling the goal end
it too (releasing the stop never resumes a policy nobody is watching). One skill at a time:
a request while one runs is refused, not queued.

Threads: the camera callback only keeps the newest frame; a worker thread loads the
models at start and embeds instructions; inference runs in the control timer's callback,
never in a subscription callback.

Safety:
- No weights, no skill: with `model_dir` empty every request is refused. An untrained,
  randomly initialised network must never drive a robot.
- No inference on a frame that is missing or older than `stale_frame_s` (or stamped ahead
  of this node's clock by as much: the clocks disagree). The robot stops instead: zero
  base velocity, and no more arm deltas, so arm_motion's ee_delta watchdog holds the arm.
- An action that is not finite (or a step that fails) stops the robot and fails the skill.
- arm_motion and base_motion still apply their limits, workspace and /estop to every
  command; arm_motion's `ee_delta_timeout_s` must exceed this node's period (0.5 s vs
  0.33 s at 3 Hz), or the arm holds between steps.

/diagnostics every 2 s: steps, deadline misses (a step slower than `deadline_fraction` of
the period), stale frames, step latency (median and max of the last 100 steps).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from geometry_msgs.msg import TransformStamped, TwistStamped
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Float64
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_vla.nodes.common import (
    COMMAND_QOS,
    SENSOR_QOS,
    Diagnostics,
    FrameFilter,
    Latest,
    QueueWorker,
    SkillRequest,
    SkillServer,
    declare,
    run_node,
)
from ros_vla.perception.ros_messages import image_array, image_problem, transform_msg
from ros_vla.robot import panda
from ros_vla.rt1 import RT1Config, RT1Policy
from ros_vla.rt1.config import START_JOINT_POSITIONS
from ros_vla.rt1.control import STOP, RobotCommand, command_from_action
from ros_vla.rt1.runtime import BACKENDS, load_policy

NO_WEIGHTS = "no RT-1 weights: set model_dir"
# After the start move's duration, time for the arm to come to rest before the first frame.
START_SETTLE_S = 0.5
REPORT_PERIOD_S = 2.0
LATENCY_WINDOW_STEPS = 100


@dataclass
class Skill:
    request: SkillRequest
    embedding: np.ndarray
    started: Time
    first_step: Time  # after the move to the start pose
    steps: int = 0


def steps_text(count: int) -> str:
    return f"{count} step" + ("" if count == 1 else "s")


def positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"parameter {name} must be positive and finite, got {value}")
    return float(value)


class RT1PolicyNode(Node):
    def __init__(self):
        super().__init__("rt1_policy")
        p = declare(
            self, config="paper", backend="onnxruntime", model_dir="", rate_hz=3.0, stale_frame_s=0.5,
            camera_topic="camera/camera/color/image_raw", skill_name="rt1", max_duration_s=60.0,
            deadline_fraction=1.0, start_joint_positions=list(START_JOINT_POSITIONS), start_move_s=0.0,
        )
        self.config = RT1Config.named(p["config"])
        self.config_name = p["config"]
        if p["backend"] not in BACKENDS:
            raise ValueError(f"parameter backend must be one of {BACKENDS}, got '{p['backend']}'")
        self.period_s = 1.0 / positive("rate_hz", p["rate_hz"])
        self.deadline_s = positive("deadline_fraction", p["deadline_fraction"]) * self.period_s
        self.stale_frame_s = positive("stale_frame_s", p["stale_frame_s"])
        self.max_duration_s = positive("max_duration_s", p["max_duration_s"])
        self.camera_topic = p["camera_topic"]
        self.skill_name = p["skill_name"]
        self.start_positions = [float(q) for q in p["start_joint_positions"]]
        if len(self.start_positions) != len(panda.ARM_JOINT_NAMES) or not np.isfinite(self.start_positions).all():
            raise ValueError(f"parameter start_joint_positions must be {len(panda.ARM_JOINT_NAMES)} finite joint "
                             f"positions, got {p['start_joint_positions']}")
        self.start_move_s = float(p["start_move_s"])
        if not (math.isfinite(self.start_move_s) and self.start_move_s >= 0):
            raise ValueError(f"parameter start_move_s must be >= 0, got {self.start_move_s}")
        self.diag = Diagnostics(self)

        self.ee_delta_pub = self.create_publisher(TransformStamped, "arm/ee_delta", COMMAND_QOS)
        self.gripper_pub = self.create_publisher(Float64, "arm/gripper", COMMAND_QOS)
        self.base_pub = self.create_publisher(TwistStamped, "base/cmd_vel", COMMAND_QOS)
        self.trajectory_pub = self.create_publisher(JointTrajectory, "arm/joint_trajectory", COMMAND_QOS)

        # Why skills are refused ("" while the models load or once they are ready).
        self.unavailable = "" if p["model_dir"] else NO_WEIGHTS
        self.backend_name = p["backend"]
        self.policy: RT1Policy | None = None
        self.encoder = None
        self.skill: Skill | None = None  # set by the worker, run and ended by the control timer
        self.skill_lock = threading.Lock()
        self.busy = threading.Event()  # from an accepted request until it is answered
        self.current_id = ""
        self.estopped = False
        self.last_gripper_width: float | None = None
        self.steps = self.deadline_misses = self.stale_frames = 0
        self.reported = (0, 0)  # deadline misses and stale frames at the last report
        self.latencies_s: deque[float] = deque(maxlen=LATENCY_WINDOW_STEPS)
        self.holding = False  # the robot is stopped for want of a fresh frame

        self.frame = Latest()
        self.create_subscription(Image, self.camera_topic,
                                 FrameFilter(self.frame.set, lambda m: image_problem(m, ("rgb8",))), SENSOR_QOS)
        self.create_subscription(Bool, "estop", self.on_estop, COMMAND_QOS)
        self.worker = QueueWorker(self, lambda job: job(), "rt1")
        self.skill_server = SkillServer(self, self.diag, self.skill_name, self.submit, on_cancel=self.cancel)
        if p["model_dir"]:
            self.worker.put(partial(self.load, Path(p["model_dir"]).expanduser()))
        else:
            self.diag.publish("warn", f"{NO_WEIGHTS}; every '{self.skill_name}' skill will be refused")
        self.create_timer(self.period_s, self.control)
        self.create_timer(REPORT_PERIOD_S, self.report)

    # ----------------------------------------------------------------- worker
    def load(self, model_dir: Path):
        """Once, at start: the network on its backend, warmed up, and the sentence encoder."""
        try:
            from ros_vla.text_encoder import MiniLMInstructionEncoder

            policy = load_policy(model_dir, self.backend_name, self.config)
            # The first run allocates and picks kernels (a deadline miss in a skill), and a
            # network exported at another size than `config` fails here, not mid-skill.
            size = self.config.image_size
            embedding = np.zeros(self.config.instruction_embedding_dim, np.float32)
            policy.step(np.zeros((size, size, 3), np.uint8), embedding)
            policy.reset()
            self.encoder = MiniLMInstructionEncoder()
        except Exception as err:  # any failure leaves the node up, refusing skills with the reason
            self.unavailable = f"cannot load RT-1 ('{self.config_name}' config, {self.backend_name}) " \
                               f"from {model_dir}: {err}"
            self.diag.publish("error", self.unavailable)
            return
        self.policy = policy
        self.backend_name = policy.backend.name
        self.diag.publish("ok", f"ready: RT-1 '{self.config_name}' on {self.backend_name} from {model_dir}")

    def prepare(self, request: SkillRequest):
        """Embed the instruction (once per skill), then hand the skill to the control timer."""
        refusal = self.unavailable
        if not refusal:
            try:
                embedding = self.encoder.embed([request.text])[0]
            except Exception as err:  # a failed embedding fails this skill, not the node
                refusal = f"cannot embed the instruction: {err!r}"
        with self.skill_lock:
            # on_estop sets the flag before it looks for a skill to end: checked under the
            # lock, a stop that comes while the instruction is embedded is never missed.
            refusal = refusal or ("emergency stop is engaged" if self.estopped else "")
            refusal = refusal or ("canceled before the first step" if request.canceled.is_set() else "")
            if not refusal:
                self.last_gripper_width = None
                now = self.get_clock().now()
                wait_s = self.start_move_s + START_SETTLE_S if self.start_move_s else 0.0
                self.skill = Skill(request, embedding, now, now + Duration(seconds=wait_s))
                if self.start_move_s:
                    self.move_to_start()
        if refusal:
            request.answer(False, refusal)
            self.busy.clear()
            return
        self.diag.publish("ok", f"skill {request.id} started: {request.text[:200]}")

    # ----------------------------------------------------------------- inputs
    def submit(self, request: SkillRequest) -> str:
        if self.unavailable:
            return self.unavailable
        if self.busy.is_set():
            return f"busy with RT-1 skill {self.current_id}; send it again when it ends"
        self.busy.set()
        self.current_id = request.id
        self.worker.put(partial(self.prepare, request))
        return ""

    def cancel(self, request: SkillRequest):
        with self.skill_lock:
            skill = self.skill
        if skill is not None and skill.request is request:
            self.finish(skill, False, f"canceled after {steps_text(skill.steps)}: robot stopped")

    def on_estop(self, msg: Bool):
        self.estopped = msg.data
        with self.skill_lock:
            skill = self.skill
        if msg.data and skill is not None:
            self.finish(skill, False, f"emergency stop after {steps_text(skill.steps)}")

    # ----------------------------------------------------------------- control loop
    def control(self):
        with self.skill_lock:
            skill = self.skill
        if skill is None:
            return
        started = time.perf_counter()
        now = self.get_clock().now()
        if (now - skill.started).nanoseconds * 1e-9 > self.max_duration_s:
            self.finish(skill, False, f"no terminate within max_duration_s ({self.max_duration_s:g} s, "
                                      f"{steps_text(skill.steps)}): stopped")
            return
        if now < skill.first_step:
            return  # the arm is on its way to the start pose
        frame = self.frame.get()
        problem = self.frame_problem(frame, now)
        if problem:
            self.hold(problem)
            return
        try:
            image = image_array(frame)
            if frame.encoding != "rgb8":
                raise ValueError(f"camera frames are {frame.encoding}; RT-1 takes rgb8")
            tokens = self.policy.step(image, skill.embedding)
            command = command_from_action(self.policy.tokenizer.detokenize(tokens),
                                          self.config.action_dimensions, self.period_s)
        except Exception as err:  # whatever failed, the robot stops and the skill ends; the node stays up
            self.finish(skill, False, f"stopped after {steps_text(skill.steps)}: {err}")
            return
        skill.steps += 1
        self.holding = False
        self.send(command, now)
        skill.request.report(f"step {skill.steps}", min(1.0, (now - skill.started).nanoseconds * 1e-9
                                                        / self.max_duration_s))
        latency_s = time.perf_counter() - started
        self.steps += 1
        self.latencies_s.append(latency_s)
        if latency_s > self.deadline_s:
            self.deadline_misses += 1
        if command.mode == "terminate":
            self.finish(skill, True, f"terminated by the policy after {steps_text(skill.steps)}")

    def frame_problem(self, frame: Image | None, now: Time) -> str:
        """Why the newest frame must not be inferred on, or "" if it may."""
        if frame is None:
            return f"no camera frame on {self.camera_topic}"
        age_s = (now - Time.from_msg(frame.header.stamp, clock_type=now.clock_type)).nanoseconds * 1e-9
        if age_s > self.stale_frame_s:
            return f"newest camera frame is {age_s:.2f} s old (stale_frame_s {self.stale_frame_s:g})"
        if age_s < -self.stale_frame_s:
            return f"newest camera frame is stamped {-age_s:.2f} s ahead of this node's clock (use_sim_time?)"
        return ""

    def hold(self, problem: str):
        """No usable frame: stop the robot instead of acting on an old view of the world."""
        self.stale_frames += 1
        self.send(STOP, self.get_clock().now())
        # The robot stood still while there was no frame, so when frames return the window
        # starts over from the first new one, which is exactly what the robot saw.
        self.policy.reset()
        # Warned at once when it starts; while it lasts, the 2 s report counts the ticks.
        if not self.holding:
            self.holding = True
            self.diag.publish("warn", f"{problem}: not inferring; base stopped, arm holding",
                              **self.counters())

    def move_to_start(self):
        """The pose the policy's episodes began in, through arm_motion (which checks the move
        against limits and speed, and refuses it while /estop is engaged)."""
        trajectory = JointTrajectory()
        trajectory.header.stamp = self.get_clock().now().to_msg()
        trajectory.joint_names = list(panda.ARM_JOINT_NAMES)
        point = JointTrajectoryPoint(positions=self.start_positions)
        point.time_from_start = Duration(seconds=self.start_move_s).to_msg()
        trajectory.points = [point]
        self.trajectory_pub.publish(trajectory)

    def send(self, command: RobotCommand, now: Time):
        stamp = now.to_msg()
        if command.moves_arm:
            self.ee_delta_pub.publish(transform_msg(command.ee_delta(), "fr3_link0", panda.TCP_FRAME, stamp))
            # Only a new width is sent: repeating one would restart the gripper's action every step.
            if command.gripper_width_m != self.last_gripper_width:
                self.last_gripper_width = command.gripper_width_m
                self.gripper_pub.publish(Float64(data=command.gripper_width_m))
        twist = TwistStamped()
        twist.header.stamp = stamp
        twist.header.frame_id = "base_link"
        twist.twist.linear.x, twist.twist.linear.y, twist.twist.angular.z = command.base_velocity
        self.base_pub.publish(twist)

    def finish(self, skill: Skill, success: bool, message: str):
        with self.skill_lock:
            if self.skill is not skill:
                return  # already ended
            self.skill = None
        self.holding = False
        self.send(STOP, self.get_clock().now())
        self.policy.reset()
        skill.request.answer(success, message)
        self.busy.clear()
        self.diag.publish("ok" if success else "warn", f"skill {skill.request.id}: {message}", **self.counters())

    # ----------------------------------------------------------------- diagnostics
    def counters(self) -> dict:
        latencies_ms = np.array(self.latencies_s) * 1e3
        return {
            "steps": self.steps, "deadline_misses": self.deadline_misses, "stale_frames": self.stale_frames,
            "latency_median_ms": f"{np.median(latencies_ms):.1f}" if len(latencies_ms) else "",
            "latency_max_ms": f"{latencies_ms.max():.1f}" if len(latencies_ms) else "",
            "deadline_ms": f"{self.deadline_s * 1e3:.1f}", "rate_hz": f"{1.0 / self.period_s:g}",
            "config": self.config_name, "backend": self.backend_name,
        }

    def report(self):
        with self.skill_lock:
            skill = self.skill
        new_misses = self.deadline_misses - self.reported[0]
        new_stale = self.stale_frames - self.reported[1]
        self.reported = (self.deadline_misses, self.stale_frames)
        if self.unavailable:
            level, message = "warn", self.unavailable
        elif self.policy is None:
            level, message = "ok", "loading RT-1"
        else:
            level = "warn" if new_misses or new_stale else "ok"
            message = (f"running skill {skill.request.id}: {steps_text(skill.steps)}" if skill else "idle")
            if new_misses:
                message += f"; {new_misses} deadline misses in the last {REPORT_PERIOD_S:g} s"
            if new_stale:
                message += f"; {new_stale} ticks without a fresh frame"
        self.diag.publish(level, message, **self.counters())

    def close(self):
        self.worker.close()
        with self.skill_lock:
            skill = self.skill
        # After Ctrl-C the context is already down and nothing can be sent: the motion
        # nodes' watchdogs stop the robot. After a failure that ended the spin it is still
        # up: stop the robot and answer the request.
        if skill is not None and self.context.ok():
            self.finish(skill, False, "rt1_policy shut down")


def main(args=None) -> int:
    return run_node(RT1PolicyNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
