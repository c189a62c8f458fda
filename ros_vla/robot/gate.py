"""The safety gate's checks: every command to an actuator, whoever produced it.

`safety_gate_node` is the one place commands leave the stack for the controllers; this
module is what it decides with, in plain numpy so it is tested without ROS:

- arm trajectories: joint names, finite values, position limits, every segment's speed
  (also the move from where the arm is now), the tool inside the workspace box along the
  whole path (sampled in joint space, as the controller interpolates), a bounded size;
- gripper widths: finite and within the hand's travel;
- joint states: only well-formed ones become "where the arm is";
- header stamps: stale, from the future, out of order or repeated commands are refused;
- arming: the emergency stop, the dry run, and the re-arm that a released stop requires.

Base velocities are limited with `safety.BaseVelocityLimiter` and `safety.Watchdog`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ros_vla.robot import kinematics, panda
from ros_vla.robot.safety import JointLimits, WorkspaceBox, finite, reorder_positions, validate_joint_trajectory


@dataclass(frozen=True)
class ArmGateLimits:
    """What an arm command must satisfy to reach the controller."""

    workspace: WorkspaceBox
    joint_limits: JointLimits = JointLimits()
    velocity_scale: float = 1.0  # fraction of the joint velocity limits a segment may use
    max_points: int = 1000  # a longer trajectory is refused unread (a flood, not a motion)
    workspace_step_rad: float = 0.05  # joint-space spacing of the tool's workspace checks
    max_workspace_checks: int = 20000  # bounds the time one message can take to check
    joint_state_tolerance_rad: float = 0.05  # a measured state further outside the limits is not believed
    gripper_min_m: float = panda.FINGER_WIDTH_MIN_M
    gripper_max_m: float = panda.FINGER_WIDTH_MAX_M


def outside_distance(box: WorkspaceBox, xyz: np.ndarray) -> float:
    """How far (m) a point is outside the box; 0 inside."""
    below = np.subtract(box.min_xyz, xyz)
    above = np.subtract(xyz, box.max_xyz)
    return float(np.linalg.norm(np.maximum(np.maximum(below, above), 0.0)))


def joint_state_positions(names, positions, joint_limits: JointLimits = JointLimits(),
                          tolerance_rad: float = 0.05) -> tuple[np.ndarray | None, str]:
    """The arm's joint positions (in `panda.ARM_JOINT_NAMES` order) from a JointState's
    names and positions, or (None, why the message cannot be believed: malformed, or
    further than `tolerance_rad` outside the joint limits)."""
    names = list(names)
    try:
        values = np.asarray(positions, dtype=float)
    except (TypeError, ValueError):
        return None, "positions are not numbers"
    if values.ndim != 1 or len(values) != len(names):
        return None, f"{len(names)} names but {values.size} positions"
    if len(set(names)) != len(names):
        return None, "duplicate joint names"
    arm = {name: value for name, value in zip(names, values) if name in panda.ARM_JOINT_NAMES}
    if len(arm) != len(panda.ARM_JOINT_NAMES):
        return None, f"missing arm joints: {[n for n in panda.ARM_JOINT_NAMES if n not in arm]}"
    q = reorder_positions(list(arm), list(arm.values()), panda.ARM_JOINT_NAMES)
    if not finite(q):
        return None, "arm positions are not finite"
    lower = np.array(joint_limits.lower) - tolerance_rad
    upper = np.array(joint_limits.upper) + tolerance_rad
    if np.any(q < lower) or np.any(q > upper):
        return None, "arm positions outside what the joints can reach"
    return q, ""


def hold_point(q_now, limits: ArmGateLimits, hold_s: float) -> tuple[np.ndarray, float]:
    """Where to hold an arm measured at `q_now`, and in how many seconds: there, or at the
    nearest position inside the joint limits. A measured state may lie a little beyond a
    limit (a simulator overshooting a command at the limit, an encoder's offset) and a hold
    sent there is itself a command outside the limits; the way back in is taken no faster
    than the trajectories the gate lets through."""
    q_now = np.asarray(q_now, float)
    q_hold = np.clip(q_now, limits.joint_limits.lower, limits.joint_limits.upper)
    speed = limits.velocity_scale * np.asarray(limits.joint_limits.velocity, float)
    return q_hold, max(hold_s, float(np.max(np.abs(q_hold - q_now) / speed)))


def trajectory_problems(joint_names, points, q_now, limits: ArmGateLimits) -> list[str]:
    """Why the trajectory must not reach the controller; empty if it may.

    `points` are (positions ordered like `joint_names`, time_from_start_s); `q_now` is the
    arm's current state (ordered like `panda.ARM_JOINT_NAMES`) or None when no fresh one
    is known, in which case nothing may move the arm.
    """
    if q_now is None:
        return ["no fresh /joint_states: where the arm is is unknown"]
    if len(points) > limits.max_points:
        return [f"{len(points)} points; at most {limits.max_points} are accepted"]
    errors = validate_joint_trajectory(joint_names, points, limits.joint_limits, panda.ARM_JOINT_NAMES,
                                       q_current=q_now, velocity_scale=limits.velocity_scale)
    if errors:
        return errors
    path = [np.asarray(q_now, float)] + [reorder_positions(joint_names, q, panda.ARM_JOINT_NAMES)
                                         for q, _ in points]
    problem = _workspace_problem(path, limits)
    return [problem] if problem else []


def _workspace_problem(path: list[np.ndarray], limits: ArmGateLimits) -> str:
    """The tool must stay in the box along the joint-space path; an arm that is outside
    already may only move so that it gets no further out (back in, or holding)."""
    box = limits.workspace
    steps = [max(1, math.ceil(float(np.max(np.abs(b - a))) / limits.workspace_step_rad))
             for a, b in zip(path, path[1:])]
    if sum(steps) > limits.max_workspace_checks:
        return (f"the path is too long to check ({sum(steps)} workspace samples, at most "
                f"{limits.max_workspace_checks}): send it in shorter pieces")
    samples, segment = [path[0]], [-1]
    for number, (a, b, count) in enumerate(zip(path, path[1:], steps)):
        fractions = (np.arange(1, count + 1) / count)[:, None]
        samples.extend(a + fractions * (b - a))
        segment.extend([number] * count)
    tools = kinematics.tcp_positions(np.array(samples))
    below = np.asarray(box.min_xyz) - tools
    above = tools - np.asarray(box.max_xyz)
    outside = np.linalg.norm(np.maximum(np.maximum(below, above), 0.0), axis=1)
    beyond = np.flatnonzero(outside > outside[0] + 1e-3)
    if len(beyond):
        first = beyond[0]
        return f"point {segment[first]}: the tool leaves the workspace: {box.explain(tools[first])}"
    return ""


def gripper_problem(width, limits: ArmGateLimits) -> str:
    """Why a gripper width must not be sent; "" if it may."""
    if not finite(width):
        return f"width {width!r} is not finite"
    if not limits.gripper_min_m <= float(width) <= limits.gripper_max_m:
        return f"width {float(width):.4f} m is outside {limits.gripper_min_m}..{limits.gripper_max_m} m"
    return ""


@dataclass
class StampCheck:
    """Refuses commands whose header stamp is stale, from the future, older than the last
    accepted one, or repeats it with the same content (a replayed or duplicated message).

    A zero stamp means "now" (the joint trajectory controller's convention) and is always
    accepted.
    """

    max_age_s: float = 0.5
    max_ahead_s: float = 0.5
    _last_stamp_s: float = field(default=-math.inf, init=False)
    _last_content: object = field(default=None, init=False)

    def problem(self, stamp_s: float, now_s: float, content: object = None) -> str:
        if stamp_s == 0.0:
            return ""
        if not (finite(stamp_s) and finite(now_s)):
            return f"stamp {stamp_s!r} s is not a finite time"
        if stamp_s < now_s - self.max_age_s:
            return f"stale: stamped {now_s - stamp_s:.3f} s ago (at most {self.max_age_s} s)"
        if stamp_s > now_s + self.max_ahead_s:
            return f"stamped {stamp_s - now_s:.3f} s in the future (at most {self.max_ahead_s} s)"
        if stamp_s < self._last_stamp_s:
            return f"out of order: stamped {self._last_stamp_s - stamp_s:.3f} s before the last accepted command"
        if stamp_s == self._last_stamp_s and content == self._last_content:
            return "a repeat of the last accepted command"
        return ""

    def is_repeat(self, stamp_s: float, content: object = None) -> bool:
        """The same stamp (not zero) and content as the last accepted command."""
        return stamp_s != 0.0 and stamp_s == self._last_stamp_s and content == self._last_content

    def accept(self, stamp_s: float, content: object = None) -> None:
        if stamp_s != 0.0:
            self._last_stamp_s, self._last_content = stamp_s, content


class Arming:
    """Whether commands may reach the controllers: armed, and no emergency stop.

    `rearm_after_estop` (the robot's setting) disarms on every emergency stop, so a
    released stop resumes nothing until someone arms again; without it (simulation)
    releasing the stop resumes.
    """

    def __init__(self, armed: bool, rearm_after_estop: bool):
        self.armed = bool(armed)
        self.estopped = False
        self.rearm_after_estop = bool(rearm_after_estop)

    @property
    def forwarding(self) -> bool:
        """Commands go to the controllers (otherwise: to the preview topics, or nowhere)."""
        return self.armed and not self.estopped

    def engage_estop(self) -> bool:
        """True if this engaged it (it was not engaged already)."""
        if self.estopped:
            return False
        self.estopped = True
        if self.rearm_after_estop:
            self.armed = False
        return True

    def release_estop(self) -> bool:
        """True if this released it."""
        if not self.estopped:
            return False
        self.estopped = False
        return True

    def arm_refusal(self) -> str:
        """Why arming is refused now; "" if it may be armed."""
        return "the emergency stop is engaged: release /estop first" if self.estopped else ""
