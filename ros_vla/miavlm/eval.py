"""`ros-vla eval miavlm`: attribute questions on the held-out benchmark scenes.

The test scenes (every 10th scene index, see ros_vla.miavlm.data) are rendered again from
the seeds recorded in the weights file, or read from --data. Each weights file is scored
with the views of every test scene:
  8 views  views 0..7 of each scene (their order does not matter to MIAVLM);
  1 view   each of the 9 views alone, every (question, view) pair counted once;
  and any other count given with --views (first k views).
Scores (as in the paper): positive accuracy (questions whose answer is yes), negative
accuracy (answer no), and HoOA = their mean. The 1-view rows are also split by how much of
the target the view shows (under 20% of its pixels: "hidden", over 80%: "clear").

The tiled baseline (variant "tiled" in its weights file) gets the same views laid out in
one 3x3 image. Inference runs on one CPU thread, so the numbers are the same on every run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ros_vla.miavlm.config import ATTRIBUTES, WEIGHTS_FILE, BenchmarkConfig
from ros_vla.miavlm.data import benchmark_arrays, is_test_scene, load_benchmark, render_scenes, select_scenes
from ros_vla.miavlm.model import MIAVLM, answer_logits, load_checkpoint
from ros_vla.models import shipped

DEFAULT_VIEW_COUNTS = (8, 1)
BATCH_SCENES = 50
HIDDEN_BELOW, CLEAR_ABOVE = 0.2, 0.8


def test_benchmark(benchmark: BenchmarkConfig, scenes: int, data: str | None = None, progress: bool = True,
                   encoder=None) -> dict[str, np.ndarray]:
    """The test scenes of a benchmark of `scenes` scenes: read from `data`, or rendered."""
    if data:
        arrays = load_benchmark(data)
        return select_scenes(arrays, np.array([is_test_scene(int(i), benchmark) for i in arrays["scene_index"]]))
    indices = [i for i in range(scenes) if is_test_scene(i, benchmark)]
    return benchmark_arrays(render_scenes(indices, benchmark, progress, "miavlm test scenes"), benchmark, encoder)


def scores(correct: np.ndarray, answers: np.ndarray) -> dict:
    positive = float(correct[answers == 1].mean())
    negative = float(correct[answers == 0].mean())
    return {"hooa": (positive + negative) / 2, "positive_accuracy": positive, "negative_accuracy": negative,
            "questions": int(len(correct))}


def predictions(model: MIAVLM, variant: str, arrays: dict[str, np.ndarray], views: list[int]) -> np.ndarray:
    """Yes (True) / no for every question, from the given views of its scene."""
    question_rows = [np.flatnonzero(arrays["question_scene"] == scene) for scene in range(len(arrays["images"]))]
    embeddings = torch.from_numpy(arrays["embeddings"])
    answers = np.zeros(len(arrays["answer"]), bool)
    with torch.no_grad():
        for first in range(0, len(question_rows), BATCH_SCENES):
            rows = np.stack(question_rows[first:first + BATCH_SCENES])
            images = torch.from_numpy(arrays["images"][first:first + BATCH_SCENES][:, views])
            logits = answer_logits(model, variant, images, embeddings[arrays["question_text"][rows]])
            answers[rows] = (logits > 0).numpy()
    return answers


def evaluate(model: MIAVLM, variant: str, arrays: dict[str, np.ndarray],
             view_counts: tuple[int, ...] = DEFAULT_VIEW_COUNTS) -> dict:
    truth = arrays["answer"]
    attribute = arrays["question_attribute"]
    available = arrays["images"].shape[1]
    results = {}
    for count in view_counts:
        if count == 1:
            correct = np.stack([predictions(model, variant, arrays, [view]) == truth for view in range(available)])
            visible = arrays["visible"][arrays["question_scene"]].T  # [views, questions]
            row = scores(correct.ravel(), np.tile(truth, available))
            row["hidden"] = scores(correct[visible < HIDDEN_BELOW], np.broadcast_to(truth, correct.shape)[
                visible < HIDDEN_BELOW])
            row["clear"] = scores(correct[visible > CLEAR_ABOVE], np.broadcast_to(truth, correct.shape)[
                visible > CLEAR_ABOVE])
            by_attribute = {name: scores(correct[:, attribute == k].ravel(), np.tile(truth[attribute == k], available))
                            for k, name in enumerate(ATTRIBUTES)}
        else:
            correct = predictions(model, variant, arrays, list(range(count))) == truth
            row = scores(correct, truth)
            by_attribute = {name: scores(correct[attribute == k], truth[attribute == k])
                            for k, name in enumerate(ATTRIBUTES)}
        row["by_attribute"] = by_attribute
        results[f"{count}_views"] = row
    return results


def training_steps(training: dict) -> str:
    """"1100 + 450" for a training that continued an earlier one."""
    return " + ".join(str(stage["steps"]) for stage in [*training.get("stages", []), training])


def describe(weights: Path, meta: dict) -> str:
    training = meta["training"]
    return (f"{weights.name}: {meta['variant']}, {'with' if training['negatives'] else 'WITHOUT'} negative "
            f"questions in its last stage, {training_steps(training)} steps")


def print_table(name: str, results: dict):
    print(name)
    print(f"  {'views':<10} {'HoOA':>6} {'pos acc':>8} {'neg acc':>8} {'questions':>10}")
    for key, row in results.items():
        print(f"  {key.replace('_views', ''):<10} {row['hooa']:6.3f} {row['positive_accuracy']:8.3f} "
              f"{row['negative_accuracy']:8.3f} {row['questions']:10d}")
        if "hidden" in row:
            for part in ("hidden", "clear"):
                print(f"    1 view, {part:<6} {row[part]['hooa']:6.3f} {row[part]['positive_accuracy']:8.3f} "
                      f"{row[part]['negative_accuracy']:8.3f} {row[part]['questions']:10d}")
        print("    by attribute: " + ", ".join(f"{attribute} {values['hooa']:.3f}"
                                                for attribute, values in row["by_attribute"].items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-vla eval miavlm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=None,
                        help="weights files (default: the shipped models/miavlm/miavlm.pt)")
    parser.add_argument("--data", default=None, help="benchmark.npz to take the test scenes from (default: render "
                                                     "them from the seeds in the first weights file)")
    parser.add_argument("--views", type=int, nargs="+", default=list(DEFAULT_VIEW_COUNTS),
                        help="view counts to score (1..9)")
    parser.add_argument("--figure", default=None, help="also draw test scenes' views with their fusion weights "
                                                       "(PNG) from the first weights file")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    if not all(1 <= count <= 9 for count in args.views):
        parser.error("--views must be between 1 and 9")
    torch.set_num_threads(1)
    weights = [Path(w) for w in args.weights] if args.weights else [shipped("miavlm") / WEIGHTS_FILE]
    for path in weights:
        if not path.is_file():
            print(f"no weights at {path}", file=sys.stderr)
            return 2
    loaded = [load_checkpoint(path) for path in weights]
    first_meta = loaded[0][1]
    arrays = test_benchmark(first_meta["benchmark"], first_meta["training"]["benchmark_scenes"], args.data,
                            progress=not args.json)
    report = {"test_scenes": int(len(arrays["images"])), "questions": int(len(arrays["answer"])), "models": {}}
    print(f"{report['test_scenes']} held-out scenes, {report['questions']} questions "
          f"({arrays['answer'].mean():.0%} yes)")
    for path, (model, meta) in zip(weights, loaded):
        if meta["benchmark"] != first_meta["benchmark"]:
            print(f"{path} was trained on another benchmark than {weights[0]}; skipped", file=sys.stderr)
            continue
        results = evaluate(model, meta["variant"], arrays, tuple(args.views))
        print_table(describe(path, meta), results)
        report["models"][path.name] = {"variant": meta["variant"], "negatives": meta["training"]["negatives"],
                                       "steps": training_steps(meta["training"]), "results": results}
    if args.figure:
        from ros_vla.miavlm.figure import fusion_figure

        fusion_figure(loaded[0][0], arrays, Path(args.figure))
        print(f"figure: {args.figure}")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
