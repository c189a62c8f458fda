"""Scripted closed-loop demonstrations for RT-1, recorded in the headless simulator.

The demonstrator is an ORACLE: at every control step it reads the simulator's ground
truth (block and bowl poses, what the gripper holds) to choose the next action. A policy
trained on the recordings only ever sees the camera frames and the instruction.

Control runs at 3 Hz as RT-1 does: each step the head camera's frame is rendered *before*
the action is chosen (the frame is what the action answers), the action is an 11-vector in
the order of `ROBOT_ACTION_DIMENSIONS` inside its per-step ranges, and it is executed the
way the robot stack executes it: `command_from_action` -> `apply_ee_delta(q_now, ...)` ->
`world.set_arm_trajectory`, gripper through `world.set_gripper_width`; then the world is
stepped one control period. The last action of every episode has mode "terminate".

Tasks (the block, the bowl and the scene seed are drawn per episode; the other scene
objects are distractors):

- pick: "pick up the {color} block": above the block, turn the wrist to the block's yaw,
  descend, close, lift 10 cm. Success: the block is held and its centre is >= 5 cm above
  the table at the end. A grasp that did not take is retried from above.
- push: "push the {color} block to the {color} bowl": the closed gripper goes down behind
  the block and pushes it, re-aiming at the bowl every step, until the block touches the
  bowl's rim. Success: the block rests on the table (not held) with its centre within
  `push_success_radius` of the bowl's centre.

Files written to the output folder:

- `{task}_{seed:06d}.npz` (np.savez_compressed), one per episode, T = control steps:
    images       uint8   [T, S, S, 3]  head camera rgb8, resized from 640x480 to SxS
                                       (S = RT1Config.small().image_size = 96)
    actions      float32 [T, 11]       in the order of action_names; mode is 0 arm, 2 terminate
    tokens       uint8   [T, 11]       ActionTokenizer(ROBOT_ACTION_DIMENSIONS, 256).tokenize(actions)
    action_names str     [11]
    instruction  str     []            the same for every step of the episode
    target_px    float32 [T, 2]        (u, v) of the named block's centre in each frame, in
                                       SxS pixels: ground truth, for training's auxiliary
                                       target loss only (never a policy input)
    task str [], seed int64 [], success bool [], steps int64 []
- `index.jsonl`: one JSON object per episode file, {"file", "task", "seed", "instruction",
  "success", "steps", "detail", "wall_time_s", "distractors"}; a rerun replaces the lines of the files
  it rewrites. Failed episodes are kept with "success": false so training can filter them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from ros_vla.perception.calibration import pose_inverse
from ros_vla.robot.kinematics import forward_kinematics, xyz_rpy_from_pose
from ros_vla.robot.motion import MotionConfig, apply_ee_delta, plan_joint_move
from ros_vla.rt1.config import MODES, ROBOT_ACTION_DIMENSIONS, START_JOINT_POSITIONS, RT1Config
from ros_vla.rt1.control import command_from_action
from ros_vla.rt1.data import rescaled_pixels, square_rgb
from ros_vla.rt1.tokenizer import ActionTokenizer
from ros_vla.sim.goals import block_at_bowl_rim, block_lifted, pose_in_frame
from ros_vla.sim.oracle import world_truth
from ros_vla.sim.scene import CameraSpec, ObjectSpec, SceneConfig
from ros_vla.sim.world import SimWorld

TASKS = ("pick", "push")
CONTROL_RATE_HZ = 3.0
ACTION_NAMES = tuple(d.name for d in ROBOT_ACTION_DIMENSIONS)
# Colours no instruction names: objects added in them are distractors.
DISTRACTOR_COLORS = ("orange", "cyan", "pink", "white", "brown")


def _float32_inside(bound: float, inward: float) -> np.float32:
    """The float32 nearest `bound` that is not outside the range: actions are stored as
    float32, and float32(0.05) is a little more than 0.05, which the stack would refuse."""
    value = np.float32(bound)
    return value if (float(value) - bound) * inward >= 0 else np.nextafter(value, np.float32(inward * np.inf))


_LOW = np.array([_float32_inside(d.low, 1.0) for d in ROBOT_ACTION_DIMENSIONS], np.float32)
_HIGH = np.array([_float32_inside(d.high, -1.0) for d in ROBOT_ACTION_DIMENSIONS], np.float32)
MAX_ARM_STEP_M = ROBOT_ACTION_DIMENSIONS[ACTION_NAMES.index("arm_x")].high
MAX_ARM_TURN_RAD = ROBOT_ACTION_DIMENSIONS[ACTION_NAMES.index("arm_yaw")].high
GRIPPER_OPEN_M = ROBOT_ACTION_DIMENSIONS[ACTION_NAMES.index("gripper_opening")].high


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    period_s: float = 1.0 / CONTROL_RATE_HZ
    approach_height_m: float = 0.10  # TCP above the block before descending
    lift_height_m: float = 0.10
    reached_m: float = 0.01  # TCP this close to a sub-goal counts as there
    aligned_rad: float = 0.05
    close_steps: int = 3  # control steps to wait for a grasp before retrying
    # Pushing: the closed fingers' front face sits this far behind the block's centre
    # (half a block plus half a finger), and each step pushes this far.
    push_contact_m: float = 0.032
    push_step_m: float = 0.03
    push_lateral_tolerance_m: float = 0.02  # off the push line by more: go up and re-aim
    push_height_m: float = 0.02  # TCP above the table while pushing (fingertips ~1 cm)
    push_stop_gap_m: float = 0.012  # stop when the block is this close to touching the rim
    push_success_gap_m: float = 0.02
    # Control steps before the episode is cut off (terminated, then judged as it stands).
    pick_max_steps: int = 60
    push_max_steps: int = 90

    def step_budget(self, task: str) -> int:
        return {"pick": self.pick_max_steps, "push": self.push_max_steps}[task]


def _wrap(angle: float, period: float) -> float:
    """Angle into [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)


