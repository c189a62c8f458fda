"""Train MIAVLM (or an ablation) on the benchmark's training scenes.

Every step takes `batch` training scenes; all of a step's scenes get the same number of
views V, drawn from 1..9, each scene a random subset of its 9 views in a random order,
each view flipped left-right at random (no attribute changes under a mirror). One pass
over the views answers all of a scene's questions: 6 (3 yes, 3 no), or with
--no-negatives only its 3 positive ones, the paper's "without negative instructions".
Loss: binary cross-entropy on "yes", plus `--attribute-loss` times the mean cross-entropy
of the model's linear probes of the target's colour, shape and size on the fused tokens
(an addition to the paper: trained on the questions alone for 1100 steps, the colour
questions stayed at chance). AdamW, linear warm-up then cosine decay. --init continues
from an earlier weights file; the file written lists the earlier stages in its metadata.

--freeze-visual (with --init) keeps the view encoder and the Visual Extractor fixed: each
training view's extractor tokens are computed once, and the steps train the Multihead
Sampler, the answer head and the probes on random subsets of them (no mirroring), about
60 steps per second. The shipped model's last stage: its head learns to read the colour
that the visual side carries (README.md, "Why colour questions were at chance").

--variant tiled is the naive baseline: the same network, but its views are tiled into one
3x3 image (ros_vla.miavlm.model.tile_views) and read as a single view.

One CPU thread (torch.set_num_threads(1)) and seeded: a rerun on this machine gives the
same weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ros_vla.miavlm.config import BenchmarkConfig, MIAVLMConfig
from ros_vla.miavlm.data import is_test_scene, load_benchmark, select_scenes
from ros_vla.miavlm.model import MIAVLM, VARIANTS, load_checkpoint, save_checkpoint, tile_views

QUESTIONS_PER_SCENE = 6


def questions_by_scene(arrays: dict[str, np.ndarray], negatives: bool) -> np.ndarray:
    """[N, q] question rows per scene (q = 6, or 3 without the negative ones)."""
    keep = np.ones(len(arrays["answer"]), bool) if negatives else arrays["answer"] == 1
    rows = np.flatnonzero(keep)
    order = np.argsort(arrays["question_scene"][rows], kind="stable")
    per_scene = QUESTIONS_PER_SCENE if negatives else QUESTIONS_PER_SCENE // 2
    return rows[order].reshape(len(arrays["images"]), per_scene)


def random_subsets(items: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """[B, 9, ...] -> [B, count, ...]: a random subset of each scene's views in a random order."""
    batch, available = items.shape[:2]
    order = torch.argsort(torch.rand(batch, available, generator=generator), dim=1)[:, :count]
    return items[torch.arange(batch)[:, None], order]


