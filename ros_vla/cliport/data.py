"""CLIPort demonstrations: recorded in the headless simulator, read back for training.

The demonstrator is an ORACLE (ros_vla.cliport.tasks.oracle_targets reads ground truth);
what a model trains on is only what the robot sees: the heightmap fused from the head
camera's RGB-D frame (the camera pose from the robot's own kinematics, as tf gives it),
the instruction, and where the oracle picked and placed.

Files written to the output folder (`ros-vla demos cliport TASK -n N --out DIR`):

- `{task}/{seed:06d}.npz` (np.savez_compressed), one per episode, T = pick-and-place steps:
    colour        uint8   [T, H, W, 3]  heightmap colour before the step (WORKSPACE grid:
                                        3.125 mm pixels, rows along x, columns along y of fr3_link0)
    height_mm     uint16  [T, H, W]     heightmap height above the table, millimetres
    pick_pixel    int16   [T, 2]        (row, col) of the oracle's grasp point
    place_pixel   int16   [T, 2]        (row, col) of the oracle's release point
    place_theta   float32 [T]           how far the gripper turns the object, radians in [-pi, pi)
    pick_xyz, place_xyz float32 [T, 3]  the same targets in fr3_link0, metres
    object_xyz    float32 [T, N, 3]     every object's centre in fr3_link0 before each step, and
    object_names, object_kinds, object_colors  str [N]   what they are (for relabelling, below)
    instructions  str     [T]
    reward        float32 [T]           partial credit after each step
    task str [], seed int64 [], success bool []
- `{task}/index.jsonl`: {"file", "task", "seed", "steps", "reward", "success", "wall_time_s"} per
  episode; a rerun replaces the lines of the episodes it rewrites. Failed demonstrations are
  kept (success false); training uses the successful ones, as Ravens does.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ros_vla.cliport.config import MAX_HEIGHT_M, WORKSPACE
from ros_vla.cliport.tasks import PUT_IN_BOWL, Task, next_goal, oracle_targets, reward
from ros_vla.perception.heightmap import HeightmapSpec, RgbdView, fuse_heightmap
from ros_vla.robot.motion import MotionConfig, canonical_grasp_yaw
from ros_vla.sim.goals import pose_in_frame
from ros_vla.sim.oracle import run_pick_place, world_truth
from ros_vla.sim.scene import SceneConfig
from ros_vla.sim.world import SimWorld

HEIGHTMAP_VIEWS = ("camera",)  # the head camera, mounted on the base: the robot knows its pose


def wrap_angle(angle: float) -> float:
    return float((angle + math.pi) % (2 * math.pi) - math.pi)


def world_heightmap(world: SimWorld, spec: HeightmapSpec = WORKSPACE,
                    views: tuple[str, ...] = HEIGHTMAP_VIEWS) -> tuple[np.ndarray, np.ndarray]:
    """Render the views and fuse them in fr3_link0, as cliport_node does from camera topics."""
    arm_base_inverse = np.linalg.inv(world.link_pose("fr3_link0"))
    rgbd = []
    for name in views:
        cam = world.scene.camera(name)
        rgb, depth = world.render(cam)
        rgbd.append(RgbdView(rgb, depth, cam.intrinsics, arm_base_inverse @ world.camera_pose(cam)))
    return fuse_heightmap(rgbd, spec)


def record_episode(task: Task, base_scene: SceneConfig, seed: int, cfg: MotionConfig | None = None) -> dict:
    """One demonstration: the oracle runs the task's goals in order, retrying a missed goal
    once, and every step's heightmap and targets are kept."""
    cfg = cfg or MotionConfig()
    scene = task.scene(base_scene, seed)
    world = SimWorld(scene, seed=seed, renderer="gl")
    try:
        world.step(60)
        goals = task.goals(world_truth(world), scene)
        steps = []
        for _ in range(len(goals) + 1):
            truth = world_truth(world)
            goal = next_goal(goals, truth, scene)
            if goal is None:
                break
            colour, height = world_heightmap(world)
            pick_xyz, pick_yaw, place_xyz, place_yaw = oracle_targets(goal, truth, goals, scene)
            arm_base = np.asarray(truth["arm_base_in_map"])
            steps.append({
                "object_xyz": np.array([pose_in_frame(truth, o["name"], arm_base)[0] for o in truth["objects"]]),
                "colour": colour, "height_mm": np.round(height * 1000).astype(np.uint16),
                "pick_pixel": WORKSPACE.xy_to_pixel(*pick_xyz[:2]),
                "place_pixel": WORKSPACE.xy_to_pixel(*place_xyz[:2]),
                "place_theta": wrap_angle(canonical_grasp_yaw(place_yaw) - canonical_grasp_yaw(pick_yaw)),
                "pick_xyz": pick_xyz, "place_xyz": place_xyz, "instruction": goal.instruction,
            })
            run_pick_place(world, pick_xyz, pick_yaw, place_xyz, place_yaw, cfg)
            steps[-1]["reward"] = reward(goals, world_truth(world), scene)
        final = reward(goals, world_truth(world), scene)
    finally:
        world.close()
    return {
        "colour": np.stack([s["colour"] for s in steps]), "height_mm": np.stack([s["height_mm"] for s in steps]),
        "pick_pixel": np.array([s["pick_pixel"] for s in steps], np.int16),
        "place_pixel": np.array([s["place_pixel"] for s in steps], np.int16),
        "place_theta": np.array([s["place_theta"] for s in steps], np.float32),
        "pick_xyz": np.array([s["pick_xyz"] for s in steps], np.float32),
        "place_xyz": np.array([s["place_xyz"] for s in steps], np.float32),
        "instructions": np.array([s["instruction"] for s in steps]),
        "reward": np.array([s["reward"] for s in steps], np.float32),
        "object_names": np.array([o.name for o in scene.objects]),
        "object_kinds": np.array([o.kind for o in scene.objects]),
        "object_colors": np.array([o.color for o in scene.objects]),
        "object_xyz": np.array([s["object_xyz"] for s in steps], np.float32),
        "task": np.array(task.name), "seed": np.int64(seed), "success": np.bool_(final >= 1.0),
    }