def arm_action(translation, yaw_delta: float, gripper_m: float) -> np.ndarray:
    """An arm-mode action; the translation keeps its direction when capped to one step."""
    translation = np.asarray(translation, float)
    norm = float(np.linalg.norm(translation))
    if norm > MAX_ARM_STEP_M:
        translation = translation * (MAX_ARM_STEP_M / norm)
    value = dict.fromkeys(ACTION_NAMES, 0.0)
    value["mode"] = MODES.index("arm")
    value["arm_x"], value["arm_y"], value["arm_z"] = translation
    value["arm_yaw"] = yaw_delta
    value["gripper_opening"] = gripper_m
    return np.clip(np.array([value[n] for n in ACTION_NAMES], np.float32), _LOW, _HIGH)


def terminate_action(gripper_m: float) -> np.ndarray:
    value = dict.fromkeys(ACTION_NAMES, 0.0)
    value["mode"] = MODES.index("terminate")
    value["gripper_opening"] = gripper_m
    return np.array([value[n] for n in ACTION_NAMES], np.float32)


class _Oracle:
    """Shared state of the scripted demonstrators: ground truth in fr3_link0, the TCP pose."""

    def __init__(self, world: SimWorld, cfg: DemoConfig):
        self.world, self.cfg = world, cfg
        self.table_z = world.scene.work_table.top_z - world.link_pose("fr3_link0")[2, 3]
        self.gripper_m = GRIPPER_OPEN_M

    def object_pose(self, name: str) -> tuple[np.ndarray, float]:
        return pose_in_frame(world_truth(self.world), name, self.world.link_pose("fr3_link0"))

    def tcp(self) -> tuple[np.ndarray, float]:
        q, _ = self.world.arm_joint_state()
        xyz, rpy = xyz_rpy_from_pose(forward_kinematics(q))
        return xyz, float(rpy[2])

    def move_toward(self, target, yaw_target: float, symmetry: float, max_step_m: float = MAX_ARM_STEP_M):
        """Action toward `target` (fr3_link0) with the wrist turning toward `yaw_target`
        modulo `symmetry`; also whether the TCP is there already."""
        xyz, yaw = self.tcp()
        error = np.asarray(target, float) - xyz
        yaw_error = _wrap(yaw_target - yaw, symmetry)
        there = np.linalg.norm(error) < self.cfg.reached_m and abs(yaw_error) < self.cfg.aligned_rad
        norm = float(np.linalg.norm(error))
        step = error * min(1.0, max_step_m / norm) if norm > 0 else error
        return arm_action(step, float(np.clip(yaw_error, -MAX_ARM_TURN_RAD, MAX_ARM_TURN_RAD)), self.gripper_m), there

    def finish(self) -> np.ndarray:
        return terminate_action(self.gripper_m)


