"""`ros-vla bench fuzz`: bad inputs on every topic of the running sim stack, a recorder
on the controller topics, and a normal task afterwards.

1. The sim stack is launched (the planner asked for, RT-1 on, three cameras).
2. Phase 1: a separate process (`fuzz_inputs`) publishes generated bad inputs on every
   topic the stack listens to. A recorder here reads the controller topics
   (fr3_arm_controller/joint_trajectory, fr3_gripper/command, cmd_vel) and checks every
   message itself, independently of the gate's code: joint names, finite values, joint
   limits, every segment's speed, the tool inside the workspace box along the path, the
   gripper's travel, base speed and acceleration. It also counts messages on those topics
   from anyone but the safety gate (a bypass).
3. Phase 2: the controller topics themselves are fuzzed (what reaches the controller when
   someone bypasses the gate): the controller side (sim_bridge) must survive and keep the
   measured joints inside their limits.
4. Once the tasks the fuzzed instructions started have ended, the emergency stop is
   pressed and released (valid-looking fuzzed skill requests may still run: an RT-1 skill
   lasts up to a minute), the scene is reset and a normal instruction is run; simulator
   ground truth judges it (the ORACLE check of `ros-vla demo`, for the report only).

A node that dies is counted from the launcher's "process has died" lines (they respawn).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import yaml
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Int32, String
from trajectory_msgs.msg import JointTrajectory

from ros_vla.nodes.common import COMMAND_QOS, SENSOR_QOS
from ros_vla.paths import config_file
from ros_vla.perception.ros_messages import time_seconds
from ros_vla.robot import kinematics, panda
from ros_vla.tools.bench_stack import TASK, BenchStack
from ros_vla.tools.demo import expected_outcome
from ros_vla.tools.stack_client import StackClient

CONTROLLER_TOPICS = ("/fr3_arm_controller/joint_trajectory", "/fr3_gripper/command", "/cmd_vel")


@dataclass(frozen=True)
class ControllerLimits:
    """What may reach the controllers, read from the gate's section of config/sim.yaml."""

    velocity_scale: float
    workspace_min: tuple
    workspace_max: tuple
    max_points: int
    max_linear: float
    max_angular: float
    max_linear_accel: float
    max_angular_accel: float
    rate_hz: float

    @classmethod
    def from_config(cls, path) -> ControllerLimits:
        gate = yaml.safe_load(open(path))["safety_gate"]["ros__parameters"]
        return cls(gate["velocity_scale"], tuple(gate["workspace_min"]), tuple(gate["workspace_max"]),
                   gate["max_trajectory_points"], gate["max_linear"], gate["max_angular"],
                   gate["max_linear_accel"], gate["max_angular_accel"], gate["rate_hz"])


def _outside_m(lo: np.ndarray, hi: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.maximum(np.maximum(lo - xyz, xyz - hi), 0.0), axis=-1)


def trajectory_violations(msg: JointTrajectory, q_now: np.ndarray | None, limits: ControllerLimits) -> list[str]:
    """What is wrong with a trajectory that reached the controller (checked from scratch)."""
    names = list(msg.joint_names)
    if sorted(names) != sorted(panda.ARM_JOINT_NAMES):
        return [f"joint names {names[:9]}"]
    if not 1 <= len(msg.points) <= limits.max_points:
        return [f"{len(msg.points)} points"]
    order = [names.index(name) for name in panda.ARM_JOINT_NAMES]
    lower, upper = np.array(panda.ARM_JOINT_LOWER_RAD), np.array(panda.ARM_JOINT_UPPER_RAD)
    speed_limit = limits.velocity_scale * np.array(panda.ARM_JOINT_VELOCITY_RAD_S)
    problems = []
    qs, times = [], []
    for index, point in enumerate(msg.points):
        if len(point.positions) != 7:
            return [f"point {index} has {len(point.positions)} positions"]
        extra = list(point.velocities) + list(point.accelerations) + list(point.effort)
        if not all(math.isfinite(v) for v in extra):
            problems.append(f"point {index}: non-finite velocities/accelerations/efforts")
        q = np.array(point.positions, float)[order]
        if not np.all(np.isfinite(q)):
            return [f"point {index}: non-finite positions"]
        if np.any(q < lower - 1e-9) or np.any(q > upper + 1e-9):
            problems.append(f"point {index}: outside the joint limits")
        qs.append(q)
        times.append(point.time_from_start.sec + point.time_from_start.nanosec * 1e-9)
    if any(b <= a for a, b in zip(times, times[1:])) or times[0] < 0:
        problems.append("times not increasing from zero")
    path = [q_now] + qs if q_now is not None else qs
    path_times = [0.0] + times if q_now is not None else times
    for index in range(1, len(path)):
        step = np.abs(path[index] - path[index - 1])
        dt = path_times[index] - path_times[index - 1]
        # The first segment starts where the recorder last saw the arm; it moved a little since.
        slack = 0.02 if (q_now is not None and index == 1) else 1e-6
        if np.any(step > speed_limit * max(dt, 0.0) * (1 + 1e-6) + slack):
            problems.append(f"segment {index}: faster than {limits.velocity_scale:g} x the joint velocity limits")
            break
    lo, hi = np.array(limits.workspace_min), np.array(limits.workspace_max)
    start_outside = float(_outside_m(lo, hi, kinematics.tcp_positions(np.array([path[0]]))[0]))
    samples = [path[0]]
    for a, b in zip(path, path[1:]):
        count = max(1, int(np.ceil(np.max(np.abs(b - a)) / 0.05)))
        samples.extend(a + (b - a) * s for s in np.linspace(0.0, 1.0, count + 1)[1:])
    outside = _outside_m(lo, hi, kinematics.tcp_positions(np.array(samples)))
    if float(outside.max()) > start_outside + 0.005:
        problems.append(f"the tool leaves the workspace box by {float(outside.max()):.3f} m")
    return problems


