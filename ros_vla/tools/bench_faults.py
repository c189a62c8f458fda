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

from sensor_msgs.msg import JointState
from std_msgs.msg import Int32

from ros_vla import protocol
from ros_vla.nodes.common import COMMAND_QOS, SENSOR_QOS
from ros_vla.paths import config_file
from ros_vla.tools.bench_fuzz import ControllerLimits, ControllerRecorder
from ros_vla.tools.bench_stack import TASK, BenchStack
from ros_vla.tools.demo import expected_outcome
from ros_vla.tools.stack_client import StackClient

# launch label (= node name) -> when to kill it, and an endpoint it makes when it is back
FAULTS = {"instruction": ("arm moving", "/instruction", "subscription"),
          "cliport": ("arm moving", "/skill/request", "subscription"),
          "arm_motion": ("arm moving", "/arm/pick_place", "subscription"),
          "sim_camera": ("task executing", "/camera/camera/color/image_raw", "publisher")}
ARM_STILL_RADPS = 0.01  # every joint slower than this (rad/s, m/s for the fingers): the arm is still


def _endpoints(client: StackClient, label: str) -> set[bytes]:
    """The node's endpoint ids on its FAULTS topic. A respawned node makes new ones; after a
    SIGKILL, DDS lists the dead ones until their lease runs out, so the graph's node names
    cannot tell."""
    _, topic, kind = FAULTS[label]
    infos = (client.node.get_subscriptions_info_by_topic(topic) if kind == "subscription"
             else client.node.get_publishers_info_by_topic(topic))
    return {bytes(info.endpoint_gid) for info in infos if info.node_name == label}


def run_bench_faults(nodes: list[str] | None = None, seed: int = 0, output_root: str = "outputs",
                     say=lambda line: None) -> dict:
    nodes = nodes or list(FAULTS)
    with BenchStack("faults", output_root, {"seed": str(seed)}, say) as stack:
        client, runner = stack.client, stack.runner
        recorder = ControllerRecorder(client, ControllerLimits.from_config(config_file("sim.yaml")))
        arm_moving = threading.Event()  # the arm moves for the current task
        last_motion = {"at": time.monotonic()}
        current = {"executing": threading.Event()}

        def on_arm_status(status: dict):
            if status.get("state") == "moving" and current["executing"].is_set():
                arm_moving.set()

        def on_joint_states(msg: JointState):
            # Judged from the simulator's joints, not arm/status: a respawned arm_motion says
            # "ready" before anyone has matched its publisher, so its last word stays "moving".
            if not msg.velocity or max(abs(v) for v in msg.velocity) > ARM_STILL_RADPS:
                last_motion["at"] = time.monotonic()

        def arm_still() -> bool:
            return time.monotonic() - last_motion["at"] > 2.0

        client.follow_json("/arm/status", on_arm_status)
        client.node.create_subscription(JointState, "/joint_states", on_joint_states, SENSOR_QOS)
        reset = client.node.create_publisher(Int32, "/sim/reset", COMMAND_QOS)
        faults = []
        stack.wait_until_up()
        for label in nodes:
            client.wait_until_idle(120.0)
            # A skill whose planner died goes on to its end: wait for the arm to be still.
            client.wait_for(arm_still, 120.0)
            reset.publish(Int32(data=seed))
            time.sleep(3.0)
            arm_moving.clear()
            executing = current["executing"] = threading.Event()
            task_ended = threading.Event()
            killed = {}

            def kill_when_due(label=label, executing=executing, task_ended=task_ended, killed=killed):
                when = FAULTS[label][0]
                if not (arm_moving if when == "arm moving" else executing).wait(120.0) or task_ended.is_set():
                    return  # the task ended before the fault was due: reported as not killed
                process = runner.processes[label]
                before = _endpoints(client, label)
                killed.update(pid=process.pid, at=time.monotonic(), violations=len(recorder.violations))
                os.killpg(process.pid, signal.SIGKILL)
                say(f"  killed {label} (pid {process.pid}) with the {when}")
                if client.wait_for(lambda: _endpoints(client, label) - before, 120.0, poll_s=0.2):
                    killed["back_s"] = time.monotonic() - killed["at"]

            killer = threading.Thread(target=kill_when_due, daemon=True)
            killer.start()
            say(f"fault: {label} killed mid-task")
            final = client.say(TASK, timeout_s=240.0,
                               on_status=lambda s, executing=executing: s["state"] == "executing" and executing.set())
            ended = time.monotonic()
            task_ended.set()
            killer.join(timeout=120.0)
            fault = {"node": label, "killed": bool(killed), "task_state": final["state"] if final else "timeout",
                     "task_message": final["message"] if final else "no final status"}
            if killed:
                fault["reported_after_kill_s"] = round(ended - killed["at"], 1)
                fault["back_in_graph_after_kill_s"] = round(killed["back_s"], 1) if "back_s" in killed else None
                client.wait_for_subscribers(120.0)
                fault["out_of_limit_commands"] = len(recorder.violations) - killed["violations"]
            say(f"  task {fault['task_state']}: {fault['task_message']}; back after "
                f"{fault.get('back_in_graph_after_kill_s')} s")
            faults.append(fault)

        say(f"after the faults: scene reset, then \"{TASK}\"")
        client.wait_until_idle(120.0)
        client.wait_for(arm_still, 120.0)
        reset.publish(Int32(data=seed))
        time.sleep(3.0)
        final = client.say(TASK, timeout_s=240.0)
        truth = client.ground_truth()
        verified, detail = expected_outcome(TASK, truth, stack.scene) if truth else (False, "no ground truth")
        result = {
            "faults": faults, "out_of_limit_commands": len(recorder.violations),
            "violations": [v for v in recorder.violations if v][:20],
            "controller_messages": dict(recorder.counts),
            "task_after": final["state"] if final else "timeout",
            "task_after_message": final["message"] if final else "no final status",
            "task_after_ground_truth_success": verified, "task_after_ground_truth_detail": detail,
        }
    return stack.write_report(result)


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