def write_demos(task: Task, base_scene: SceneConfig, out_dir: str | Path, episodes: int, first_seed: int,
                progress=None) -> list[dict]:
    folder = Path(out_dir) / task.name
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "index.jsonl"
    entries = {}
    if index.exists():
        entries = {e["file"]: e for e in map(json.loads, index.read_text().splitlines()) if e}
    lines = []
    for seed in range(first_seed, first_seed + episodes):
        started = time.perf_counter()
        episode = record_episode(task, base_scene, seed)
        name = f"{seed:06d}.npz"
        np.savez_compressed(folder / name, **episode)
        lines.append({"file": name, "task": task.name, "seed": seed, "steps": len(episode["reward"]),
                      "reward": float(episode["reward"][-1]), "success": bool(episode["success"]),
                      "wall_time_s": round(time.perf_counter() - started, 2)})
        entries[name] = lines[-1]
        # Rewritten after every episode: an interrupted run keeps what it recorded.
        index.write_text("".join(json.dumps(e) + "\n" for e in sorted(entries.values(), key=lambda e: e["seed"])))
        if progress is not None:
            progress(lines[-1])
    return lines


# --------------------------------------------------------------------------- training side
@dataclass
class Sample:
    image: np.ndarray  # float32 [6, H, W]: rgb 0..1, height / MAX_HEIGHT_M (x3)
    pick: tuple[int, int]
    place: tuple[int, int]
    rotation: int  # transport bin of place_theta
    instruction: str


