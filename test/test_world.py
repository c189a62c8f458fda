"""The PyBullet world without ROS: determinism, cameras, base, and the pick/place primitive."""

import numpy as np
import pytest

from ros_vla.paths import config_file
from ros_vla.robot import kinematics, panda
from ros_vla.robot.motion import (
    MotionConfig,
    check_pick_place_targets,
    pick_place_steps,
    plan_cartesian_line,
    plan_joint_move,
    plan_pose_goal,
)
from ros_vla.robot.safety import JointLimits, validate_joint_trajectory
from ros_vla.sim.oracle import execute_pick_place, pick_place_targets, world_truth
from ros_vla.sim.scene import load_scene
from ros_vla.sim.world import SimWorld

SCENE = load_scene(config_file("scene_tabletop.yaml"))
CFG = MotionConfig()


def test_scene_is_deterministic_per_seed():
    poses = []
    for seed in (3, 3, 4):
        world = SimWorld(SCENE, seed=seed, renderer=None)
        world.step(120)
        poses.append(np.array([o.position for o in world.object_poses()]))
        world.close()
    np.testing.assert_array_equal(poses[0], poses[1])
    assert np.abs(poses[0] - poses[2]).max() > 0.01
    assert len(SCENE.colors) >= 6


def test_depth_matches_geometry():
    """A block's ground-truth centre projects onto a pixel whose depth is that of the block's top."""
    world = SimWorld(SCENE, seed=1, renderer="tiny")
    world.step(60)
    cam = SCENE.camera("camera")
    rgb, depth = world.render(cam)
    assert rgb.shape == (480, 640, 3) and depth.shape == (480, 640)
    for obj in world.object_poses():
        if obj.kind != "block":
            continue
        top = np.append(np.asarray(obj.position) + [0, 0, SCENE.spawn.block_size / 2], 1.0)
        in_camera = np.linalg.inv(world.camera_pose(cam)) @ top
        u, v, _ = cam.intrinsics @ (in_camera[:3] / in_camera[2])
        row, col = int(round(v)), int(round(u))
        assert abs(depth[row, col] - in_camera[2]) < 0.01
        observed = rgb[row - 1:row + 2, col - 1:col + 2].reshape(-1, 3).mean(0) / 255.0
        # Shading scales brightness: compare chromaticity with every colour the scene uses.
        palette = {**SCENE.colors, "table": SCENE.work_table.rgba[:3]}
        chroma = {name: np.asarray(c) / np.sum(c) for name, c in palette.items()}
        nearest = min(chroma, key=lambda name: np.linalg.norm(chroma[name] - observed / observed.sum()))
        assert nearest == obj.color
    world.close()


def test_base_moves_kinematically_and_stops_on_nan():
    world = SimWorld(SCENE, seed=0, renderer=None)
    world.set_base_velocity(0.2, 0.0, 0.0)
    world.step(240)
    x, y, yaw = world.base_pose()
    assert x == pytest.approx(0.2, abs=1e-3) and abs(y) < 1e-6
    world.set_base_velocity(float("nan"), 0.0, 0.0)
    world.step(240)
    assert world.base_pose()[0] == pytest.approx(x)
    world.close()


@pytest.mark.parametrize("seed", [0, 5])
def test_oracle_pick_and_place_puts_block_in_bowl(seed):
    world = SimWorld(SCENE, seed=seed, renderer=None)
    world.step(60)
    success, detail = execute_pick_place(world, "blue_block", "purple_bowl", CFG)
    assert success, detail
    world.close()


def test_every_planned_segment_passes_the_controller_checks():
    world = SimWorld(SCENE, seed=2, renderer=None)
    truth = world_truth(world)
    pick_xyz, pick_yaw, place_xyz, place_yaw = pick_place_targets(truth, "red_block", "green_bowl", SCENE)
    assert check_pick_place_targets(pick_xyz, place_xyz, CFG) == ""
    q = np.asarray(SCENE.ready_pose)
    for step in pick_place_steps(pick_xyz, pick_yaw, place_xyz, place_yaw, CFG):
        if step.kind in ("gripper", "ready"):
            continue
        plan = (plan_cartesian_line if step.kind == "line" else plan_pose_goal)(q, step.pose, CFG)
        assert plan.ok, f"{step.name}: {plan.message}"
        points = [(p.tolist(), t) for p, t in plan.points]
        assert not validate_joint_trajectory(panda.ARM_JOINT_NAMES, points, JointLimits(), panda.ARM_JOINT_NAMES, q)
        q = plan.points[-1][0]
    world.close()


def test_unreachable_and_unsafe_goals_are_refused():
    q = np.asarray(SCENE.ready_pose)
    assert "workspace" in check_pick_place_targets([1.5, 0, 0.02], [0.5, 0, 0.02], CFG)
    assert "workspace" in check_pick_place_targets([0.5, 0, -0.1], [0.5, 0, 0.02], CFG)
    assert "finite" in check_pick_place_targets([np.nan, 0, 0.02], [0.5, 0, 0.02], CFG)
    below_table = kinematics.top_down_grasp_pose([0.5, 0.0, -0.05], 0.0)
    assert not plan_pose_goal(q, below_table, CFG).ok
    assert not plan_pose_goal(q, np.full((4, 4), np.nan), CFG).ok
    assert not plan_joint_move(q, q + 10.0, CFG).ok
