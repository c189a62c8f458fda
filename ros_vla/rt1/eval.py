"""Closed-loop evaluation of a trained RT-1 in the headless simulator: `ros-vla eval rt1`.

Every episode runs as a demonstration does (ros_vla.rt1.demos.run_episode: same start pose,
same 3 Hz control period, actions executed through apply_ee_delta as the stack executes
them) but the actions come from the policy: the camera frame and the instruction in, the
greedy action tokens out, detokenized. The task's ORACLE only draws the instruction and
judges the outcome at the end (pick: the block held >= 5 cm above the table; push: the block
at the bowl's rim); the policy never sees ground truth. Seeds start at 10000, apart from
the demonstrations' (0-299, 1000-1099 and 20000-20299).

`--distractors K` adds K objects in colours that no instruction names (blocks and bowls in
turn, `demos.with_distractors`, as `ros-vla demos rt1 --distractors K` records them),
placed by the scene's spawner among the usual ones.

Writes results.json and episodes.png (frames of the first episodes of each task, as the
policy saw them) to `--out`.

`--ros` runs the episodes through the ROS 2 stack instead (ros_vla/tools/eval_rt1_stack.py:
the launched sim stack, rt1_policy_node, the skill/rt1 action, in real time). No
distractors there (the scene file's objects only).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ros_vla.rt1.config import RT1Config
from ros_vla.rt1.demos import TASKS, DemoConfig, run_episode, with_distractors
from ros_vla.rt1.runtime import BACKENDS, RT1Policy, open_backend
from ros_vla.sim.scene import SceneConfig

EVAL_FIRST_SEED = 10000
PICTURE_FRAMES = 8


def model_config(model_dir: str | Path) -> RT1Config:
    """The RT1Config a trained model folder was made with (its config.json)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: `ros-vla train rt1 --out {model_dir}` writes it")
    return RT1Config.named(json.loads(path.read_text())["config"])


class PolicyController:
    """RT1Policy as run_episode's controller: (image, instruction) -> action, with one
    instruction embedding per episode and the window restarted for every episode."""

    def __init__(self, policy: RT1Policy, encoder):
        self.policy, self.encoder = policy, encoder
        self._embeddings: dict[str, np.ndarray] = {}
        self.latencies_s: list[float] = []

    def new_episode(self) -> None:
        self.policy.reset()

    def __call__(self, image: np.ndarray, instruction: str) -> np.ndarray:
        if instruction not in self._embeddings:
            self._embeddings[instruction] = self.encoder.embed([instruction])[0]
        started = time.perf_counter()
        tokens = self.policy.step(image, self._embeddings[instruction])
        self.latencies_s.append(time.perf_counter() - started)
        return self.policy.tokenizer.detokenize(tokens)


def evaluate(model_dir: str | Path, scene: SceneConfig, tasks: list[str], episodes: int,
             first_seed: int = EVAL_FIRST_SEED, distractors: int = 0, camera: str = "camera",
             backend: str = "onnxruntime", progress: bool = True) -> tuple[dict, list]:
    """Success per task over `episodes` seeds each; also the episodes themselves."""
    from tqdm import tqdm

    from ros_vla.text_encoder import MiniLMInstructionEncoder

    config = model_config(model_dir)
    controller = PolicyController(RT1Policy(open_backend(backend, config, model_dir), config),
                                  MiniLMInstructionEncoder())
    trained_objects = scene.objects
    scene = with_distractors(scene, distractors)
    results, recorded = {}, []
    for task in tasks:
        outcomes = []
        with tqdm(range(first_seed, first_seed + episodes), desc=f"rt1 eval: {task}", unit="episode",
                  disable=not progress) as bar:
            for seed in bar:
                controller.new_episode()
                episode = run_episode(scene, task, seed, camera, config.image_size, DemoConfig(), controller,
                                      trained_objects)
                outcomes.append(episode)
                bar.set_postfix(success=f"{sum(e.success for e in outcomes)}/{len(outcomes)}")
        # The last action is always terminate: the policy's own, unless the step budget ran out.
        terminated = [len(e.actions) < DemoConfig().step_budget(task) for e in outcomes]
        results[task] = {
            "episodes": len(outcomes), "successes": int(sum(e.success for e in outcomes)),
            "success_rate": float(np.mean([e.success for e in outcomes])),
            "mean_steps": float(np.mean([len(e.actions) for e in outcomes])),
            "policy_terminated": int(sum(terminated)),
            "failures": [{"seed": e.seed, "instruction": e.instruction, "detail": e.detail}
                         for e in outcomes if not e.success],
        }
        recorded += outcomes
    latencies_ms = 1000 * np.array(controller.latencies_s)
    summary = {"model": str(model_dir), "backend": backend, "camera": camera, "distractors": distractors,
               "first_seed": first_seed, "tasks": results,
               "policy_step_ms": {"median": round(float(np.median(latencies_ms)), 2),
                                  "p99": round(float(np.percentile(latencies_ms, 99)), 2)}}
    return summary, recorded


