"""The sim stack as separate processes over DDS, checked by a separate rclpy client.

Launches launch/sim.launch.xml once for the module on an isolated ROS_DOMAIN_ID, then
checks what an external ROS 2 tool would: topic, action and service names, types and
rates, and the robot's behaviour under commands, emergency stop, a stale base command, bad
input, and a client of ros_vla_interfaces that runs, cancels and queries.
"""

import collections
import json
import math
import threading
import time

import numpy as np
import pytest
import rclpy
import yaml
from action_msgs.msg import GoalStatus
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.action import ActionClient, get_action_names_and_types
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_test_utils import isolated_domain, wait_until
from ros_vla_interfaces.action import RunTask
from ros_vla_interfaces.srv import AffordanceQuery, AttributeQuery
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, String
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_vla.launcher import LaunchRunner, parse_launch_file
from ros_vla.nodes.common import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, STATUS_QOS
from ros_vla.paths import config_file, launch_file
from ros_vla.perception.ros_messages import image_array, time_seconds
from ros_vla.robot import panda
from ros_vla.tools.stack_client import StackClient

VIEWS = ("camera", "side", "wrist")
EXPECTED_TOPICS = {
    "/joint_states": "sensor_msgs/msg/JointState",
    "/odom": "nav_msgs/msg/Odometry",
    "/tf": "tf2_msgs/msg/TFMessage",
    "/tf_static": "tf2_msgs/msg/TFMessage",
    "/clock": "rosgraph_msgs/msg/Clock",
    "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    "/fr3_arm_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
    "/fr3_gripper/command": "std_msgs/msg/Float64",
    "/cmd_vel": "geometry_msgs/msg/TwistStamped",
    "/instruction": "std_msgs/msg/String",
    "/estop": "std_msgs/msg/Bool",
    "/task/status": "ros_vla_interfaces/msg/TaskStatus",
    "/sim/ground_truth/objects": "std_msgs/msg/String",
    **{f"/{v}/camera/color/image_raw": "sensor_msgs/msg/Image" for v in VIEWS},
    **{f"/{v}/camera/color/camera_info": "sensor_msgs/msg/CameraInfo" for v in VIEWS},
    **{f"/{v}/camera/aligned_depth_to_color/image_raw": "sensor_msgs/msg/Image" for v in VIEWS},
    **{f"/{v}/camera/aligned_depth_to_color/camera_info": "sensor_msgs/msg/CameraInfo" for v in VIEWS},
}

EXPECTED_ACTIONS = {
    "/run_task": "ros_vla_interfaces/action/RunTask",
    "/skill/pick_place": "ros_vla_interfaces/action/ExecuteSkill",
    "/arm/pick_and_place": "ros_vla_interfaces/action/PickPlace",
    "/base/go_to_station": "ros_vla_interfaces/action/GoToStation",
}
EXPECTED_SERVICES = {
    "/cliport/affordance": "ros_vla_interfaces/srv/AffordanceQuery",
    "/attribute/check": "ros_vla_interfaces/srv/AttributeQuery",
    "/cancel_task": "std_srvs/srv/Trigger",
}


class Recorder:
    """Keeps the messages of a topic with their arrival times: all of them, or the newest
    `keep` (camera streams, whose frames would otherwise fill the memory of a CI machine)."""

    def __init__(self, node, msg_type, topic, qos, keep=None):
        self.messages = collections.deque(maxlen=keep)
        self.lock = threading.Lock()
        node.create_subscription(msg_type, topic, self.store, qos)

    def store(self, msg):
        with self.lock:
            self.messages.append((time.monotonic(), msg))

    def since(self, t0):
        with self.lock:
            return [m for t, m in self.messages if t >= t0]

    def latest(self):
        with self.lock:
            return self.messages[-1][1] if self.messages else None


