"""`ros-vla eval saycan`: plan and execution success per instruction family, headless.

Each suite line (JSON) is one instruction in a simulated scene:

    {"family": "long_horizon", "instruction": "bring me the red block", "seed": 7,
     "setup": ["go to the user"],                     # optional: library skills run first (embodiment)
     "goal": [{"at_station": ["red_block", "user"]}]}  # all conditions must hold at the end

Goal conditions, checked on simulator ground truth (execution) and on a symbolic model of
the planned steps (plan):

| condition                         | holds when                                                    |
|-----------------------------------|---------------------------------------------------------------|
| {"in": [object, bowl]}            | the object rests in the bowl (ros_vla.sim.goals.object_in_container) |
| {"in_any": [object, [bowl, ...]]} | it rests in one of the bowls                                  |
| {"any_in": [[object, ...], bowl]} | one of the objects rests in the bowl                          |
| {"on": [top, bottom]}             | top rests on bottom (centred within half a block, one block up) |
| {"tower": [object, ...]}          | the objects form one stack, in any order                      |
| {"at_station": [object, station]} | it rests, not held, on the table the station faces (user: drop-off table) |
| {"held": object}                  | the gripper holds it                                          |
| {"robot_at": station}             | the base is at the station                                    |
| {"unchanged": true}               | no object moved more than 2 cm and the base is where it was   |
| {"refused": true}                 | the planner refused (nothing executed)                        |

Plan success (the paper's): the planner's chosen skills, replayed on a symbolic model that
assumes every skill does what it says (one failed attempt that is retried counts once),
reach the goal. Execution success: the goal holds on the final simulator state. The
planner itself never reads ground truth: it sees camera renders (value function) and the
success flags of the skills it ran.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from ros_vla.models import shipped
from ros_vla.paths import config_file
from ros_vla.saycan.config import PlannerConfig, Skill, SkillLibrary, load_skill_library
from ros_vla.saycan.corpus import few_shot_examples
from ros_vla.saycan.planner import Outcome, SayCanPlanner
from ros_vla.sim.goals import object_entry, object_in_container, object_on_object, object_on_surface
from ros_vla.sim.oracle import world_truth

FAMILY_ORDER = ("single_primitive", "nouns", "verbs", "structured_language", "embodiment", "crowd_sourced",
                "long_horizon", "refusal")
CONDITIONS = ("in", "in_any", "any_in", "on", "tower", "at_station", "held", "robot_at", "unchanged", "refused")
MOVED_M = 0.02


def read_suite(path: str | Path) -> list[dict]:
    items = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        for condition in item["goal"]:
            (name,) = condition
            if name not in CONDITIONS:
                raise ValueError(f"{path}:{number}: unknown goal condition '{name}'; known: {CONDITIONS}")
        item.setdefault("seed", 100 + number)
        item.setdefault("setup", [])
        items.append(item)
    return items


# ----------------------------------------------------------------- goals on ground truth

def station_surface(scene, station: str) -> str:
    """The table a station faces: the furniture nearest to it."""
    x, y, _ = scene.stations[station]
    return min(scene.furniture, key=lambda f: np.hypot(f.center[0] - x, f.center[1] - y)).name


def nearest_station(scene, base_pose) -> str:
    return min(scene.stations, key=lambda s: np.hypot(scene.stations[s][0] - base_pose[0],
                                                      scene.stations[s][1] - base_pose[1]))


def truth_holds(condition: dict, truth: dict, start: dict, scene, outcome: Outcome) -> bool:
    (name, value), = condition.items()
    spawn = scene.spawn

    def inside(obj, bowl):
        return object_in_container(truth, obj, bowl, spawn.bowl_radius, spawn.bowl_height)[0]

    if name == "in":
        return inside(*value)
    if name == "in_any":
        return any(inside(value[0], bowl) for bowl in value[1])
    if name == "any_in":
        return any(inside(obj, value[1]) for obj in value[0])
    if name == "on":
        return object_on_object(truth, value[0], value[1], spawn.block_size)[0]
    if name == "tower":
        heights = sorted(value, key=lambda n: object_entry(truth, n)["position"][2])
        return all(object_on_object(truth, top, below, spawn.block_size)[0]
                   for below, top in zip(heights, heights[1:]))
    if name == "at_station":
        ok, where = object_on_surface(truth, value[0], scene)
        return ok and where.endswith(station_surface(scene, value[1]))
    if name == "held":
        return object_entry(truth, value)["held"]
    if name == "robot_at":
        return nearest_station(scene, truth["base_pose"]) == value
    if name == "unchanged":
        moved = [o["name"] for o in truth["objects"]
                 if np.linalg.norm(np.subtract(o["position"], object_entry(start, o["name"])["position"])) > MOVED_M]
        return not moved and np.allclose(truth["base_pose"][:2], start["base_pose"][:2], atol=MOVED_M)
    return outcome.state == "refused" and not outcome.attempts


# ----------------------------------------------------------------- goals on the symbolic plan

class SymbolicState:
    """Where each object is, what is held and where the base is, as the skills say."""

    def __init__(self, truth: dict, scene):
        spawn = scene.spawn
        self.scene = scene
        self.robot = nearest_station(scene, truth["base_pose"])
        self.place: dict[str, tuple] = {}
        self.held = None
        names = [o["name"] for o in truth["objects"]]
        for obj in truth["objects"]:
            name = obj["name"]
            if obj["held"]:
                self.held, self.place[name] = name, ("held",)
                continue
            self.place[name] = ("surface", self._surface_at(obj["position"]))
            for other in names:
                if other == name:
                    continue
                if object_entry(truth, other)["kind"] == "bowl" and object_in_container(
                        truth, name, other, spawn.bowl_radius, spawn.bowl_height)[0]:
                    self.place[name] = ("in", other)
                elif obj["kind"] == "block" and object_on_object(truth, name, other, spawn.block_size)[0]:
                    self.place[name] = ("on", other)
        self.start = dict(self.place)
        self.start_robot = self.robot

    def _surface_at(self, position) -> str:
        return min(self.scene.furniture, key=lambda f: np.hypot(f.center[0] - position[0],
                                                                f.center[1] - position[1])).name

    def reachable(self, name: str) -> bool:
        """On the table the robot faces, or in or on something there (or already in the gripper)."""
        where = self.place[name]
        if where[0] == "held":
            return True
        if where[0] == "surface":
            return where[1] == station_surface(self.scene, self.robot)
        return self.reachable(where[1])

    def covered(self, name: str) -> bool:
        """Another block rests on it: it cannot be picked, nor have a second block placed on it."""
        return any(where == ("on", name) for other, where in self.place.items() if other != name)

    def apply(self, skill: Skill) -> bool:
        """The skill's intended effect; False when it cannot be what an ideal executor does here
        (out of reach, the gripper full, or the block to pick or to place on has a block on it,
        which also keeps a plan from stacking blocks in a cycle)."""
        if skill.executor == "pick_place":
            pick, place = skill.args["pick"], skill.args["place"]
            if not (self.reachable(pick) and self.reachable(place)) or self.held not in (None, pick):
                return False
            if self.covered(pick) or self.covered(place):
                return False
            self.held = None
            self.place[pick] = ("in" if place.endswith("bowl") else "on", place)
            return True
        if skill.executor == "pick":
            if not self.reachable(skill.args["pick"]) or self.held is not None or self.covered(skill.args["pick"]):
                return False
            self.held, self.place[skill.args["pick"]] = skill.args["pick"], ("held",)
            return True
        if skill.executor == "put_down":
            if self.held is None:
                return False
            self.place[self.held] = ("surface", station_surface(self.scene, self.robot))
            self.held = None
            return True
        if skill.executor == "navigate":
            self.robot = skill.args["station"]
            return True
        return False

    def holds(self, condition: dict, outcome: Outcome) -> bool:
        (name, value), = condition.items()
        if name == "in":
            return self.place[value[0]] == ("in", value[1])
        if name == "in_any":
            return any(self.place[value[0]] == ("in", bowl) for bowl in value[1])
        if name == "any_in":
            return any(self.place[obj] == ("in", value[1]) for obj in value[0])
        if name == "on":
            return self.place[value[0]] == ("on", value[1])
        if name == "tower":
            below = {self.place[n][1] for n in value if self.place[n][0] == "on" and self.place[n][1] in value}
            return len(below) == len(value) - 1 and sum(self.place[n][0] == "on" for n in value) == len(value) - 1
        if name == "at_station":
            return self.place[value[0]] == ("surface", station_surface(self.scene, value[1]))
        if name == "held":
            return self.held == value
        if name == "robot_at":
            return self.robot == value
        if name == "unchanged":
            return self.place == self.start and self.robot == self.start_robot
        return outcome.state == "refused" and not outcome.attempts


def planned_skills(outcome: Outcome) -> list[str]:
    """Chosen skills in order; a failed attempt that was immediately retried counts once."""
    plan = []
    for i, (text, success, _) in enumerate(outcome.attempts):
        retried = not success and i + 1 < len(outcome.attempts) and outcome.attempts[i + 1][0] == text
        if not retried:
            plan.append(text)
    return plan


def plan_success(item: dict, outcome: Outcome, symbolic: SymbolicState, library: SkillLibrary) -> bool:
    """A plan that never chose done (step or failure limit) is judged on what it chose."""
    for text in planned_skills(outcome):
        if not symbolic.apply(library.by_text(text)):
            return False
    return all(symbolic.holds(c, outcome) for c in item["goal"])


# ----------------------------------------------------------------- running the suite

def run_suite(items: list[dict], lm, value_function, library: SkillLibrary, scene, config: PlannerConfig,
              progress=None) -> list[dict]:
    import torch

    from ros_vla.robot.motion import MotionConfig
    from ros_vla.saycan.sim_skills import execute_skill
    from ros_vla.saycan.value_model import RenderedValueAffordance
    from ros_vla.sim.world import SimWorld

    torch.set_num_threads(1)
    motion = MotionConfig()
    world = SimWorld(scene, seed=0, renderer="gl")
    affordance = RenderedValueAffordance(world, value_function) if value_function is not None else None
    planner = SayCanPlanner(library, lm, affordance, config, few_shot_examples(config.chain_of_thought))
    rows = []
    try:
        for item in items:
            world.reset(item["seed"])
            world.step(60)
            for text in item["setup"]:
                execute_skill(world, library.by_text(text), motion)
            start = world_truth(world)
            symbolic = SymbolicState(start, scene)
            started = time.perf_counter()
            outcome = planner.run(item["instruction"], lambda skill: execute_skill(world, skill, motion))
            truth = world_truth(world)
            row = {"family": item["family"], "instruction": item["instruction"], "seed": item["seed"],
                   "state": outcome.state, "message": outcome.message, "plan": planned_skills(outcome),
                   "attempts": [{"skill": t, "success": ok, "message": m} for t, ok, m in outcome.attempts],
                   "plan_success": plan_success(item, outcome, symbolic, library),
                   "execution_success": all(truth_holds(c, truth, start, scene, outcome) for c in item["goal"]),
                   "wall_s": round(time.perf_counter() - started, 2)}
            rows.append(row)
            if progress is not None:
                progress(row)
    finally:
        world.close()
    return rows


def table(rows: list[dict]) -> dict:
    by_family: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_family[row["family"]].append(row)
    ordered = [f for f in FAMILY_ORDER if f in by_family] + sorted(set(by_family) - set(FAMILY_ORDER))
    result = {f: {"n": len(by_family[f]), "plan": float(np.mean([r["plan_success"] for r in by_family[f]])),
                  "execution": float(np.mean([r["execution_success"] for r in by_family[f]]))} for f in ordered}
    result["all"] = {"n": len(rows), "plan": float(np.mean([r["plan_success"] for r in rows])),
                     "execution": float(np.mean([r["execution_success"] for r in rows]))}
    return result


def format_tables(tables: dict[str, dict]) -> str:
    names = list(tables)
    families = list(next(iter(tables.values())))
    header = f"{'family':<22}{'n':>4}" + "".join(f"{name + ' plan':>24}{name + ' exec':>24}" for name in names)
    lines = [header, "-" * len(header)]
    for family in families:
        line = f"{family:<22}{tables[names[0]][family]['n']:>4}"
        for name in names:
            cell = tables[name][family]
            line += f"{cell['plan'] * 100:>23.0f}%{cell['execution'] * 100:>23.0f}%"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-vla eval saycan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=str(config_file("saycan_suite.jsonl")))
    parser.add_argument("--lm", default=str(shipped("saycan_lm")),
                        help="language model: a HF model directory, openai:BASE_URL#MODEL, or uniform")
    parser.add_argument("--value-function", default=str(shipped("saycan_value")))
    parser.add_argument("--skills", default=str(config_file("saycan_skills.yaml")))
    parser.add_argument("--ablations", action="store_true", help="also run 'no affordance' and 'no language model'")
    parser.add_argument("--settings", default="",
                        help="comma-separated subset of saycan,no_affordance,no_lm to run (default: saycan, "
                             "all three with --ablations); e.g. to run the ablations in parallel processes")
    parser.add_argument("--chain-of-thought", action="store_true", help="generate an Explanation line first")
    parser.add_argument("--max-steps", type=int, default=PlannerConfig.max_steps)
    parser.add_argument("--limit", type=int, default=0, help="only the first N instructions (0 = all)")
    parser.add_argument("--details", default="", help="write one JSON line per instruction and setting here")
    parser.add_argument("--json", action="store_true", help="print the tables as one JSON object last")
    args = parser.parse_args(argv)

    from ros_vla.saycan.llm import load_language_model
    from ros_vla.saycan.value_model import ValueFunction
    from ros_vla.sim.scene import load_scene

    scene = load_scene(config_file("scene_tabletop.yaml"))
    library = load_skill_library(args.skills, scene)
    items = read_suite(args.suite)[:args.limit or None]
    lm = load_language_model(args.lm)
    value_function = ValueFunction(args.value_function)
    base = PlannerConfig(max_steps=args.max_steps, chain_of_thought=args.chain_of_thought)
    settings = {"saycan": base}
    if args.ablations or args.settings:
        settings["no_affordance"] = PlannerConfig(max_steps=args.max_steps, use_affordance=False)
        settings["no_lm"] = PlannerConfig(max_steps=args.max_steps, use_language_model=False)
    if args.settings:
        chosen = [name.strip() for name in args.settings.split(",") if name.strip()]
        unknown = [name for name in chosen if name not in settings]
        if unknown or not chosen:
            parser.error(f"--settings: unknown {unknown}; choose from {list(settings)}")
        settings = {name: settings[name] for name in chosen}
    tables, details = {}, []
    for name, config in settings.items():
        def show(row, name=name):
            mark = ("P" if row["plan_success"] else "-") + ("E" if row["execution_success"] else "-")
            print(f"[{name}] {mark} {row['family']:<20} {row['instruction'][:60]!r}: {row['state']}, "
                  f"plan {row['plan']}", flush=True)

        rows = run_suite(items, lm, value_function, library, scene, config, progress=show)
        details.extend({"setting": name, **row} for row in rows)
        tables[name] = table(rows)
    print()
    print(f"SayCan on {args.suite} ({len(items)} instructions), LM {lm.name}, value function {args.value_function}")
    print(format_tables(tables))
    if args.details:
        Path(args.details).write_text("".join(json.dumps(d) + "\n" for d in details))
    if args.json:
        print(json.dumps(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