def random_views(images: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """[B, 9, S, S, 3] -> [B, count, S, S, 3]: a random subset of each scene's views in a
    random order, each view mirrored left-right with probability 1/2."""
    batch = images.shape[0]
    views = random_subsets(images, count, generator)
    mirrored = torch.rand(batch, count, generator=generator) < 0.5
    return torch.where(mirrored[:, :, None, None, None], views.flip(3), views)


def cached_view_outputs(model: MIAVLM, images: torch.Tensor, progress: bool = True,
                        chunk: int = 50) -> torch.Tensor:
    """The extractor's tokens of every view on its own, [N, 9, K, dim], for training with
    the view encoder and the extractor fixed (--freeze-visual): computed once."""
    from tqdm import tqdm

    outputs = []
    with torch.no_grad():
        for first in tqdm(range(0, len(images), chunk), desc="miavlm view tokens", unit="chunk",
                          disable=not progress, file=sys.stderr, mininterval=2.0):
            outputs.append(model.view_outputs(images[first:first + chunk]))
    return torch.cat(outputs)


def train(arrays: dict[str, np.ndarray], variant: str = "multiview", negatives: bool = True, steps: int = 1500,
          batch: int = 32, learning_rate: float = 1e-3, seed: int = 0, attribute_loss: float = 0.5,
          init: MIAVLM | None = None, progress: bool = True, freeze_visual: bool = False) -> tuple[MIAVLM, dict]:
    from tqdm import tqdm

    if freeze_visual and variant == "tiled":
        raise ValueError("--freeze-visual caches each view's tokens; the tiled baseline reads one tiled image")

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(arrays["images"])
    embeddings = torch.from_numpy(arrays["embeddings"])
    question_text = torch.from_numpy(arrays["question_text"])
    answers = torch.from_numpy(arrays["answer"]).float()
    questions = torch.from_numpy(questions_by_scene(arrays, negatives))
    attributes = {"color": torch.from_numpy(arrays["color"]), "shape": torch.from_numpy(arrays["kind"]),
                  "size": torch.from_numpy(arrays["size"])}

    model = init if init is not None else MIAVLM(MIAVLMConfig())
    model.head.question_mean.copy_(embeddings[torch.unique(question_text)].mean(dim=0))
    started = time.monotonic()
    view_tokens = None
    if freeze_visual:
        for part in (model.encoder, model.extractor):
            part.requires_grad_(False)
        model.eval()
        view_tokens = cached_view_outputs(model, images, progress)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate,
                                  weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + np.cos(np.pi * min(step / steps, 1.0))))
    recent_loss, recent_correct, history = [], [], []
    bar = tqdm(range(steps), desc=f"miavlm train {variant}{'' if negatives else ' no-neg'}", unit="step",
               disable=not progress, file=sys.stderr, mininterval=2.0)
    for step in bar:
        scenes = torch.randint(len(images), (batch,), generator=generator)
        count = int(torch.randint(1, images.shape[1] + 1, (1,), generator=generator))
        if view_tokens is not None:
            fused, _ = model.fuse_outputs(random_subsets(view_tokens[scenes], count, generator))
        else:
            views = random_views(images[scenes], count, generator)
            fused, _ = model.fuse(tile_views(views) if variant == "tiled" else views)
        rows = questions[scenes]
        logits = model.head(fused, embeddings[question_text[rows]])
        target = answers[rows]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        if attribute_loss:
            loss = loss + attribute_loss * sum(
                torch.nn.functional.cross_entropy(values, attributes[name][scenes]) / len(attributes)
                for name, values in model.attribute_logits(fused).items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        recent_loss.append(loss.item())
        recent_correct.append(((logits > 0).float() == target).float().mean().item())
        if (step + 1) % 50 == 0 or step + 1 == steps:
            entry = {"step": step + 1, "loss": float(np.mean(recent_loss)), "accuracy": float(np.mean(recent_correct)),
                     "wall_s": round(time.monotonic() - started, 1)}
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", acc=f"{entry['accuracy']:.3f}")
            recent_loss, recent_correct = [], []
    model.eval()
    model.requires_grad_(True)
    info = {"variant": variant, "negatives": negatives, "steps": steps, "batch": batch, "learning_rate": learning_rate,
            "seed": seed, "attribute_loss": attribute_loss, "freeze_visual": freeze_visual,
            "train_scenes": int(len(images)),
            "wall_time_s": round(time.monotonic() - started, 1), "history": history}
    return model, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ros_vla.miavlm.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="benchmark.npz written by ros_vla.miavlm.data")
    parser.add_argument("--out", required=True, help="a model folder to write (miavlm.pt + config.json), or a .pt file")
    parser.add_argument("--variant", choices=VARIANTS, default="multiview")
    parser.add_argument("--no-negatives", action="store_true", help="train on the positive questions only")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--attribute-loss", type=float, default=0.5,
                        help="weight of the auxiliary loss on the target's colour, shape and size (0: off)")
    parser.add_argument("--init", default=None, help="start from this weights file (either variant: the network is "
                                                     "the same), e.g. to continue a training")
    parser.add_argument("--freeze-visual", action="store_true",
                        help="keep the view encoder and the Visual Extractor fixed (their tokens per view are "
                             "computed once) and train the sampler, the answer head and the probes on them")
    args = parser.parse_args(argv)
    if args.freeze_visual and not args.init:
        parser.error("--freeze-visual needs --init: a fixed untrained encoder sees nothing")

    arrays = load_benchmark(args.data)
    benchmark = BenchmarkConfig.from_dict(json.loads(str(arrays["config"])))
    is_test = np.array([is_test_scene(int(i), benchmark) for i in arrays["scene_index"]])
    init, earlier = None, []
    if args.init:
        init, meta = load_checkpoint(args.init)
        if meta["benchmark"] != benchmark:
            parser.error(f"{args.init} was trained on another benchmark")
        earlier = meta["training"].get("stages", []) + [{k: v for k, v in meta["training"].items() if k != "stages"}]
    model, info = train(select_scenes(arrays, ~is_test), args.variant, not args.no_negatives, args.steps, args.batch,
                        args.lr, args.seed, args.attribute_loss, init, freeze_visual=args.freeze_visual)
    info["benchmark_scenes"] = int(len(is_test))
    if earlier:
        info["stages"] = earlier  # the trainings this one continued, oldest first
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, model, args.variant, benchmark, info)
    last = info["history"][-1]
    print(f"{args.variant}{'' if info['negatives'] else ' without negatives'}: {args.steps} steps in "
          f"{info['wall_time_s']:.0f} s, last 50 steps loss {last['loss']:.3f} accuracy {last['accuracy']:.3f}; "
          f"weights in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