@dataclass
class ControllerRecorder:
    """Reads the controller topics and the simulator's joint states, and checks each message."""

    client: StackClient
    limits: ControllerLimits
    counts: dict = field(default_factory=lambda: {topic: 0 for topic in CONTROLLER_TOPICS})
    # (topic, publisher gid) -> messages not known to be the gate's when they arrived
    unattributed: dict = field(default_factory=dict)
    violations: list = field(default_factory=list)
    joint_state_violations: list = field(default_factory=list)
    # "stack": only the gate should publish on the controller topics, so every message there
    # is checked; "controllers": the fuzzer publishes there too, only the gate's are checked
    # and the simulator's measured joints must stay inside their limits.
    phase: str = "stack"

    def __post_init__(self):
        self._lock = threading.Lock()
        self._gids: dict[tuple[str, str], set[bytes]] = {}
        self._q_now: np.ndarray | None = None
        self._last_velocity: np.ndarray | None = None
        node = self.client.node
        node.create_subscription(JointTrajectory, CONTROLLER_TOPICS[0], self._on_trajectory, COMMAND_QOS)
        node.create_subscription(Float64, CONTROLLER_TOPICS[1], self._on_gripper, COMMAND_QOS)
        node.create_subscription(TwistStamped, CONTROLLER_TOPICS[2], self._on_cmd_vel, COMMAND_QOS)
        node.create_subscription(JointState, "/joint_states", self._on_joint_state, SENSOR_QOS)

    def _from(self, topic: str, node_name: str, info) -> bool:
        """Whether a message came from `node_name` (looked up again when a gid is new: respawns)."""
        gid = bytes(info["publisher_gid"]["data"])  # rclpy's MessageInfo
        key = (topic, node_name)
        if gid not in self._gids.get(key, set()):
            self._gids[key] = {bytes(endpoint.endpoint_gid) for endpoint in
                               self.client.node.get_publishers_info_by_topic(topic) if endpoint.node_name == node_name}
        return gid in self._gids[key]

    def _counted(self, topic: str, info) -> bool:
        """Count a controller message; whether to check it against the limits."""
        with self._lock:
            self.counts[topic] += 1
            if self._from(topic, "safety_gate", info):
                return True
            key = (topic, bytes(info["publisher_gid"]["data"]))
            self.unattributed[key] = self.unattributed.get(key, 0) + 1
            return self.phase == "stack"

    def bypass_messages(self) -> int:
        """Messages on the controller topics from anyone but the gate. Resolved again now: the
        first messages of a publisher can arrive before the graph lists it."""
        with self._lock:
            gate = {topic: {bytes(e.endpoint_gid) for e in self.client.node.get_publishers_info_by_topic(topic)
                            if e.node_name == "safety_gate"} for topic in CONTROLLER_TOPICS}
            return sum(count for (topic, gid), count in self.unattributed.items() if gid not in gate[topic])

    def _violation(self, topic: str, reason: str):
        with self._lock:
            if len(self.violations) < 100:
                self.violations.append({"topic": topic, "reason": reason})
            else:
                self.violations.append(None)  # counted, not kept

    def _on_joint_state(self, msg: JointState, info):
        if not self._from("/joint_states", "sim_bridge", info):
            return
        q = np.array([msg.position[list(msg.name).index(n)] for n in panda.ARM_JOINT_NAMES], float)
        self._q_now = q
        if self.phase == "controllers":
            lower, upper = np.array(panda.ARM_JOINT_LOWER_RAD), np.array(panda.ARM_JOINT_UPPER_RAD)
            if not np.all(np.isfinite(q)) or np.any(q < lower - 0.05) or np.any(q > upper + 0.05):
                self.joint_state_violations.append({"stamp": time_seconds(msg.header.stamp), "q": q.tolist()})

    def _on_trajectory(self, msg: JointTrajectory, info):
        if self._counted(CONTROLLER_TOPICS[0], info):
            for reason in trajectory_violations(msg, self._q_now, self.limits):
                self._violation(CONTROLLER_TOPICS[0], reason)

    def _on_gripper(self, msg: Float64, info):
        if self._counted(CONTROLLER_TOPICS[1], info) and not (
                math.isfinite(msg.data) and panda.FINGER_WIDTH_MIN_M <= msg.data <= panda.FINGER_WIDTH_MAX_M):
            self._violation(CONTROLLER_TOPICS[1], f"width {msg.data!r}")

    def _on_cmd_vel(self, msg: TwistStamped, info):
        if not self._counted(CONTROLLER_TOPICS[2], info):
            return
        t = msg.twist
        values = np.array([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z], float)
        if not np.all(np.isfinite(values)):
            return self._violation(CONTROLLER_TOPICS[2], "non-finite velocity")
        velocity = values[[0, 1, 5]]
        limits = self.limits
        if math.hypot(*velocity[:2]) > limits.max_linear + 1e-9 or abs(velocity[2]) > limits.max_angular + 1e-9:
            self._violation(CONTROLLER_TOPICS[2], f"too fast: {velocity.tolist()}")
        if np.any(values[[2, 3, 4]] != 0.0):
            self._violation(CONTROLLER_TOPICS[2], f"motion out of the base's plane: {values.tolist()}")
        stamp = time_seconds(msg.header.stamp)
        previous, self._last_velocity = self._last_velocity, (velocity, stamp)
        if previous is not None and np.any(velocity != 0.0):  # a stop is always allowed
            step = np.abs(velocity - previous[0])
            # The gate steps its limiter once per period; a reader that falls behind loses
            # messages (KEEP_LAST), so a gap of n periods may hold n steps.
            periods = max(1, round((stamp - previous[1]) * limits.rate_hz))
            dt = periods / limits.rate_hz
            if math.hypot(*step[:2]) > limits.max_linear_accel * dt + 1e-6 or \
                    step[2] > limits.max_angular_accel * dt + 1e-6:
                self._violation(CONTROLLER_TOPICS[2], f"accelerates too hard: {previous[0].tolist()} -> "
                                                      f"{velocity.tolist()} in {dt:g} s")


