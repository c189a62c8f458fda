"""Forward kinematics, Jacobian and inverse kinematics of the Franka arm, in pure numpy.

All poses are 4x4 homogeneous transforms of the tool centre point (TCP, between the
fingertips) in the arm base frame ``fr3_link0``; angles are in rad, lengths in m,
quaternions are (x, y, z, w) like ROS messages.  No rclpy and no pybullet here, so the
same code runs on the robot, in the simulation and in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ros_vla.robot import panda

_LOWER = np.array(panda.ARM_JOINT_LOWER_RAD)
_UPPER = np.array(panda.ARM_JOINT_UPPER_RAD)
_READY = np.array(panda.READY_POSE)
_NUM_JOINTS = len(panda.ARM_JOINT_NAMES)


def rotation_from_rpy(rpy) -> np.ndarray:
    """3x3 rotation of fixed-axis roll, pitch, yaw (URDF and ROS convention: Rz @ Ry @ Rx)."""
    roll, pitch, yaw = (float(a) for a in rpy)
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def pose_from_xyz_rpy(xyz, rpy) -> np.ndarray:
    """4x4 pose from a translation and fixed-axis roll, pitch, yaw."""
    pose = np.eye(4)
    pose[:3, :3] = rotation_from_rpy(rpy)
    pose[:3, 3] = np.asarray(xyz, dtype=float).reshape(3)
    return pose


def xyz_rpy_from_pose(pose) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `pose_from_xyz_rpy`: (xyz, rpy), with pitch in [-pi/2, pi/2]."""
    pose = np.asarray(pose, dtype=float)
    r = pose[:3, :3]
    yaw = math.atan2(r[1, 0], r[0, 0])
    # Undo the yaw and read pitch and roll off Rz(-yaw) @ R = Ry(pitch) @ Rx(roll).  Unlike
    # atan2(r21, r22) for roll, this stays accurate near pitch = +-pi/2 (gimbal lock),
    # where roll and yaw are not separately defined and any consistent split will do.
    c, s = math.cos(yaw), math.sin(yaw)
    pitch = math.atan2(-r[2, 0], c * r[0, 0] + s * r[1, 0])
    roll = math.atan2(s * r[0, 2] - c * r[1, 2], c * r[1, 1] - s * r[0, 1])
    return pose[:3, 3].copy(), np.array([roll, pitch, yaw])


