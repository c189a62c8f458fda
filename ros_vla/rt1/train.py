"""Train RT-1 on recorded demonstrations: `ros-vla train rt1 --data DIR[,DIR...] --out DIR`.

Each iteration draws `--batch-chunks` chunks of `--chunk-steps` consecutive control steps
(data.sample_chunk: every frame encoded once, then gathered into 6-frame windows), shifts
and colour-jitters each chunk, gives half of the windows only their newest frame
(`--history-dropout`, see data.sample_chunk), and minimises the cross-entropy of the 11 recorded action
tokens, all dimensions weighted alike, as RT-1 does, plus `--target-loss` times an
auxiliary loss that RT-1 does not have: from each frame's 8 tokens alone, a small head
(TargetHead, used in training only, never exported) says where the instruction's block is
in that frame, against the recorded ground truth. AdamW, linear warm-up then cosine
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
from torch import nn

from ros_vla.rt1.config import RT1Config
from ros_vla.rt1.data import Chunk, EpisodeData, load_episodes, sample_chunk, window_frame_indices
from ros_vla.rt1.demos import TASKS
from ros_vla.rt1.model import build_rt1
from ros_vla.rt1.runtime import TORCH_WEIGHTS as WEIGHTS
from ros_vla.rt1.runtime import export_onnx
from ros_vla.text_encoder import MiniLMInstructionEncoder

CONFIG_JSON = "config.json"


class TargetHead(nn.Module):
    """Training only: one frame's tokens [N, 8, C] -> where the instruction's block is in
    that frame, (u, v) / image size [N, 2]. Trained from scratch on 315 scenes, the policy
    copied the motion in its history instead of finding the block (data.sample_chunk); this
    loss makes the frame tokens, which are all the transformer sees, say where the block is."""

    def __init__(self, config: RT1Config, hidden: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(config.tokens_per_frame * config.image_token_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, 2))

    def forward(self, frame_tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(frame_tokens.flatten(1))


def encode_chunk_frames(model, chunks: list[Chunk], embeddings: dict[str, np.ndarray]) -> torch.Tensor:
    """Every frame of the chunks through the frame encoder once: tokens [sum of frames, 8, C]."""
    frames = torch.from_numpy(np.concatenate([c.frames for c in chunks])).permute(0, 3, 1, 2).float() / 255
    frame_embeddings = torch.from_numpy(np.concatenate(
        [np.repeat(embeddings[c.instruction][None], len(c.frames), axis=0) for c in chunks]))
    return model.frame_encoder(frames, frame_embeddings)


def decode_chunk_windows(model, chunks: list[Chunk], frame_tokens: torch.Tensor) -> torch.Tensor:
    """Each window's 48 tokens through the action decoder: logits [sum of windows, 11, bins]."""
    offsets = np.cumsum([0] + [len(c.frames) for c in chunks[:-1]])
    windows = torch.from_numpy(np.concatenate([c.windows + o for c, o in zip(chunks, offsets)]))
    return model.action_decoder(frame_tokens[windows].flatten(1, 2))  # context [W, 6 * 8, C]


def chunk_logits(model, chunks: list[Chunk], embeddings: dict[str, np.ndarray]) -> torch.Tensor:
    """Action logits [sum of windows, 11, bins] for a batch of chunks."""
    return decode_chunk_windows(model, chunks, encode_chunk_frames(model, chunks, embeddings))


def chunk_target_px(chunks: list[Chunk]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([c.target_px for c in chunks]).astype(np.float32))


def learning_rate_at(iteration: int, iterations: int, peak: float, warmup: int) -> float:
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, iterations - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def whole_episode_chunk(episode: EpisodeData, history: int) -> Chunk:
    windows = np.stack([window_frame_indices(t, history) for t in range(episode.steps)])
    return Chunk(episode.images, windows, episode.tokens.astype(np.int64), episode.instruction, episode.target_px)


