"""Ravens-style tabletop tasks with language goals, in the simulated world.

Each task draws the objects of an episode (colours from a split), and once the world is
built, its goals: an instruction per pick-and-place step and where the picked object has
to end up. Success is checked on simulator ground truth as in the CLIPort paper: an
object placed on a pose counts within 1 cm and 15 degrees (blocks are symmetric every 90
degrees), an object put in a bowl counts when it rests inside the rim; multi-step tasks
get partial credit, the fraction of goals met at the end.

Tasks:
- put-block-in-bowl-{seen,unseen}-colors: one block into one bowl, with 1-3 distractor
  blocks and 0-2 distractor bowls (up to as many as the split has other colours), every
  colour from the split: a model trained on seen colours never sees an unseen one. "put
  the red block in the green bowl".
- put-blocks-in-bowl-seen-colors (multi-object): every block of one colour (2 or 3) into
  one bowl, side by side; distractor blocks and bowls. "put all the red blocks in the
  green bowl", the same instruction at every step.
- stack-block-pyramid-seq-seen-colors: six blocks onto a stand, 3-2-1, one block per
  instruction: "put the red block on the left of the stand", then "put the blue block
  on the red and green blocks", ...

Colour splits as in CLIPort: a task trained on seen colours is evaluated on seen colours
and, for the unseen split, on colours no demonstration ever showed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

import numpy as np

from ros_vla.sim.goals import block_at_pose, object_in_container, pose_in_frame
from ros_vla.sim.scene import ObjectSpec, SceneConfig

SEEN_COLORS = ("red", "green", "blue", "yellow", "purple", "brown")
UNSEEN_COLORS = ("orange", "pink", "cyan", "white")
POSITION_TOLERANCE_M = 0.01
ROTATION_TOLERANCE_RAD = math.radians(15)
BOWL_SLOT_RADIUS_M = 0.025  # blocks put side by side in one bowl sit on a circle this wide
PYRAMID_SPACING_M = 0.05  # block centres along the stand (4 cm blocks, 1 cm gaps)


@dataclass(frozen=True)
class Goal:
    """Where `pick` has to end up: inside `container`, or at `xyz`/`yaw` (map frame)."""

    instruction: str
    pick: str
    container: str = ""
    xyz: tuple[float, float, float] | None = None
    yaw: float = 0.0


@dataclass(frozen=True)
class Task:
    name: str
    colors: tuple[str, ...]

    def objects(self, rng: np.random.Generator) -> tuple[ObjectSpec, ...]:
        raise NotImplementedError

    def goals(self, truth: dict, scene: SceneConfig) -> list[Goal]:
        raise NotImplementedError

    def scene(self, base: SceneConfig, seed: int) -> SceneConfig:
        """The base scene (robot, tables, cameras) with this episode's objects."""
        objects = self.objects(np.random.default_rng([seed, 7]))
        return dataclasses.replace(base, objects=objects, spawn=self.spawn(base))

    def spawn(self, base: SceneConfig):
        return base.spawn


def _distinct(rng: np.random.Generator, colors: tuple[str, ...], n: int, exclude: tuple[str, ...] = ()) -> list[str]:
    pool = [c for c in colors if c not in exclude]
    return [str(c) for c in rng.choice(pool, size=n, replace=False)]


class PutBlockInBowl(Task):
    def objects(self, rng):
        block, bowl = _distinct(rng, self.colors, 2)
        other = tuple(c for c in self.colors if c not in (block, bowl))
        distractor_blocks = _distinct(rng, other, int(rng.integers(1, min(4, len(other) + 1))))
        distractor_bowls = _distinct(rng, other, int(rng.integers(0, min(3, len(other) + 1))))
        distractors = [ObjectSpec("block", c) for c in distractor_blocks] + [ObjectSpec("bowl", c)
                                                                             for c in distractor_bowls]
        return (ObjectSpec("block", block), ObjectSpec("bowl", bowl), *distractors)

    def goals(self, truth, scene):
        block, bowl = truth["objects"][0], truth["objects"][1]
        return [Goal(f"put the {block['color']} block in the {bowl['color']} bowl", block["name"], bowl["name"])]


class PutBlocksInBowl(Task):
    def objects(self, rng):
        block, bowl = _distinct(rng, self.colors, 2)
        count = int(rng.integers(2, 4))
        other = tuple(c for c in self.colors if c not in (block, bowl))
        distractors = _distinct(rng, other, 2)
        return (ObjectSpec("bowl", bowl), *(ObjectSpec("block", block, i) for i in range(count)),
                ObjectSpec("block", distractors[0]), ObjectSpec("bowl", distractors[1]))

    def spawn(self, base):
        return dataclasses.replace(base.spawn, min_separation=0.1)

    def goals(self, truth, scene):
        bowl = truth["objects"][0]
        targets = [o for o in truth["objects"] if o["kind"] == "block" and o["color"] == truth["objects"][1]["color"]]
        text = f"put all the {targets[0]['color']} blocks in the {bowl['color']} bowl"
        return [Goal(text, o["name"], bowl["name"]) for o in targets]