def matrix_from_quaternion(quat_xyzw) -> np.ndarray:
    """3x3 rotation of a quaternion (x, y, z, w); it need not be normalised, but not zero."""
    x, y, z, w = np.asarray(quat_xyzw, dtype=float).reshape(4)
    norm_sq = x * x + y * y + z * z + w * w
    if not math.isfinite(norm_sq) or norm_sq < 1e-12:
        raise ValueError(f"not a rotation quaternion: {(x, y, z, w)}")
    s = 2.0 / norm_sq
    return np.array(
        [
            [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
            [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
            [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
        ]
    )


def quaternion_from_matrix(rotation) -> np.ndarray:
    """Unit quaternion (x, y, z, w) with w >= 0 of a 3x3 rotation (or the rotation of a 4x4 pose)."""
    r = np.asarray(rotation, dtype=float)[:3, :3]
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    # Shepperd's method: divide by the largest of the four candidates to stay accurate.
    if trace > max(r[0, 0], r[1, 1], r[2, 2]):
        s = 2.0 * math.sqrt(1.0 + trace)
        quat = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        quat = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] >= r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        quat = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        quat = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
    quat = np.array(quat)
    quat /= np.linalg.norm(quat)
    return -quat if quat[3] < 0 else quat


def top_down_grasp_pose(xyz, yaw: float) -> np.ndarray:
    """TCP pose at `xyz` with the gripper pointing straight down (tool z = base -z).

    The tool x axis points along `yaw` (rad about base z) and the fingers close across it,
    along (sin yaw, -cos yaw, 0).  yaw = 0 is the orientation of `panda.READY_POSE`.
    The gripper is symmetric, so yaw and yaw + pi give the same grasp.
    """
    return pose_from_xyz_rpy(xyz, (math.pi, 0.0, yaw))


def _fixed_transform(origin: panda.FixedTransform) -> np.ndarray:
    return pose_from_xyz_rpy(origin.xyz, origin.rpy)


_JOINT_ORIGINS = tuple(_fixed_transform(origin) for origin in panda.ARM_JOINT_ORIGINS)
_LINK7_TO_LINK8 = _fixed_transform(panda.FLANGE_ORIGIN)
_LINK8_TO_HAND = _fixed_transform(panda.HAND_ORIGIN)
_HAND_TO_TCP = _fixed_transform(panda.TCP_ORIGIN)
_LINK7_TO_TCP = _LINK7_TO_LINK8 @ _LINK8_TO_HAND @ _HAND_TO_TCP

LINK_FRAME_NAMES = (
    *(f"fr3_link{i}" for i in range(9)),
    "fr3_hand",
    panda.TCP_FRAME,
)


def _joint_frames(q: np.ndarray) -> list[np.ndarray]:
    """Frames of fr3_link1..fr3_link7 in the base frame; link i turns about its own z by q[i-1]."""
    frames = []
    frame = np.eye(4)
    for origin, angle in zip(_JOINT_ORIGINS, q):
        c, s = math.cos(angle), math.sin(angle)
        turn = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        frame = frame @ origin @ turn
        frames.append(frame)
    return frames


def _checked_joints(q) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    if q.shape != (_NUM_JOINTS,):
        raise ValueError(f"expected {_NUM_JOINTS} arm joint positions, got shape {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError(f"joint positions are not finite: {q}")
    return q


def forward_kinematics(q) -> np.ndarray:
    """4x4 pose of the TCP in the arm base frame for the 7 arm joint positions `q`."""
    return _joint_frames(_checked_joints(q))[-1] @ _LINK7_TO_TCP


def tcp_positions(qs) -> np.ndarray:
    """TCP positions (N, 3) in the base frame for N sets of 7 finite joint positions (N, 7):
    `forward_kinematics` for many configurations at once (checking a whole path is cheap)."""
    qs = np.asarray(qs, dtype=float).reshape(-1, _NUM_JOINTS)
    count = len(qs)
    frames = np.broadcast_to(np.eye(4), (count, 4, 4))
    turn = np.zeros((count, 4, 4))
    turn[:, 2, 2] = turn[:, 3, 3] = 1.0
    for origin, angles in zip(_JOINT_ORIGINS, qs.T):
        c, s = np.cos(angles), np.sin(angles)
        turn[:, 0, 0], turn[:, 0, 1], turn[:, 1, 0], turn[:, 1, 1] = c, -s, s, c
        frames = frames @ origin @ turn
    return (frames @ _LINK7_TO_TCP)[:, :3, 3]


def link_frames(q) -> dict[str, np.ndarray]:
    """4x4 pose in the base frame of every frame in `LINK_FRAME_NAMES` (link0 .. TCP)."""
    joint_frames = _joint_frames(_checked_joints(q))
    link8 = joint_frames[-1] @ _LINK7_TO_LINK8
    hand = link8 @ _LINK8_TO_HAND
    frames = [np.eye(4), *joint_frames, link8, hand, hand @ _HAND_TO_TCP]
    return dict(zip(LINK_FRAME_NAMES, frames))


def _pose_and_jacobian(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    joint_frames = _joint_frames(q)
    tcp = joint_frames[-1] @ _LINK7_TO_TCP
    axes = np.array([frame[:3, 2] for frame in joint_frames])
    origins = np.array([frame[:3, 3] for frame in joint_frames])
    jac = np.empty((6, _NUM_JOINTS))
    jac[:3] = np.cross(axes, tcp[:3, 3] - origins).T
    jac[3:] = axes.T
    return tcp, jac


def jacobian(q) -> np.ndarray:
    """6x7 geometric Jacobian of the TCP in the base frame: rows (vx, vy, vz, wx, wy, wz)."""
    return _pose_and_jacobian(_checked_joints(q))[1]


def rotation_vector(rotation) -> np.ndarray:
    """Axis * angle (angle in [0, pi]) of a 3x3 rotation: the log map of SO(3)."""
    r = np.asarray(rotation, dtype=float)
    sin_axis = 0.5 * np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    sin_angle = float(np.linalg.norm(sin_axis))
    cos_angle = 0.5 * (r[0, 0] + r[1, 1] + r[2, 2] - 1.0)
    angle = math.atan2(sin_angle, cos_angle)
    if angle < 1e-9:
        return sin_axis
    if math.pi - angle > 1e-4:
        return sin_axis * (angle / sin_angle)
    # Near pi the antisymmetric part vanishes; read the axis off R + I = 2 axis axis^T
    # instead, signed to agree with what is left of the antisymmetric part.
    outer = 0.5 * (r + np.eye(3))
    # Its column with the largest diagonal entry is the longest, so safe to normalise.
    axis = outer[:, int(np.argmax(np.diag(outer)))]
    axis = axis / np.linalg.norm(axis)
    return (-angle if axis @ sin_axis < 0 else angle) * axis


def _reach_from_shoulder() -> float:
    """Upper bound on the distance from joint 2 to the TCP, for any q.

    The distances shoulder (joint 2) -> elbow (joint 4) -> wrist (joint 6) -> TCP are each
    fixed by the link geometry, so their sum bounds the reach (triangle inequality) and lets
    `solve_ik` reject far targets without iterating.
    """
    frames = link_frames(_READY)
    points = [frames[name][:3, 3] for name in ("fr3_link2", "fr3_link4", "fr3_link6", panda.TCP_FRAME)]
    return float(sum(np.linalg.norm(b - a) for a, b in zip(points, points[1:])))


_SHOULDER = link_frames(_READY)["fr3_link2"][:3, 3]  # on joint 1's axis, so fixed for any q
_MAX_REACH_M = _reach_from_shoulder()


@dataclass(frozen=True)
class IKResult:
    """Outcome of `solve_ik`; the errors are those of `q`, measured by forward kinematics."""

    q: np.ndarray  # 7 joint positions, always within the joint limits
    success: bool
    position_error_m: float
    orientation_error_rad: float
    iterations: int  # summed over all attempts
    message: str


def _pose_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(position error, rotation vector taking current to target), both in the base frame."""
    return np.concatenate(
        [target[:3, 3] - current[:3, 3], rotation_vector(target[:3, :3] @ current[:3, :3].T)]
    )


def _as_array(values, shape: tuple[int, ...]) -> np.ndarray | None:
    """`values` as a finite float array of `shape`, or None if it is not one."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None
    return array if array.shape == shape and np.all(np.isfinite(array)) else None


def _is_rotation(rot: np.ndarray) -> bool:
    # Loose enough for rotations that passed through float32 (network outputs, some drivers).
    return np.allclose(rot @ rot.T, np.eye(3), atol=1e-4) and np.linalg.det(rot) > 0


def _within_tolerance(position_error, orientation_error, position_only, position_tolerance,
                      orientation_tolerance) -> bool:
    return position_error <= position_tolerance and (position_only or orientation_error <= orientation_tolerance)


def solve_ik(
    target_pose,
    q_seed,
    *,
    position_only: bool = False,
    position_tolerance_m: float = 1e-3,
    orientation_tolerance_rad: float = math.radians(1.0),
    max_iterations: int = 100,
    random_restarts: int = 10,
    rng_seed: int = 0,
) -> IKResult:
    """Joint positions putting the TCP at `target_pose` (4x4, base frame), near `q_seed`.

    Damped least squares with the damping shrinking as the error does (fast and stable
    near singularities), joints clamped to their limits every step, and the redundant
    degree of freedom pulled toward the seed so the arm moves as little as possible.  If
    the attempt from the seed (then from `panda.READY_POSE`) fails, up to
    `random_restarts` more start from random configurations within the limits, drawn
    reproducibly from `rng_seed`.  With `position_only` the orientation is left free.

    Never raises for bad input (NaN, inf, wrong shape, not a rotation): the result then
    has success False and a message.  On failure `q` is the best configuration found, the
    clamped seed if none was searched, or `panda.READY_POSE` if the seed is unusable.
    """
    seed = _as_array(q_seed, (_NUM_JOINTS,))
    if seed is None:
        return IKResult(_READY.copy(), False, math.inf, math.inf, 0,
                        f"q_seed must be {_NUM_JOINTS} finite joint positions, got {q_seed!r}")
    seed = np.clip(seed, _LOWER, _UPPER)
    target = _as_array(target_pose, (4, 4))
    if target is None:
        return IKResult(seed, False, math.inf, math.inf, 0,
                        f"target pose must be a finite 4x4 matrix (no NaN or inf), got {target_pose!r}")
    if not _is_rotation(target[:3, :3]):
        return IKResult(seed, False, math.inf, math.inf, 0, "target pose's rotation is not a proper rotation matrix")

    def errors(q: np.ndarray) -> tuple[float, float]:
        error = _pose_error(target, forward_kinematics(q))
        return float(np.linalg.norm(error[:3])), float(np.linalg.norm(error[3:]))

    distance = float(np.linalg.norm(target[:3, 3] - _SHOULDER))
    if distance > _MAX_REACH_M + position_tolerance_m:
        position_error, orientation_error = errors(seed)
        return IKResult(
            seed, False, position_error, orientation_error, 0,
            f"target is {distance:.3f} m from the shoulder, beyond the arm's reach of {_MAX_REACH_M:.3f} m",
        )

    rng = np.random.default_rng(rng_seed)
    starts = [seed] + ([] if np.allclose(seed, _READY) else [_READY])
    starts += [rng.uniform(_LOWER, _UPPER) for _ in range(random_restarts)]
    best_q, best_cost, best_errors, total_iterations = seed, math.inf, errors(seed), 0
    for start in starts:
        q, iterations = _descend(target, start, seed, position_only, position_tolerance_m,
                                 orientation_tolerance_rad, max_iterations)
        total_iterations += iterations
        position_error, orientation_error = errors(q)
        if _within_tolerance(position_error, orientation_error, position_only,
                             position_tolerance_m, orientation_tolerance_rad):
            return IKResult(q, True, position_error, orientation_error, total_iterations, "solved")
        cost = position_error + (0.0 if position_only else orientation_error)
        if cost < best_cost:
            best_q, best_cost, best_errors = q, cost, (position_error, orientation_error)
    return IKResult(
        best_q, False, *best_errors, total_iterations,
        f"no solution within tolerance after {len(starts)} attempts: best position error "
        f"{best_errors[0] * 1000:.1f} mm, orientation error {math.degrees(best_errors[1]):.2f} deg",
    )


# Largest joint change per iteration: keeps linearisation errors small far from the target.
_MAX_STEP_RAD = 0.4
# Gain of the pull toward the seed in the Jacobian's null space, per iteration.
_POSTURE_GAIN = 0.1
# Floor on the damping so the step stays bounded at singularities once the error is tiny.
_MIN_DAMPING_SQ = 1e-6
# An attempt that improves less than this fraction over `_STALL_WINDOW` iterations is
# stuck in a local minimum or against a limit; a restart is a better use of the time.
_STALL_IMPROVEMENT = 0.01
_STALL_WINDOW = 10


def _descend(target, start, rest, position_only, position_tolerance, orientation_tolerance,
             max_iterations) -> tuple[np.ndarray, int]:
    """One damped-least-squares attempt from `start`; returns (q, iterations used)."""
    rows = slice(0, 3) if position_only else slice(0, 6)
    q = start.copy()
    history = []
    for iteration in range(max_iterations):
        pose, jac = _pose_and_jacobian(q)
        error = _pose_error(target, pose)
        if _within_tolerance(np.linalg.norm(error[:3]), np.linalg.norm(error[3:]), position_only,
                             position_tolerance, orientation_tolerance):
            return q, iteration
        error, jac = error[rows], jac[rows]
        cost = float(error @ error)
        history.append(cost)
        if len(history) > _STALL_WINDOW and cost > (1 - _STALL_IMPROVEMENT) * history[-1 - _STALL_WINDOW]:
            return q, iteration
        # Damping tracks the squared error (Sugihara's Levenberg-Marquardt): heavy far away,
        # where the linearisation is poor, and vanishing near the target for fast convergence.
        step = _limited_step(q, jac, error, rest, damping_sq=0.5 * cost + _MIN_DAMPING_SQ)
        largest = np.max(np.abs(step))
        if largest > _MAX_STEP_RAD:
            step *= _MAX_STEP_RAD / largest
        q = np.clip(q + step, _LOWER, _UPPER)
    return q, max_iterations


def _limited_step(q, jac, error, rest, damping_sq) -> np.ndarray:
    """Damped least-squares step plus null-space posture pull, with joints that sit at a
    limit and would be pushed further out taken out of the solve, so the free joints make
    up for them instead of the step being silently clipped away."""
    free = np.ones(_NUM_JOINTS, dtype=bool)
    while free.any():
        step = np.zeros(_NUM_JOINTS)
        jac_free = jac[:, free]
        gram = jac_free @ jac_free.T + damping_sq * np.eye(len(error))
        step[free] = jac_free.T @ np.linalg.solve(gram, error)
        null_projector = np.eye(int(free.sum())) - np.linalg.pinv(jac_free) @ jac_free
        step[free] += null_projector @ (_POSTURE_GAIN * (rest - q)[free])
        blocked = free & (((q <= _LOWER) & (step < 0)) | ((q >= _UPPER) & (step > 0)))
        if not blocked.any():
            return step
        free &= ~blocked
    return np.zeros(_NUM_JOINTS)