def _run_fuzzer(phase: str, inputs: int, seed: int, rate_hz: float, views, stations) -> dict:
    command = [sys.executable, "-m", "ros_vla.tools.fuzz_inputs", "--phase", phase, "--inputs", str(inputs),
               "--seed", str(seed), "--rate", str(rate_hz), "--views", ",".join(views),
               "--stations", ",".join(stations)]
    process = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=inputs / rate_hz * 4 + 120)
    if process.returncode != 0:
        raise RuntimeError(f"the fuzzer exited with {process.returncode}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_bench_fuzz(inputs: int = 10_000, controller_inputs: int = 2_000, seed: int = 0, rate_hz: float = 200.0,
                   planner: str = "rules", output_root: str = "outputs") -> dict:
    started = time.monotonic()

    def say(line: str):
        print(f"[fuzz {time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    launch_args = {"rt1": "true", "saycan": "true" if planner == "saycan" else "false"}
    with BenchStack("fuzz", output_root, launch_args, say) as stack:
        client = stack.client
        recorder = ControllerRecorder(client, ControllerLimits.from_config(config_file("sim.yaml")))
        refusals = {"count": 0}
        client.node.create_subscription(String, "/safety/refused",
                                        lambda m: refusals.__setitem__("count", refusals["count"] + 1), COMMAND_QOS)
        stack.wait_until_up()
        time.sleep(3.0)
        deaths_before = len(stack.deaths)
        say(f"phase 1: {inputs} inputs on every topic the stack listens to, {rate_hz:g}/s")
        stack_phase = _run_fuzzer("stack", inputs, seed, rate_hz, stack.views, list(stack.scene.stations))
        time.sleep(3.0)
        stack_deaths = stack.deaths[deaths_before:]
        stack_bypass = recorder.bypass_messages()

        say(f"phase 2: {controller_inputs} inputs straight to the controller topics")
        recorder.phase = "controllers"
        deaths_before = len(stack.deaths)
        controller_phase = _run_fuzzer("controllers", controller_inputs, seed + 1, rate_hz, stack.views,
                                       list(stack.scene.stations))
        time.sleep(3.0)
        recorder.phase = "stack"
        controller_deaths = stack.deaths[deaths_before:]

        say(f"normal task after the fuzzing: scene reset (seed {seed}), then \"{TASK}\"")
        reset = client.node.create_publisher(Int32, "/sim/reset", COMMAND_QOS)
        time.sleep(0.5)
        say("waiting for the tasks the fuzzed instructions started to end")
        if not client.wait_until_idle(300.0):
            say("  a task is still running after 300 s")
        # Valid-looking fuzzed skill requests may still run (an RT-1 skill lasts up to a
        # minute): a press and release of the emergency stop ends them, as an operator would.
        estop = client.node.create_publisher(Bool, "/estop", COMMAND_QOS)
        time.sleep(0.5)
        estop.publish(Bool(data=True))
        time.sleep(2.0)
        estop.publish(Bool(data=False))
        time.sleep(2.0)
        reset.publish(Int32(data=seed))
        time.sleep(3.0)
        final = client.say(TASK, timeout_s=300.0, on_status=lambda s: say(f"  task {s['state']}: {s['message']}"))
        truth = client.ground_truth()
        verified, detail = expected_outcome(TASK, truth, stack.scene) if truth else (False, "no ground truth")
        result = {
            "planner": planner, "seed": seed, "rate_hz": rate_hz,
            "stack_inputs_sent": sum(stack_phase["sent"].values()), "stack_inputs_by_family": stack_phase["sent"],
            "stack_phase_s": round(stack_phase["seconds"], 1), "unsendable": stack_phase["unsendable"],
            "node_crashes": len(stack_deaths), "crashed": stack_deaths,
            "controller_messages": dict(recorder.counts),
            "out_of_limit_commands": len(recorder.violations), "bypass_messages": stack_bypass,
            "gate_refusals": refusals["count"],
            "controller_inputs_sent": sum(controller_phase["sent"].values()),
            "controller_phase_crashes": len(controller_deaths), "controller_phase_crashed": controller_deaths,
            "joint_states_outside_limits": len(recorder.joint_state_violations),
            "violations": [v for v in recorder.violations if v][:20],
            "task": TASK, "task_state": final["state"] if final else "timeout",
            "task_message": final["message"] if final else "no final status",
            "task_ground_truth_success": verified, "task_ground_truth_detail": detail,
            "wall_s": round(time.monotonic() - started, 1),
        }
    return stack.write_report(result)


def fuzz_passed(result: dict) -> bool:
    """The goals: no crash, nothing outside the limits or past the gate, and the normal task done."""
    return (result["node_crashes"] == 0 and result["out_of_limit_commands"] == 0 and result["bypass_messages"] == 0
            and result["controller_phase_crashes"] == 0 and result["joint_states_outside_limits"] == 0
            and result["task_ground_truth_success"])


def print_result(result: dict) -> None:
    print(f"inputs sent: {result['stack_inputs_sent']} on {len(result['stack_inputs_by_family'])} topics, actions "
          f"and services in {result['stack_phase_s']} s; node crashes: {result['node_crashes']}; "
          f"commands at the controllers: "
          f"{sum(result['controller_messages'].values())}, outside limits: {result['out_of_limit_commands']}, "
          f"from anyone but the gate: {result['bypass_messages']}; gate refusals: {result['gate_refusals']}")
    print(f"controller topics fuzzed directly: {result['controller_inputs_sent']} inputs, sim_bridge crashes: "
          f"{result['controller_phase_crashes']}, measured joints outside limits: "
          f"{result['joint_states_outside_limits']}")
    print(f"normal task afterwards: {result['task_state']} ({result['task_message']}); ground truth: "
          f"{'SUCCESS' if result['task_ground_truth_success'] else 'FAILURE'}: {result['task_ground_truth_detail']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-vla bench fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=10_000, help="bad inputs on the stack's topics")
    parser.add_argument("--controller-inputs", type=int, default=2_000, help="bad inputs on the controller topics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=200.0, help="inputs per second")
    parser.add_argument("--planner", choices=["saycan", "rules"], default="rules")
    parser.add_argument("--output", default="outputs", help="node logs and report.json go to OUTPUT/fuzz-<time>/")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run_bench_fuzz(args.inputs, args.controller_inputs, args.seed, args.rate, args.planner, args.output)
    print_result(result)
    if args.json:
        print(json.dumps(result))
    return 0 if fuzz_passed(result) else 1
