"""`ros-vla bench rt1`: how fast one RT-1 control step runs on this machine.

For each backend (torch eager, ONNX Runtime, ONNX Runtime with an int8 action decoder;
TensorRT FP16 where it can run) and each way
of stepping (token cache on: encode only the new frame; off: encode all 6 frames every
step), a fresh worker process builds or loads the network, warms up, then runs
back-to-back control steps (`RT1Policy.step`: a 300x300 rgb8 frame and an instruction
embedding in, 11 action tokens out) on synthetic frames. Reported per row: step latency
(median, p99), rate, the worker's resident memory, and their ratios to torch eager without
the cache (the baseline), all from the same run. Separate processes keep each row's memory
its own (an ONNX Runtime worker never imports torch) and keep the rows from sharing warm
caches.

The instruction embedding is a fixed random unit vector: the sentence encoder runs once
per instruction, not per control step, so it is not part of the step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil

from ros_vla.rt1.config import RT1Config
from ros_vla.rt1.runtime import cpu_threads, tensorrt_unavailable_reason

ROWS = [("torch", False), ("torch", True), ("onnxruntime", False), ("onnxruntime", True), ("onnxruntime-int8", True)]
BASELINE = "torch_uncached"
WARMUP_STEPS = 3
MIN_STEPS, MAX_STEPS = 20, 2000
# Every row starts its timed steps from an empty window on the same frames, so the tokens
# of its first steps can be compared with the baseline's.
AGREEMENT_STEPS = 8


def _row_key(backend: str, cache: bool) -> str:
    return f"{backend}_{'cached' if cache else 'uncached'}"


def _make_backend(backend: str, config: RT1Config, onnx_dir: str):
    from ros_vla.rt1 import runtime

    if backend == "torch":
        import torch

        from ros_vla.rt1.model import build_rt1

        torch.set_num_threads(cpu_threads())
        return runtime.TorchBackend(build_rt1(config))
    onnx_model = runtime.OnnxModel.in_directory(onnx_dir)
    if backend in ("onnxruntime", "onnxruntime-int8"):
        return runtime.OnnxRuntimeBackend(onnx_model, int8_decoder=backend == "onnxruntime-int8")
    return runtime.TensorRTBackend(*(_engine_path(p) for p in (onnx_model.frame_encoder, onnx_model.action_decoder)))


def measure_row(backend: str, cache: bool, config_name: str, onnx_dir: str, seconds: float) -> dict:
    """Runs in its own process (see `_spawn_row`)."""
    from tqdm import tqdm

    from ros_vla.rt1.runtime import RT1Policy

    config = RT1Config.named(config_name)
    policy = RT1Policy(_make_backend(backend, config, onnx_dir), config, cache_tokens=cache)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (12, config.image_size, config.image_size, 3), dtype=np.uint8)
    embedding = rng.standard_normal(config.instruction_embedding_dim).astype(np.float32)
    embedding /= np.linalg.norm(embedding)

    # Warm-up: first calls allocate arenas and pick kernels.
    for index in range(WARMUP_STEPS):
        started = time.perf_counter()
        policy.step(frames[index], embedding)
        last_warmup_s = time.perf_counter() - started
    steps = int(np.clip(seconds / last_warmup_s, MIN_STEPS, MAX_STEPS))

    policy.reset()
    latencies, tokens = [], []
    label = f"{policy.backend.name}, {'cached' if cache else 'uncached'}"
    for index in tqdm(range(steps), desc=label, unit="step", file=sys.stderr, leave=False, mininterval=0.5):
        started = time.perf_counter()
        action_tokens = policy.step(frames[index % len(frames)], embedding)
        latencies.append(time.perf_counter() - started)
        if index < AGREEMENT_STEPS:
            tokens.append(action_tokens.tolist())
    latency_ms = np.array(latencies) * 1e3
    return {
        "backend": policy.backend.name,
        "token_cache": cache,
        "steps": steps,
        "latency_ms_median": float(np.median(latency_ms)),
        "latency_ms_p99": float(np.percentile(latency_ms, 99)),
        "rate_hz": float(1e3 / latency_ms.mean()),
        "memory_mb": psutil.Process().memory_info().rss / 2**20,
        "first_tokens": tokens,
    }


def _spawn_row(backend: str, cache: bool, config_name: str, onnx_dir: str, seconds: float) -> dict:
    command = [sys.executable, "-m", "ros_vla.rt1.bench", "--worker", backend, "--config", config_name,
               "--onnx-dir", onnx_dir, "--seconds", str(seconds)] + (["--cache"] if cache else [])
    # Threads that wait passively, for torch's OpenMP pool as for ONNX Runtime's (see
    # OnnxRuntimeBackend): spinning threads stall for seconds whenever another process
    # holds one of the cores. Set before the worker imports torch, which reads it once.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    # The worker's progress bar goes to our stderr; its result is the last line of its stdout.
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _engine_path(onnx_path):
    return onnx_path.with_suffix(".engine")


def _export(config: RT1Config, directory: str, tensorrt: bool) -> dict[str, int]:
    """ONNX graphs (and TensorRT engines built from them, when asked) into `directory`;
    returns the parameter count by part."""
    from ros_vla.rt1.model import build_rt1, parameter_breakdown
    from ros_vla.rt1.runtime import build_tensorrt_engine, export_onnx

    model = build_rt1(config)
    onnx_model = export_onnx(model, directory)
    if tensorrt:
        for path in (onnx_model.frame_encoder, onnx_model.action_decoder):
            build_tensorrt_engine(path, _engine_path(path))
    return parameter_breakdown(model)


def run_bench_rt1(config_name: str = "paper", seconds_per_row: float = 8.0, as_json: bool = False) -> int:
    config = RT1Config.named(config_name)
    started = time.monotonic()

    def say(line: str):
        print(f"[bench {time.monotonic() - started:5.1f}s] {line}", flush=True)

    load_before = os.getloadavg()[0]
    results: dict = {"config": config_name, "image_size_px": config.image_size, "cpu_threads": cpu_threads(),
                     "load_average_1min_before": load_before}
    rows: dict[str, dict] = {}
    trt_reason = tensorrt_unavailable_reason()
    with tempfile.TemporaryDirectory(prefix="rt1_bench_") as onnx_dir:
        say(f"building the {config_name} RT-1 and exporting it to ONNX"
            + (" and TensorRT FP16 engines" if trt_reason is None else ""))
        parts = _export(config, onnx_dir, tensorrt=trt_reason is None)
        results["parameters"] = parts["total"]
        results["parameters_by_part"] = parts
        plan = ROWS + ([("tensorrt", False), ("tensorrt", True)] if trt_reason is None else [])
        for backend, cache in plan:
            say(f"{backend}, token cache {'on' if cache else 'off'}: about {seconds_per_row:.0f} s")
            rows[_row_key(backend, cache)] = _spawn_row(backend, cache, config_name, onnx_dir, seconds_per_row)
    results["load_average_1min_after"] = os.getloadavg()[0]

    baseline = rows[BASELINE]
    baseline_tokens = baseline["first_tokens"]
    for row in rows.values():
        row["latency_ratio_vs_baseline"] = row["latency_ms_median"] / baseline["latency_ms_median"]
        row["rate_ratio_vs_baseline"] = row["rate_hz"] / baseline["rate_hz"]
        row["memory_ratio_vs_baseline"] = row["memory_mb"] / baseline["memory_mb"]
        tokens = row.pop("first_tokens")
        row["tokens_equal_baseline_steps"] = sum(a == b for a, b in zip(tokens, baseline_tokens))
        pairs = [(x, y) for a, b in zip(tokens, baseline_tokens) for x, y in zip(a, b)]
        row["token_agreement"] = sum(x == y for x, y in pairs) / max(1, len(pairs))
    results["backends"] = rows
    if trt_reason is not None:
        results["tensorrt"] = {"skipped": trt_reason}

    print(f"\nros-vla bench rt1  ({config_name} config, {results['parameters']:,} parameters, "
          f"{config.image_size}x{config.image_size} images, {cpu_threads()} CPU threads, "
          f"load average {load_before:.1f} before / {results['load_average_1min_after']:.1f} after)")
    print("  parameters: " + ", ".join(f"{name} {count:,}" for name, count in parts.items() if name != "total"))
    print(f"  {'backend':<22}{'cache':<7}{'steps':>6}{'median ms':>11}{'p99 ms':>9}{'rate Hz':>9}"
          f"{'memory MB':>11}   vs baseline: latency  rate  memory   same tokens")
    for row in rows.values():
        print(f"  {row['backend']:<22}{'on' if row['token_cache'] else 'off':<7}{row['steps']:>6}"
              f"{row['latency_ms_median']:>11.1f}{row['latency_ms_p99']:>9.1f}{row['rate_hz']:>9.2f}"
              f"{row['memory_mb']:>11.0f}   {row['latency_ratio_vs_baseline']:>20.2f}"
              f"{row['rate_ratio_vs_baseline']:>6.2f}{row['memory_ratio_vs_baseline']:>8.2f}"
              f"   {row['tokens_equal_baseline_steps']}/{AGREEMENT_STEPS} steps "
              f"({row['token_agreement']:.1%} of tokens)")
    if trt_reason is not None:
        print(f"  {'tensorrt fp16':<22}skipped: {trt_reason}")
    if as_json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one row of ros-vla bench rt1 (a worker process)")
    parser.add_argument("--worker", required=True, choices=["torch", "onnxruntime", "onnxruntime-int8", "tensorrt"])
    parser.add_argument("--config", default="paper")
    parser.add_argument("--onnx-dir", default="")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--cache", action="store_true")
    args = parser.parse_args()
    print(json.dumps(measure_row(args.worker, args.cache, args.config, args.onnx_dir, args.seconds)))
