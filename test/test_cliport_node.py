"""cliport_node as a process over DDS with the shipped model: RGB-D frames of the simulated
demo scene in (published by the test, as the simulated camera would), a pick/place goal
out to a stand-in arm (the arm/pick_and_place action), the result, the heatmap picture,
affordances and refusals; through ros_vla_interfaces (the skill/pick_place action, the
cliport/affordance service) and the JSON compatibility topics."""

import json
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.action import ActionClient, ActionServer
from rclpy.executors import SingleThreadedExecutor
from ros_test_utils import isolated_domain, start_node_process, wait_until
from ros_vla_interfaces.action import ExecuteSkill, PickPlace
from ros_vla_interfaces.srv import AffordanceQuery
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from ros_vla.models import shipped
from ros_vla.nodes.common import CAMERA_PUB_QOS, COMMAND_QOS, STATUS_QOS
from ros_vla.paths import config_file, use_project_dds_profile
from ros_vla.perception import ros_messages as rm
from ros_vla.sim.goals import pose_in_frame
from ros_vla.sim.oracle import world_truth
from ros_vla.sim.scene import load_scene
from ros_vla.sim.world import SimWorld

pytestmark = pytest.mark.skipif(not (shipped("cliport_small") / "cliport.pt").exists(),
                                reason="no shipped CLIPort weights")
SCENE = load_scene(config_file("scene_tabletop.yaml"))
CAMERA_HZ = 5.0


