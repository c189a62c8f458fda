"""Closed-loop evaluation in the headless simulator: `ros-vla eval cliport --task T --episodes N`.

Every episode builds a fresh scene from a held-out seed (10000 onwards; demonstrations
use 0 onwards), then runs up to (number of goals + 1) steps: render the head camera,
fuse the heightmap, ask the agent, run the pick/place primitive exactly as the arm_motion
node plans it. The instruction of each step is the task's next unmet goal, as the Ravens
environments feed their language goals; the agent never sees ground truth. Score as in
the paper: the mean over episodes of the reward (fraction of goals met, x100), and the
fraction of episodes fully solved.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ros_vla.cliport.agent import CLIPortAgent, heatmap_picture, load_agent
from ros_vla.cliport.data import world_heightmap
from ros_vla.cliport.tasks import HELD_OUT_PHRASING, PUT_IN_BOWL, TASKS, Task, get_task, next_goal, reward
from ros_vla.robot.motion import MotionConfig
from ros_vla.sim.oracle import run_pick_place, world_truth
from ros_vla.sim.scene import SceneConfig
from ros_vla.sim.world import SimWorld

EVAL_FIRST_SEED = 10000


def reworded(instruction: str, phrasing: str) -> str:
    """The task's instruction in another phrasing: "task" (as trained), "held-out" (a
    phrasing never trained on)."""
    match = PUT_IN_BOWL.match(instruction)
    if phrasing == "task" or match is None:
        return instruction
    return HELD_OUT_PHRASING.format(block=match.group(1), bowl=match.group(2))


def run_episode(agent: CLIPortAgent, task: Task, base_scene: SceneConfig, seed: int,
                picture_dir: Path | None = None, phrasing: str = "task") -> dict:
    cfg = MotionConfig()
    scene = task.scene(base_scene, seed)
    world = SimWorld(scene, seed=seed, renderer="gl")
    steps = []
    try:
        world.step(60)
        goals = task.goals(world_truth(world), scene)
        for step in range(len(goals) + 1):
            goal = next_goal(goals, world_truth(world), scene)
            if goal is None:
                break
            colour, height = world_heightmap(world)
            instruction = reworded(goal.instruction, phrasing)
            prediction = agent.predict(colour, height, instruction)
            if picture_dir is not None:
                from PIL import Image

                picture_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(heatmap_picture(colour, prediction, agent.cfg.downsample)).save(
                    picture_dir / f"{task.name}_{seed:06d}_step{step}.png")
            moved, message = run_pick_place(world, prediction.pick_xyz, prediction.pick_yaw, prediction.place_xyz,
                                            prediction.place_yaw, cfg)
            steps.append({"instruction": instruction, "moved": moved, "message": message,
                          "confidence": round(prediction.confidence, 4)})
        final_reward = reward(goals, world_truth(world), scene)
    finally:
        world.close()
    return {"seed": seed, "reward": final_reward, "success": final_reward >= 1.0, "steps": steps}


def evaluate(agent: CLIPortAgent, task: Task, base_scene: SceneConfig, episodes: int,
             first_seed: int = EVAL_FIRST_SEED, progress=None, picture_dir: Path | None = None,
             pictures: int = 0, phrasing: str = "task") -> dict:
    outcomes = []
    started = time.perf_counter()
    for i, seed in enumerate(range(first_seed, first_seed + episodes)):
        outcomes.append(run_episode(agent, task, base_scene, seed, picture_dir if i < pictures else None, phrasing))
        if progress is not None:
            progress(outcomes[-1])
    rewards = [o["reward"] for o in outcomes]
    return {"task": task.name, "phrasing": phrasing, "episodes": episodes, "first_seed": first_seed,
            "score": 100.0 * float(np.mean(rewards)), "success_rate": float(np.mean([o["success"] for o in outcomes])),
            "wall_time_s_per_episode": (time.perf_counter() - started) / max(episodes, 1),
            "failures": [o for o in outcomes if not o["success"]]}


def roc_auc(present: np.ndarray, absent: np.ndarray) -> float:
    """P(a present request scores above an absent one), ties counting half."""
    above = (present[:, None] > absent[None, :]).mean()
    return float(above + 0.5 * (present[:, None] == absent[None, :]).mean())


def presence_statistics(prediction) -> dict[str, float]:
    """Statistics of one prediction's maps that might tell a present object from an absent
    one (higher = more present)."""
    pick = prediction.pick_heatmap.ravel()
    return {"confidence": prediction.confidence, "pick_confidence": prediction.pick_confidence,
            "place_confidence": prediction.place_confidence, "pick_peak": float(pick.max()),
            "pick_negative_entropy": float((pick * np.log(pick + 1e-12)).sum())}


def grounding_check(agent: CLIPortAgent, base_scene: SceneConfig, episodes: int, threshold: float,
                    first_seed: int = EVAL_FIRST_SEED) -> dict:
    """How well confidence tells a request the scene can satisfy from one it cannot: on
    put-block-in-bowl scenes, the task's own instruction vs the same with a block colour
    that is not on the table. Nothing is executed. Also the ROC AUC of other statistics of
    the maps (presence_statistics)."""
    task = get_task("put-block-in-bowl-seen-colors")
    present, absent = [], []
    for seed in range(first_seed, first_seed + episodes):
        scene = task.scene(base_scene, seed)
        world = SimWorld(scene, seed=seed, renderer="gl")
        try:
            world.step(60)
            truth = world_truth(world)
            goal = task.goals(truth, scene)[0]
            colour, height = world_heightmap(world)
        finally:
            world.close()
        on_table = {o.color for o in scene.objects}
        missing = next(c for c in base_scene.colors if c not in on_table)
        bowl = goal.container.split("_")[0]
        here, gone = agent.predict_many(colour, height,
                                        [goal.instruction, f"put the {missing} block in the {bowl} bowl"])
        present.append(presence_statistics(here))
        absent.append(presence_statistics(gone))
    confidence_present = np.array([p["confidence"] for p in present])
    confidence_absent = np.array([a["confidence"] for a in absent])
    return {"episodes": episodes, "threshold": threshold,
            "present_median": float(np.median(confidence_present)),
            "absent_median": float(np.median(confidence_absent)),
            "present_accepted": float(np.mean(confidence_present >= threshold)),
            "absent_refused": float(np.mean(confidence_absent < threshold)),
            "roc_auc": {name: roc_auc(np.array([p[name] for p in present]), np.array([a[name] for a in absent]))
                        for name in present[0]}}


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from ros_vla.models import shipped
    from ros_vla.paths import config_file
    from ros_vla.sim.scene import load_scene

    parser = argparse.ArgumentParser(prog="ros-vla eval cliport", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="put-block-in-bowl-seen-colors", choices=sorted(TASKS))
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--first-seed", type=int, default=EVAL_FIRST_SEED)
    parser.add_argument("--model", default="", help="folder with cliport.pt + config.json (default: the shipped one)")
    parser.add_argument("--phrasing", choices=["task", "held-out"], default="task",
                        help="held-out: put-in-bowl instructions reworded in a way training never saw")
    parser.add_argument("--pictures", type=int, default=0, help="save heatmap pictures of the first N episodes")
    parser.add_argument("--pictures-dir", default="cliport_eval", help="where the pictures go")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--grounding", type=int, default=0,
                        help="also check refusals on N scenes: confidence for present vs absent block colours")
    parser.add_argument("--threshold", type=float, default=0.15, help="refusal threshold (cliport_node min_confidence)")
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    parser.add_argument("--scene", default="")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be at least 1")
    agent = load_agent(args.model or shipped("cliport_small"), threads=args.threads)
    scene = load_scene(args.scene or config_file("scene_tabletop.yaml"))
    task = get_task(args.task)
    with tqdm(total=args.episodes, desc=f"eval cliport {args.task}", unit="episode") as bar:
        def progress(outcome):
            bar.update(1)
            bar.set_postfix(seed=outcome["seed"], reward=f"{outcome['reward']:.2f}")

        result = evaluate(agent, task, scene, args.episodes, args.first_seed, progress, Path(args.pictures_dir),
                          args.pictures, args.phrasing)
    print(f"cliport-{agent.cfg.name} on {args.task} ({args.phrasing} phrasing): score {result['score']:.1f} "
          f"(mean reward x100), "
          f"{result['success_rate'] * 100:.1f}% of {args.episodes} episodes solved "
          f"(seeds {args.first_seed}..{args.first_seed + args.episodes - 1}), "
          f"{result['wall_time_s_per_episode']:.1f} s per episode")
    for failure in result["failures"][:10]:
        last = failure["steps"][-1] if failure["steps"] else {}
        print(f"  seed {failure['seed']}: reward {failure['reward']:.2f}; last step '{last.get('instruction', '')}': "
              f"{last.get('message', '')}")
    if args.grounding:
        check = grounding_check(agent, scene, args.grounding, args.threshold, args.first_seed)
        result["grounding"] = check
        print(f"grounding over {args.grounding} scenes: confidence median {check['present_median']:.2f} when the "
              f"named block is there, {check['absent_median']:.2f} when its colour is absent; at threshold "
              f"{args.threshold:.2f}: {check['present_accepted'] * 100:.0f}% accepted, "
              f"{check['absent_refused'] * 100:.0f}% of impossible requests refused")
        print("present vs absent, ROC AUC: " + ", ".join(f"{name} {auc:.3f}" for name, auc in check["roc_auc"].items()))
    if args.json:
        print(json.dumps(result))
    return 0
