"""`ros-vla bench sim`: how fast the simulated robot runs on this machine.

1. Headless physics step rate and render time per 640x480 view, for our GL renderer
   and PyBullet's renderers (the baseline), in this process.
2. The whole sim stack launched as processes: per-camera publish rate, /joint_states
   rate and real-time factor as a DDS subscriber sees them, and the stack's memory (sum
   of the processes' resident set sizes).
3. Image latency over DDS: a separate process publishes 640x480 rgb8 frames stamped
   with the wall clock at 10 Hz while the stack runs; this process measures
   receive time - stamp.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState

from ros_vla.launcher import LaunchRunner, parse_launch_file
from ros_vla.nodes.common import CAMERA_PUB_QOS, COMMAND_QOS, SENSOR_QOS
from ros_vla.paths import config_file, launch_file
from ros_vla.perception.ros_messages import image_msg, time_msg, time_seconds
from ros_vla.sim.scene import load_scene
from ros_vla.sim.world import SimWorld
from ros_vla.tools.stack_client import StackClient

LATENCY_TOPIC = "/bench/latency_probe"


def _stats(values: list[float]) -> dict:
    array = np.asarray(values, float)
    return {"median": float(np.median(array)), "p99": float(np.percentile(array, 99)),
            "min": float(array.min()), "max": float(array.max()), "n": int(array.size)}


def measure_headless(scene, seconds: float = 3.0) -> dict:
    world = SimWorld(scene, renderer=None)
    chunk_rates = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        world.step(60)
        chunk_rates.append(60 / (time.perf_counter() - started))
    world.close()
    results = {"sim_step_rate_hz": _stats(chunk_rates)}
    camera = scene.camera("camera")
    for renderer in ("gl", "egl", "tiny"):
        world = SimWorld(scene, renderer=renderer)
        if world.renderer != renderer:
            world.close()
            continue
        world.render(camera)
        wall, cpu = [], []
        for _ in range(10 if renderer != "tiny" else 4):
            w0, c0 = time.perf_counter(), time.process_time()
            world.render(camera)
            wall.append((time.perf_counter() - w0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
        results[f"render_{renderer}_wall_ms"] = _stats(wall)
        results[f"render_{renderer}_cpu_ms"] = _stats(cpu)
        world.close()
    return results


def latency_publisher(duration_s: float):
    """Runs in its own process: 640x480 rgb8 frames stamped with the wall clock, 10 Hz."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node("bench_latency_publisher")
    pub = node.create_publisher(Image, LATENCY_TOPIC, CAMERA_PUB_QOS)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    deadline = time.time() + duration_s
    while time.time() < deadline:
        pub.publish(image_msg(frame, "rgb8", time_msg(time.time()), "bench"))
        time.sleep(0.1)
    node.destroy_node()
    rclpy.shutdown()


class RateCounter:
    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, msg):
        with self.lock:
            self.count += 1

    def take(self) -> int:
        with self.lock:
            count, self.count = self.count, 0
            return count


def measure_stack(scene, duration_s: float, say) -> dict:
    runner = LaunchRunner(parse_launch_file(launch_file("sim.launch.xml"), {}), emit=lambda line: None)
    runner.start()
    client = StackClient("ros_vla_bench")
    try:
        views = [cam.namespace for cam in scene.cameras]
        counters = {view: RateCounter() for view in views}
        for view in views:
            client.node.create_subscription(Image, f"/{view}/camera/color/image_raw", counters[view], SENSOR_QOS)
        joint_counter = RateCounter()
        client.node.create_subscription(JointState, "/joint_states", joint_counter, COMMAND_QOS)
        clock = {"sim": None}
        client.node.create_subscription(Clock, "/clock", lambda m: clock.__setitem__("sim", time_seconds(m.clock)),
                                        COMMAND_QOS)
        latencies: list[float] = []
        client.node.create_subscription(
            Image, LATENCY_TOPIC, lambda m: latencies.append((time.time() - time_seconds(m.header.stamp)) * 1e3),
            SENSOR_QOS)
        say("waiting for the stack and its cameras")
        up = (client.wait_for_subscribers(90.0)
              and client.wait_for(lambda: all(c.count for c in counters.values()) and clock["sim"] is not None, 90.0))
        if not up:
            raise RuntimeError("the sim stack did not come up")
        time.sleep(2.0)
        for counter in (*counters.values(), joint_counter):
            counter.take()
        probe = subprocess.Popen([sys.executable, "-m", "ros_vla.tools.bench_sim", "--latency-publisher",
                                  str(duration_s)])
        say(f"measuring for {duration_s:.0f} s")
        sim_start, wall_start = clock["sim"], time.monotonic()
        windows = {view: [] for view in views}
        joint_rates, memory = [], []
        while time.monotonic() - wall_start < duration_s:
            window_start = time.monotonic()
            time.sleep(1.0)
            elapsed = time.monotonic() - window_start
            for view in views:
                windows[view].append(counters[view].take() / elapsed)
            joint_rates.append(joint_counter.take() / elapsed)
            memory.append(_stack_rss_mb(runner))
        real_time_factor = (clock["sim"] - sim_start) / (time.monotonic() - wall_start)
        probe.wait(timeout=duration_s + 10)
        results = {f"camera_{view}_rate_hz": _stats(windows[view]) for view in views}
        results["joint_states_rate_hz"] = _stats(joint_rates)
        results["real_time_factor"] = real_time_factor
        results["stack_memory_mb"] = max(memory)
        results["stack_processes"] = len(runner.processes)
        if latencies:
            results["image_latency_ms"] = _stats(latencies)
        return results
    finally:
        client.close()
        runner.shutdown()


def _stack_rss_mb(runner: LaunchRunner) -> float:
    total = 0
    for process in runner.processes.values():
        try:
            parent = psutil.Process(process.pid)
            total += sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def run_bench_sim(duration_s: float = 20.0, as_json: bool = False) -> int:
    scene = load_scene(config_file("scene_tabletop.yaml"))
    started = time.monotonic()

    def say(line: str):
        print(f"[bench {time.monotonic() - started:5.1f}s] {line}", flush=True)

    say("headless physics and rendering (this process)")
    results = measure_headless(scene)
    say("launching the sim stack")
    results.update(measure_stack(scene, duration_s, say))

    print("\nros-vla bench sim  (median [min..max] over 1 s windows or repeats)")
    for key, value in results.items():
        if isinstance(value, dict):
            print(f"  {key:<32} {value['median']:9.2f}  [{value['min']:.2f} .. {value['max']:.2f}]"
                  + (f"  p99 {value['p99']:.2f}" if "latency" in key or "render" in key else ""))
        else:
            print(f"  {key:<32} {value:9.2f}")
    if "render_gl_wall_ms" in results and "render_egl_wall_ms" in results:
        ratio = results["render_egl_cpu_ms"]["median"] / results["render_gl_cpu_ms"]["median"]
        results["render_cpu_speedup_gl_vs_pybullet_egl"] = ratio
        print(f"  gl renderer uses {ratio:.1f}x less CPU per view than PyBullet's EGL renderer")
    if as_json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--latency-publisher":
        latency_publisher(float(sys.argv[2]))
