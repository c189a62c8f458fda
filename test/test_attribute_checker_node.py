"""attribute_checker_node as a process over DDS, with the shipped MIAVLM weights.

The test publishes the views of a rendered benchmark scene (ros_vla.miavlm.data) on three
camera namespaces, stamped with the test's clock; a fourth namespace in the node's view
list never gets a frame. Timing bounds are loose on purpose: the machine has 2 cores
shared with other work.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from ros_test_utils import isolated_domain, start_node_process, wait_until
from ros_vla_interfaces.srv import AttributeQuery
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from ros_vla import protocol
from ros_vla.miavlm.config import KINDS, SIZES, BenchmarkConfig
from ros_vla.miavlm.data import SceneRenderer, is_test_scene
from ros_vla.nodes.common import CAMERA_PUB_QOS, COMMAND_QOS, STATUS_QOS
from ros_vla.paths import use_project_dds_profile
from ros_vla.perception.ros_messages import camera_info_msg, image_msg

BENCHMARK = BenchmarkConfig()
SCENE = next(i for i in range(100) if is_test_scene(i, BENCHMARK))
PUBLISHED = ("cam_a", "cam_b", "cam_c")
NEVER_PUBLISHED = "cam_missing"
CAMERA_HZ = 5.0
# Longer than the stalls of a starved CI machine, which would otherwise leave a live view out.
STALE_VIEW_S = 3.0


class Harness:
    """The test's side: cameras (switchable per namespace), queries, and the answers."""

    def __init__(self, context, views: np.ndarray):
        self.node = rclpy.create_node("attribute_checker_test", context=context)
        self.views = views
        self.images = {ns: self.node.create_publisher(Image, f"/{ns}/camera/color/image_raw", CAMERA_PUB_QOS)
                       for ns in PUBLISHED}
        # One view announces its intrinsics (the benchmark's focal length: no crop); the
        # others have none, so the node takes their largest centred square: the same here.
        self.info = self.node.create_publisher(CameraInfo, f"/{PUBLISHED[0]}/camera/color/camera_info",
                                               CAMERA_PUB_QOS)
        self.query_pub = self.node.create_publisher(String, "/attribute/query", COMMAND_QOS)
        self._answers: list[dict] = []
        self._lock = threading.Lock()
        self.node.create_subscription(String, "/attribute/answer", self._on_answer, STATUS_QOS)
        self.on = {ns: threading.Event() for ns in PUBLISHED}
        self._running = True
        self._camera = threading.Thread(target=self._publish_frames, daemon=True)
        self._camera.start()

    def _on_answer(self, msg: String):
        with self._lock:
            self._answers.append(protocol.decode("attribute_answer", msg.data))

    def _publish_frames(self):
        intrinsics = np.array([[BENCHMARK.focal_px, 0, 31.5], [0, BENCHMARK.focal_px, 31.5], [0, 0, 1]])
        while self._running:
            stamp = self.node.get_clock().now().to_msg()
            for index, ns in enumerate(PUBLISHED):
                if self.on[ns].is_set():
                    self.images[ns].publish(image_msg(self.views[index], "rgb8", stamp, f"{ns}_optical_frame"))
            self.info.publish(camera_info_msg(intrinsics, 64, 64, stamp, f"{PUBLISHED[0]}_optical_frame"))
            time.sleep(1.0 / CAMERA_HZ)

    def ask(self, payload: str, request_id: str, timeout_s: float = 20.0) -> dict:
        assert wait_until(lambda: self.query_pub.get_subscription_count() > 0, 20.0), "nobody reads attribute/query"
        with self._lock:
            seen = len(self._answers)
        self.query_pub.publish(String(data=payload))

        def reply():
            with self._lock:
                return next((a for a in self._answers[seen:] if a["id"] == request_id), None)

        answer = wait_until(reply, timeout_s)
        assert answer is not None, f"no answer to {payload!r} within {timeout_s} s"
        return answer

    def question(self, request_id: str, question: str) -> dict:
        return self.ask(json.dumps({"id": request_id, "question": question}), request_id)

    def cameras(self, *namespaces: str):
        for ns in PUBLISHED:
            (self.on[ns].set if ns in namespaces else self.on[ns].clear)()

    def close(self):
        self._running = False
        self._camera.join()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def scene():
    renderer = SceneRenderer(BENCHMARK)
    try:
        return renderer.scene(SCENE)
    finally:
        renderer.close()


