"""`ros-vla bench miavlm`: how long one attribute question takes, by number of views.

For 1..9 views, the shipped (or given) weights answer one question about synthetic camera
frames, back to back after a warm-up; reported per view count: the network's forward
pass (median and p90), and the whole answer as attribute_checker_node computes it: every
640x480 camera image cropped and resized to a view (model.view_input), the question
embedded (all-MiniLM-L6-v2; the node caches embeddings, so a repeated question costs
nothing), and the forward pass. The paper's figure is 0.105 s for 9 views on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CAMERA_SHAPE = (480, 640, 3)
CAMERA_FX = 460.0  # the tabletop scene's head camera
PAPER_9_VIEW_S = 0.105


def _timed(function, repeats: int) -> np.ndarray:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return np.array(times)


def run_bench(weights: Path, repeats: int, threads: int) -> dict:
    import torch

    from ros_vla.miavlm.model import load_checkpoint, view_input
    from ros_vla.text_encoder import MiniLMInstructionEncoder

    torch.set_num_threads(threads)

    model, _ = load_checkpoint(weights)
    encoder = MiniLMInstructionEncoder()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, *CAMERA_SHAPE), dtype=np.uint8)
    question = "is the block red?"
    embedding = torch.from_numpy(encoder.embed([question]))[None]
    rows = {}
    with torch.no_grad():
        for count in range(1, 10):
            views = torch.from_numpy(np.stack([view_input(frame, CAMERA_FX) for frame in frames[:count]]))[None]
            forward = _timed(lambda: model(views, embedding), repeats)

            def whole_answer():
                batch = np.stack([view_input(frame, CAMERA_FX) for frame in frames[:count]])
                model(torch.from_numpy(batch)[None], torch.from_numpy(encoder.embed([question]))[None])

            total = _timed(whole_answer, repeats)
            rows[count] = {"forward_median_s": float(np.median(forward)),
                           "forward_p90_s": float(np.quantile(forward, 0.9)),
                           "answer_median_s": float(np.median(total)), "answer_p90_s": float(np.quantile(total, 0.9))}
    return {"weights": str(weights), "threads": threads, "repeats": repeats, "views": rows,
            "paper_9_view_s": PAPER_9_VIEW_S,
            "within_paper_9_view": rows[9]["answer_median_s"] <= PAPER_9_VIEW_S}


def main(argv: list[str] | None = None) -> int:
    from ros_vla.miavlm.config import WEIGHTS_FILE
    from ros_vla.models import shipped

    parser = argparse.ArgumentParser(prog="ros-vla bench miavlm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights file (default: models/miavlm/miavlm.pt)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    weights = Path(args.weights) if args.weights else shipped("miavlm") / WEIGHTS_FILE
    report = run_bench(weights, args.repeats, args.threads)
    print(f"MIAVLM on {report['threads']} CPU thread(s), {args.repeats} runs each, median (p90) in ms")
    print(f"  {'views':>5} {'forward':>16} {'whole answer':>18}")
    for count, row in report["views"].items():
        print(f"  {count:>5} {row['forward_median_s'] * 1e3:7.1f} ({row['forward_p90_s'] * 1e3:5.1f}) "
              f"{row['answer_median_s'] * 1e3:9.1f} ({row['answer_p90_s'] * 1e3:5.1f})")
    verdict = "within" if report["within_paper_9_view"] else "OVER"
    print(f"9 views, whole answer: {report['views'][9]['answer_median_s'] * 1e3:.1f} ms, {verdict} the paper's "
          f"{PAPER_9_VIEW_S * 1e3:.0f} ms")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