@torch.no_grad()
def target_error_px(model, target_head: TargetHead, episodes: list[EpisodeData],
                    embeddings: dict[str, np.ndarray], history: int) -> float | None:
    """Median distance (pixels) between TargetHead's guess and the block, over every frame of
    the episodes that record it (eval mode); None when none does."""
    known = [e for e in episodes if e.target_px is not None]
    if not known:
        return None
    was_training = model.training
    model.eval()
    errors = []
    for episode in known:
        chunk = whole_episode_chunk(episode, history)
        guess = target_head(encode_chunk_frames(model, [chunk], embeddings)) * model.config.image_size
        errors.append(torch.linalg.norm(guess - chunk_target_px([chunk]), dim=1))
    model.train(was_training)
    return round(float(torch.cat(errors).median()), 2)


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
          history_dropout: float = 0.5, target_loss: float = 10.0) -> dict:
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
    target_head = TargetHead(config)
    optimiser = torch.optim.AdamW(list(model.parameters()) + list(target_head.parameters()), lr=learning_rate,
                                  weight_decay=0.01)
    rng = np.random.default_rng(seed)
    start, history, evaluations = 0, [], []
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        if state["config_name"] != config_name:
            raise ValueError(f"{checkpoint} was written for config '{state['config_name']}'; use a new --out folder")
        model.load_state_dict(state["model"])
        target_head.load_state_dict(state["target_head"])
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
            frame_tokens = encode_chunk_frames(model, chunks, embeddings)
            logits = decode_chunk_windows(model, chunks, frame_tokens)
            targets = torch.from_numpy(np.concatenate([c.targets for c in chunks]))
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            target_px = chunk_target_px(chunks) / config.image_size
            known = torch.isfinite(target_px).all(1)
            if target_loss and known.any():
                guess = target_head(frame_tokens[known])
                loss = loss + target_loss * F.smooth_l1_loss(guess, target_px[known], beta=0.02)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(history[-50:]):.3f}")
            if (iteration + 1) % checkpoint_every == 0 or iteration + 1 == iterations:
                if held_out:
                    evaluations.append({
                        "iteration": iteration + 1,
                        **token_accuracy(model, held_out, embeddings, config.history_frames),
                        "target_error_px": target_error_px(model, target_head, held_out, embeddings,
                                                           config.history_frames)})
                    bar.write(f"iteration {iteration + 1}: held-out tokens all right "
                              f"{evaluations[-1]['all_tokens']:.1%}, within one bin "
                              f"{evaluations[-1]['within_one_bin']:.1%}, block located within "
                              f"{evaluations[-1]['target_error_px']} px (median)")
                torch.save({"model": model.state_dict(), "target_head": target_head.state_dict(),
                            "optimiser": optimiser.state_dict(),
                            "config_name": config_name, "rng": rng.bit_generator.state, "iteration": iteration + 1,
                            "history": history, "evaluations": evaluations}, checkpoint)
    write_model_folder(model, out)
    training = {
        "data": [str(d) for d in data_dirs], "tasks": tasks, "episodes_per_task": episodes_per_task,
        "training_episodes": len(train_set), "training_steps": int(sum(e.steps for e in train_set)),
        "held_out_episodes": [f"{e.source}/{e.file}" for e in held_out],
        "iterations": iterations, "batch_chunks": batch_chunks, "chunk_steps": chunk_steps,
        "learning_rate": learning_rate, "warmup": warmup, "seed": seed, "max_shift_px": max_shift_px,
        "jitter": jitter, "history_dropout": history_dropout, "target_loss": target_loss,
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
    parser.add_argument("--target-loss", type=float, default=10.0,
                        help="weight of the auxiliary loss on where the block is (TargetHead; 0 = RT-1's loss only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--out", required=True, help="output folder; an existing checkpoint there is resumed")
    args = parser.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    result = train(args.config, [d.strip() for d in args.data.split(",") if d.strip()], tasks, args.episodes,
                   args.iterations, args.out, args.batch_chunks, args.chunk_steps, args.lr, seed=args.seed,
                   threads=args.threads, held_out_per_group=args.held_out, history_dropout=args.history_dropout,
                   target_loss=args.target_loss)
    held_out = result["evaluations"][-1] if result["evaluations"] else None
    summary = (f"; held-out steps with all 11 tokens right {held_out['all_tokens']:.1%}, tokens within one bin "
               f"{held_out['within_one_bin']:.1%}" if held_out else "")
    print(f"rt1-{args.config}: {args.iterations} iterations, last 50 losses {np.mean(result['history'][-50:]):.3f} "
          f"(uniform over 256 bins: {math.log(256):.2f}){summary}; weights and ONNX graphs in {args.out}")
    return 0
