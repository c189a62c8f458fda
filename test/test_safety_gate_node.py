"""safety_gate_node on the robot's path (config/robot.yaml): /estop stops the hardware
controllers through a wire-compatible stand-in of ros2_control's controller manager
(controller_manager_msgs/SwitchController) and franka_ros2's error recovery
(franka_msgs/ErrorRecovery), from third_party/msgs where those packages are absent.

The stand-in's joint trajectory controller executes a trajectory only while it is active,
as the real one does, so "an outside client cannot move the arm" is checked end to end.
"""

import json
import signal
import subprocess
import threading
import time

import pytest
import rclpy
from builtin_interfaces.msg import Duration
from controller_manager_msgs.srv import SwitchController
from diagnostic_msgs.msg import DiagnosticArray
from franka_msgs.action import ErrorRecovery
from geometry_msgs.msg import TwistStamped
from rcl_interfaces.srv import GetParameters
from rclpy.action import ActionServer
from rclpy.executors import MultiThreadedExecutor
from ros_test_utils import isolated_domain, start_node_process, wait_until
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_vla.nodes.common import COMMAND_QOS, LATCHED_QOS, STATUS_QOS
from ros_vla.paths import config_file
from ros_vla.robot import panda

READY = [-1.571, -1.1, 0.0, -2.75, 0.0, 1.75, 0.785]


class RobotStandIn:
    """franka_ros2 and ros2_control as the gate sees them: joint states, a controller
    manager, an error-recovery action, and a trajectory controller that obeys only while active."""

    def __init__(self, node):
        self.active = {"fr3_arm_controller"}
        self.switch_requests = []
        self.recoveries = 0
        self.switch_ok = True
        self.executed = []  # trajectories the active controller took
        self.ignored = []  # trajectories that arrived while it was inactive
        self.cmd_vel = []
        self.gripper = []
        node.create_service(SwitchController, "/controller_manager/switch_controller", self.switch)
        self.recovery_server = ActionServer(node, ErrorRecovery, "action_server/error_recovery", self.recover)
        node.create_subscription(JointTrajectory, "/fr3_arm_controller/joint_trajectory", self.on_trajectory,
                                 COMMAND_QOS)
        node.create_subscription(TwistStamped, "/cmd_vel", self.cmd_vel.append, COMMAND_QOS)
        node.create_subscription(Float64, "/fr3_gripper/command", self.gripper.append, COMMAND_QOS)
        self.joints_pub = node.create_publisher(JointState, "/joint_states", COMMAND_QOS)
        self.node = node

    def switch(self, request, response):
        self.switch_requests.append((list(request.activate_controllers), list(request.deactivate_controllers)))
        response.ok = self.switch_ok
        if self.switch_ok:
            self.active |= set(request.activate_controllers)
            self.active -= set(request.deactivate_controllers)
        response.message = "switched" if self.switch_ok else "stand-in refuses"
        return response

    def recover(self, handle):
        self.recoveries += 1
        handle.succeed()
        return ErrorRecovery.Result()

    def on_trajectory(self, msg):
        (self.executed if "fr3_arm_controller" in self.active else self.ignored).append(msg)

    def publish_joint_states(self):
        msg = JointState(name=list(panda.ARM_JOINT_NAMES) + list(panda.FINGER_JOINT_NAMES),
                         position=READY + [0.04, 0.04], velocity=[0.0] * 9)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.joints_pub.publish(msg)


