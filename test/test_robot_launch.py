"""launch/robot.launch.xml starts disarmed: with a stand-in for the robot's drivers, motion
goals are planned onto the preview topics and nothing reaches the controllers until the
safety gate is armed through its ~/set_armed service."""

import json
import threading
import time

import pytest
from geometry_msgs.msg import PoseStamped, TwistStamped
from nav_msgs.msg import Odometry
from ros_test_utils import isolated_domain, wait_until
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from ros_vla.launcher import LaunchRunner, parse_launch_file
from ros_vla.nodes.common import COMMAND_QOS, STATUS_QOS
from ros_vla.paths import launch_file
from ros_vla.robot import kinematics, panda
from ros_vla.robot.kinematics import quaternion_from_matrix
from ros_vla.tools.stack_client import StackClient

READY = [-1.571, -1.1, 0.0, -2.75, 0.0, 1.75, 0.785]
LAUNCH_OUTPUT: list[str] = []


@pytest.fixture(scope="module")
def robot():
    isolated_domain(43)
    LAUNCH_OUTPUT.clear()

    def emit(line: str):
        LAUNCH_OUTPUT.append(line)
        print(line)

    runner = LaunchRunner(parse_launch_file(launch_file("robot.launch.xml"), {"cameras": "false"}), emit=emit)
    runner.start()
    client = StackClient("robot_launch_test")
    node = client.node
    received = {"controller": [], "preview": [], "cmd_vel": [], "base_preview": [], "arm_status": []}
    node.create_subscription(JointTrajectory, "/fr3_arm_controller/joint_trajectory",
                             received["controller"].append, COMMAND_QOS)
    node.create_subscription(JointTrajectory, "/arm/preview/joint_trajectory", received["preview"].append,
                             COMMAND_QOS)
    node.create_subscription(TwistStamped, "/cmd_vel", received["cmd_vel"].append, COMMAND_QOS)
    node.create_subscription(TwistStamped, "/base/preview/cmd_vel", received["base_preview"].append, COMMAND_QOS)
    node.create_subscription(String, "/arm/status", received["arm_status"].append, STATUS_QOS)

    # Stand-in for franka_ros2's joint_state_broadcaster and the base driver's odometry.
    joints_pub = node.create_publisher(JointState, "/joint_states", COMMAND_QOS)
    odom_pub = node.create_publisher(Odometry, "/odom", COMMAND_QOS)
    running = True

    def drivers():
        while running:
            msg = JointState(name=list(panda.ARM_JOINT_NAMES) + list(panda.FINGER_JOINT_NAMES),
                             position=READY + [0.04, 0.04], velocity=[0.0] * 9)
            msg.header.stamp = node.get_clock().now().to_msg()
            joints_pub.publish(msg)
            odom = Odometry()
            odom.pose.pose.orientation.w = 1.0
            odom_pub.publish(odom)
            time.sleep(0.02)

    thread = threading.Thread(target=drivers, daemon=True)
    thread.start()
    assert wait_until(lambda: received["base_preview"], 60.0), "robot launch did not come up"
    yield client, received
    running = False
    thread.join()
    client.close()
    runner.shutdown()


def pose_goal(xyz):
    target = kinematics.top_down_grasp_pose(xyz, 0.0)
    msg = PoseStamped()
    msg.header.frame_id = "fr3_link0"
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = xyz
    q = quaternion_from_matrix(target)
    msg.pose.orientation.x, msg.pose.orientation.y, msg.pose.orientation.z, msg.pose.orientation.w = q
    return msg


def send_goal_until(goal_pub, goal: PoseStamped, received: dict, key: str, timeout_s: float = 30.0):
    """Publish the goal until something arrives on `key`. The stand-in driver runs in this
    process: a stall of it longer than robot.yaml's joint_state_timeout_s (0.2 s) makes
    arm_motion refuse the goal for stale joint states, as it must; a "dry run" answer means the
    gate published the preview, which a starved test process may take longer to receive.
    Any other refusal fails."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = len(received["arm_status"])
        goal_pub.publish(goal)
        if wait_until(lambda: received[key], 3.0):
            return
        statuses = [json.loads(m.data) for m in received["arm_status"][seen:]]
        if received[key]:
            return  # came just after the wait
        refusals = [s["message"] for s in statuses if s["state"] == "refused"]
        assert all("fresh /joint_states" in r or "dry run" in r for r in refusals), refusals
    pytest.fail(f"nothing on {key} within {timeout_s} s of sending the goal")


def test_starts_disarmed_and_only_previews(robot):
    client, received = robot
    node = client.node
    goal_pub = node.create_publisher(PoseStamped, "/arm/pose_goal", COMMAND_QOS)
    base_pub = node.create_publisher(TwistStamped, "/base/cmd_vel", COMMAND_QOS)
    assert wait_until(lambda: goal_pub.get_subscription_count() and base_pub.get_subscription_count(), 10.0)
    send_goal_until(goal_pub, pose_goal([0.5, 0.0, 0.2]), received, "preview")
    assert wait_until(lambda: any("dry run" in m.data for m in received["arm_status"]), 15.0)
    command = TwistStamped()
    command.twist.linear.x = 0.2

    def base_previewed() -> bool:
        # Sent for as long as it takes: on a loaded machine a burst may go stale in base_motion
        # or the gate before it is passed on, and stale commands are rightly refused.
        base_pub.publish(command)
        return max(m.twist.linear.x for m in received["base_preview"]) > 0.0

    assert wait_until(base_previewed, 15.0)
    assert not received["controller"] and not received["cmd_vel"], "a disarmed robot was commanded"


def test_cliport_without_calibration_stays_up_and_says_why(robot):
    """robot.yaml names calibration/camera.yaml, which a clean checkout does not have: the
    node must report it and keep running, not die and respawn in a loop."""
    assert wait_until(lambda: any("[cliport]" in line and "left out" in line for line in LAUNCH_OUTPUT), 30.0)
    assert not [line for line in LAUNCH_OUTPUT if "[cliport]: process has died" in line]


def test_arming_service_sends_to_the_controller(robot):
    client, received = robot
    node = client.node
    caller = node.create_client(SetBool, "/safety_gate/set_armed")
    assert caller.wait_for_service(timeout_sec=10.0)
    future = caller.call_async(SetBool.Request(data=True))
    assert wait_until(future.done, 15.0) and future.result().success
    goal_pub = node.create_publisher(PoseStamped, "/arm/pose_goal", COMMAND_QOS)
    assert wait_until(lambda: goal_pub.get_subscription_count(), 10.0)
    send_goal_until(goal_pub, pose_goal([0.5, 0.1, 0.2]), received, "controller")
    assert wait_until(lambda: received["cmd_vel"], 15.0)