@pytest.fixture(scope="module")
def checker(scene):
    isolated_domain(61)
    use_project_dds_profile()
    node = start_node_process("ros_vla.nodes.attribute_checker_node",
                              "-p", f"views:=[{','.join(PUBLISHED)},{NEVER_PUBLISHED}]",
                              "-p", f"stale_view_s:={STALE_VIEW_S}")
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    harness = Harness(context, scene.images[:len(PUBLISHED)])
    executor.add_node(harness.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        harness.cameras(*PUBLISHED)
        # The node answers queries in order, after it has loaded the weights: the first
        # answer comes once it is ready.
        warm_up = harness.ask(json.dumps({"id": "warm-up", "question": "is the block red?"}), "warm-up", 90.0)
        assert warm_up["answer"] in ("yes", "no"), f"attribute_checker_node is not ready: {warm_up}"
        yield harness
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        executor.shutdown()
        harness.close()
        rclpy.shutdown(context=context)


def test_answers_about_the_rendered_object_with_the_views_it_has(checker, scene):
    # Size questions here; colour and shape are checked without ROS in test_miavlm.py.
    checker.cameras(*PUBLISHED)
    kind, size = KINDS[scene.kind], SIZES[scene.size]
    wrong = next(s for s in SIZES if s != size)
    yes = checker.question("size-yes", f"is the {kind} {size}?")
    no = checker.question("size-no", f"is the {kind} {wrong}?")
    assert (yes["answer"], no["answer"]) == ("yes", "no")
    for answer in (yes, no):
        assert answer["views"] == list(PUBLISHED), "every fresh view is used, the missing one is not"
        assert 0.5 <= answer["confidence"] <= 1.0
        assert len(answer["view_weights"]) == len(PUBLISHED) and sum(answer["view_weights"]) == pytest.approx(1, 1e-3)
        assert f"{NEVER_PUBLISHED}: no frame yet" in answer["message"]


def test_the_check_service_gives_the_same_answer_as_the_topic(checker, scene):
    checker.cameras(*PUBLISHED)
    client = checker.node.create_client(AttributeQuery, "/attribute/check")
    assert client.wait_for_service(timeout_sec=20.0)
    question = f"is the {KINDS[scene.kind]} {SIZES[scene.size]}?"
    future = client.call_async(AttributeQuery.Request(question=question))
    assert wait_until(future.done, 20.0)
    response = future.result()
    over_topic = checker.question("size-again", question)
    assert response.answer == over_topic["answer"] == AttributeQuery.Response.YES
    assert list(response.views) == over_topic["views"] == list(PUBLISHED)
    assert response.confidence == pytest.approx(over_topic["confidence"], abs=1e-3)
    refused = client.call_async(AttributeQuery.Request(question="what is the meaning of life?"))
    assert wait_until(refused.done, 20.0)
    assert refused.result().answer == "cannot_see" and refused.result().message.startswith("refused")


def test_a_view_that_stops_is_left_out(checker, scene):
    checker.cameras(*PUBLISHED[:2])
    time.sleep(STALE_VIEW_S + 1.0)
    answer = checker.question("two-views", f"is the {KINDS[scene.kind]} {SIZES[scene.size]}?")
    assert answer["views"] == list(PUBLISHED[:2])
    assert f"{PUBLISHED[2]}: newest frame is" in answer["message"] and "s old" in answer["message"]


def test_no_fresh_view_means_cannot_see(checker):
    checker.cameras()
    time.sleep(STALE_VIEW_S + 1.0)
    answer = checker.question("blind", "is the block red?")
    assert answer["answer"] == "cannot_see" and answer["confidence"] == 0 and answer["views"] == []
    assert answer["message"].startswith("no usable camera view")


@pytest.mark.parametrize("payload, request_id, reason", [
    ("this is not json", "", "not JSON"),
    (json.dumps({"id": "no-question"}), "no-question", "missing field 'question'"),
    (json.dumps({"id": "empty", "question": ""}), "empty", "empty question"),
    (json.dumps({"id": "garbage", "question": "qwpoe zmxn?"}), "garbage", "names no colour, shape or size"),
    (json.dumps({"id": "number", "question": 42}), "number", "must be str"),
])
def test_malformed_queries_are_refused(checker, payload, request_id, reason):
    checker.cameras(*PUBLISHED)
    answer = checker.ask(payload, request_id)
    assert answer["answer"] == "cannot_see" and answer["confidence"] == 0 and answer["views"] == []
    assert answer["message"].startswith("refused:") and reason in answer["message"]
