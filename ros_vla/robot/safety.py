"""Checks that stand between a command and the hardware: joint limits, trajectory
validation and timing, workspace bounds, base velocity limiting and a command watchdog.

Pure numpy (no rclpy, no pybullet) so the real robot, the simulation and training share
them.  Validators return lists of human-readable problems (empty = OK) rather than raise,
because their inputs come from the network and a bad message must be refused, not crash
the node; they never raise on malformed numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ros_vla.robot import panda

# A trajectory with many bad points would otherwise flood the log with one line each.
_MAX_REPORTED_ERRORS = 20


def finite(x) -> bool:
    """True if `x` (a number or array-like of numbers) is numeric and contains no NaN or inf."""
    try:
        return bool(np.all(np.isfinite(np.asarray(x, dtype=float))))
    except (TypeError, ValueError):
        return False


def _as_vector(values, length: int) -> np.ndarray | None:
    """`values` as a float vector of `length`, or None if it is not one."""
    try:
        vector = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return None
    return vector if vector.shape == (length,) else None


@dataclass(frozen=True)
class JointLimits:
    """Position (rad) and velocity (rad/s) limits, indexed like `joint_names`.

    Defaults to the Franka arm of `panda`.
    """

    joint_names: tuple[str, ...] = panda.ARM_JOINT_NAMES
    lower: tuple[float, ...] = panda.ARM_JOINT_LOWER_RAD
    upper: tuple[float, ...] = panda.ARM_JOINT_UPPER_RAD
    velocity: tuple[float, ...] = panda.ARM_JOINT_VELOCITY_RAD_S

    def __post_init__(self):
        count = len(self.joint_names)
        if not (len(self.lower) == len(self.upper) == len(self.velocity) == count):
            raise ValueError("joint_names, lower, upper and velocity must have the same length")
        if not (finite(self.lower) and finite(self.upper) and finite(self.velocity)):
            raise ValueError("joint limits must be finite")
        if any(lo > hi for lo, hi in zip(self.lower, self.upper)):
            raise ValueError("every lower limit must be <= its upper limit")
        if any(v <= 0 for v in self.velocity):
            raise ValueError("velocity limits must be positive")

    def check_positions(self, q) -> list[str]:
        """Problems with joint positions `q` (ordered like `joint_names`); empty if none."""
        vector = _as_vector(q, len(self.joint_names))
        if vector is None:
            return [f"expected {len(self.joint_names)} numeric joint positions, got {q!r}"]
        errors = []
        for name, value, lo, hi in zip(self.joint_names, vector, self.lower, self.upper):
            if not math.isfinite(value):
                errors.append(f"{name} position {value} is not finite")
            elif value < lo:
                errors.append(f"{name} position {value:.4f} rad is below its lower limit {lo:.4f} rad")
            elif value > hi:
                errors.append(f"{name} position {value:.4f} rad is above its upper limit {hi:.4f} rad")
        return errors


def _name_problems(joint_names: Sequence[str], expected_names: Sequence[str]) -> list[str]:
    names = list(joint_names)
    errors = []
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        errors.append(f"duplicate joint names: {duplicates}")
    missing = [name for name in expected_names if name not in names]
    if missing:
        errors.append(f"missing joints: {missing}")
    unexpected = [name for name in names if name not in expected_names]
    if unexpected:
        errors.append(f"unexpected joints: {unexpected}")
    return errors


def reorder_positions(joint_names: Sequence[str], positions, expected_names: Sequence[str]) -> np.ndarray:
    """`positions`, given in the order of `joint_names`, rearranged into `expected_names` order.

    Raises ValueError if the names are not exactly the expected ones (in any order) or the
    number of positions does not match.
    """
    problems = _name_problems(joint_names, expected_names)
    if problems:
        raise ValueError("; ".join(problems))
    vector = np.asarray(positions, dtype=float)
    if vector.shape != (len(joint_names),):
        raise ValueError(f"expected {len(joint_names)} positions, got shape {vector.shape}")
    index = {name: i for i, name in enumerate(joint_names)}
    return vector[[index[name] for name in expected_names]]


def validate_joint_trajectory(
    joint_names: Sequence[str],
    points: Sequence[tuple[Sequence[float], float]],
    limits: JointLimits,
    expected_names: Sequence[str],
    q_current=None,
    velocity_scale: float = 1.0,
) -> list[str]:
    """Problems with a joint trajectory; an empty list means it is safe to send.

    `points` are (positions ordered like `joint_names`, time_from_start in s).  The names
    must be exactly `expected_names` in any order; limits are looked up by name.
    `q_current` (ordered like `expected_names`), if given, is where the arm is now, and the
    move from it to the first point is checked too.  Every segment's mean joint speed
    |dq| / dt must stay within `velocity_scale` times the joint's velocity limit.
    """
    errors = _name_problems(joint_names, expected_names)
    unlimited = [name for name in expected_names if name not in limits.joint_names]
    if unlimited:
        errors.append(f"no limits configured for joints: {unlimited}")
    if not finite(velocity_scale) or not 0.0 < float(velocity_scale) <= 1.0:
        errors.append(f"velocity_scale must be in (0, 1], got {velocity_scale!r}")
    if errors:
        return errors
    if len(points) == 0:
        return ["trajectory has no points"]

    index = {name: i for i, name in enumerate(limits.joint_names)}
    ordered = [index[name] for name in expected_names]
    expected_limits = JointLimits(
        tuple(expected_names),
        tuple(limits.lower[i] for i in ordered),
        tuple(limits.upper[i] for i in ordered),
        tuple(limits.velocity[i] for i in ordered),
    )
    max_speed = np.array(expected_limits.velocity) * float(velocity_scale)

    # Each valid state is (label, positions in expected order, time); the current state is t = 0.
    states = []
    if q_current is not None:
        current = _as_vector(q_current, len(expected_names))
        if current is None or not finite(current):
            errors.append(f"current joint state must be {len(expected_names)} finite values, got {q_current!r}")
        else:
            states.append(("the current state", current, 0.0))
    for number, point in enumerate(points):
        label = f"point {number}"
        try:
            positions, time_s = point
            time_s = float(time_s)
        except (TypeError, ValueError):
            errors.append(f"{label} must be (positions, time_from_start_s), got {point!r}")
            continue
        vector = _as_vector(positions, len(joint_names))
        if vector is None:
            errors.append(f"{label} must have {len(joint_names)} numeric positions, got {positions!r}")
            continue
        vector = reorder_positions(joint_names, vector, expected_names)
        problems = expected_limits.check_positions(vector)
        if not math.isfinite(time_s) or time_s < 0:
            problems.append(f"time_from_start {time_s} s is not a finite non-negative number")
        if problems:
            errors.extend(f"{label}: {problem}" for problem in problems)
            continue
        states.append((label, vector, time_s))

    for (previous_label, previous, start), (label, vector, end) in zip(states, states[1:]):
        step = np.abs(vector - previous)
        duration = end - start
        if duration <= 0:
            if previous_label != "the current state" or np.any(step > 0):
                errors.append(f"{label}: time {end} s does not come after {previous_label} at {start} s")
            continue
        # A tiny duration makes the speed inf, which is refused like any other excess.
        with np.errstate(over="ignore"):
            speeds = step / duration
        for name, speed, limit in zip(expected_names, speeds, max_speed):
            if speed > limit:
                errors.append(
                    f"{label}: {name} moves at {speed:.3f} rad/s from {previous_label}, "
                    f"above its limit {limit:.3f} rad/s"
                )
    if len(errors) > _MAX_REPORTED_ERRORS:
        errors = errors[:_MAX_REPORTED_ERRORS] + [f"... and {len(errors) - _MAX_REPORTED_ERRORS} more problems"]
    return errors


# Margin so that even a rest-to-rest cubic interpolation of a segment, whose peak speed is
# 1.5 times its mean |dq| / dt, stays within the limit; linear interpolation has room to spare.
_CUBIC_PEAK_TO_MEAN = 1.5


def time_parameterize(
    waypoints_q: Sequence[Sequence[float]],
    q_start,
    limits: JointLimits,
    velocity_scale: float = 0.5,
    min_segment_s: float = 0.05,
) -> list[tuple[np.ndarray, float]]:
    """(positions, time_from_start_s) for each waypoint, moving from `q_start` at t = 0.

    Each segment gets the time its slowest joint needs at `velocity_scale` times its
    velocity limit, stretched so the peak (not just the mean) speed of a rest-to-rest
    cubic stays within it, and at least `min_segment_s`.  All positions are ordered
    like `limits.joint_names`.  Raises ValueError on non-finite or misshaped input; check
    the result with `validate_joint_trajectory` before sending it.
    """
    count = len(limits.joint_names)
    if not finite(velocity_scale) or not 0.0 < velocity_scale <= 1.0:
        raise ValueError(f"velocity_scale must be in (0, 1], got {velocity_scale!r}")
    if not finite(min_segment_s) or min_segment_s <= 0:
        raise ValueError(f"min_segment_s must be positive, got {min_segment_s!r}")
    previous = _as_vector(q_start, count)
    if previous is None or not finite(previous):
        raise ValueError(f"q_start must be {count} finite values, got {q_start!r}")
    max_speed = np.array(limits.velocity) * velocity_scale
    timed = []
    time_s = 0.0
    for waypoint in waypoints_q:
        q = _as_vector(waypoint, count)
        if q is None or not finite(q):
            raise ValueError(f"waypoint must be {count} finite values, got {waypoint!r}")
        duration = _CUBIC_PEAK_TO_MEAN * float(np.max(np.abs(q - previous) / max_speed))
        time_s += max(duration, min_segment_s)
        timed.append((q, time_s))
        previous = q
    return timed


@dataclass(frozen=True)
class WorkspaceBox:
    """Axis-aligned box (m) the TCP must stay in, in whatever frame the caller uses."""

    min_xyz: tuple[float, float, float]
    max_xyz: tuple[float, float, float]

    def __post_init__(self):
        if len(self.min_xyz) != 3 or len(self.max_xyz) != 3:
            raise ValueError("min_xyz and max_xyz must have 3 values each")
        if not (finite(self.min_xyz) and finite(self.max_xyz)):
            raise ValueError("workspace bounds must be finite")
        if any(lo >= hi for lo, hi in zip(self.min_xyz, self.max_xyz)):
            raise ValueError(f"workspace min {self.min_xyz} must be below max {self.max_xyz} on every axis")

    def contains(self, xyz) -> bool:
        return not self.explain(xyz)

    def explain(self, xyz) -> str:
        """Why `xyz` is outside the box, or "" if it is inside."""
        point = _as_vector(xyz, 3)
        if point is None or not finite(point):
            return f"point {xyz!r} is not 3 finite coordinates"
        reasons = []
        for axis, value, lo, hi in zip("xyz", point, self.min_xyz, self.max_xyz):
            if value < lo:
                reasons.append(f"{axis} = {value:.3f} m is below the workspace minimum {lo:.3f} m")
            elif value > hi:
                reasons.append(f"{axis} = {value:.3f} m is above the workspace maximum {hi:.3f} m")
        return "; ".join(reasons)


@dataclass
class BaseVelocityLimiter:
    """Limits a holonomic base's velocity commands in speed and in acceleration.

    Linear speed is limited as a vector, so a clamped command keeps its direction.
    A non-finite command is treated as a stop request (decelerating, not jumping to zero),
    and `last_rejection` then says why; it is "" after a good command.
    """

    max_linear: float  # m/s
    max_angular: float  # rad/s
    max_linear_accel: float  # m/s^2
    max_angular_accel: float  # rad/s^2
    velocity: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), init=False)
    last_rejection: str = field(default="", init=False)

    def __post_init__(self):
        limits = (self.max_linear, self.max_angular, self.max_linear_accel, self.max_angular_accel)
        if not finite(limits) or min(limits) <= 0:
            raise ValueError(f"base velocity and acceleration limits must be positive and finite, got {limits}")

    def reset(self) -> None:
        """Forget the current velocity, e.g. after the base was stopped by other means."""
        self.velocity = (0.0, 0.0, 0.0)
        self.last_rejection = ""

    def step(self, cmd_vx: float, cmd_vy: float, cmd_wz: float, dt: float) -> tuple[float, float, float]:
        """Velocity (vx, vy, wz) to send now, `dt` s after the previous step."""
        if not finite(dt) or dt <= 0:
            # Without a valid time step no change can be bounded: hold the current velocity.
            self.last_rejection = f"time step {dt!r} s is not positive and finite; velocity held"
            return self.velocity
        command = (cmd_vx, cmd_vy, cmd_wz)
        if finite(command):
            self.last_rejection = ""
        else:
            self.last_rejection = f"command {command!r} is not finite; stopping"
            command = (0.0, 0.0, 0.0)

        vx, vy, wz = (float(value) for value in command)
        # math.hypot, unlike a sum of squares, does not overflow for huge finite commands.
        speed = math.hypot(vx, vy)
        if speed > self.max_linear:
            vx, vy = vx / speed * self.max_linear, vy / speed * self.max_linear
        wz = min(max(wz, -self.max_angular), self.max_angular)

        current_vx, current_vy, current_wz = self.velocity
        change_x, change_y = vx - current_vx, vy - current_vy
        change = math.hypot(change_x, change_y)
        max_change = self.max_linear_accel * dt
        if change > max_change:
            change_x, change_y = change_x / change * max_change, change_y / change * max_change
        max_turn_change = self.max_angular_accel * dt
        change_wz = min(max(wz - current_wz, -max_turn_change), max_turn_change)

        self.velocity = (current_vx + change_x, current_vy + change_y, current_wz + change_wz)
        return self.velocity


class Watchdog:
    """Expires when `feed` has not been called for more than `timeout_s` (and before the
    first feed), so a silent command source stops the robot instead of leaving it moving."""

    def __init__(self, timeout_s: float):
        if not finite(timeout_s) or timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive and finite, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self._last_feed_s: float | None = None

    def feed(self, now: float) -> None:
        """Record that the source was heard from at `now` (s); a non-finite time is ignored."""
        if finite(now):
            self._last_feed_s = float(now)

    def seconds_since_feed(self, now: float) -> float:
        """Time since the last feed; inf before the first one or for a non-finite `now`."""
        if self._last_feed_s is None or not finite(now):
            return math.inf
        return float(now) - self._last_feed_s

    def expired(self, now: float) -> bool:
        elapsed = self.seconds_since_feed(now)
        # A clock that ran backwards (e.g. a restarted simulation) cannot vouch for the
        # source being alive, so a negative elapsed time counts as expired too.
        return not 0.0 <= elapsed <= self.timeout_s