class Harness:
    def __init__(self, context, rgb, depth_m, truth):
        self.node = rclpy.create_node("cliport_node_test", context=context)
        node = self.node
        cam = SCENE.camera("camera")
        self.rgb, self.depth_mm, self.cam = rgb, rm.depth_to_millimetres(depth_m), cam
        self.truth = truth
        self.colour_pub = node.create_publisher(Image, "/camera/camera/color/image_raw", CAMERA_PUB_QOS)
        self.depth_pub = node.create_publisher(Image, "/camera/camera/aligned_depth_to_color/image_raw",
                                               CAMERA_PUB_QOS)
        self.info_pub = node.create_publisher(CameraInfo, "/camera/camera/aligned_depth_to_color/camera_info",
                                              CAMERA_PUB_QOS)
        self.request_pub = node.create_publisher(String, "/skill/request", COMMAND_QOS)
        self.query_pub = node.create_publisher(String, "/skill/affordance_query", COMMAND_QOS)
        self.lock = threading.Lock()
        self.results, self.goals, self.affordances, self.heatmaps = [], [], [], []
        node.create_subscription(String, "/skill/result", lambda m: self.keep(self.results, json.loads(m.data)),
                                 STATUS_QOS)
        node.create_subscription(String, "/skill/affordance",
                                 lambda m: self.keep(self.affordances, json.loads(m.data)), STATUS_QOS)
        self.arm = ActionServer(node, PickPlace, "/arm/pick_and_place", self.on_pick_place)
        self.skill_client = ActionClient(node, ExecuteSkill, "/skill/pick_place")
        self.affordance_client = node.create_client(AffordanceQuery, "/cliport/affordance")
        node.create_subscription(Image, "/cliport/heatmaps", lambda m: self.keep(self.heatmaps, m), STATUS_QOS)
        self.camera_on = threading.Event()
        self._running = True
        self._camera = threading.Thread(target=self._publish_frames, daemon=True)
        self._camera.start()

    def keep(self, where: list, item):
        with self.lock:
            where.append(item)

    def on_pick_place(self, goal_handle):
        """A stand-in for arm_motion: every goal succeeds."""
        goal = goal_handle.request
        self.keep(self.goals, {"frame": goal.frame_id,
                               "pick": {"xyz": [goal.pick_position.x, goal.pick_position.y, goal.pick_position.z],
                                        "yaw": goal.pick_yaw},
                               "place": {"xyz": [goal.place_position.x, goal.place_position.y,
                                                 goal.place_position.z], "yaw": goal.place_yaw}})
        goal_handle.succeed()
        return PickPlace.Result(success=True, message="done", gripper_width_m=0.04)

    def _publish_frames(self):
        cam = self.cam
        while self._running:
            if self.camera_on.is_set():
                stamp = self.node.get_clock().now().to_msg()
                self.colour_pub.publish(rm.image_msg(self.rgb, "rgb8", stamp, cam.color_frame))
                self.depth_pub.publish(rm.image_msg(self.depth_mm, "16UC1", stamp, cam.color_frame))
                self.info_pub.publish(rm.camera_info_msg(cam.intrinsics, cam.width, cam.height, stamp,
                                                         cam.color_frame))
            time.sleep(1.0 / CAMERA_HZ)

    def send(self, publisher, payload: dict):
        assert wait_until(lambda: publisher.get_subscription_count() > 0, 30.0), "cliport_node is not listening"
        publisher.publish(String(data=json.dumps(payload)))

    def reply(self, where: list, request_id: str, timeout_s: float) -> dict | None:
        def found():
            with self.lock:
                return next((r for r in where if r["id"] == request_id), None)

        return wait_until(found, timeout_s)

    def close(self):
        self._running = False
        self._camera.join()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def stack():
    isolated_domain(61)
    use_project_dds_profile()
    world = SimWorld(SCENE, seed=0, renderer="gl")
    world.step(60)
    rgb, depth = world.render(SCENE.camera("camera"))
    truth = world_truth(world)
    world.close()
    process = start_node_process("ros_vla.nodes.cliport_node", "-p", "frame_timeout_s:=5.0", "-p", "threads:=1")
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    harness = Harness(context, rgb, depth, truth)
    executor.add_node(harness.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield harness
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        executor.shutdown()
        harness.close()
        rclpy.shutdown(context=context)


def test_garbage_and_empty_requests_are_refused_before_anything_moves(stack):
    for request_id, text in (("empty", "  "), ("garbage", "sing me a song about the weather"),
                             ("huge", "put the red block in the green bowl " * 30)):
        stack.send(stack.request_pub, {"id": request_id, "skill": "pick_place", "text": text, "args": {}})
        result = stack.reply(stack.results, request_id, 30.0)
        assert result is not None and result["success"] is False, text
        assert result["message"].startswith("cliport refused")
    assert not stack.goals, "a refused request must never reach the arm"


def test_no_frames_no_motion(stack):
    stack.camera_on.clear()
    stack.send(stack.request_pub, {"id": "blind", "skill": "pick_place", "text": "put the red block in the green bowl",
                                   "args": {}})
    result = stack.reply(stack.results, "blind", 90.0)
    assert result is not None and result["success"] is False
    assert "no fresh colour + depth frames" in result["message"] or "loading" in result["message"]
    assert not stack.goals


def test_instruction_becomes_a_pick_place_goal_at_the_named_objects(stack):
    stack.camera_on.set()
    stack.send(stack.request_pub, {"id": "red-green", "skill": "pick_place",
                                   "text": "put the red block in the green bowl", "args": {}})
    result = stack.reply(stack.results, "red-green", 90.0)
    assert result is not None and result["success"] is True, result
    goal = stack.goals[-1]
    assert goal["frame"] == "fr3_link0"
    arm_base = np.asarray(stack.truth["arm_base_in_map"])
    block, _ = pose_in_frame(stack.truth, "red_block", arm_base)
    bowl, _ = pose_in_frame(stack.truth, "green_bowl", arm_base)
    assert np.linalg.norm(np.asarray(goal["pick"]["xyz"][:2]) - block[:2]) < 0.015
    assert np.linalg.norm(np.asarray(goal["place"]["xyz"][:2]) - bowl[:2]) < SCENE.spawn.bowl_radius / 2
    assert wait_until(lambda: stack.heatmaps, 10.0), "no heatmap picture published"
    assert stack.heatmaps[-1].encoding == "rgb8"


def test_affordances_answer_every_text(stack):
    """One value per text, in [0, 1], 0 for a text the skill cannot take. (Confidence does
    not tell an absent colour from a present one: measured in models/cliport_small.)"""
    stack.camera_on.set()
    texts = ["put the red block in the green bowl", "pick up the blue block and place it in the purple bowl",
             "tell me a joke"]
    stack.send(stack.query_pub, {"id": "afford", "texts": texts})
    reply = stack.reply(stack.affordances, "afford", 90.0)
    assert reply is not None and reply["source"] == "cliport"
    red, blue, nonsense = reply["values"]
    assert nonsense == 0.0
    assert 0.15 < red <= 1.0 and 0.15 < blue <= 1.0, "feasible requests clear cliport_node's min_confidence"


def test_the_skill_action_runs_a_pick_and_place_with_feedback(stack):
    stack.camera_on.set()
    assert stack.skill_client.wait_for_server(timeout_sec=30.0)
    feedback = []
    sent = stack.skill_client.send_goal_async(
        ExecuteSkill.Goal(skill="pick_place", text="put the blue block in the purple bowl"),
        feedback_callback=lambda m: feedback.append(m.feedback.phase))
    assert wait_until(sent.done, 10.0) and sent.result().accepted
    result = sent.result().get_result_async()
    assert wait_until(result.done, 90.0)
    assert result.result().result.success, result.result().result
    assert "perceiving" in feedback
    arm_base = np.asarray(stack.truth["arm_base_in_map"])
    block, _ = pose_in_frame(stack.truth, "blue_block", arm_base)
    assert np.linalg.norm(np.asarray(stack.goals[-1]["pick"]["xyz"][:2]) - block[:2]) < 0.015


def test_the_affordance_service_answers_every_text_in_one_call(stack):
    stack.camera_on.set()
    assert stack.affordance_client.wait_for_service(timeout_sec=30.0)
    texts = ["put the red block in the green bowl", "tell me a joke"]
    future = stack.affordance_client.call_async(AffordanceQuery.Request(texts=texts))
    assert wait_until(future.done, 90.0)
    response = future.result()
    assert response.answered and response.source == "cliport", response
    red, nonsense = response.values
    assert 0.15 < red <= 1.0 and nonsense == 0.0
