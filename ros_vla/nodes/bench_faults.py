"""`ros-vla bench faults`: kill a node of the running sim stack in the middle of a task.

For each of the planner, CLIPort, arm_motion and the camera renderer: the scene is reset,
"put the red block in the green bowl" is sent, and once the arm is moving (the camera:
once the task is executing) the node's process gets SIGKILL. Launch respawns it.
Measured per fault: what the task ended as and how long after the kill it was reported,
how long until the node was back in the ROS graph, and the commands the controllers got
meanwhile, each checked by the fuzz bench's recorder (joint limits, speeds, workspace,
base limits). A last task after all the faults shows the stack recovered; simulator
ground truth judges it (for the report only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from std_msgs.msg import Int32

from ros_vla import protocol
from ros_vla.launcher import LaunchRunner, parse_launch_file
from ros_vla.nodes.bench_fuzz import STARTUP_TIMEOUT_S, TASK, ControllerLimits, ControllerRecorder
from ros_vla.nodes.common import COMMAND_QOS
from ros_vla.nodes.demo import expected_outcome
from ros_vla.nodes.stack_client import StackClient
from ros_vla.paths import config_file, launch_file
from ros_vla.sim.scene import load_scene

# launch label -> when to kill it
FAULTS = {"instruction": "arm moving", "cliport": "arm moving", "arm_motion": "arm moving",
          "sim_camera": "task executing"}


def _node_in_graph(client: StackClient, name: str) -> bool:
    return name in client.node.get_node_names()


def run_bench_faults(nodes: list[str] | None = None, seed: int = 0, output_root: str = "outputs",
                     say=lambda line: None) -> dict:
    nodes = nodes or list(FAULTS)
    report_dir = Path(output_root) / f"faults-{datetime.now():%Y%m%d-%H%M%S}"
    report_dir.mkdir(parents=True, exist_ok=True)
    log = open(report_dir / "nodes.log", "w", buffering=1)
    scene = load_scene(config_file("scene_tabletop.yaml"))
    views = [camera.namespace for camera in scene.cameras]
    runner = LaunchRunner(parse_launch_file(launch_file("sim.launch.xml"), {"seed": str(seed)}),
                          emit=lambda line: log.write(line + "\n"))
    runner.start()
    client = StackClient("ros_vla_bench_faults")
    recorder = ControllerRecorder(client, ControllerLimits.from_config(config_file("sim.yaml")))
    arm_moving = threading.Event()
    client.follow_json("/arm/status", lambda status: status.get("state") == "moving" and arm_moving.set())
    reset = client.node.create_publisher(Int32, "/sim/reset", COMMAND_QOS)
    faults = []
    try:
        for view in views:
            client.watch_camera(view)
        say("launching the sim stack and waiting for it")
        if not (client.wait_for_subscribers(STARTUP_TIMEOUT_S) and client.wait_for_images(views, STARTUP_TIMEOUT_S)):
            raise RuntimeError("the sim stack did not come up")
        for label in nodes:
            client.wait_until_idle(120.0)
            reset.publish(Int32(data=seed))
            time.sleep(3.0)
            arm_moving.clear()
            executing = threading.Event()
            killed = {}

            def kill_when_due(label=label, executing=executing, killed=killed):
                due = arm_moving if FAULTS[label] == "arm moving" else executing
                if not due.wait(120.0):
                    return
                process = runner.processes[label]
                killed.update(pid=process.pid, at=time.monotonic(), violations=len(recorder.violations))
                os.killpg(process.pid, signal.SIGKILL)
                say(f"  killed {label} (pid {process.pid}) with the {FAULTS[label].split()[0]} "
                    f"{FAULTS[label].split()[1]}")

            killer = threading.Thread(target=kill_when_due, daemon=True)
            killer.start()
            say(f"fault: {label} killed mid-task")
            final = client.say(TASK, timeout_s=240.0,
                               on_status=lambda s, executing=executing: s["state"] == "executing" and executing.set())
            ended = time.monotonic()
            killer.join(timeout=1.0)
            fault = {"node": label, "killed": bool(killed), "task_state": final["state"] if final else "timeout",
                     "task_message": final["message"] if final else "no final status"}
            if killed:
                respawned = client.wait_for(lambda: runner.processes[label].pid != killed["pid"]
                                            and _node_in_graph(client, label), 120.0)
                fault["reported_after_kill_s"] = round(ended - killed["at"], 1)
                fault["back_in_graph_after_kill_s"] = round(time.monotonic() - killed["at"], 1) if respawned else None
                client.wait_for_subscribers(120.0)
                fault["out_of_limit_commands"] = len(recorder.violations) - killed["violations"]
            say(f"  task {fault['task_state']}: {fault['task_message']}; back after "
                f"{fault.get('back_in_graph_after_kill_s')} s")
            faults.append(fault)

        say(f"after the faults: scene reset, then \"{TASK}\"")
        client.wait_until_idle(120.0)
        reset.publish(Int32(data=seed))
        time.sleep(3.0)
        final = client.say(TASK, timeout_s=240.0)
        truth = client.ground_truth()
        verified, detail = expected_outcome(TASK, truth, scene) if truth else (False, "no ground truth")
        result = {
            "faults": faults, "out_of_limit_commands": len(recorder.violations),
            "violations": [v for v in recorder.violations if v][:20],
            "controller_messages": dict(recorder.counts),
            "task_after": final["state"] if final else "timeout",
            "task_after_message": final["message"] if final else "no final status",
            "task_after_ground_truth_success": verified, "task_after_ground_truth_detail": detail,
            "report_dir": str(report_dir),
        }
    finally:
        client.close()
        runner.shutdown()
        log.close()
    (report_dir / "report.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros-vla bench faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="outputs", help="node logs and report.json go to OUTPUT/faults-<time>/")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    result = run_bench_faults(args.nodes, args.seed, args.output, say=lambda line: print(
        f"[faults {time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True))
    for fault in result["faults"]:
        print(f"{fault['node']:>12} killed: task {fault['task_state']} ({fault['task_message'][:90]}), reported "
              f"{fault.get('reported_after_kill_s')} s after the kill, node back in "
              f"{fault.get('back_in_graph_after_kill_s')} s, "
              f"out-of-limit commands {fault.get('out_of_limit_commands')}")
    print(f"task after the faults: {result['task_after']}; ground truth: "
          f"{'SUCCESS' if result['task_after_ground_truth_success'] else 'FAILURE'}: "
          f"{result['task_after_ground_truth_detail']}")
    if args.json:
        print(json.dumps(result))
    ended = all(fault["task_state"] in protocol.TERMINAL_TASK_STATES for fault in result["faults"])
    return 0 if ended and result["out_of_limit_commands"] == 0 and result["task_after_ground_truth_success"] else 1