@pytest.fixture(scope="module")
def gate():
    isolated_domain(83)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("robot_stand_in", context=context)
    robot = RobotStandIn(node)
    seen = {"status": [], "refused": [], "diagnostics": [], "preview": []}
    node.create_subscription(String, "/safety/status", lambda m: seen["status"].append(json.loads(m.data)),
                             LATCHED_QOS)
    node.create_subscription(String, "/safety/refused", lambda m: seen["refused"].append(json.loads(m.data)),
                             STATUS_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics", seen["diagnostics"].append, STATUS_QOS)
    node.create_subscription(JointTrajectory, "/arm/preview/joint_trajectory", seen["preview"].append, COMMAND_QOS)
    pubs = {
        "trajectory": node.create_publisher(JointTrajectory, "/safety/joint_trajectory", COMMAND_QOS),
        "estop": node.create_publisher(Bool, "/estop", COMMAND_QOS),
        "outside": node.create_publisher(JointTrajectory, "/fr3_arm_controller/joint_trajectory", COMMAND_QOS),
        "gripper": node.create_publisher(Float64, "/safety/gripper", COMMAND_QOS),
    }
    arm_client = node.create_client(SetBool, "/safety_gate/set_armed")
    executor = MultiThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    running = True

    def drivers():
        while running:
            robot.publish_joint_states()
            time.sleep(0.02)

    driver = threading.Thread(target=drivers, daemon=True)
    driver.start()
    process = start_node_process("ros_vla.nodes.safety_gate_node", "--params-file", str(config_file("robot.yaml")))
    assert wait_until(lambda: pubs["trajectory"].get_subscription_count() and arm_client.service_is_ready()
                      and seen["status"], 30.0), "safety_gate did not come up"

    def set_armed(value: bool):
        future = arm_client.call_async(SetBool.Request(data=value))
        assert wait_until(future.done, 15.0)
        return future.result()

    yield robot, seen, pubs, set_armed, node
    running = False
    driver.join()
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("safety_gate_node did not exit within 10 s of SIGINT")
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def trajectory(node, q, seconds):
    msg = JointTrajectory(joint_names=list(panda.ARM_JOINT_NAMES))
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.points = [JointTrajectoryPoint(positions=[float(v) for v in q], time_from_start=Duration(sec=seconds))]
    return msg


def moved(q, joint, by):
    q = list(q)
    q[joint] += by
    return q


def latest_status(seen):
    return seen["status"][-1] if seen["status"] else {}


def test_estop_stops_the_controllers_and_requires_arming_again(gate):
    robot, seen, pubs, set_armed, node = gate
    # Disarmed at start: a checked trajectory goes to the preview topic only.
    pubs["trajectory"].publish(trajectory(node, moved(READY, 6, 0.2), 2))
    assert wait_until(lambda: seen["preview"], 10.0) and not robot.executed
    assert set_armed(True).success
    assert wait_until(lambda: latest_status(seen).get("forwarding"), 10.0), latest_status(seen)
    pubs["trajectory"].publish(trajectory(node, moved(READY, 6, 0.2), 2))
    assert wait_until(lambda: robot.executed, 10.0), "armed, the trajectory did not reach the controller"

    pubs["estop"].publish(Bool(data=True))
    assert wait_until(lambda: ([], ["fr3_arm_controller"]) in robot.switch_requests, 10.0), robot.switch_requests
    assert wait_until(lambda: latest_status(seen).get("controllers") == "stopped", 10.0)
    assert "fr3_arm_controller" not in robot.active
    holds = [m for m in robot.executed if list(m.points[0].positions) == READY]
    assert holds, "the arm was not told to hold before the controllers went down"
    assert wait_until(lambda: any(m.twist.linear.x == 0.0 for m in robot.cmd_vel), 5.0), "no zero to the base"

    # Nothing moves the arm now: not through the gate ...
    refused = len(seen["refused"])
    executed = len(robot.executed)
    pubs["trajectory"].publish(trajectory(node, moved(READY, 6, 0.2), 2))
    pubs["gripper"].publish(Float64(data=0.05))
    assert wait_until(lambda: len(seen["refused"]) >= refused + 2, 10.0)
    assert all("emergency stop" in r["reason"] for r in seen["refused"][refused:])
    # ... nor straight to the controller topic: the deactivated controller ignores it.
    pubs["outside"].publish(trajectory(node, moved(READY, 0, 0.3), 2))
    assert wait_until(lambda: robot.ignored, 10.0)
    assert len(robot.executed) == executed, "a command reached an active controller under /estop"
    assert wait_until(lambda: any("bypass the safety gate" in s.message and "robot_stand_in" in s.message
                                  for d in seen["diagnostics"] for s in d.status), 10.0), "the bypass was not named"

    assert not set_armed(True).success, "armed while /estop is engaged"
    pubs["estop"].publish(Bool(data=False))
    assert wait_until(lambda: not latest_status(seen).get("estop", True), 10.0)
    preview = len(seen["preview"])
    pubs["trajectory"].publish(trajectory(node, moved(READY, 6, 0.2), 2))
    assert wait_until(lambda: len(seen["preview"]) > preview, 10.0), "released: a dry run until armed again"
    assert len(robot.executed) == executed and "fr3_arm_controller" not in robot.active

    assert set_armed(True).success
    assert wait_until(lambda: latest_status(seen).get("forwarding"), 15.0), latest_status(seen)
    assert robot.recoveries == 1, "arming again runs franka's error recovery"
    assert robot.switch_requests[-1] == (["fr3_arm_controller"], [])
    pubs["trajectory"].publish(trajectory(node, moved(READY, 6, 0.2), 2))
    assert wait_until(lambda: len(robot.executed) > executed, 10.0)


def test_arming_fails_when_the_controllers_cannot_start(gate):
    robot, seen, pubs, set_armed, node = gate
    pubs["estop"].publish(Bool(data=True))
    assert wait_until(lambda: latest_status(seen).get("controllers") == "stopped", 10.0)
    pubs["estop"].publish(Bool(data=False))
    assert wait_until(lambda: not latest_status(seen).get("estop", True), 10.0)
    robot.switch_ok = False
    try:
        set_armed(True)
        assert wait_until(lambda: any("not armed" in s.message for d in seen["diagnostics"] for s in d.status), 15.0)
        assert not latest_status(seen)["forwarding"]
        params = node.create_client(GetParameters, "/safety_gate/get_parameters")
        assert params.wait_for_service(timeout_sec=5.0)
        future = params.call_async(GetParameters.Request(names=["armed"]))
        assert wait_until(future.done, 5.0)
        assert future.result().values[0].bool_value is False, "the armed parameter went back to false"
    finally:
        robot.switch_ok = True
