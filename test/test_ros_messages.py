import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sensor_msgs.msg import Image

from ros_vla.perception import ros_messages as rm
from ros_vla.robot.kinematics import pose_from_xyz_rpy


@pytest.mark.parametrize("encoding,shape,dtype", [("rgb8", (4, 5, 3), np.uint8), ("16UC1", (4, 5), np.uint16),
                                                   ("32FC1", (4, 5), np.float32), ("mono8", (4, 5), np.uint8)])
def test_image_round_trip(encoding, shape, dtype):
    array = (np.arange(np.prod(shape)) % 250).astype(dtype).reshape(shape)
    msg = rm.image_msg(array, encoding, rm.time_msg(12.5), "cam")
    assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (4, 5, encoding, "cam")
    np.testing.assert_array_equal(rm.image_array(msg), array)


def test_image_with_row_padding_and_big_endian():
    msg = Image(height=2, width=3, encoding="16UC1", is_bigendian=1, step=8)
    rows = [np.array([1, 2, 3], ">u2").tobytes() + b"\0\0", np.array([4, 5, 6], ">u2").tobytes() + b"\0\0"]
    msg.data = b"".join(rows)
    np.testing.assert_array_equal(rm.image_array(msg), [[1, 2, 3], [4, 5, 6]])


def test_bad_images_are_refused():
    with pytest.raises(ValueError):
        rm.image_array(Image(height=2, width=3, encoding="rgb8", step=9, data=b"\0" * 5))
    with pytest.raises(ValueError):
        rm.image_array(Image(height=1, width=1, encoding="yuv422", step=2, data=b"\0\0"))
    with pytest.raises(ValueError):
        rm.image_msg(np.zeros((4, 5)), "rgb8", rm.time_msg(0), "cam")


def test_depth_to_millimetres_handles_invalid():
    depth = np.array([[0.0, 1.2345, np.nan, np.inf, 100.0]], np.float32)
    np.testing.assert_array_equal(rm.depth_to_millimetres(depth), [[0, 1234, 0, 0, 65535]])


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 1e6, allow_nan=False))
def test_time_round_trip(seconds):
    assert rm.time_seconds(rm.time_msg(seconds)) == pytest.approx(seconds, abs=1e-9)


def test_transform_and_camera_info():
    pose = pose_from_xyz_rpy([0.1, -0.2, 0.3], [0.4, -0.5, 0.6])
    msg = rm.transform_msg(pose, "a", "b", rm.time_msg(1.0))
    np.testing.assert_allclose(rm.matrix_from_transform(msg.transform), pose, atol=1e-12)
    k = np.array([[600.0, 0, 320], [0, 610.0, 240], [0, 0, 1]])
    info = rm.camera_info_msg(k, 640, 480, rm.time_msg(0), "cam")
    np.testing.assert_array_equal(rm.intrinsics_from_camera_info(info), k)
    assert info.p[0] == 600.0 and info.p[3] == 0.0 and info.distortion_model == "plumb_bob"
