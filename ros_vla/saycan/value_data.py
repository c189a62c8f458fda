"""Training data for the SayCan value function, from skills executed in the headless simulator.

Episodes of random library skills from a fresh scene, each one recorded as (views before
it, skill text, success from simulator ground truth) and then left in effect, so later
skills start from varied states (blocks in bowls or stacked, an object in the gripper, the
base at the user). Labels are outcomes, not rules: a pick at the user station fails because
the arm cannot reach, a pick of a block in a bowl grabs the bowl, "put it down" fails with
an empty gripper.

    ros-vla demos saycan-value --episodes 80 --out data/saycan/value_data.npz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ros_vla.paths import config_file
from ros_vla.saycan.config import SkillLibrary, load_skill_library
from ros_vla.saycan.value_model import VIEWS, render_observation
from ros_vla.sim.scene import SceneConfig, load_scene


def generate_data(scene: SceneConfig, library: SkillLibrary, episodes: int, skills_per_episode: int,
                  first_seed: int, progress=print) -> dict:
    """Run random library skills in fresh scenes; one sample per executed skill."""
    import torch

    from ros_vla.robot.motion import MotionConfig
    from ros_vla.saycan.sim_skills import execute_skill
    from ros_vla.sim.world import SimWorld

    torch.set_num_threads(1)
    cfg = MotionConfig()
    candidates = [s for s in library.skills if s.executor != "done"]
    # Each kind of skill about as often as the others, whatever the number of objects.
    kind_weight = {"pick_place": 0.45, "pick": 0.2, "navigate": 0.15, "put_down": 0.2}
    weights = np.array([kind_weight.get(s.executor, 0.1) / sum(c.executor == s.executor for c in candidates)
                        for s in candidates])
    rng = np.random.default_rng(first_seed)
    images, texts, labels, episode_ids, details = [], [], [], [], []
    world = SimWorld(scene, seed=first_seed, renderer="gl")
    started = time.perf_counter()
    try:
        for episode in range(episodes):
            world.reset(first_seed + episode)
            world.step(60)
            for _ in range(skills_per_episode):
                skill = candidates[rng.choice(len(candidates), p=weights / weights.sum())]
                images.append(render_observation(world))
                success, detail = execute_skill(world, skill, cfg)
                texts.append(skill.text)
                labels.append(success)
                episode_ids.append(episode)
                details.append(detail)
            if progress and (episode + 1) % 10 == 0:
                progress(f"episode {episode + 1}/{episodes}: {len(labels)} samples, "
                         f"{np.mean(labels) * 100:.0f}% successes, {time.perf_counter() - started:.0f} s")
    finally:
        world.close()
    return {"images": np.stack(images), "texts": np.array(texts), "labels": np.array(labels, bool),
            "episodes": np.array(episode_ids), "details": np.array(details), "views": np.array(VIEWS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SayCan value function: record executed skills in the headless "
                                                 "simulator")
    parser.add_argument("--episodes", type=int, default=80)
    parser.add_argument("--skills-per-episode", type=int, default=8)
    parser.add_argument("--first-seed", type=int, default=5000)
    parser.add_argument("--out", default="data/saycan/value_data.npz")
    args = parser.parse_args(argv)
    scene = load_scene(config_file("scene_tabletop.yaml"))
    library = load_skill_library(config_file("saycan_skills.yaml"), scene)
    recorded = generate_data(scene, library, args.episodes, args.skills_per_episode, args.first_seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **recorded)
    print(f"{len(recorded['labels'])} samples ({recorded['labels'].mean() * 100:.0f}% successes) -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
