"""Train CLIPort on recorded demonstrations: `ros-vla train cliport --tasks T[,T...] --demos N`.

Each iteration draws demonstration steps at random, applies a random SE(2) transform to
the heightmap and its labels, gives half of the put-in-bowl samples another block and bowl
in view as their goal (data.relabelled), words the instruction one of several ways
(tasks.phrasings), and minimises the cross-entropy of the pick pixel (over all
pixels) plus that of the place (over rotations x pixels), as in the paper. The frozen
language encoder's embeddings are computed once per distinct instruction.

The output folder holds `checkpoint.pt` (model, optimiser, iteration, RNG state: a rerun
with the same folder resumes, at the --lr it is given), and at the end `cliport.pt` (weights only) and
`config.json`, which is what the agent, the node and `ros-vla eval cliport` load.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ros_vla.cliport.config import CLIPortConfig
from ros_vla.cliport.data import load_steps, make_sample, relabelled
from ros_vla.cliport.model import build_model
from ros_vla.cliport.tasks import get_task, phrasings


def batch_tensors(samples, embeddings: dict[str, np.ndarray], cfg: CLIPortConfig):
    h, w = cfg.heightmap.shape
    image = torch.from_numpy(np.stack([s.image for s in samples]))
    language = torch.from_numpy(np.stack([embeddings[s.instruction] for s in samples]))
    pick = torch.tensor([s.pick for s in samples])
    pick_target = torch.tensor([r * w + c for r, c in (s.pick for s in samples)])
    place_target = torch.tensor([s.rotation * h * w + s.place[0] * w + s.place[1] for s in samples])
    return image, language, pick, pick_target, place_target


def losses(model, image, language, pick, pick_target, place_target) -> tuple[torch.Tensor, torch.Tensor]:
    pick_logits, place_logits = model(image, language, pick)
    return F.cross_entropy(pick_logits, pick_target), F.cross_entropy(place_logits, place_target)


def train(cfg: CLIPortConfig, data_dir: str, tasks: list[str], demos: int, iterations: int, out_dir: str,
          batch_size: int = 4, learning_rate: float = 5e-4, seed: int = 0, checkpoint_every: int = 200,
          threads: int = 0, relabel: float = 0.5) -> dict:
    from tqdm import tqdm

    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = [step for task in tasks for step in load_steps(data_dir, task, demos)]
    if not steps:
        raise ValueError(f"no successful demonstrations of {tasks} in {data_dir}")
    torch.manual_seed(seed)
    model, encoder = build_model(cfg)
    relabel_colors = tuple(dict.fromkeys(c for task in tasks for c in get_task(task).colors))
    pairs = [f"put the {a} block in the {b} bowl" for a in relabel_colors for b in relabel_colors]
    instructions = sorted({p for text in {str(s["instructions"]) for s in steps} | set(pairs) for p in phrasings(text)})
    embeddings = dict(zip(instructions, encoder.embed(instructions)))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    start, history = 0, []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["config"] != cfg.to_dict():
            raise ValueError(f"{checkpoint} was written for another configuration; use a new --out folder")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        for group in optimiser.param_groups:  # a resumed run may lower the rate for its last stretch
            group["lr"] = learning_rate
        rng.bit_generator.state = state["rng"]
        start, history = state["iteration"], state["history"]
    model.train()
    started = time.perf_counter()
    with tqdm(total=iterations, initial=start, desc=f"train cliport-{cfg.name}", unit="it") as bar:
        for iteration in range(start, iterations):
            chosen = rng.integers(0, len(steps), batch_size)
            samples = [make_sample(relabelled(steps[i], rng, relabel_colors) if rng.random() < relabel else steps[i],
                                   cfg.downsample, cfg.n_rotations, rng) for i in chosen]
            for sample in samples:
                options = phrasings(sample.instruction)
                sample.instruction = options[rng.integers(len(options))]
            pick_loss, place_loss = losses(model, *batch_tensors(samples, embeddings, cfg))
            optimiser.zero_grad()
            (pick_loss + place_loss).backward()
            optimiser.step()
            history.append((pick_loss.item(), place_loss.item()))
            bar.update(1)
            bar.set_postfix(pick=f"{np.mean([h[0] for h in history[-50:]]):.2f}",
                            place=f"{np.mean([h[1] for h in history[-50:]]):.2f}")
            if (iteration + 1) % checkpoint_every == 0 or iteration + 1 == iterations:
                torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(), "config": cfg.to_dict(),
                            "rng": rng.bit_generator.state, "iteration": iteration + 1, "history": history},
                           checkpoint)
    save_weights(model, cfg, out, {"tasks": tasks, "demos_per_task": demos, "demonstration_steps": len(steps),
                                   "iterations": iterations, "batch_size": batch_size, "learning_rate": learning_rate,
                                   "seed": seed, "wall_time_s_this_run": round(time.perf_counter() - started, 1),
                                   "final_losses_mean_of_last_50": {
                                       "pick": float(np.mean([h[0] for h in history[-50:]])),
                                       "place": float(np.mean([h[1] for h in history[-50:]]))}})
    return {"out": str(out), "iterations": iterations, "history": history}


def save_weights(model, cfg: CLIPortConfig, out: Path, training: dict):
    # The frozen CLIP trunk is rebuilt from the user's checkpoint: only trained weights ship.
    weights = {k: v for k, v in model.state_dict().items() if ".trunk.visual." not in k}
    torch.save(weights, out / "cliport.pt")
    (out / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "training": training}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-vla train cliport", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="put-block-in-bowl-seen-colors", help="comma-separated task names")
    parser.add_argument("--demos", type=int, default=100, help="successful demonstrations per task to train on")
    parser.add_argument("--data", default="data/cliport", help="demonstrations folder (ros-vla demos cliport)")
    parser.add_argument("--config", default="small", choices=["small", "rn50"])
    parser.add_argument("--clip-checkpoint", default="", help="rn50: open_clip RN50 weights file (local path)")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--relabel", type=float, default=0.5,
                        help="fraction of put-in-bowl samples given another block/bowl pair in view (data.relabelled)")
    parser.add_argument("--out", required=True, help="output folder; an existing checkpoint there is resumed")
    args = parser.parse_args(argv)
    overrides = {"clip_checkpoint": args.clip_checkpoint} if args.config == "rn50" else {}
    cfg = CLIPortConfig.named(args.config, **overrides)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    result = train(cfg, args.data, tasks, args.demos, args.iterations, args.out, args.batch_size, args.lr,
                   args.seed, threads=args.threads, relabel=args.relabel)
    last = result["history"][-50:]
    pixels = cfg.heightmap.shape[0] * cfg.heightmap.shape[1]
    print(f"cliport-{cfg.name}: {args.iterations} iterations; last 50: pick loss {np.mean([h[0] for h in last]):.3f}, "
          f"place loss {np.mean([h[1] for h in last]):.3f} (uniform would be {math.log(pixels):.2f} / "
          f"{math.log(cfg.n_rotations * pixels):.2f}); weights in {args.out}")
    return 0