@pytest.fixture(scope="module")
def stack():
    isolated_domain(0)  # read by rclpy.init and inherited by the launched nodes
    runner = LaunchRunner(parse_launch_file(launch_file("sim.launch.xml"), {"seed": "2"}),
                          emit=lambda line: print(line, flush=True))
    runner.start()
    client = StackClient("integration_test_client")
    node = client.node
    rec = {
        # A shallow queue: a starved test process then reads recent states, not a backlog.
        "joints": Recorder(node, JointState, "/joint_states", SENSOR_QOS),
        "odom": Recorder(node, Odometry, "/odom", COMMAND_QOS),
        "diagnostics": Recorder(node, DiagnosticArray, "/diagnostics", STATUS_QOS),
        "arm_status": Recorder(node, String, "/arm/status", STATUS_QOS),
        "tf": Recorder(node, TFMessage, "/tf", COMMAND_QOS),
        "tf_static": Recorder(node, TFMessage, "/tf_static", LATCHED_QOS),
        "clock": Recorder(node, Clock, "/clock", COMMAND_QOS),
        "cmd_vel": Recorder(node, TwistStamped, "/cmd_vel", COMMAND_QOS),
        "arm_controller": Recorder(node, JointTrajectory, "/fr3_arm_controller/joint_trajectory", COMMAND_QOS),
    }
    for view in VIEWS:
        rec[f"{view}/color"] = Recorder(node, Image, f"/{view}/camera/color/image_raw", SENSOR_QOS, keep=50)
        rec[f"{view}/depth"] = Recorder(node, Image, f"/{view}/camera/aligned_depth_to_color/image_raw",
                                        SENSOR_QOS, keep=50)
        rec[f"{view}/info"] = Recorder(node, CameraInfo, f"/{view}/camera/color/camera_info", SENSOR_QOS, keep=50)
    pubs = {
        "controller": node.create_publisher(JointTrajectory, "/fr3_arm_controller/joint_trajectory", COMMAND_QOS),
        "arm_trajectory": node.create_publisher(JointTrajectory, "/arm/joint_trajectory", COMMAND_QOS),
        "estop": node.create_publisher(Bool, "/estop", COMMAND_QOS),
        "base_cmd": node.create_publisher(TwistStamped, "/base/cmd_vel", COMMAND_QOS),
        "goto": node.create_publisher(String, "/base/goto", COMMAND_QOS),
    }
    # Publish only once DDS discovery has matched every command topic with its node.
    up = client.wait_for_subscribers(120.0) and wait_until(
        lambda: all(rec[f"{v}/color"].latest() for v in VIEWS) and rec["joints"].latest()
        and all(pub.get_subscription_count() for pub in pubs.values()), 120.0)
    if not up:
        runner.shutdown()
        client.close()
        pytest.fail("the sim stack did not come up")
    yield client, rec, pubs
    client.close()
    runner.shutdown()
    assert not any(p.poll() is None for p in runner.processes.values()), "a node outlived shutdown"


def settled_arm_q(rec, timeout_s=30.0):
    """Joint positions once the arm has come to rest (a previous motion may still be settling)."""
    def at_rest():
        msg = rec["joints"].latest()
        return msg is not None and max(abs(v) for v in msg.velocity[:7]) < 2e-3
    assert wait_until(at_rest, timeout_s), "the arm did not come to rest"
    return arm_q(rec)


def joint_state_at(rec, stamp_s):
    """The first recorded /joint_states stamped at or after `stamp_s` (sim time), or None."""
    return next((m for m in rec["joints"].since(0) if time_seconds(m.header.stamp) >= stamp_s), None)


def positions(msg):
    position = dict(zip(msg.name, msg.position))
    return np.array([position[n] for n in panda.ARM_JOINT_NAMES])


def arm_q(rec):
    return positions(rec["joints"].latest())


def finger_width(msg):
    position = dict(zip(msg.name, msg.position))
    return sum(position[n] for n in panda.FINGER_JOINT_NAMES)


def trajectory(names, points):
    msg = JointTrajectory(joint_names=list(names))
    for q, t in points:
        msg.points.append(JointTrajectoryPoint(
            positions=[float(v) for v in q], time_from_start=Duration(sec=int(t), nanosec=int((t % 1) * 1e9))))
    return msg


