"""The checks that keep bad messages out of the nodes (what `ros-vla bench fuzz` found)."""

import json

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from ros_vla import protocol
from ros_vla.nodes.common import FrameFilter
from ros_vla.perception.ros_messages import camera_info_msg, camera_info_problem, image_msg, image_problem, time_msg


@pytest.mark.parametrize("text", ["[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
                                  "1" * 10_000, "", "\ufffd\ufffd",
                                  "[]", "null", '{"state": 1, "message": "x"}'])
def test_malformed_payloads_are_protocol_errors_not_crashes(text):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode("base_status", text)


def test_pick_place_targets_must_be_finite():
    goal = {"id": "a", "frame": "fr3_link0", "pick": {"xyz": [0.5, 0.0, 0.02]}, "place": {"xyz": [0.5, 0.2, 0.05]}}
    assert protocol.decode("pick_place", json.dumps(goal))
    for bad in ([float("nan"), 0.0, 0.0], [1e999, 0.0, 0.0], [True, 0.0, 0.0]):
        goal["pick"]["xyz"] = bad
        with pytest.raises(protocol.ProtocolError, match="finite"):
            protocol.decode("pick_place", json.dumps(goal))


def test_ground_truth_outside_the_scene_is_not_the_simulators():
    truth = {"frame": "map", "seed": 0, "base_pose": [0.0, 0.0, 0.0],
             "objects": [{"name": "red_block", "position": [0.5, 0.0, 0.8], "orientation_xyzw": [0, 0, 0, 1]}]}
    assert protocol.decode("ground_truth", json.dumps(truth))
    for field, value in (("position", [1e308, 0.0, 0.8]), ("orientation_xyzw", [0, 0, 0, 0])):
        broken = json.loads(json.dumps(truth))
        broken["objects"][0][field] = value
        with pytest.raises(protocol.ProtocolError):
            protocol.decode("ground_truth", json.dumps(broken))
    for seed in (-1, True, 0.5):
        with pytest.raises(protocol.ProtocolError, match="seed"):
            protocol.decode("ground_truth", json.dumps({**truth, "seed": seed}))
    with pytest.raises(protocol.ProtocolError, match="seed"):  # the render copy needs it (found by the fuzz)
        protocol.decode("ground_truth", json.dumps({k: v for k, v in truth.items() if k != "seed"}))


def test_affordance_values_and_queries_are_bounded():
    with pytest.raises(protocol.ProtocolError, match="finite"):
        protocol.decode("affordance", json.dumps({"id": "a", "source": "x", "values": [float("nan")]}))
    with pytest.raises(protocol.ProtocolError, match="at most"):
        protocol.decode("affordance_query", json.dumps({"id": "a", "texts": ["t"] * 65}))


def test_image_and_camera_info_checks():
    frame = image_msg(np.zeros((480, 640, 3), np.uint8), "rgb8", time_msg(1.0), "camera")
    assert image_problem(frame, ("rgb8",)) == ""
    assert "encoding" in image_problem(frame, ("16UC1",))
    frame.data = bytes(frame.data[:1000])
    assert "bytes" in image_problem(frame, ("rgb8",))
    tiny = image_msg(np.zeros((3, 1, 3), np.uint8), "rgb8", time_msg(1.0), "camera")
    assert "size" in image_problem(tiny, ("rgb8",))
    info = camera_info_msg(np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]]), 640, 480, time_msg(1.0), "c")
    assert camera_info_problem(info) == ""
    info.k[0] = float("nan")
    assert camera_info_problem(info)
    assert camera_info_problem(CameraInfo())


def test_frame_filter_keeps_the_last_good_frame():
    kept = []
    keep = FrameFilter(kept.append, lambda m: image_problem(m, ("rgb8",)))
    good = image_msg(np.zeros((48, 64, 3), np.uint8), "rgb8", time_msg(1.0), "camera")
    bad = image_msg(np.zeros((48, 64), np.uint16), "16UC1", time_msg(2.0), "camera")
    keep(good)
    keep(bad)
    assert kept == [good] and keep.rejected == 1 and "encoding" in keep.last_problem
