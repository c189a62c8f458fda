"""RT-1 actions -> robot commands, for one control step.

An action (`ActionTokenizer.detokenize`, named by `RT1Config.action_dimensions`) says, per
control step: a mode (arm, base or terminate), the TCP's displacement (xyz in m and
roll/pitch/yaw in rad, in fr3_link0), the gripper opening (m) and the base's displacement
(xy in m, yaw in rad, in base_link). What the stack takes for that:

- arm: /arm/ee_delta is a TCP displacement per control period (a translation and a rotation
  about the TCP, fr3_link0 axes) and /arm/gripper an opening width, so the arm's part
  passes through as a translation and a rotation matrix.
- base: /base/cmd_vel is a velocity, so the displacement becomes displacement / period.
- terminate and stop: nothing for the arm (the arm node's watchdog holds it once deltas
  stop) and zero velocity for the base.

Only one part of the robot moves in a step, as in RT-1: the base gets zero velocity in arm
mode. A non-finite or out-of-range action is refused with ValueError, so it can never
become a command; the caller stops the robot instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ros_vla.robot.kinematics import rotation_from_rpy
from ros_vla.rt1.config import ActionDimension

ZERO_VELOCITY = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class RobotCommand:
    """One control step's command.

    mode: "arm", "base", "terminate", or "stop" (not from the policy: the controller stops).
    ee_translation_m [3] and ee_rotation [3, 3]: the TCP's displacement this step, in
      fr3_link0 (rotation about the TCP); arm mode only, else None.
    gripper_width_m: the opening to command; arm mode only, else None.
    base_velocity: (vx m/s, vy m/s, wz rad/s) in base_link; zero unless mode is "base".
    """

    mode: str
    ee_translation_m: np.ndarray | None = None
    ee_rotation: np.ndarray | None = None
    gripper_width_m: float | None = None
    base_velocity: tuple[float, float, float] = ZERO_VELOCITY

    @property
    def moves_arm(self) -> bool:
        return self.mode == "arm"

    def ee_delta(self) -> np.ndarray:
        """The arm's displacement as a 4x4 transform (what arm/ee_delta carries)."""
        if not self.moves_arm:
            raise ValueError(f"a '{self.mode}' command has no arm displacement")
        delta = np.eye(4)
        delta[:3, :3] = self.ee_rotation
        delta[:3, 3] = self.ee_translation_m
        return delta


# Stop: the base gets zero velocity and the arm no more displacements.
STOP = RobotCommand("stop")

ARM_TRANSLATION = ("arm_x", "arm_y", "arm_z")
ARM_ROTATION = ("arm_roll", "arm_pitch", "arm_yaw")
BASE_DISPLACEMENT = ("base_x", "base_y", "base_yaw")


def command_from_action(action, dimensions: Sequence[ActionDimension], period_s: float) -> RobotCommand:
    """A detokenized action [D] (named by `dimensions`) -> the command for one control step
    of `period_s` seconds. Raises ValueError for a non-finite or out-of-range action."""
    action = np.asarray(action, dtype=np.float64)
    names = [d.name for d in dimensions]
    if action.shape != (len(names),):
        raise ValueError(f"expected an action of {len(names)} values ({', '.join(names)}), got shape {action.shape}")
    if not (math.isfinite(period_s) and period_s > 0):
        raise ValueError(f"control period must be positive and finite, got {period_s}")
    if not np.isfinite(action).all():
        bad = [n for n, v in zip(names, action) if not math.isfinite(v)]
        raise ValueError(f"action is not finite in {', '.join(bad)}: refusing to turn it into a command")
    # The tokenizer only ever decodes to values inside each range; anything else did not
    # come from it, and a controller must not guess what it meant.
    outside = [d.name for d, v in zip(dimensions, action) if not d.low <= v <= d.high]
    if outside:
        raise ValueError(f"action is outside its range in {', '.join(outside)}")
    value = dict(zip(names, action))
    mode_dimension = dimensions[names.index("mode")]
    index = value["mode"] - mode_dimension.low
    if index != round(index):
        raise ValueError(f"mode {value['mode']} is not a category index of {mode_dimension.categories}")
    mode = mode_dimension.categories[int(index)]
    if mode == "arm":
        return RobotCommand(
            "arm",
            ee_translation_m=np.array([value[n] for n in ARM_TRANSLATION]),
            ee_rotation=rotation_from_rpy([value[n] for n in ARM_ROTATION]),
            gripper_width_m=float(value["gripper_opening"]),
        )
    if mode == "base":
        return RobotCommand("base", base_velocity=tuple(float(value[n] / period_s) for n in BASE_DISPLACEMENT))
    if mode == "terminate":
        return RobotCommand("terminate")
    raise ValueError(f"unknown action mode '{mode}'")