def test_topics_have_the_real_robot_names_and_types(stack):
    client, _, _ = stack

    def missing():
        seen = dict(client.node.get_topic_names_and_types())
        return {t: ty for t, ty in EXPECTED_TOPICS.items() if ty not in seen.get(t, [])}

    assert wait_until(lambda: not missing(), 20.0), f"missing or mistyped: {missing()}"

    def missing_actions_or_services():
        actions = dict(get_action_names_and_types(client.node))
        services = dict(client.node.get_service_names_and_types())
        return ({a: ty for a, ty in EXPECTED_ACTIONS.items() if ty not in actions.get(a, [])}
                | {s: ty for s, ty in EXPECTED_SERVICES.items() if ty not in services.get(s, [])})

    assert wait_until(lambda: not missing_actions_or_services(), 20.0), \
        f"missing or mistyped: {missing_actions_or_services()}"


def test_sensor_streams(stack):
    _, rec, _ = stack
    # A deep queue of its own: the period is read from consecutive stamps, and a starved
    # test process must not lose messages from a 10-deep one. On a node and executor of its
    # own, spun here: taking a subscription away from the client's node while its executor
    # thread waits on it can kill that thread, and with it every later test's input.
    probe = rclpy.create_node("joint_state_period_probe")
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    try:
        every_joint_state = Recorder(probe, JointState, "/joint_states",
                                     QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        t0 = time.monotonic()

        def enough():
            return (len(every_joint_state.since(t0)) >= 50 and len(rec["clock"].since(t0)) >= 2
                    and all(len(rec[f"{view}/color"].since(t0)) >= 2 for view in VIEWS))

        # At least 3 s, longer where a loaded machine runs the simulation slowly.
        while time.monotonic() - t0 < 3.0 or (not enough() and time.monotonic() - t0 < 30.0):
            executor.spin_once(timeout_sec=0.05)
        elapsed = time.monotonic() - t0
    finally:
        executor.shutdown()
        probe.destroy_node()
    joints = every_joint_state.since(t0)
    # The rate is checked in sim time, between consecutive stamps: on a loaded machine the
    # simulation may run slower than the wall clock, but the publisher keeps its 10 ms
    # period (2 or 3 physics steps of 1/240 s).
    gaps = np.diff([time_seconds(m.header.stamp) for m in joints])
    assert len(gaps) > 10 and (gaps > 0).all(), "joint_states stream with increasing stamps"
    assert 0.008 < gaps.min() < 0.013, f"joint_states 10 ms of sim time apart, not {gaps.min():.4f} s"
    assert list(joints[-1].name) == list(panda.ARM_JOINT_NAMES) + list(panda.FINGER_JOINT_NAMES)
    for view in VIEWS:
        colors = rec[f"{view}/color"].since(t0)
        assert len(colors) >= 2, f"{view}: {len(colors)} frames in {elapsed:.1f} s"
        color, depth, info = colors[-1], rec[f"{view}/depth"].latest(), rec[f"{view}/info"].latest()
        assert (color.encoding, color.width, color.height) == ("rgb8", 640, 480)
        assert depth.encoding == "16UC1" and depth.header.frame_id == color.header.frame_id
        assert color.header.frame_id.endswith("_color_optical_frame")
        assert info.k[0] > 0 and info.width == 640
        assert 200 < np.median(image_array(depth)) < 4000, "depth in millimetres"
    clock = [time_seconds(m.clock) for m in rec["clock"].since(t0)]
    assert clock[-1] > clock[0], "sim time advances"
    static_frames = {t.child_frame_id for m in rec["tf_static"].since(0) for t in m.transforms}
    assert {"odom", "fr3_link0", "camera_link", "camera_color_optical_frame", "side_camera_link",
            "wrist_camera_color_optical_frame"} <= static_frames
    dynamic = {(t.header.frame_id, t.child_frame_id) for m in rec["tf"].since(t0) for t in m.transforms}
    assert ("odom", "base_link") in dynamic


def test_trajectory_is_followed(stack):
    _, rec, pubs = stack
    q0 = settled_arm_q(rec)
    goal = q0.copy()
    goal[6] += 0.3
    pubs["controller"].publish(trajectory(panda.ARM_JOINT_NAMES, [(goal, 1.0)]))
    assert wait_until(lambda: np.abs(arm_q(rec) - goal).max() < 0.01, 20.0), f"at {arm_q(rec)}, goal {goal}"
    pubs["controller"].publish(trajectory(panda.ARM_JOINT_NAMES, [(q0, 1.0)]))
    assert wait_until(lambda: np.abs(arm_q(rec) - q0).max() < 0.01, 20.0)


def test_bad_trajectories_are_refused_without_motion(stack):
    _, rec, pubs = stack
    q0 = settled_arm_q(rec)
    bad = q0.copy()
    bad[0] = math.nan
    cases = [
        (pubs["arm_trajectory"], trajectory(panda.ARM_JOINT_NAMES, [(bad, 1.0)]), "finite"),
        (pubs["arm_trajectory"], trajectory([f"joint{i}" for i in range(7)], [(q0, 1.0)]), "joint"),
        (pubs["arm_trajectory"], trajectory(panda.ARM_JOINT_NAMES, [(q0 + 1.0, 0.1)]), "rad/s"),
        (pubs["controller"], trajectory(panda.ARM_JOINT_NAMES, [(q0 + 1.0, 0.1)]), "rad/s"),
    ]
    for publisher, msg, expected in cases:
        t0 = time.monotonic()
        publisher.publish(msg)

        def refused():
            return [s.message for m in rec["diagnostics"].since(t0) for s in m.status
                    if s.level == s.ERROR and expected in s.message]

        assert wait_until(refused, 15.0), f"no refusal mentioning '{expected}'"
    # Judged in sim time, 1 s on from the newest joint state this process had read when the
    # last refusal came (sim_bridge stamps its diagnostics in wall time), however late it reads.
    refused_s = time_seconds(rec["joints"].latest().header.stamp)
    assert wait_until(lambda: joint_state_at(rec, refused_s + 1.0), 30.0), "no joint states after the refusals"
    assert np.abs(positions(joint_state_at(rec, refused_s + 1.0)) - q0).max() < 2e-3, "a refused trajectory moved the arm"


def test_estop_halts_motion_and_refuses_goals(stack):
    _, rec, pubs = stack
    q0 = settled_arm_q(rec)
    goal = q0.copy()
    goal[0] += 1.0
    # A slow motion, so the stop lands in the middle of it even when this process sees it late.
    pubs["arm_trajectory"].publish(trajectory(panda.ARM_JOINT_NAMES, [(goal, 10.0)]))
    assert wait_until(lambda: abs(arm_q(rec)[0] - q0[0]) > 0.05, 20.0), "the arm never started moving"
    t_stop = time.monotonic()
    pubs["estop"].publish(Bool(data=True))
    try:
        # Judged in sim time from arm_motion's own diagnostic, so a slow test process (which
        # reads a deep joint_states queue late) or a slow simulation cannot fake a moving arm.
        engaged = wait_until(lambda: [m for m in rec["diagnostics"].since(t_stop) for s in m.status
                                      if s.name == "ros_vla: arm_motion" and s.message == "emergency stop engaged"],
                             15.0)
        assert engaged, "arm_motion never reported the emergency stop"
        engaged_s = time_seconds(engaged[0].header.stamp)
        # One control period of the arm node plus the controller's 50 ms hold ramp, then 1 s held.
        assert wait_until(lambda: joint_state_at(rec, engaged_s + 1.3), 30.0), (
            f"no joint states 1.3 s after the stop at {engaged_s:.2f} s; newest "
            f"{time_seconds(rec['joints'].latest().header.stamp):.2f} s")
        halted = positions(joint_state_at(rec, engaged_s + 0.3))
        later = positions(joint_state_at(rec, engaged_s + 1.3))
        assert np.abs(later - halted).max() < 0.02, "the arm kept moving after /estop"
        assert abs(later[0] - goal[0]) > 0.3, "the arm finished the motion it was stopped in"
        t0 = time.monotonic()
        pubs["arm_trajectory"].publish(trajectory(panda.ARM_JOINT_NAMES, [(q0, 4.0)]))
        assert wait_until(lambda: any("emergency stop" in json.loads(m.data)["message"]
                                      for m in rec["arm_status"].since(t0)), 15.0), "a goal was accepted under /estop"
    finally:
        # Released whatever happened above, or every later test would meet a stopped robot.
        pubs["estop"].publish(Bool(data=False))
    assert wait_until(lambda: any(json.loads(m.data)["message"] == "emergency stop released"
                                  for m in rec["arm_status"].since(t_stop)), 15.0)
    pubs["arm_trajectory"].publish(trajectory(panda.ARM_JOINT_NAMES, [(q0, 3.0)]))
    assert wait_until(lambda: np.abs(arm_q(rec) - q0).max() < 0.01, 20.0), "no motion after releasing /estop"


def test_outside_clients_cannot_move_the_robot_under_estop(stack):
    """With /estop true, commands published straight to the controller topics (past the
    safety gate, as any other node or a replayed bag could) move neither arm, gripper nor
    base: sim_bridge, the controller side, refuses them as the robot's stop would."""
    client, rec, pubs = stack
    node = client.node
    gripper_pub = node.create_publisher(Float64, "/fr3_gripper/command", COMMAND_QOS)
    cmd_vel_pub = node.create_publisher(TwistStamped, "/cmd_vel", COMMAND_QOS)
    assert wait_until(lambda: gripper_pub.get_subscription_count() and cmd_vel_pub.get_subscription_count(), 10.0)
    q0 = settled_arm_q(rec)
    fingers0 = finger_width(rec["joints"].latest())
    x0 = rec["odom"].latest().pose.pose.position.x
    t_stop = time.monotonic()
    pubs["estop"].publish(Bool(data=True))
    try:
        engaged = wait_until(lambda: [m for m in rec["diagnostics"].since(t_stop) for s in m.status
                                      if s.name == "ros_vla: sim_bridge" and "emergency stop engaged" in s.message],
                             15.0)
        assert engaged, "sim_bridge never reported the emergency stop"
        goal = q0.copy()
        goal[0] += 0.3
        drive = TwistStamped()
        drive.twist.linear.x = 0.3
        t_sent = time.monotonic()
        for _ in range(20):  # a second of commands from outside the stack
            pubs["controller"].publish(trajectory(panda.ARM_JOINT_NAMES, [(goal, 1.0)]))
            gripper_pub.publish(Float64(data=0.0 if fingers0 > 0.04 else 0.08))
            cmd_vel_pub.publish(drive)
            time.sleep(0.05)
        assert wait_until(lambda: [m for m in rec["diagnostics"].since(t_sent) for s in m.status
                                   if s.name == "ros_vla: sim_bridge" and "emergency stop is engaged" in s.message],
                          15.0), "sim_bridge did not report refusing the commands"
        # Judged in sim time: 2 s after the newest joint state this process had when it stopped sending.
        sent_s = time_seconds(rec["joints"].latest().header.stamp)
        later = wait_until(lambda: joint_state_at(rec, sent_s + 2.0), 30.0)
        assert later, "no joint states after the commands"
        assert np.abs(positions(later) - q0).max() < 0.01, "an outside trajectory moved the arm under /estop"
        assert abs(finger_width(later) - fingers0) < 0.005, "an outside gripper command moved the fingers"
        assert abs(rec["odom"].latest().pose.pose.position.x - x0) < 0.005, "an outside /cmd_vel moved the base"
    finally:
        pubs["estop"].publish(Bool(data=False))
    assert wait_until(lambda: [m for m in rec["diagnostics"].since(t_stop) for s in m.status
                               if s.name == "ros_vla: sim_bridge" and "released" in s.message], 15.0)


def test_ee_delta_stream_moves_then_holds(stack):
    from geometry_msgs.msg import TransformStamped

    from ros_vla.robot.kinematics import forward_kinematics

    _, rec, pubs = stack
    node = stack[0].node
    delta_pub = node.create_publisher(TransformStamped, "/arm/ee_delta", COMMAND_QOS)
    assert wait_until(delta_pub.get_subscription_count, 10.0)
    home = settled_arm_q(rec)
    start = forward_kinematics(arm_q(rec))[:3, 3]
    delta = TransformStamped()
    delta.header.frame_id = "fr3_link0"
    delta.transform.translation.z = 0.01
    delta.transform.rotation.w = 1.0
    # 10 cm up, one delta per control period (arm_motion carries out each over that period)
    period_s = yaml.safe_load(config_file("sim.yaml").read_text())["arm_motion"]["ros__parameters"]["ee_delta_period_s"]
    t_stream = time.monotonic()
    for _ in range(10):
        pubs_time = time.monotonic()
        delta_pub.publish(delta)
        time.sleep(max(0.0, period_s - (time.monotonic() - pubs_time)))
    t_last = time.monotonic()

    def newest_stale_report_s():
        """Stamp (sim time) of arm_motion's newest "went stale" report since the stream began."""
        return max((time_seconds(m.header.stamp) for m in rec["diagnostics"].since(t_stream) for s in m.status
                    if s.name == "ros_vla: arm_motion" and s.message == "ee_delta stream went stale: holding position"),
                   default=None)

    # The stream stopped: arm_motion's watchdog holds the arm where it is. Judged in sim time
    # from arm_motion's own report, so a test process that reads joint states late cannot
    # mistake a pause between two deltas for the hold. A starved stream may go stale midway
    # too; the hold judged is the newest report once its joint states are in.
    time.sleep(max(0.0, t_last + 1.0 - time.monotonic()))
    while True:
        assert wait_until(lambda: newest_stale_report_s() is not None, 10.0), (
            "arm_motion never reported the stale ee_delta stream")
        stale_s = newest_stale_report_s()
        assert wait_until(lambda: joint_state_at(rec, stale_s + 1.3), 30.0), "no joint states after the hold"
        if newest_stale_report_s() == stale_s:
            break
    held = positions(joint_state_at(rec, stale_s + 0.3))
    later = positions(joint_state_at(rec, stale_s + 1.3))
    moved = forward_kinematics(held)[:3, 3] - start
    # Up 1 cm per delta arm_motion carried out (it keeps only the newest, and a starved
    # machine may deliver two in one period): its trajectories of one period, not its holds.
    carried_out = [m for m in rec["arm_controller"].since(t_stream)
                   if time_seconds(m.points[-1].time_from_start) > 0.5 * period_s]
    assert len(carried_out) >= 3, f"{len(carried_out)} of 10 deltas carried out"
    # Short of 1 cm each by the controller's tracking lag, which the hold cuts off.
    assert 0.006 * len(carried_out) < moved[2] < 0.012 * len(carried_out), (moved, len(carried_out))
    assert np.abs(moved[:2]).max() < 0.01, moved
    assert np.abs(later - held).max() < 2e-3, "the arm drifted after the ee_delta stream stopped"
    t0 = time.monotonic()
    delta.transform.translation.z = math.nan
    delta_pub.publish(delta)
    assert wait_until(lambda: any("ee_delta refused" in s.message for m in rec["diagnostics"].since(t0)
                                  for s in m.status), 15.0)
    pubs["arm_trajectory"].publish(trajectory(panda.ARM_JOINT_NAMES, [(home, 2.0)]))
    assert wait_until(lambda: np.abs(arm_q(rec) - home).max() < 0.01, 20.0)


def test_instruction_is_carried_out(stack):
    client, _, _ = stack
    final = client.say("put the yellow block in the purple bowl", timeout_s=120.0)
    assert final is not None and final["state"] == "succeeded", final
    truth = client.ground_truth()
    yellow = next(o for o in truth["objects"] if o["name"] == "yellow_block")
    bowl = next(o for o in truth["objects"] if o["name"] == "purple_bowl")
    assert np.linalg.norm(np.subtract(yellow["position"][:2], bowl["position"][:2])) < 0.065
    refused = client.say("fly me to the moon", timeout_s=20.0)
    assert refused["state"] == "refused" and refused["message"]


def test_a_client_of_the_interface_package_runs_a_task_cancels_it_mid_motion_and_queries(stack):
    """Only rclpy and ros_vla_interfaces: run_task with feedback, canceled while the arm moves
    (the arm holds where it is), then affordance and attribute queries."""
    client, rec, _ = stack
    node = client.node
    tasks = ActionClient(node, RunTask, "/run_task")
    assert tasks.wait_for_server(timeout_sec=30.0)
    feedback = []
    sent = tasks.send_goal_async(RunTask.Goal(instruction="put the red block in the green bowl"),
                                 feedback_callback=lambda m: feedback.append(m.feedback.status))
    assert wait_until(sent.done, 10.0) and sent.result().accepted

    def arm_moving():
        return max(abs(v) for v in rec["joints"].latest().velocity[:7]) > 0.05

    assert wait_until(lambda: any(f.state == "executing" for f in feedback) and arm_moving(), 90.0), \
        f"the arm never moved for the task: {[(f.state, f.message) for f in feedback]}"
    assert feedback[-1].plan == ["pick up the red block and place it in the green bowl"]
    sent.result().cancel_goal_async()
    result = sent.result().get_result_async()
    assert wait_until(result.done, 15.0), "the canceled task did not end"
    answer = result.result()
    assert answer.status == GoalStatus.STATUS_CANCELED and answer.result.state == "canceled", answer.result
    held = settled_arm_q(rec, 5.0)  # it stops at once, not at the end of the motion
    time.sleep(2.0)
    assert np.abs(arm_q(rec) - held).max() < 0.01, "the arm did not hold after the cancel"

    affordance = node.create_client(AffordanceQuery, "/cliport/affordance")
    assert affordance.wait_for_service(timeout_sec=20.0)
    texts = ["pick up the yellow block and place it in the green bowl", "tell me a joke"]
    asked = affordance.call_async(AffordanceQuery.Request(texts=texts))
    assert wait_until(asked.done, 30.0)
    assert asked.result().answered and len(asked.result().values) == 2 and asked.result().values[1] == 0.0

    attribute = node.create_client(AttributeQuery, "/attribute/check")
    assert attribute.wait_for_service(timeout_sec=20.0)
    checked = attribute.call_async(AttributeQuery.Request(question="is the block red?"))
    assert wait_until(checked.done, 30.0)
    assert checked.result().answer in ("yes", "no", "cannot_see") and checked.result().message


def test_base_watchdog_limits_and_goto(stack):
    _, rec, pubs = stack

    def base_x():
        return rec["odom"].latest().pose.pose.position.x

    x0 = base_x()
    command = TwistStamped()
    command.twist.linear.x = 2.0  # above the 0.5 m/s limit: must be clamped
    t0 = time.monotonic()

    def speeds():
        return [m.twist.linear.x for m in rec["cmd_vel"].since(t0)]

    # Streamed until the base has ramped up and moved 10 cm (the simulation may run slower
    # than real time on a loaded machine).
    while not (speeds() and max(speeds()) > 0.2 and base_x() > x0 + 0.1) and time.monotonic() - t0 < 30.0:
        pubs["base_cmd"].publish(command)
        time.sleep(0.05)
    t_last = time.monotonic()
    assert speeds() and max(speeds()) > 0.2 and base_x() > x0 + 0.1, "the base did not drive"
    assert max(speeds()) <= 0.5 + 1e-9, f"/cmd_vel {max(speeds()):.2f} m/s, over the 0.5 m/s limit"

    # base_motion's watchdog (0.5 s, timed exactly in test_safety.py::test_watchdog) stops
    # the base: nothing else sends a zero command here.
    def first_stop():
        with rec["cmd_vel"].lock:
            return next((t for t, m in rec["cmd_vel"].messages if t >= t_last and m.twist.linear.x == 0.0), None)

    assert wait_until(first_stop, 10.0), "base_motion kept the base moving after the commands stopped"
    assert wait_until(lambda: rec["odom"].latest().twist.twist.linear.x == 0.0, 10.0), "odom never read zero"
    x_stopped = base_x()
    time.sleep(0.5)
    assert abs(base_x() - x_stopped) < 1e-4
    pubs["goto"].publish(String(data="table"))
    assert wait_until(lambda: abs(base_x()) < 0.03 and rec["odom"].latest().twist.twist.linear.x == 0.0, 60.0)
