"""franka_gripper_node against a franka_msgs Grasp/Move action server (wire-compatible
definitions from third_party/msgs where franka_ros2 is absent)."""

import json
import signal
import subprocess
import threading
import time

import pytest
import rclpy
from franka_msgs.action import Grasp, Move
from rclpy.action import ActionServer
from rclpy.executors import MultiThreadedExecutor
from ros_test_utils import isolated_domain, start_node_process, wait_until
from std_msgs.msg import Float64, String

from ros_vla.nodes.common import COMMAND_QOS, STATUS_QOS


@pytest.fixture(scope="module")
def gripper():
    isolated_domain(71)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("fake_franka_gripper", context=context)
    goals = {"grasp": [], "move": []}

    def serve(kind):
        def execute(handle):
            goals[kind].append(handle.request)
            handle.succeed()
            result = (Grasp if kind == "grasp" else Move).Result(success=True)
            return result
        return execute

    servers = [ActionServer(node, Grasp, "franka_gripper/grasp", serve("grasp")),
               ActionServer(node, Move, "franka_gripper/move", serve("move"))]
    statuses = []
    node.create_subscription(String, "fr3_gripper/status", lambda m: statuses.append(json.loads(m.data)), STATUS_QOS)
    command_pub = node.create_publisher(Float64, "fr3_gripper/command", COMMAND_QOS)
    executor = MultiThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    adapter = start_node_process("ros_vla.nodes.franka_gripper_node")
    deadline = time.monotonic() + 20
    while command_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    yield command_pub, goals, statuses
    adapter.send_signal(signal.SIGINT)
    try:
        adapter.wait(timeout=10)
    except subprocess.TimeoutExpired:
        adapter.kill()
        adapter.wait()
        pytest.fail("franka_gripper_node did not exit within 10 s of SIGINT")
    executor.shutdown()
    for server in servers:
        server.destroy()
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_close_becomes_grasp_and_open_becomes_move(gripper):
    command_pub, goals, statuses = gripper
    command_pub.publish(Float64(data=0.0))
    assert wait_until(lambda: goals["grasp"]), "no Grasp goal"
    grasp = goals["grasp"][-1]
    assert grasp.width == 0.0 and grasp.force > 0 and grasp.epsilon.outer > 0
    command_pub.publish(Float64(data=0.08))
    assert wait_until(lambda: goals["move"]), "no Move goal"
    assert goals["move"][-1].width == pytest.approx(0.08)
    assert wait_until(lambda: any(s.get("kind") == "move" and s.get("success") for s in statuses))


def test_bad_widths_are_refused(gripper):
    command_pub, goals, statuses = gripper
    before = len(goals["grasp"]) + len(goals["move"])
    # One at a time: the node acts on the newest command only, so three sent at once to a
    # stalled node would be one refusal.
    for width in (float("nan"), -0.01, 0.5):
        refused = sum("refused" in s["message"] for s in statuses)
        command_pub.publish(Float64(data=width))
        assert wait_until(lambda: sum("refused" in s["message"] for s in statuses) > refused), f"{width} not refused"
    assert len(goals["grasp"]) + len(goals["move"]) == before
