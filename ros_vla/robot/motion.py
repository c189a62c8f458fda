"""Cartesian motion for the arm: pose goals, end-effector deltas and the pick/place primitive.

Everything is planned in the arm base frame (fr3_link0) into joint-space points that
already respect joint position and velocity limits and keep the tool inside a workspace
box; the caller only has to send them. Refusals come back as readable messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ros_vla.robot import kinematics, panda
from ros_vla.robot.safety import JointLimits, WorkspaceBox, finite, time_parameterize


@dataclass(frozen=True)
class MotionConfig:
    workspace: WorkspaceBox = WorkspaceBox((-0.2, -0.7, 0.0), (0.9, 0.7, 0.9))
    velocity_scale: float = 0.4  # fraction of the joint velocity limits used for motion
    cartesian_step_m: float = 0.01  # spacing of IK waypoints along straight tool paths
    joint_step_rad: float = 0.15  # spacing of workspace checks along joint-space moves
    max_joint_jump_rad: float = 0.35  # larger jumps between path waypoints = IK branch flip
    approach_height_m: float = 0.12  # pre-grasp / pre-place height above the target
    place_clearance_m: float = 0.03  # release this far above the place point
    gripper_open_m: float = 0.08
    gripper_closed_m: float = 0.0
    min_grasp_width_m: float = 0.004  # fingers closer than this: nothing was grasped
    limits: JointLimits = JointLimits()


@dataclass
class Plan:
    """Joint points [(q, time_from_start_s)] from the current state, or why there are none."""

    points: list[tuple[np.ndarray, float]]
    message: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.points) and not self.message


def _refuse(message: str) -> Plan:
    return Plan([], message)


def _workspace_problem(q_path: list[np.ndarray], cfg: MotionConfig) -> str:
    for q in q_path:
        problem = cfg.workspace.explain(kinematics.forward_kinematics(q)[:3, 3])
        if problem:
            return f"path leaves the workspace: {problem}"
    return ""


def _nearby_solution(target: np.ndarray, q_seed: np.ndarray, cfg: MotionConfig, what: str):
    """IK for a small step from `q_seed` (no restarts): (q, "") or (None, why it is refused),
    refusing targets outside the workspace and sudden arm reconfigurations."""
    problem = cfg.workspace.explain(target[:3, 3])
    if problem:
        return None, f"{what} leaves the workspace: {problem}"
    solution = kinematics.solve_ik(target, q_seed, random_restarts=0)
    if not solution.success:
        return None, f"{what} unreachable at {target[:3, 3].round(3).tolist()}: {solution.message}"
    if np.max(np.abs(solution.q - q_seed)) > cfg.max_joint_jump_rad:
        return None, f"{what} needs a sudden arm reconfiguration; refusing the jump"
    return solution.q, ""


def plan_joint_move(q_start: np.ndarray, q_goal: np.ndarray, cfg: MotionConfig) -> Plan:
    """Straight line in joint space, checked against the workspace along the way."""
    problems = cfg.limits.check_positions(q_goal)
    if problems:
        return _refuse("goal outside joint limits: " + "; ".join(problems))
    steps = max(1, int(math.ceil(np.max(np.abs(q_goal - q_start)) / cfg.joint_step_rad)))
    path = [q_start + (q_goal - q_start) * (k / steps) for k in range(1, steps + 1)]
    problem = _workspace_problem(path, cfg)
    if problem:
        return _refuse(problem)
    # One segment: the controller interpolates linearly, so intermediate points add nothing.
    return Plan(time_parameterize([q_goal], q_start, cfg.limits, cfg.velocity_scale))


def plan_pose_goal(q_start: np.ndarray, target: np.ndarray, cfg: MotionConfig) -> Plan:
    """Move the TCP to a 4x4 pose (fr3_link0) through joint space."""
    if not finite(target) or np.shape(target) != (4, 4):
        return _refuse("pose goal must be a finite 4x4 pose")
    problem = cfg.workspace.explain(target[:3, 3])
    if problem:
        return _refuse(f"goal outside the workspace: {problem}")
    solution = kinematics.solve_ik(target, q_start)
    if not solution.success:
        return _refuse(f"goal unreachable: {solution.message}")
    return plan_joint_move(q_start, solution.q, cfg)


def plan_cartesian_line(q_start: np.ndarray, target: np.ndarray, cfg: MotionConfig) -> Plan:
    """Move the TCP along a straight line to `target`, keeping the target orientation."""
    if not finite(target) or np.shape(target) != (4, 4):
        return _refuse("line goal must be a finite 4x4 pose")
    start = kinematics.forward_kinematics(q_start)
    distance = float(np.linalg.norm(target[:3, 3] - start[:3, 3]))
    steps = max(1, int(math.ceil(distance / cfg.cartesian_step_m)))
    q_previous, path = q_start, []
    for k in range(1, steps + 1):
        waypoint = target.copy()
        waypoint[:3, 3] = start[:3, 3] + (target[:3, 3] - start[:3, 3]) * (k / steps)
        q_previous, problem = _nearby_solution(waypoint, q_previous, cfg, "line")
        if problem:
            return _refuse(problem)
        path.append(q_previous)
    return Plan(time_parameterize(path, q_start, cfg.limits, cfg.velocity_scale))


def apply_ee_delta(q_now: np.ndarray, translation: np.ndarray, rotation: np.ndarray,
                   duration_s: float, cfg: MotionConfig) -> Plan:
    """Displace the TCP by `translation` (m, base frame) and `rotation` (3x3, base frame,
    about the TCP), arriving no sooner than `duration_s` and within velocity limits."""
    if not (finite(translation) and finite(rotation) and finite(duration_s)) or duration_s <= 0:
        return _refuse("end-effector delta must be finite with a positive duration")
    current = kinematics.forward_kinematics(q_now)
    target = np.eye(4)
    target[:3, :3] = np.asarray(rotation, float) @ current[:3, :3]
    target[:3, 3] = current[:3, 3] + np.asarray(translation, float)
    q_goal, problem = _nearby_solution(target, q_now, cfg, "delta")
    if problem:
        return _refuse(problem)
    (q_goal, t_goal), = time_parameterize([q_goal], q_now, cfg.limits, cfg.velocity_scale)
    return Plan([(q_goal, max(t_goal, duration_s))])


@dataclass(frozen=True)
class Step:
    """One step of a primitive: a tool motion ('joint' or 'line' to `pose`) or a gripper width."""

    name: str
    kind: str  # "joint", "line", "gripper" or "ready"
    pose: np.ndarray | None = None
    width_m: float = 0.0


def canonical_grasp_yaw(yaw: float) -> float:
    """A square block and a two-finger gripper are symmetric every 90 degrees: turn the
    wrist as little as possible from the ready orientation."""
    return float((yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4)


def pick_place_steps(pick_xyz, pick_yaw: float, place_xyz, place_yaw: float, cfg: MotionConfig) -> list[Step]:
    """Approach, descend, grasp, lift, carry, place, retreat and return to ready."""
    pick_xyz, place_xyz = np.asarray(pick_xyz, float), np.asarray(place_xyz, float)
    up = np.array([0.0, 0.0, cfg.approach_height_m])
    grasp = kinematics.top_down_grasp_pose(pick_xyz, canonical_grasp_yaw(pick_yaw))
    release = kinematics.top_down_grasp_pose(place_xyz + [0, 0, cfg.place_clearance_m],
                                             canonical_grasp_yaw(place_yaw))
    above_pick = kinematics.top_down_grasp_pose(pick_xyz + up, canonical_grasp_yaw(pick_yaw))
    above_place = kinematics.top_down_grasp_pose(place_xyz + up, canonical_grasp_yaw(place_yaw))
    return [
        Step("open gripper", "gripper", width_m=cfg.gripper_open_m),
        Step("approach", "joint", above_pick),
        Step("descend", "line", grasp),
        Step("grasp", "gripper", width_m=cfg.gripper_closed_m),
        Step("lift", "line", above_pick),
        Step("carry", "joint", above_place),
        Step("lower", "line", release),
        Step("release", "gripper", width_m=cfg.gripper_open_m),
        Step("retreat", "line", above_place),
        Step("return to ready", "ready"),
    ]


def check_pick_place_targets(pick_xyz, place_xyz, cfg: MotionConfig) -> str:
    """Why a pick/place request cannot be done, before any motion; "" if it looks feasible."""
    for label, xyz in (("pick", pick_xyz), ("place", place_xyz)):
        if not finite(xyz) or np.shape(xyz) != (3,):
            return f"{label} position must be 3 finite numbers"
        for height in (0.0, cfg.approach_height_m):
            point = np.asarray(xyz, float) + [0, 0, height]
            problem = cfg.workspace.explain(point)
            if problem:
                return f"{label} target outside the workspace: {problem}"
            solution = kinematics.solve_ik(kinematics.top_down_grasp_pose(point, 0.0), panda.READY_POSE)
            if not solution.success:
                return f"{label} target {np.round(point, 3).tolist()} unreachable: {solution.message}"
    return ""