class PickOracle(_Oracle):
    """ORACLE for "pick up the {color} block": above, descend, close, lift."""

    def __init__(self, world: SimWorld, cfg: DemoConfig, block: str):
        super().__init__(world, cfg)
        self.block = block
        self.phase = "approach"
        self.waited = 0
        self.lift_target: np.ndarray | None = None

    def act(self) -> np.ndarray:
        cfg = self.cfg
        block_xyz, block_yaw = self.object_pose(self.block)
        held = self.world.held_object() == self.block
        if self.phase in ("approach", "descend") and held:
            self.phase = "lift"
        if self.phase == "approach":
            self.gripper_m = GRIPPER_OPEN_M
            # A square block fits the fingers every 90 degrees.
            action, there = self.move_toward(block_xyz + [0, 0, cfg.approach_height_m], block_yaw, math.pi / 2)
            if there:
                self.phase = "descend"
            return action
        if self.phase == "descend":
            action, there = self.move_toward(block_xyz, block_yaw, math.pi / 2)
            if there:
                self.phase, self.waited = "close", 0
            return action
        if self.phase == "close":
            self.gripper_m = 0.0
            if held:
                self.phase = "lift"
            elif self.waited >= cfg.close_steps:
                self.phase = "approach"  # the grasp did not take: open and come again from above
                self.gripper_m = GRIPPER_OPEN_M
            self.waited += 1
            return arm_action(np.zeros(3), 0.0, self.gripper_m)
        # lift: a dropped block means starting over; the lift goal is fixed at the grasp
        if not held:
            self.phase, self.lift_target = "approach", None
            return self.act()
        if self.lift_target is None:
            self.lift_target = self.tcp()[0] + [0, 0, cfg.lift_height_m]
        xyz, yaw = self.tcp()
        action, there = self.move_toward(self.lift_target, yaw, math.pi / 2)
        if there:
            return self.finish()
        return action

    def success(self) -> tuple[bool, str]:
        return block_lifted(world_truth(self.world), self.world.scene, self.block)


