"""Train RT-1 on recorded demonstrations: `ros-vla train rt1 --data DIR[,DIR...] --out DIR`.

Each iteration draws `--batch-chunks` chunks of `--chunk-steps` consecutive control steps
(data.sample_chunk: every frame encoded once, then gathered into 6-frame windows), shifts
and colour-jitters each chunk, gives half of the windows only their newest frame
(`--history-dropout`, see data.sample_chunk), and minimises the cross-entropy of the 11 recorded action
tokens, all dimensions weighted alike, as RT-1 does. AdamW, linear warm-up then cosine
decay to a tenth of the rate. The frozen sentence encoder embeds each distinct instruction
once. A few episodes per task and folder are held out; their token accuracy is measured at
every checkpoint (eval mode, no augmentation).

The output folder holds `checkpoint.pt` (model, optimiser, iteration, RNG state: a rerun with
the same folder resumes), and at the end what the node and `ros-vla eval rt1` load:
`rt1.pt` (weights, rounded to float16), the two ONNX graphs exported from those weights
and `config.json` (the config's name, the data and the training figures).
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

from ros_vla.rt1.config import RT1Config
from ros_vla.rt1.data import Chunk, EpisodeData, load_episodes, sample_chunk, window_frame_indices
from ros_vla.rt1.demos import TASKS
from ros_vla.rt1.model import MiniLMInstructionEncoder, build_rt1
from ros_vla.rt1.runtime import TORCH_WEIGHTS as WEIGHTS
from ros_vla.rt1.runtime import export_onnx

CONFIG_JSON = "config.json"


def chunk_logits(model, chunks: list[Chunk], embeddings: dict[str, np.ndarray]) -> torch.Tensor:
    """Action logits [sum of windows, 11, bins] for a batch of chunks: all frames through the
    frame encoder once, then each window's 48 tokens through the action decoder."""
    frames = torch.from_numpy(np.concatenate([c.frames for c in chunks])).permute(0, 3, 1, 2).float() / 255
    frame_embeddings = torch.from_numpy(np.concatenate(
        [np.repeat(embeddings[c.instruction][None], len(c.frames), axis=0) for c in chunks]))
    tokens = model.frame_encoder(frames, frame_embeddings)
    offsets = np.cumsum([0] + [len(c.frames) for c in chunks[:-1]])
    windows = torch.from_numpy(np.concatenate([c.windows + o for c, o in zip(chunks, offsets)]))
    context = tokens[windows].flatten(1, 2)  # [W, 6 * 8, C]
    return model.action_decoder(context)


def learning_rate_at(iteration: int, iterations: int, peak: float, warmup: int) -> float:
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, iterations - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def whole_episode_chunk(episode: EpisodeData, history: int) -> Chunk:
    windows = np.stack([window_frame_indices(t, history) for t in range(episode.steps)])
    return Chunk(episode.images, windows, episode.tokens.astype(np.int64), episode.instruction)


@torch.no_grad()
def token_accuracy(model, episodes: list[EpisodeData], embeddings: dict[str, np.ndarray], history: int) -> dict:
    """Greedy-token accuracy on whole episodes, eval mode: all 11 tokens right, per
    dimension, and within one bin of the recorded token."""
    was_training = model.training
    model.eval()
    predicted, recorded = [], []
    for episode in episodes:
        predicted.append(chunk_logits(model, [whole_episode_chunk(episode, history)], embeddings).argmax(-1))
        recorded.append(torch.from_numpy(episode.tokens.astype(np.int64)))
    model.train(was_training)
    predicted, recorded = torch.cat(predicted), torch.cat(recorded)
    names = [d.name for d in model.config.action_dimensions]
    per_dimension = (predicted == recorded).float().mean(0)
    return {"steps": len(recorded),
            "all_tokens": float((predicted == recorded).all(1).float().mean()),
            "within_one_bin": float(((predicted - recorded).abs() <= 1).float().mean()),
            "per_dimension": {n: round(float(a), 4) for n, a in zip(names, per_dimension)}}


def split_held_out(episodes: list[EpisodeData], held_out_per_group: int) -> tuple[list, list]:
    """The last `held_out_per_group` episodes of every (folder, task) group are held out."""
    groups: dict[tuple[str, str], list[EpisodeData]] = {}
    for episode in episodes:
        groups.setdefault((episode.source, episode.task), []).append(episode)
    train_set, held_out = [], []
    for group in groups.values():
        cut = len(group) - held_out_per_group if len(group) > held_out_per_group else len(group)
        train_set += group[:cut]
        held_out += group[cut:]
    return train_set, held_out