def downsample(colour: np.ndarray, height_m: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Colour averaged, height maxed over factor x factor blocks (the fusion rule again)."""
    if factor == 1:
        return colour, height_m
    rows, cols = height_m.shape[0] // factor, height_m.shape[1] // factor
    blocks = colour[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor, 3)
    heights = height_m[:rows * factor, :cols * factor].reshape(rows, factor, cols, factor)
    return blocks.mean(axis=(1, 3)).astype(np.uint8), heights.max(axis=(1, 3))


def network_input(colour: np.ndarray, height_m: np.ndarray) -> np.ndarray:
    """[6, H, W] float32 as the networks take it."""
    rgb = colour.astype(np.float32).transpose(2, 0, 1) / 255.0
    depth = np.clip(height_m.astype(np.float32) / MAX_HEIGHT_M, 0.0, 1.0)[None]
    return np.concatenate([rgb, depth, depth, depth])


def rotation_bin(theta: float, n_rotations: int) -> int:
    return int(round(theta / (2 * math.pi / n_rotations))) % n_rotations


def load_steps(data_dir: str | Path, task: str, max_episodes: int | None = None) -> list[dict]:
    """Every step of the successful demonstrations of a task (first `max_episodes` of them by seed)."""
    folder = Path(data_dir) / task
    index = folder / "index.jsonl"
    if not index.exists():
        raise FileNotFoundError(f"no demonstrations in {folder}: record some with `ros-vla demos cliport {task}`")
    entries = [json.loads(t) for t in index.read_text().splitlines() if t.strip()]
    entries = [e for e in sorted(entries, key=lambda e: e["seed"]) if e["success"]][:max_episodes]
    steps = []
    for entry in entries:
        with np.load(folder / entry["file"]) as episode:
            objects = ({"kinds": episode["object_kinds"], "colors": episode["object_colors"]}
                       if "object_xyz" in episode else None)
            for t in range(len(episode["reward"])):
                step = {key: episode[key][t] for key in
                        ("colour", "height_mm", "pick_pixel", "place_pixel", "place_theta", "instructions")}
                if objects is not None:
                    step["objects"] = {**objects, "xyz": episode["object_xyz"][t]}
                steps.append(step)
    return steps


def se2_augment(colour, height_m, points: list[tuple[int, int]], rng: np.random.Generator,
                max_rotation_rad: float, tries: int = 20):
    """Rotate the heightmap about its centre by up to `max_rotation_rad` and shift it, moving
    the labelled pixels along; a draw that pushes a label off the map is redrawn. Relative
    place rotations are unchanged by a rotation of the whole scene."""
    rows, cols = height_m.shape
    centre = ((cols - 1) / 2, (rows - 1) / 2)
    for _ in range(tries):
        angle = rng.uniform(-max_rotation_rad, max_rotation_rad)
        shift = rng.uniform(-0.15, 0.15, 2) * (cols, rows)
        # cv2 works in (x = col, y = row); a positive angle turns rows towards columns.
        matrix = cv2.getRotationMatrix2D(centre, -math.degrees(angle), 1.0)
        matrix[:, 2] += shift
        moved = [(float(matrix[1] @ [c, r, 1.0]), float(matrix[0] @ [c, r, 1.0])) for r, c in points]
        if all(0 <= r < rows - 0.5 and 0 <= c < cols - 0.5 for r, c in moved):
            colour = cv2.warpAffine(colour, matrix, (cols, rows), flags=cv2.INTER_LINEAR)
            height_m = cv2.warpAffine(height_m, matrix, (cols, rows), flags=cv2.INTER_NEAREST)
            return colour, height_m, [(int(round(r)), int(round(c))) for r, c in moved]
    return colour, height_m, points


def relabelled(step: dict, rng: np.random.Generator, colors: tuple[str, ...]) -> dict:
    """The same heightmap with another put-in-bowl goal: a block resting on the table and
    a bowl, both of `colors`, drawn from the objects recorded with the step (hindsight
    relabelling: every pair in view is a correct demonstration of its own instruction, so
    the networks must read both colour words, not guess the scene's one goal). Steps
    without recorded objects, or without such a pair, come back unchanged."""
    objects = step.get("objects")
    if objects is None or not PUT_IN_BOWL.match(str(step["instructions"])):
        return step
    kinds, names_colors, xyz = objects["kinds"], objects["colors"], objects["xyz"]
    blocks = [i for i in range(len(kinds)) if kinds[i] == "block" and names_colors[i] in colors and xyz[i][2] < 0.03]
    bowls = [i for i in range(len(kinds)) if kinds[i] == "bowl" and names_colors[i] in colors]
    if not blocks or not bowls:
        return step
    block, bowl = int(rng.choice(blocks)), int(rng.choice(bowls))
    # Release a block's height above the bowl's floor, as the oracle does.
    return {**step, "pick_pixel": WORKSPACE.xy_to_pixel(*xyz[block][:2]),
            "place_pixel": WORKSPACE.xy_to_pixel(*xyz[bowl][:2]), "place_theta": 0.0,
            "instructions": f"put the {names_colors[block]} block in the {names_colors[bowl]} bowl"}


def make_sample(step: dict, factor: int, n_rotations: int, rng: np.random.Generator | None = None,
                max_rotation_rad: float = math.radians(45)) -> Sample:
    colour, height = downsample(step["colour"], step["height_mm"].astype(np.float32) / 1000.0, factor)
    points = [tuple(int(v) // factor for v in step["pick_pixel"]), tuple(int(v) // factor for v in step["place_pixel"])]
    if rng is not None:
        colour, height, points = se2_augment(colour, height, points, rng, max_rotation_rad)
    return Sample(network_input(colour, height), points[0], points[1],
                  rotation_bin(float(step["place_theta"]), n_rotations), str(step["instructions"]))


def demos_main(argv: list[str] | None = None) -> int:
    """ros-vla demos cliport TASK -n N [--out DIR] [--first-seed S]"""
    import argparse

    from tqdm import tqdm

    from ros_vla.cliport.tasks import TASKS, get_task
    from ros_vla.paths import config_file
    from ros_vla.sim.scene import load_scene

    parser = argparse.ArgumentParser(prog="ros-vla demos cliport",
                                     description="record CLIPort demonstrations (oracle, headless sim)")
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("-n", "--episodes", type=int, default=100)
    parser.add_argument("--out", default="data/cliport", help="output folder (default: data/cliport)")
    parser.add_argument("--first-seed", type=int, default=0, help="episode seeds first..first+n-1 (eval uses 10000+)")
    parser.add_argument("--scene", default="", help="scene file for the robot, tables and cameras")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    scene = load_scene(args.scene or config_file("scene_tabletop.yaml"))
    with tqdm(total=args.episodes, desc=f"demos {args.task}", unit="episode") as bar:
        def progress(line):
            bar.update(1)
            bar.set_postfix(seed=line["seed"], reward=f"{line['reward']:.2f}")

        lines = write_demos(get_task(args.task), scene, args.out, args.episodes, args.first_seed, progress)
    succeeded = sum(line["success"] for line in lines)
    print(f"{args.task}: {len(lines)} demonstrations in {Path(args.out) / args.task}, "
          f"{succeeded} successful ({succeeded / len(lines):.0%}); training uses the successful ones")
    return 0