class PushOracle(_Oracle):
    """ORACLE for "push the {color} block to the {color} bowl": the closed fingers, their
    opening axis along the push so that only the leading finger touches the block (two
    touching fingers would count as a grasp), push the block until it meets the rim."""

    def __init__(self, world: SimWorld, cfg: DemoConfig, block: str, bowl: str):
        super().__init__(world, cfg)
        self.block, self.bowl = block, bowl
        spawn = world.scene.spawn
        self.stop_distance = spawn.bowl_radius + spawn.block_size / 2 + cfg.push_stop_gap_m
        self.phase = "above"
        self.gripper_m = 0.0
        self.retreat_target: np.ndarray | None = None

    def _geometry(self):
        block_xyz, _ = self.object_pose(self.block)
        bowl_xyz, _ = self.object_pose(self.bowl)
        offset = bowl_xyz[:2] - block_xyz[:2]
        distance = float(np.linalg.norm(offset))
        direction = offset / max(distance, 1e-9)
        contact = np.append(block_xyz[:2] - direction * self.cfg.push_contact_m, self.table_z + self.cfg.push_height_m)
        # The fingers open along the hand's y axis, which for a top-down TCP at yaw psi
        # points along (sin psi, -cos psi): parallel to the push at psi = heading + 90 deg.
        yaw = math.atan2(direction[1], direction[0]) + math.pi / 2
        return direction, distance, contact, yaw

    def act(self) -> np.ndarray:
        cfg = self.cfg
        direction, distance, contact, yaw = self._geometry()
        if self.phase == "retreat":
            action, there = self.move_toward(self.retreat_target, self.tcp()[1], math.pi)
            return self.finish() if there else action
        if distance <= self.stop_distance:
            self.phase = "retreat"
            self.retreat_target = self.tcp()[0] + [0, 0, cfg.approach_height_m / 2]
            return self.act()
        if self.phase == "above":
            action, there = self.move_toward(contact + [0, 0, cfg.approach_height_m], yaw, math.pi)
            if there:
                self.phase = "descend"
            return action
        if self.phase == "descend":
            action, there = self.move_toward(contact, yaw, math.pi)
            if there:
                self.phase = "push"
            return action
        xyz, _ = self.tcp()
        behind = xyz[:2] - contact[:2]
        lateral = abs(behind[0] * direction[1] - behind[1] * direction[0])
        if lateral > cfg.push_lateral_tolerance_m or float(behind @ direction) > cfg.push_contact_m:
            # Lost the block (it turned or slid off the fingers): up, and aim again.
            self.phase = "above"
            return arm_action([0, 0, MAX_ARM_STEP_M], 0.0, self.gripper_m)
        action, _ = self.move_toward(contact + np.append(direction * cfg.push_step_m, 0.0), yaw, math.pi,
                                     max_step_m=cfg.push_step_m)
        return action

    def success(self) -> tuple[bool, str]:
        return block_at_bowl_rim(world_truth(self.world), self.world.scene, self.block, self.bowl,
                                 self.cfg.push_success_gap_m)


@dataclasses.dataclass
class Episode:
    task: str
    seed: int
    instruction: str
    images: np.ndarray
    actions: np.ndarray
    tokens: np.ndarray
    success: bool
    detail: str
    wall_time_s: float
    target_px: np.ndarray

    @property
    def file_name(self) -> str:
        return f"{self.task}_{self.seed:06d}.npz"


@dataclasses.dataclass(frozen=True)
class Goal:
    """What an episode asks for: the block (and for push the bowl) and the instruction."""

    task: str
    block: str
    bowl: str
    instruction: str

    def judge(self, truth: dict, scene: SceneConfig, cfg: DemoConfig = DemoConfig()) -> tuple[bool, str]:
        if self.task == "pick":
            return block_lifted(truth, scene, self.block)
        return block_at_bowl_rim(truth, scene, self.block, self.bowl, cfg.push_success_gap_m)


def with_distractors(scene: SceneConfig, count: int) -> SceneConfig:
    """The scene with `count` objects added (blocks and bowls by turns) in DISTRACTOR_COLORS."""
    unused = [c for c in DISTRACTOR_COLORS if c not in {o.color for o in scene.objects}]
    if count > len(unused):
        raise ValueError(f"at most {len(unused)} distractors (colours {', '.join(unused)}), asked for {count}")
    extra = tuple(ObjectSpec("block" if i % 2 == 0 else "bowl", color) for i, color in enumerate(unused[:count]))
    return dataclasses.replace(scene, objects=scene.objects + extra)


def draw_goal(task: str, seed: int, objects) -> Goal:
    """The episode's block (and bowl), drawn from the seed out of `objects` (ObjectSpecs)."""
    rng = np.random.default_rng(seed)
    blocks = [o for o in objects if o.kind == "block"]
    bowls = [o for o in objects if o.kind == "bowl"]
    block = blocks[rng.integers(len(blocks))]
    if task == "pick":
        return Goal(task, block.name, "", f"pick up the {block.color} block")
    if task == "push":
        bowl = bowls[rng.integers(len(bowls))]
        return Goal(task, block.name, bowl.name, f"push the {block.color} block to the {bowl.color} bowl")
    raise ValueError(f"unknown task '{task}': {' or '.join(TASKS)}")