def train(config_name: str, data_dirs: list[str], tasks: list[str], episodes_per_task: int, iterations: int,
          out_dir: str, batch_chunks: int = 6, chunk_steps: int = 8, learning_rate: float = 1e-3,
          warmup: int = 100, seed: int = 0, checkpoint_every: int = 250, threads: int = 0,
          held_out_per_group: int = 5, max_shift_px: int = 4, jitter: float = 0.1,
          history_dropout: float = 0.5) -> dict:
    from tqdm import tqdm

    if threads:
        torch.set_num_threads(threads)
    config = RT1Config.named(config_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    episodes = [e for d in data_dirs for e in load_episodes(d, tasks, episodes_per_task, config.image_size)]
    missing = [t for t in tasks if not any(e.task == t for e in episodes)]
    if missing:
        raise ValueError(f"no successful episodes of {', '.join(missing)} in {', '.join(map(str, data_dirs))}")
    train_set, held_out = split_held_out(episodes, held_out_per_group)
    instructions = sorted({e.instruction for e in episodes})
    embeddings = dict(zip(instructions, MiniLMInstructionEncoder().embed(instructions)))
    model = build_rt1(config, seed=seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    start, history, evaluations = 0, [], []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["config_name"] != config_name:
            raise ValueError(f"{checkpoint} was written for config '{state['config_name']}'; use a new --out folder")
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["rng"]
        start, history, evaluations = state["iteration"], state["history"], state["evaluations"]
    model.train()
    started = time.perf_counter()
    with tqdm(total=iterations, initial=start, desc=f"train rt1-{config_name}", unit="it") as bar:
        for iteration in range(start, iterations):
            for group in optimiser.param_groups:
                group["lr"] = learning_rate_at(iteration, iterations, learning_rate, warmup)
            chunks = [sample_chunk(train_set[i], chunk_steps, config.history_frames, rng, max_shift_px, jitter,
                                   history_dropout) for i in rng.integers(0, len(train_set), batch_chunks)]
            logits = chunk_logits(model, chunks, embeddings)
            targets = torch.from_numpy(np.concatenate([c.targets for c in chunks]))
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(history[-50:]):.3f}")
            if (iteration + 1) % checkpoint_every == 0 or iteration + 1 == iterations:
                if held_out:
                    evaluations.append({"iteration": iteration + 1,
                                        **token_accuracy(model, held_out, embeddings, config.history_frames)})
                    bar.write(f"iteration {iteration + 1}: held-out tokens all right "
                              f"{evaluations[-1]['all_tokens']:.1%}, within one bin "
                              f"{evaluations[-1]['within_one_bin']:.1%}")
                torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                            "config_name": config_name, "rng": rng.bit_generator.state, "iteration": iteration + 1,
                            "history": history, "evaluations": evaluations}, checkpoint)
    write_model_folder(model, out)
    training = {
        "data": [str(d) for d in data_dirs], "tasks": tasks, "episodes_per_task": episodes_per_task,
        "training_episodes": len(train_set), "training_steps": int(sum(e.steps for e in train_set)),
        "held_out_episodes": [f"{e.source}/{e.file}" for e in held_out],
        "iterations": iterations, "batch_chunks": batch_chunks, "chunk_steps": chunk_steps,
        "learning_rate": learning_rate, "warmup": warmup, "seed": seed, "max_shift_px": max_shift_px,
        "jitter": jitter, "history_dropout": history_dropout,
        "wall_time_s_this_run": round(time.perf_counter() - started, 1),
        "final_loss_mean_of_last_50": float(np.mean(history[-50:])), "held_out_accuracy": evaluations,
    }
    (out / CONFIG_JSON).write_text(json.dumps({"config": config_name, "training": training}, indent=2) + "\n")
    return {"out": str(out), "history": history, "evaluations": evaluations}


def write_model_folder(model, out: Path) -> None:
    """What the node and the evaluation load: the weights rounded to float16 (half the
    file; every backend then runs exactly the same numbers) as `rt1.pt`, and the ONNX
    graphs exported from them."""
    model.eval()
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, out / WEIGHTS)
    export_onnx(model, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-vla train rt1", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/rt1/head",
                        help="comma-separated folders of `ros-vla demos rt1` recordings")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--episodes", type=int, default=200, help="successful episodes per task and folder")
    parser.add_argument("--config", default="small", choices=["small", "paper"])
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--batch-chunks", type=int, default=6, help="chunks per iteration")
    parser.add_argument("--chunk-steps", type=int, default=8, help="consecutive control steps per chunk")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--held-out", type=int, default=5, help="episodes held out per task and folder")
    parser.add_argument("--history-dropout", type=float, default=0.5,
                        help="fraction of windows whose earlier frames are replaced by the newest (data.sample_chunk)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--out", required=True, help="output folder; an existing checkpoint there is resumed")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    result = train(args.config, [d.strip() for d in args.data.split(",") if d.strip()], tasks, args.episodes,
                   args.iterations, args.out, args.batch_chunks, args.chunk_steps, args.lr, seed=args.seed,
                   threads=args.threads, held_out_per_group=args.held_out, history_dropout=args.history_dropout)
    held_out = result["evaluations"][-1] if result["evaluations"] else None
    summary = (f"; held-out steps with all 11 tokens right {held_out['all_tokens']:.1%}, tokens within one bin "
               f"{held_out['within_one_bin']:.1%}" if held_out else "")
    print(f"rt1-{args.config}: {args.iterations} iterations, last 50 losses {np.mean(result['history'][-50:]):.3f} "
          f"(uniform over 256 bins: {math.log(256):.2f}){summary}; weights and ONNX graphs in {args.out}")
    return 0
