"""`ros-vla eval rt1 --ros`: RT-1 episodes through the launched ROS 2 sim stack.

launch/sim.launch.xml with rt1:=true (sim_bridge, arm_motion, rt1_policy_node on the
camera topic, ...), in real time. Per episode: /sim/reset with the seed, the skill/rt1
action (ExecuteSkill) with the episode's instruction, then the task's judge on
/sim/ground_truth/objects. This is the deployment path: the node's start move, 3 Hz timer,
latest-frame buffer, stale-frame checks, and arm_motion's execution of each delta. The
headless evaluation and its command line are ros_vla/rt1/eval.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from ros_vla.sim.scene import SceneConfig


def evaluate_through_stack(model_dir: str | Path, scene: SceneConfig, tasks: list[str], episodes: int,
                           first_seed: int, log_path: Path, progress: bool = True) -> dict:
    """The episodes through the launched sim stack (see the module's doc); node logs to log_path."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Int32
    from tqdm import tqdm

    from ros_vla.launcher import LaunchRunner, parse_launch_file
    from ros_vla.nodes.common import COMMAND_QOS, STATUS_QOS
    from ros_vla.paths import launch_file
    from ros_vla.rt1.demos import draw_goal
    from ros_vla.tools.stack_client import StackClient

    max_duration_s = 60.0
    launch_args = {"seed": str(first_seed), "rt1": "true", "rt1_model_dir": str(Path(model_dir).resolve())}
    log = open(log_path, "w", buffering=1)
    runner = LaunchRunner(parse_launch_file(launch_file("sim.launch.xml"), launch_args),
                          emit=lambda line: log.write(line + "\n"))
    runner.start()
    client = StackClient("ros_vla_rt1_eval")
    try:
        reset_pub = client.node.create_publisher(Int32, "/sim/reset", COMMAND_QOS)
        client.watch_camera("camera")

        def node_died() -> bool:
            return any(process.poll() is not None for process in runner.processes.values())

        if not (client.wait_for_subscribers(120.0, give_up=node_died)
                and client.wait_for_images(["camera"], 120.0, give_up=node_died)):
            raise RuntimeError(f"the sim stack did not come up; see {log_path}")
        # The node refuses skills while it loads the network; the first request waits until
        # its diagnostics say it is ready (or idle, in the 2 s report).
        loaded = threading.Event()
        client.node.create_subscription(
            DiagnosticArray, "/diagnostics",
            lambda m: any(st.name == "ros_vla: rt1_policy" and st.message.startswith(("ready", "idle"))
                          for st in m.status) and loaded.set(), STATUS_QOS)
        if not client.wait_for(loaded.is_set, 120.0, poll_s=0.2, give_up=node_died):
            raise RuntimeError(f"rt1_policy_node did not load {model_dir}; see {log_path}")
        results = {}
        for task in tasks:
            outcomes = []
            with tqdm(range(first_seed, first_seed + episodes), desc=f"rt1 eval over ROS: {task}", unit="episode",
                      disable=not progress) as bar:
                for seed in bar:
                    reset_pub.publish(Int32(data=seed))
                    deadline = time.monotonic() + 10.0
                    while time.monotonic() < deadline and (client.ground_truth(1.0) or {}).get("seed") != seed:
                        time.sleep(0.1)
                    time.sleep(1.0)  # the objects settle on the table
                    goal = draw_goal(task, seed, scene.objects)
                    started = time.monotonic()
                    finished, message = client.run_skill("rt1", goal.instruction, {}, max_duration_s + 15.0)
                    time.sleep(0.5)  # the world settles before it is judged
                    truth = client.ground_truth()
                    success, detail = goal.judge(truth, scene) if truth else (False, "no ground truth")
                    outcomes.append({"seed": seed, "instruction": goal.instruction, "success": success,
                                     "detail": detail, "skill_finished": finished, "skill_message": message,
                                     "wall_time_s": round(time.monotonic() - started, 1)})
                    bar.set_postfix(success=f"{sum(o['success'] for o in outcomes)}/{len(outcomes)}")
            results[task] = {"episodes": len(outcomes), "successes": int(sum(o["success"] for o in outcomes)),
                             "success_rate": float(np.mean([o["success"] for o in outcomes])),
                             "episodes_detail": outcomes}
        return {"model": str(model_dir), "through": "ROS 2 stack (launch/sim.launch.xml rt1:=true)",
                "first_seed": first_seed, "tasks": results}
    finally:
        client.close()
        runner.shutdown()
        log.close()