def teacher_forced_errors(model_dir: str | Path, data_dirs: list[str], tasks: list[str],
                          held_out_per_group: int = 5, first_steps: int = 3) -> dict:
    """How much of the policy's motion comes from what it sees: on the episodes training held
    out (train.split_held_out), the mean |error| of the greedy action's arm_x and arm_y
    against the demonstrator's, in mm per step, for the policy; the policy given another
    held-out episode's frames (same instruction); and a blind baseline, the training
    episodes' mean action at the same step index. Over all steps and over the first
    `first_steps`, where the earlier frames show no motion yet."""
    import torch

    from ros_vla.rt1.data import load_episodes
    from ros_vla.rt1.train import chunk_logits, split_held_out, whole_episode_chunk
    from ros_vla.text_encoder import MiniLMInstructionEncoder

    config = model_config(model_dir)
    backend = open_backend("torch", config, model_dir)
    model = backend.model.cpu().eval()
    episodes = [e for d in data_dirs for e in load_episodes(d, tasks, 10**6, config.image_size)]
    train_set, held_out = split_held_out(episodes, held_out_per_group)
    instructions = sorted({e.instruction for e in episodes})
    embeddings = dict(zip(instructions, MiniLMInstructionEncoder().embed(instructions)))
    tokenizer = RT1Policy(backend, config).tokenizer
    xy = [i for i, d in enumerate(config.action_dimensions) if d.name in ("arm_x", "arm_y")]

    def arm_xy(chunk) -> np.ndarray:
        with torch.no_grad():
            tokens = chunk_logits(model, [chunk], embeddings).argmax(-1).numpy()
        return tokenizer.detokenize(tokens)[:, xy]

    results = {}
    for task in tasks:
        recorded = [tokenizer.detokenize(e.tokens)[:, xy] for e in train_set if e.task == task]
        longest = max(len(a) for a in recorded)
        blind = np.array([np.mean([a[t] for a in recorded if len(a) > t], axis=0) for t in range(longest)])
        errors: dict[str, list[float]] = {}
        tests = [e for e in held_out if e.task == task]
        for i, episode in enumerate(tests):
            truth = tokenizer.detokenize(episode.tokens)[:, xy]
            other = tests[(i + 1) % len(tests)].images
            other = np.concatenate([other, np.repeat(other[-1:], max(0, episode.steps - len(other)), axis=0)])
            swapped = whole_episode_chunk(episode, config.history_frames)
            swapped.frames = other[:episode.steps]
            guesses = {"policy": arm_xy(whole_episode_chunk(episode, config.history_frames)),
                       "policy_with_another_episodes_frames": arm_xy(swapped),
                       "blind_mean_at_step": blind[np.minimum(np.arange(episode.steps), longest - 1)]}
            for name, guess in guesses.items():
                error = np.abs(guess - truth)
                errors.setdefault(name, []).append(float(error.mean()))
                errors.setdefault(f"{name}_first_{first_steps}_steps", []).append(float(error[:first_steps].mean()))
        results[task] = {name: round(1000 * float(np.mean(v)), 2) for name, v in errors.items()}
        results[task]["held_out_episodes"] = len(tests)
    return {"model": str(model_dir), "arm_xy_error_mm_per_step": results}


