"""The Franka arm as constants: joint names, limits and the kinematic chain.

Joint names follow franka_ros2 (``fr3_*``) so the same topics and controllers work on
the real robot, while the geometry is the Panda model of pybullet_data's
``franka_panda/panda.urdf`` that the simulation loads (FR3 and Panda share the same
kinematic parameters).  The limits below are the Panda's; an FR3's differ (its joint 6,
for one, cannot go below 0.5445 rad), so check them before driving a real FR3.

Pure constants: no rclpy, no pybullet, so the robot driver, the simulation and the
training code all read the same numbers.
"""

from __future__ import annotations

from typing import NamedTuple

ARM_JOINT_NAMES = tuple(f"fr3_joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES = ("fr3_finger_joint1", "fr3_finger_joint2")

BASE_FRAME = "fr3_link0"
# The tool centre point: panda.urdf's ``panda_grasptarget``, midway between the fingertips.
TCP_FRAME = "fr3_hand_tcp"

# Position limits in rad.  These are the *soft* limits of the URDF's safety_controller,
# which the Franka controller enforces, not the wider mechanical ``<limit>`` values:
# commanding beyond them trips the robot's reflexes.
ARM_JOINT_LOWER_RAD = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
ARM_JOINT_UPPER_RAD = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
ARM_JOINT_VELOCITY_RAD_S = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)

# Distance between the fingers; each finger joint travels half of it (0..0.04 m).
FINGER_WIDTH_MIN_M = 0.0
FINGER_WIDTH_MAX_M = 0.08

# Elbow up, gripper pointing straight down with its x axis along the base x axis.
READY_POSE = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)


class FixedTransform(NamedTuple):
    """A URDF ``<origin>``: translation in m, then fixed-axis roll-pitch-yaw in rad."""

    xyz: tuple[float, float, float]
    rpy: tuple[float, float, float]


# Numbers exactly as written in panda.urdf, so forward kinematics matches pybullet.
_HALF_PI = 1.57079632679

# Origin of each arm joint in its parent link's frame; every arm joint turns about its
# own z axis, and the child link frame is the joint frame rotated by the joint angle.
ARM_JOINT_ORIGINS = (
    FixedTransform((0.0, 0.0, 0.333), (0.0, 0.0, 0.0)),  # panda_joint1: link0 -> link1
    FixedTransform((0.0, 0.0, 0.0), (-_HALF_PI, 0.0, 0.0)),  # panda_joint2: link1 -> link2
    FixedTransform((0.0, -0.316, 0.0), (_HALF_PI, 0.0, 0.0)),  # panda_joint3: link2 -> link3
    FixedTransform((0.0825, 0.0, 0.0), (_HALF_PI, 0.0, 0.0)),  # panda_joint4: link3 -> link4
    FixedTransform((-0.0825, 0.384, 0.0), (-_HALF_PI, 0.0, 0.0)),  # panda_joint5: link4 -> link5
    FixedTransform((0.0, 0.0, 0.0), (_HALF_PI, 0.0, 0.0)),  # panda_joint6: link5 -> link6
    FixedTransform((0.088, 0.0, 0.0), (_HALF_PI, 0.0, 0.0)),  # panda_joint7: link6 -> link7
)

# Fixed joints from link7 to the TCP, in chain order.
FLANGE_ORIGIN = FixedTransform((0.0, 0.0, 0.107), (0.0, 0.0, 0.0))  # panda_joint8: link7 -> link8
HAND_ORIGIN = FixedTransform((0.0, 0.0, 0.0), (0.0, 0.0, -0.785398163397))  # panda_hand_joint
TCP_ORIGIN = FixedTransform((0.0, 0.0, 0.105), (0.0, 0.0, 0.0))  # panda_grasptarget_hand
