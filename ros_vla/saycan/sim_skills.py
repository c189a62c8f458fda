"""Headless executors of the skill library in SimWorld (no ROS): the robot's motion
primitives run in the physics simulation exactly as the stack would run them.

Targets come from simulator ground truth, so these are ORACLE skills (like
ros_vla.sim.oracle): they stand in for perception-driven skills in evaluation and in
the value function's training data. The planner never reads ground truth; it only sees
each skill's success flag, as it would from a real executor.
"""

from __future__ import annotations

import math

import numpy as np

from ros_vla.robot.motion import (
    MotionConfig,
    Step,
    pick_place_steps,
)
from ros_vla.sim.goals import object_entry, object_in_container, object_on_object, object_on_surface
from ros_vla.sim.oracle import pick_place_targets, run_steps, world_truth
from ros_vla.sim.world import SimWorld

# Where "put down" releases the held object, in fr3_link0: straight ahead of the arm on
# the surface the base faces (the work table at "table", the drop-off table at "user").
PUT_DOWN_XY_M = (0.5, 0.0)
PICK_STEPS = 5  # open, approach, descend, grasp, lift: the first steps of pick_place_steps
NAVIGATION_GAIN = 1.5
NAVIGATION_MAX_LINEAR = 0.5
NAVIGATION_MAX_ANGULAR = 1.0
NAVIGATION_TOLERANCE = (0.02, 0.03)  # metres, radians: as base_motion's goto
NAVIGATION_TIMEOUT_S = 30.0


def _settle(world: SimWorld, seconds: float = 0.5):
    world.step(int(seconds / world.time_step_s))


def pick_place(world: SimWorld, pick: str, place: str, cfg: MotionConfig) -> tuple[bool, str]:
    """Pick `pick` and release it on `place` (a bowl or a block); success = it rests there."""
    truth = world_truth(world)
    pick_xyz, pick_yaw, place_xyz, place_yaw = pick_place_targets(truth, pick, place, world.scene)
    ok, message = run_steps(world, pick_place_steps(pick_xyz, pick_yaw, place_xyz, place_yaw, cfg), cfg)
    if not ok:
        return False, message
    _settle(world)
    truth = world_truth(world)
    if object_entry(truth, place)["kind"] == "bowl":
        spawn = world.scene.spawn
        return object_in_container(truth, pick, place, spawn.bowl_radius, spawn.bowl_height)
    return object_on_object(truth, pick, place, world.scene.spawn.block_size)


def pick(world: SimWorld, block: str, cfg: MotionConfig) -> tuple[bool, str]:
    """Grasp `block`, lift it and return to the ready pose holding it."""
    truth = world_truth(world)
    pick_xyz, pick_yaw, _, _ = pick_place_targets(truth, block, block, world.scene)
    steps = pick_place_steps(pick_xyz, pick_yaw, pick_xyz, pick_yaw, cfg)[:PICK_STEPS] + [Step("ready", "ready")]
    ok, message = run_steps(world, steps, cfg)
    if not ok:
        return False, message
    held = world.held_object()
    if held != block:
        return False, f"holding {held or 'nothing'} instead of {block}"
    return True, f"holding {block}"


def put_down(world: SimWorld, cfg: MotionConfig) -> tuple[bool, str]:
    """Set the held object down on the surface in front of the robot."""
    held = world.held_object()
    if held is None:
        return False, "nothing in the gripper to put down"
    block = world.scene.spawn.block_size
    place_xyz = np.array([PUT_DOWN_XY_M[0], PUT_DOWN_XY_M[1], block / 2])
    steps = pick_place_steps(place_xyz, 0.0, place_xyz, 0.0, cfg)[PICK_STEPS:]
    ok, message = run_steps(world, steps, cfg)
    if not ok:
        return False, message
    _settle(world)
    return object_on_surface(world_truth(world), held, world.scene)


def navigate(world: SimWorld, station: str) -> tuple[bool, str]:
    """Drive the base to a station like base_motion's goto: holonomic P control, limited speed."""
    if station not in world.scene.stations:
        return False, f"unknown station '{station}'"
    goal = world.scene.stations[station]
    world.hold_arm()
    steps = int(NAVIGATION_TIMEOUT_S / world.time_step_s)
    for _ in range(0, steps, 4):
        x, y, yaw = world.base_pose()
        dx, dy = goal[0] - x, goal[1] - y
        heading = math.atan2(math.sin(goal[2] - yaw), math.cos(goal[2] - yaw))
        if math.hypot(dx, dy) < NAVIGATION_TOLERANCE[0] and abs(heading) < NAVIGATION_TOLERANCE[1]:
            world.set_base_velocity(0.0, 0.0, 0.0)
            _settle(world, 0.3)
            return True, f"arrived at the {station}"
        c, s = math.cos(yaw), math.sin(yaw)
        body = NAVIGATION_GAIN * np.array([c * dx + s * dy, -s * dx + c * dy])
        speed = float(np.linalg.norm(body))
        if speed > NAVIGATION_MAX_LINEAR:
            body *= NAVIGATION_MAX_LINEAR / speed
        wz = float(np.clip(NAVIGATION_GAIN * heading, -NAVIGATION_MAX_ANGULAR, NAVIGATION_MAX_ANGULAR))
        world.set_base_velocity(float(body[0]), float(body[1]), wz)
        world.step(4)
    world.set_base_velocity(0.0, 0.0, 0.0)
    return False, f"not at the {station} after {NAVIGATION_TIMEOUT_S:.0f} s"


def execute_skill(world: SimWorld, skill, cfg: MotionConfig) -> tuple[bool, str]:
    """Run one library skill (ros_vla.saycan.config.Skill) in the headless world."""
    if skill.executor == "pick_place":
        return pick_place(world, skill.args["pick"], skill.args["place"], cfg)
    if skill.executor == "pick":
        return pick(world, skill.args["pick"], cfg)
    if skill.executor == "put_down":
        return put_down(world, cfg)
    if skill.executor == "navigate":
        return navigate(world, skill.args["station"])
    return False, f"no headless executor for '{skill.executor}' skills"
