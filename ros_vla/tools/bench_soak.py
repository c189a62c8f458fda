"""`ros-vla bench soak --minutes 10`: the whole sim stack for a long while, under a stream
of instructions.

The sim stack runs with its three cameras and RT-1. A client sends, over and over: the
scene reset, "put the red block in the green bowl", "go to the user", "go to the table",
an RT-1 skill ("pick up the blue block", on skill/request) and "put the blue block in the
purple bowl". Measured:

- memory: each node's resident set (with its children) every 5 s; growth is the median
  of the last minute against the median of the second minute (the first one loads models);
- dropped frames: per camera, frames missing between consecutive header stamps (sim
  time; a gap of n periods is n - 1 drops), and the same for /joint_states;
- deadline misses: RT-1 control steps over their deadline (its diagnostics), gate
  cmd_vel periods over twice their length (sim time), camera frames over 2 periods late;
- tasks: how each ended, and the pick-and-place ones judged by simulator ground truth
  (the ORACLE check of `ros-vla demo`, for the report only).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict

import numpy as np
import psutil
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Int32, String

from ros_vla.nodes.common import COMMAND_QOS, SENSOR_QOS, STATUS_QOS
from ros_vla.perception.ros_messages import time_seconds
from ros_vla.tools.bench_stack import BenchStack
from ros_vla.tools.demo import expected_outcome

STREAM = ("reset", "put the red block in the green bowl", "go to the user", "go to the table",
          "rt1:pick up the blue block", "put the blue block in the purple bowl")
MEMORY_PERIOD_S = 5.0


class GapCounter:
    """Messages missing from a periodic stream, from consecutive header stamps (sim time)."""

    def __init__(self, period_s: float, late_factor: float = 2.0):
        self.period_s = period_s
        self.late_factor = late_factor
        self.received = self.missing = self.late = 0
        self._last = None
        self._lock = threading.Lock()

    def __call__(self, msg):
        stamp = time_seconds(msg.header.stamp)
        with self._lock:
            self.received += 1
            if self._last is not None and stamp > self._last:
                gap = stamp - self._last
                self.missing += max(0, round(gap / self.period_s) - 1)
                self.late += gap > self.late_factor * self.period_s
            self._last = stamp if self._last is None else max(stamp, self._last)

    def summary(self) -> dict:
        with self._lock:
            return {"received": self.received, "dropped": self.missing, "late": self.late}


def _rss_mb(process) -> float | None:
    try:
        parent = psutil.Process(process.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:
        return None


def run_bench_soak(minutes: float = 10.0, seed: int = 0, planner: str = "rules", output_root: str = "outputs",
                   say=lambda line: None) -> dict:
    launch_args = {"seed": str(seed), "rt1": "true", "saycan": "true" if planner == "saycan" else "false"}
    with BenchStack("soak", output_root, launch_args, say) as stack:
        client, runner, scene, views = stack.client, stack.runner, stack.scene, stack.views
        node = client.node
        frames = {view: GapCounter(1.0 / camera.rate_hz) for view, camera in zip(views, scene.cameras)}
        for view in views:
            node.create_subscription(Image, f"/{view}/camera/color/image_raw", frames[view], SENSOR_QOS)
        joint_states = GapCounter(0.01)
        node.create_subscription(JointState, "/joint_states", joint_states, SENSOR_QOS)
        base_commands = GapCounter(0.02)
        node.create_subscription(TwistStamped, "/cmd_vel", base_commands, COMMAND_QOS)
        rt1_counters: dict = {}

        def on_diagnostics(msg: DiagnosticArray):
            for status in msg.status:
                if status.name == "ros_vla: rt1_policy":
                    values = {kv.key: kv.value for kv in status.values}
                    if "deadline_misses" in values:
                        rt1_counters.update(values)

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, STATUS_QOS)
        skill_results: dict = {}
        client.follow_json("/skill/result", lambda r: skill_results.__setitem__(r.get("id"), r))
        skill_pub = node.create_publisher(String, "/skill/request", COMMAND_QOS)
        reset_pub = node.create_publisher(Int32, "/sim/reset", COMMAND_QOS)
        memory: dict[str, list[tuple[float, float]]] = defaultdict(list)
        stop_sampling = threading.Event()
        outcomes: Counter = Counter()
        tasks = []
        try:
            stack.wait_until_up()
            started = time.monotonic()

            def sample_memory():
                while not stop_sampling.wait(MEMORY_PERIOD_S):
                    for label, process in runner.processes.items():
                        rss = _rss_mb(process)
                        if rss is not None:
                            memory[label].append((time.monotonic() - started, rss))

            sampler = threading.Thread(target=sample_memory, daemon=True)
            sampler.start()
            deadline = started + minutes * 60.0
            index = 0
            while time.monotonic() < deadline:
                step = STREAM[index % len(STREAM)]
                index += 1
                if step == "reset":
                    reset_pub.publish(Int32(data=seed + index))
                    time.sleep(3.0)
                    continue
                began = time.monotonic()
                if step.startswith("rt1:"):
                    request_id = uuid.uuid4().hex[:8]
                    skill_pub.publish(String(data=json.dumps({"id": request_id, "skill": "rt1", "text": step[4:],
                                                              "args": {}})))
                    reply = client.wait_for(lambda: skill_results.get(request_id), 120.0)
                    state = "timeout" if reply is None else ("succeeded" if reply.get("success") else "failed")
                    message = reply.get("message", "") if reply else "no skill result"
                    verified = None
                else:
                    final = client.say(step, timeout_s=240.0)
                    state, message = (final["state"], final["message"]) if final else ("timeout", "no final status")
                    verified = None
                    if step.startswith("put"):
                        truth = client.ground_truth()
                        verified = expected_outcome(step, truth, scene)[0] if truth else False
                outcomes[state] += 1
                tasks.append({"instruction": step, "state": state, "message": message[:200],
                              "ground_truth_success": verified, "seconds": round(time.monotonic() - began, 1)})
                say(f"  {step}: {state} ({message[:80]}) in {tasks[-1]['seconds']} s")
            stop_sampling.set()
            sampler.join(timeout=MEMORY_PERIOD_S + 1)
            soak_s = time.monotonic() - started
        finally:
            stop_sampling.set()

    growth = {}
    for label, samples in memory.items():
        times, rss = np.array([t for t, _ in samples]), np.array([m for _, m in samples])
        early, late = rss[(times >= 60) & (times < 120)], rss[times >= times.max() - 60]
        if len(early) and len(late):
            growth[label] = {"rss_mb_minute_2": round(float(np.median(early)), 1),
                             "rss_mb_last_minute": round(float(np.median(late)), 1),
                             "growth_pct": round(100.0 * (np.median(late) / np.median(early) - 1.0), 2)}
    picks = [t for t in tasks if t["ground_truth_success"] is not None]
    result = {
        "minutes": round(soak_s / 60.0, 2), "planner": planner,
        "node_crashes": len(stack.deaths), "crashed": stack.deaths,
        "memory": growth, "max_growth_pct": max((g["growth_pct"] for g in growth.values()), default=None),
        "camera_frames": {view: counter.summary() for view, counter in frames.items()},
        "joint_states": joint_states.summary(), "gate_cmd_vel": base_commands.summary(),
        "rt1": {key: rt1_counters.get(key) for key in ("steps", "deadline_misses", "stale_frames",
                                                       "latency_median_ms", "latency_max_ms", "deadline_ms")},
        "tasks": dict(outcomes), "tasks_sent": len(tasks),
        "pick_place_ground_truth": f"{sum(bool(t['ground_truth_success']) for t in picks)}/{len(picks)}",
        "task_log": tasks,
    }
    return stack.write_report(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-vla bench soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--planner", choices=["saycan", "rules"], default="rules")
    parser.add_argument("--output", default="outputs", help="node logs and report.json go to OUTPUT/soak-<time>/")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = run_bench_soak(args.minutes, args.seed, args.planner, args.output, say=lambda line: print(
        f"[soak {time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True))
    print(f"soak: {result['minutes']} min, node crashes {result['node_crashes']}, tasks {result['tasks']} "
          f"(pick-and-place by ground truth {result['pick_place_ground_truth']})")
    for label, entry in sorted(result["memory"].items(), key=lambda kv: -kv[1]["growth_pct"]):
        print(f"  {label:>18}: {entry['rss_mb_minute_2']:8.1f} MB -> {entry['rss_mb_last_minute']:8.1f} MB "
              f"({entry['growth_pct']:+.2f} %)")
    for view, counts in result["camera_frames"].items():
        print(f"  camera {view:>6}: {counts['received']} frames, {counts['dropped']} dropped, {counts['late']} late")
    print(f"  joint_states: {result['joint_states']}; gate cmd_vel: {result['gate_cmd_vel']}; rt1: {result['rt1']}")
    if args.json:
        print(json.dumps(result))
    growth_ok = result["max_growth_pct"] is not None and result["max_growth_pct"] < 5.0
    return 0 if result["node_crashes"] == 0 and growth_ok else 1
