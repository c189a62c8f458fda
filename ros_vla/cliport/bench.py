"""`ros-vla bench cliport`: latency of one pick + place inference (both networks, batch 1)
for each configuration, torch eager vs ONNX Runtime, measured in the same run; and the
affordance pass SayCan asks for (one heightmap, many skill texts): one inference per text
against one batch whose text-independent work runs once.

Weights do not change the arithmetic: the small configuration uses the shipped model when
present, rn50 a randomly initialised one (CLIP weights are the user's). The language
embedding is computed once per instruction and cached by the agent, so it is not timed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from ros_vla.cliport.config import CLIPortConfig
from ros_vla.cliport.model import CLIPort
from ros_vla.cliport.runtime import OnnxCLIPort, export_onnx


def _time(run, repeats: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    ms = np.array(times) * 1000
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)), "min_ms": float(ms.min()),
            "repeats": repeats}


def bench_config(cfg: CLIPortConfig, repeats: int, threads: int, weights: str = "", texts: int = 12) -> dict:
    torch.manual_seed(0)
    if cfg.semantic_stream == "clip_rn50":
        from ros_vla.cliport.model import build_clip

        clip_visual = build_clip("").visual
        model = CLIPort(cfg, clip_visual_factory=lambda: clip_visual)
    else:
        model = CLIPort(cfg)
    if weights:
        model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    h, w = cfg.heightmap.shape
    image, language = torch.rand(1, 6, h, w), torch.randn(1, cfg.language_dim)
    pick = torch.tensor([[h // 2, w // 3]])
    # Before ONNX Runtime has run: its idle worker threads would take CPU from torch here.
    affordances = bench_affordances(model, image, pick, texts, max(3, repeats // 3)) if texts else None
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(model, folder)
        onnx = OnnxCLIPort(folder, cfg, threads=threads)

        def eager():
            with torch.no_grad():
                model.pick_logits(image, language)
                model.place_logits(image, language, pick)

        def onnxruntime():
            onnx.pick_logits(image, language)
            onnx.place_logits(image, language, pick)

        rows = {"torch": _time(eager, repeats), "onnxruntime": _time(onnxruntime, repeats)}
    rows["onnxruntime"]["speedup_vs_torch"] = rows["torch"]["median_ms"] / rows["onnxruntime"]["median_ms"]
    result = {"config": cfg.name, "heightmap": list(cfg.heightmap.shape), "crop": cfg.crop_size,
              "rotations": cfg.n_rotations, "parameters": sum(p.numel() for p in model.parameters()),
              "backends": rows}
    if affordances:
        result["affordances"] = affordances
    return result


def bench_affordances(model: CLIPort, image: torch.Tensor, pick: torch.Tensor, texts: int, repeats: int) -> dict:
    """The affordance pass on one heightmap: one inference per text against one batch."""
    many = torch.randn(texts, model.cfg.language_dim)
    picks = pick.repeat(texts, 1)

    def one_per_text():
        with torch.no_grad():
            for i in range(texts):
                model.pick_logits(image, many[i:i + 1])
                model.place_logits(image, many[i:i + 1], pick)

    def batched():
        with torch.no_grad():
            model.pick_logits(image, many)
            model.place_logits(image, many, picks)

    affordances = {"texts": texts, "torch_one_per_text": _time(one_per_text, repeats),
                   "torch_batched": _time(batched, repeats)}
    affordances["torch_batched"]["speedup_vs_one_per_text"] = (affordances["torch_one_per_text"]["median_ms"]
                                                               / affordances["torch_batched"]["median_ms"])
    return affordances


def main(argv: list[str] | None = None) -> int:
    from ros_vla.models import shipped

    parser = argparse.ArgumentParser(prog="ros-vla bench cliport", description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="small,rn50")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per backend (rn50: a fifth of this)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for both backends (0 = default)")
    parser.add_argument("--texts", type=int, default=12,
                        help="skill texts in the affordance pass (12: the SayCan library's pick-and-places)")
    parser.add_argument("--affordance-configs", default="small",
                        help="configurations timed in the affordance pass too (rn50 takes minutes per pass)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        cfg = CLIPortConfig.named(name)
        shipped_weights = shipped("cliport_small") / "cliport.pt"
        weights = str(shipped_weights) if name == "small" and shipped_weights.exists() else ""
        repeats = args.repeats if name == "small" else max(3, args.repeats // 5)
        texts = args.texts if name in args.affordance_configs.split(",") else 0
        result = bench_config(cfg, repeats, args.threads, weights, texts)
        results.append(result)
        for backend, row in result["backends"].items():
            extra = f"  ({row['speedup_vs_torch']:.2f}x torch)" if "speedup_vs_torch" in row else ""
            print(f"cliport-{name:5s} {backend:12s} pick+place median {row['median_ms']:8.1f} ms  "
                  f"p99 {row['p99_ms']:8.1f} ms  over {row['repeats']} runs{extra}", flush=True)
        affordances = result.get("affordances", {})
        for way in ("torch_one_per_text", "torch_batched") if affordances else ():
            row = affordances[way]
            extra = f"  ({row['speedup_vs_one_per_text']:.2f}x)" if "speedup_vs_one_per_text" in row else ""
            print(f"cliport-{name:5s} affordances, {affordances['texts']} texts, {way:18s} median "
                  f"{row['median_ms']:8.1f} ms  p99 {row['p99_ms']:8.1f} ms  over {row['repeats']} runs{extra}",
                  flush=True)
    if args.json:
        print(json.dumps({"threads": args.threads or torch.get_num_threads(), "results": results}))
    return 0