def make_oracle(world: SimWorld, task: str, seed: int, cfg: DemoConfig, objects=None):
    """The task's ORACLE and instruction (draw_goal from `objects`, default all the scene's;
    an evaluation with added distractors passes the original ones, so that the
    instructions stay those of training)."""
    goal = draw_goal(task, seed, world.scene.objects if objects is None else objects)
    if task == "pick":
        return PickOracle(world, cfg, goal.block), goal.instruction
    return PushOracle(world, cfg, goal.block, goal.bowl), goal.instruction


def object_pixel(world: SimWorld, cam: CameraSpec, name: str, image_size: int) -> np.ndarray:
    """(u, v) of an object's centre in the camera's frame resized to image_size x image_size
    (pixel centres at integers), from ground truth (ORACLE)."""
    position = next(o.position for o in world.object_poses() if o.name == name)
    in_camera = pose_inverse(world.camera_pose(cam)) @ np.append(position, 1.0)
    u, v, _ = cam.intrinsics @ (in_camera[:3] / in_camera[2])
    return rescaled_pixels([u, v], [image_size / cam.width, image_size / cam.height])


def execute_action(world: SimWorld, action: np.ndarray, period_s: float, motion: MotionConfig) -> str:
    """Run one action as the stack would, then step one control period; why the arm's
    delta was refused, or ""."""
    command = command_from_action(action, ROBOT_ACTION_DIMENSIONS, period_s)
    refused = ""
    if command.moves_arm:
        q_now, _ = world.arm_joint_state()
        plan = apply_ee_delta(q_now, command.ee_translation_m, command.ee_rotation, period_s, motion)
        if plan.ok:
            world.set_arm_trajectory(plan.points)
        else:
            refused = plan.message
        world.set_gripper_width(command.gripper_width_m)
    world.step(round(period_s / world.time_step_s))
    return refused


def move_to_start(world: SimWorld, motion: MotionConfig) -> None:
    """Unrecorded: from the scene's tucked ready pose to START_JOINT_POSITIONS. From the
    tucked pose and its IK neighbours the stack refuses many small TCP deltas as sudden
    reconfigurations; from the start pose a straight path reaches the whole table."""
    q_now, _ = world.arm_joint_state()
    plan = plan_joint_move(q_now, np.asarray(START_JOINT_POSITIONS, float), motion)
    if not plan.ok:
        raise RuntimeError(f"cannot reach the start pose: {plan.message}")
    world.set_arm_trajectory(plan.points)
    world.step(round((plan.points[-1][1] + 0.5) / world.time_step_s))


def run_episode(scene: SceneConfig, task: str, seed: int, camera: str = "camera",
                image_size: int = RT1Config.small().image_size, cfg: DemoConfig = DemoConfig(),
                controller=None, objects=None) -> Episode:
    """One closed-loop episode at the control rate: render the camera (resized to
    image_size), ask for an action, execute it, until the action's mode is terminate or the
    step budget is spent; then judge. `controller(image) -> action [11]` chooses the actions
    (a trained policy); without one, the task's ORACLE does (a demonstration). Either way the
    oracle draws the instruction (from `objects`, see make_oracle) and judges the outcome."""
    started = time.perf_counter()
    tokenizer = ActionTokenizer(ROBOT_ACTION_DIMENSIONS, RT1Config.small().action_bins)
    motion = MotionConfig()
    world = SimWorld(scene, seed=seed)
    try:
        world.step(60)  # let the objects settle on the table
        move_to_start(world, motion)
        oracle, instruction = make_oracle(world, task, seed, cfg, objects)
        cam = scene.camera(camera)
        terminate = MODES.index("terminate")
        images, targets, actions, refusals = [], [], [], 0
        while not actions or actions[-1][0] != terminate:
            rgb, _ = world.render(cam)
            images.append(square_rgb(rgb, image_size))
            targets.append(object_pixel(world, cam, oracle.block, image_size))
            if len(actions) == cfg.step_budget(task) - 1:
                action = terminate_action(oracle.gripper_m)  # out of time: stop; the judge decides
            elif controller is None:
                action = oracle.act()
            else:
                action = np.asarray(controller(images[-1], instruction), np.float32)
            actions.append(action)
            refusals += bool(execute_action(world, action, cfg.period_s, motion))
        world.step(round(0.5 / world.time_step_s))  # settle before judging
        success, detail = oracle.success()
        if refusals:
            detail += f"; {refusals} arm deltas refused"
        actions = np.stack(actions)
        return Episode(task, seed, instruction, np.stack(images), actions,
                       tokenizer.tokenize(actions).astype(np.uint8), success, detail,
                       time.perf_counter() - started, np.stack(targets))
    finally:
        world.close()