def episodes_picture(episodes, frames: int = PICTURE_FRAMES, scale: int = 3) -> Image.Image:
    """For each task its first successful and its first failed episode (in seed order; two
    of one kind where the other is missing), one row each: `frames` frames spread over the
    episode, as the policy saw them, with the instruction and the outcome written above."""
    rows = []
    for task in dict.fromkeys(e.task for e in episodes):
        of_task = [e for e in episodes if e.task == task]
        firsts = [next((e for e in of_task if e.success == outcome), None) for outcome in (True, False)]
        rows += [e for e in firsts if e is not None] if all(firsts) else of_task[:2]
    size = episodes[0].images.shape[1] * scale
    caption = 16
    sheet = Image.new("RGB", (size * frames, (size + caption) * len(rows)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, episode in enumerate(rows):
        top = r * (size + caption)
        outcome = "success" if episode.success else "failure"
        draw.text((4, top + 2), f'"{episode.instruction}" (seed {episode.seed}): {outcome}, '
                                f"{len(episode.actions)} steps", fill=(0, 0, 0))
        for c, t in enumerate(np.linspace(0, len(episode.images) - 1, frames).round().astype(int)):
            frame = Image.fromarray(episode.images[t]).resize((size, size), Image.Resampling.NEAREST)
            sheet.paste(frame, (c * size, top + caption))
            draw.text((c * size + 3, top + caption + 2), f"t={t}", fill=(255, 255, 255))
    return sheet


def main(argv: list[str] | None = None) -> int:
    from ros_vla.models import shipped
    from ros_vla.paths import config_file
    from ros_vla.sim.scene import load_scene

    parser = argparse.ArgumentParser(prog="ros-vla eval rt1", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(shipped("rt1_small")), help="a `ros-vla train rt1` output folder")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per task")
    parser.add_argument("--seed", type=int, default=EVAL_FIRST_SEED, help="first scene seed")
    parser.add_argument("--distractors", type=int, default=0, help="objects added in colours no instruction names")
    parser.add_argument("--camera", default="camera", help="the scene camera the policy sees")
    parser.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    parser.add_argument("--out", default="", help="folder for results.json and episodes.png "
                                                  "(default outputs/rt1_eval/<time>)")
    parser.add_argument("--teacher-forced", default="",
                        help="DIR[,DIR]: the recordings the model was trained on; instead of closed loop, the arm "
                             "xy error on their held-out episodes against a blind baseline (teacher_forced_errors)")
    parser.add_argument("--ros", action="store_true",
                        help="through the launched ROS 2 sim stack and rt1_policy_node, in real time")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    args = parser.parse_args(argv)
    out = Path(args.out or f"outputs/rt1_eval/{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.teacher_forced:
        summary = teacher_forced_errors(args.model, [d.strip() for d in args.teacher_forced.split(",") if d.strip()],
                                        tasks)
        (out / "teacher_forced.json").write_text(json.dumps(summary, indent=2) + "\n")
        for task, errors in summary["arm_xy_error_mm_per_step"].items():
            print(f"{task}: " + ", ".join(f"{name} {value}" for name, value in errors.items()))
        if args.json:
            print(json.dumps(summary))
        return 0
    if args.ros:
        if args.distractors or args.camera != "camera" or args.backend != "onnxruntime":
            parser.error("--ros runs the stack as launched: no --distractors, --camera or --backend")
        from ros_vla.tools.eval_rt1_stack import evaluate_through_stack

        summary = evaluate_through_stack(args.model, load_scene(config_file("scene_tabletop.yaml")), tasks,
                                         args.episodes, args.seed, out / "nodes.log")
        (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        for task, result in summary["tasks"].items():
            print(f"{task} (through ROS): success {result['successes']}/{result['episodes']} "
                  f"({result['success_rate']:.0%})")
        print(f"results and node logs in {out}")
        if args.json:
            print(json.dumps(summary))
        return 0
    summary, episodes = evaluate(args.model, load_scene(config_file("scene_tabletop.yaml")), tasks, args.episodes,
                                 args.seed, args.distractors, args.camera, args.backend)
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    episodes_picture(episodes).save(out / "episodes.png")
    for task, result in summary["tasks"].items():
        print(f"{task}: success {result['successes']}/{result['episodes']} ({result['success_rate']:.0%}), "
              f"{result['mean_steps']:.1f} steps per episode, {result['policy_terminated']} ended by the policy's "
              f"terminate")
    print(f"policy step {summary['policy_step_ms']['median']} ms median ({args.backend}); "
          f"{args.distractors} added distractors; results and episodes.png in {out}")
    if args.json:
        print(json.dumps(summary))
    return 0
