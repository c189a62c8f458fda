"""ORACLE pick-and-place: targets from simulator ground truth, executed in the headless world.

Named as an oracle because it reads object poses the robot cannot know. It is the
scripted skill behind oracle_skill_node and the baseline that learned pick-and-place
(CLIPort) is evaluated against: `ros-vla eval oracle`.
"""

from __future__ import annotations

import json
import time

import numpy as np

from ros_vla.robot.motion import (
    MotionConfig,
    Step,
    pick_place_steps,
    plan_cartesian_line,
    plan_joint_move,
    plan_pose_goal,
)
from ros_vla.sim.goals import object_in_container, pose_in_frame
from ros_vla.sim.scene import SceneConfig
from ros_vla.sim.world import SimWorld


def pick_place_targets(truth: dict, pick: str, place: str, scene: SceneConfig) -> tuple[np.ndarray, float,
                                                                                          np.ndarray, float]:
    """(pick xyz, pick yaw, place xyz, place yaw) in fr3_link0 from a ground-truth payload."""
    arm_base = np.asarray(truth["arm_base_in_map"])
    pick_xyz, pick_yaw = pose_in_frame(truth, pick, arm_base)
    place_xyz, _ = pose_in_frame(truth, place, arm_base)
    # Release with the block's centre a block above the bowl floor; bowls are round, so
    # keep the block's grasp and turn the wrist no further.
    return pick_xyz, pick_yaw, place_xyz + [0.0, 0.0, scene.spawn.block_size / 2], pick_yaw


def world_truth(world: SimWorld) -> dict:
    """The world's state in the /sim/ground_truth/objects payload format."""
    return {
        "frame": "map", "seed": world.seed, "base_pose": list(world.base_pose()),
        "arm_base_in_map": world.link_pose("fr3_link0").tolist(),
        "objects": [{"name": o.name, "kind": o.kind, "color": o.color, "position": list(o.position),
                     "orientation_xyzw": list(o.quaternion_xyzw), "held": o.held} for o in world.object_poses()],
    }


def execute_pick_place(world: SimWorld, pick: str, place: str, cfg: MotionConfig,
                       settle_s: float = 0.5) -> tuple[bool, str]:
    """Plan and run the pick/place primitive in the world (no ROS), then check the goal."""
    scene = world.scene
    targets = pick_place_targets(world_truth(world), pick, place, scene)
    moved, message = run_pick_place(world, *targets, cfg, settle_s)
    if not moved:
        return False, message
    return object_in_container(world_truth(world), pick, place, scene.spawn.bowl_radius, scene.spawn.bowl_height)


def run_pick_place(world: SimWorld, pick_xyz, pick_yaw: float, place_xyz, place_yaw: float, cfg: MotionConfig,
                   settle_s: float = 0.5) -> tuple[bool, str]:
    """The pick/place primitive to targets in fr3_link0, run in the world (no ROS) as the
    arm_motion node runs it: (False, why) when a motion is refused or not reached."""
    moved, message = run_steps(world, pick_place_steps(pick_xyz, pick_yaw, place_xyz, place_yaw, cfg), cfg)
    if not moved:
        return False, message
    world.step(int(settle_s / world.time_step_s))
    return True, "pick and place done"


def run_steps(world: SimWorld, steps: list[Step], cfg: MotionConfig, gripper_settle_s: float = 0.6
              ) -> tuple[bool, str]:
    """Plan and run motion steps one after another, each from the joint state the last one
    reached; stops at the first that is refused or not reached."""
    ready = np.asarray(world.scene.ready_pose)
    for step in steps:
        q, _ = world.arm_joint_state()
        if step.kind == "gripper":
            world.set_gripper_width(step.width_m)
            world.step(int(gripper_settle_s / world.time_step_s))
            continue
        if step.kind == "line":
            plan = plan_cartesian_line(q, step.pose, cfg)
        elif step.kind == "joint":
            plan = plan_pose_goal(q, step.pose, cfg)
        else:
            plan = plan_joint_move(q, ready, cfg)
        if not plan.ok:
            return False, f"{step.name}: {plan.message}"
        world.set_arm_trajectory(plan.points)
        world.step(int((plan.points[-1][1] + 0.5) / world.time_step_s))
        reached, _ = world.arm_joint_state()
        if np.abs(reached - plan.points[-1][0]).max() > 0.01:
            return False, f"{step.name}: the arm did not reach its goal"
    return True, "done"


def evaluate(scene: SceneConfig, episodes: int, first_seed: int = 1000, progress=None) -> dict:
    """Success rate of the oracle on `episodes` scenes (seeds from `first_seed`), each
    moving one block into one bowl, cycling through the scene's pairs."""
    cfg = MotionConfig()
    blocks = [o.name for o in scene.objects if o.kind == "block"]
    bowls = [o.name for o in scene.objects if o.kind == "bowl"]
    outcomes = []
    for episode in range(episodes):
        seed = first_seed + episode
        world = SimWorld(scene, seed=seed, renderer=None)
        world.step(60)
        pick, place = blocks[episode % len(blocks)], bowls[episode % len(bowls)]
        started = time.perf_counter()
        success, detail = execute_pick_place(world, pick, place, cfg)
        outcomes.append({"seed": seed, "pick": pick, "place": place, "success": bool(success), "detail": detail,
                         "sim_time_s": world.time_s, "wall_time_s": time.perf_counter() - started})
        world.close()
        if progress is not None:
            progress(outcomes[-1])
    successes = sum(o["success"] for o in outcomes)
    return {"episodes": episodes, "success_rate": successes / max(episodes, 1),
            "sim_time_s_mean": float(np.mean([o["sim_time_s"] for o in outcomes])),
            "wall_time_s_mean": float(np.mean([o["wall_time_s"] for o in outcomes])),
            "failures": [o for o in outcomes if not o["success"]]}


def eval_main(episodes: int, first_seed: int, as_json: bool, scene: SceneConfig) -> int:
    from tqdm import tqdm

    with tqdm(total=episodes, desc="oracle pick-and-place", unit="episode") as bar:
        def progress(outcome):
            bar.update(1)
            bar.set_postfix(seed=outcome["seed"], last="ok" if outcome["success"] else "FAIL")

        result = evaluate(scene, episodes, first_seed, progress)
    print(f"oracle pick-and-place: {result['success_rate'] * 100:.1f}% success over {episodes} scenes "
          f"(seeds {first_seed}..{first_seed + episodes - 1}); {result['sim_time_s_mean']:.1f} s of sim time "
          f"and {result['wall_time_s_mean']:.2f} s of wall time per episode")
    for failure in result["failures"]:
        print(f"  seed {failure['seed']}: {failure['pick']} -> {failure['place']}: {failure['detail']}")
    if as_json:
        print(json.dumps(result))
    return 0