def save_episode(episode: Episode, out_dir: Path) -> dict:
    np.savez_compressed(
        out_dir / episode.file_name, images=episode.images, actions=episode.actions, tokens=episode.tokens,
        target_px=episode.target_px,
        action_names=np.array(ACTION_NAMES), instruction=np.array(episode.instruction), task=np.array(episode.task),
        seed=np.array(episode.seed, np.int64), success=np.array(episode.success),
        steps=np.array(len(episode.actions), np.int64))
    return {"file": episode.file_name, "task": episode.task, "seed": episode.seed,
            "instruction": episode.instruction, "success": episode.success, "steps": len(episode.actions),
            "detail": episode.detail, "wall_time_s": round(episode.wall_time_s, 3)}


def read_index(out_dir: Path) -> list[dict]:
    index = Path(out_dir) / "index.jsonl"
    return [json.loads(line) for line in index.read_text().splitlines() if line.strip()] if index.exists() else []


def record_demonstrations(scene: SceneConfig, task: str, episodes: int, out_dir: Path, first_seed: int = 0,
                          camera: str = "camera", distractors: int = 0, progress: bool = True) -> list[dict]:
    """Record `episodes` episodes (seeds first_seed..) into out_dir, with `distractors`
    objects added that no instruction names; their index lines."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {entry["file"]: entry for entry in read_index(out_dir)}
    written = []
    with tqdm(total=episodes, desc=f"rt1 demos: {task}", unit="episode", disable=not progress) as bar:
        for seed in range(first_seed, first_seed + episodes):
            episode = run_episode(with_distractors(scene, distractors), task, seed, camera, objects=scene.objects)
            entry = {**save_episode(episode, out_dir), "distractors": distractors}
            entries[entry["file"]] = entry
            written.append(entry)
            # Rewritten after every episode so an interrupted run leaves a valid index.
            (out_dir / "index.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries.values()))
            bar.update(1)
            bar.set_postfix(success=f"{sum(e['success'] for e in written)}/{len(written)}")
    return written


def demos_main(argv: list[str]) -> int:
    from ros_vla.paths import config_file
    from ros_vla.sim.scene import load_scene

    parser = argparse.ArgumentParser(prog="ros-vla demos rt1", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=TASKS, required=True)
    parser.add_argument("-n", "--episodes", type=int, default=10)
    parser.add_argument("--out", required=True, help="folder for the episode files and index.jsonl")
    parser.add_argument("--seed", type=int, default=0, help="episodes use scene seeds from here on")
    parser.add_argument("--camera", default="camera", help="the scene camera whose frames are recorded")
    parser.add_argument("--distractors", type=int, default=0,
                        help=f"objects added in colours no instruction names ({', '.join(DISTRACTOR_COLORS)})")
    args = parser.parse_args(argv)
    written = record_demonstrations(load_scene(config_file("scene_tabletop.yaml")), args.task, args.episodes,
                                    Path(args.out), args.seed, args.camera, args.distractors)
    successes = sum(e["success"] for e in written)
    seconds = np.mean([e["wall_time_s"] for e in written]) if written else 0.0
    print(f"{args.task}: scripted success {successes}/{len(written)}, "
          f"{np.mean([e['steps'] for e in written]) if written else 0:.1f} steps and {seconds:.1f} s per episode; "
          f"files in {args.out}")
    for entry in written:
        if not entry["success"]:
            print(f"  seed {entry['seed']} ({entry['instruction']}): {entry['detail']}")
    return 0