class StackBlockPyramid(Task):
    def objects(self, rng):
        colors = _distinct(rng, self.colors, 6)
        return (ObjectSpec("stand", "brown" if "brown" not in colors else "white"),
                *(ObjectSpec("block", c) for c in colors))

    def spawn(self, base):
        return dataclasses.replace(base.spawn, min_separation=0.07)

    def goals(self, truth, scene):
        stand = truth["objects"][0]
        blocks = [o for o in truth["objects"] if o["kind"] == "block"]
        x, y, z, w = stand["orientation_xyzw"]
        yaw = float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
        along = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        size = scene.spawn.block_size
        base = np.asarray(stand["position"]) + [0.0, 0.0, scene.spawn.stand_size[2] / 2 + size / 2]
        # "left" is seen from the robot: +y in the base frame, which is map +y at the table station.
        sides = ("left", "right") if along[1] >= 0 else ("right", "left")
        bottom = [(-PYRAMID_SPACING_M, f"the {sides[0]} of the stand"), (0.0, "the middle of the stand"),
                  (PYRAMID_SPACING_M, f"the {sides[1]} of the stand")]
        colors = [b["color"] for b in blocks]
        goals = [Goal(f"put the {colors[i]} block on {where}", blocks[i]["name"],
                      xyz=tuple(base + offset * along), yaw=yaw) for i, (offset, where) in enumerate(bottom)]
        for i, (below, offset, height) in enumerate((((0, 1), -0.5, 1), ((1, 2), 0.5, 1), ((3, 4), 0.0, 2)), start=3):
            goals.append(Goal(f"put the {colors[i]} block on the {colors[below[0]]} and {colors[below[1]]} blocks",
                              blocks[i]["name"],
                              xyz=tuple(base + offset * PYRAMID_SPACING_M * along + [0.0, 0.0, height * size]),
                              yaw=yaw))
        return goals


TASKS: dict[str, Task] = {
    "put-block-in-bowl-seen-colors": PutBlockInBowl("put-block-in-bowl-seen-colors", SEEN_COLORS),
    "put-block-in-bowl-unseen-colors": PutBlockInBowl("put-block-in-bowl-unseen-colors", UNSEEN_COLORS),
    "put-blocks-in-bowl-seen-colors": PutBlocksInBowl("put-blocks-in-bowl-seen-colors", SEEN_COLORS),
    "stack-block-pyramid-seq-seen-colors": StackBlockPyramid("stack-block-pyramid-seq-seen-colors", SEEN_COLORS),
}


# Other phrasings of a put-in-bowl instruction, drawn during training so the skill follows
# the planner's skill texts ("pick up the red block and place it in the green bowl") and
# people's wording. HELD_OUT_PHRASING is never trained on: evaluation checks it.
PUT_IN_BOWL = re.compile(r"^put the (\w+) block in the (\w+) bowl$")
PHRASINGS = (
    "put the {block} block in the {bowl} bowl",
    "pick up the {block} block and place it in the {bowl} bowl",
    "place the {block} block into the {bowl} bowl",
    "move the {block} block to the {bowl} bowl",
    "put the {block} cube in the {bowl} bowl",
)
HELD_OUT_PHRASING = "drop the {block} block into the {bowl} bowl"


def phrasings(instruction: str) -> list[str]:
    """The instruction and its other phrasings (just itself for other templates)."""
    match = PUT_IN_BOWL.match(instruction)
    if match is None:
        return [instruction]
    return [p.format(block=match.group(1), bowl=match.group(2)) for p in PHRASINGS]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task '{name}'; tasks: {', '.join(TASKS)}")
    return TASKS[name]


def goal_met(goal: Goal, truth: dict, scene: SceneConfig) -> tuple[bool, str]:
    """Checked on ground truth (evaluation and the demonstrator only)."""
    if goal.container:
        return object_in_container(truth, goal.pick, goal.container, scene.spawn.bowl_radius,
                                   scene.spawn.bowl_height)
    return block_at_pose(truth, goal.pick, goal.xyz, goal.yaw, POSITION_TOLERANCE_M, ROTATION_TOLERANCE_RAD)


def reward(goals: list[Goal], truth: dict, scene: SceneConfig) -> float:
    """Partial credit: the fraction of goals met."""
    return sum(goal_met(goal, truth, scene)[0] for goal in goals) / len(goals)


def next_goal(goals: list[Goal], truth: dict, scene: SceneConfig) -> Goal | None:
    """The first goal not yet met: the step the demonstrator and the evaluation run next."""
    for goal in goals:
        if not goal_met(goal, truth, scene)[0]:
            return goal
    return None


def oracle_targets(goal: Goal, truth: dict, goals: list[Goal], scene: SceneConfig
                   ) -> tuple[np.ndarray, float, np.ndarray, float]:
    """ORACLE: pick and place (xyz, yaw) in fr3_link0 for a goal, from ground truth.
    Blocks going into one bowl take free slots side by side, one in the centre when alone."""
    arm_base = np.asarray(truth["arm_base_in_map"])
    pick_xyz, pick_yaw = pose_in_frame(truth, goal.pick, arm_base)
    block_half = scene.spawn.block_size / 2
    if goal.container:
        sharing = [g for g in goals if g.container == goal.container]
        container_xyz, _ = pose_in_frame(truth, goal.container, arm_base)
        offset = np.zeros(3)
        if len(sharing) > 1:
            angle = 2 * math.pi * sharing.index(goal) / len(sharing)
            offset = BOWL_SLOT_RADIUS_M * np.array([math.cos(angle), math.sin(angle), 0.0])
        return pick_xyz, pick_yaw, container_xyz + offset + [0.0, 0.0, block_half], pick_yaw
    target = np.linalg.inv(arm_base) @ np.append(goal.xyz, 1.0)
    frame_yaw = float(np.arctan2(arm_base[1, 0], arm_base[0, 0]))
    return pick_xyz, pick_yaw, target[:3], goal.yaw - frame_yaw
