"""numpy <-> ROS message conversions (what cv_bridge and tf2 would give on a full ROS install).

Only message types are imported here, never rclpy, so this is usable from plain Python.
"""

from __future__ import annotations

import sys

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Transform, TransformStamped
from sensor_msgs.msg import CameraInfo, Image

from ros_vla.robot.kinematics import matrix_from_quaternion, quaternion_from_matrix

# encoding -> (numpy dtype, channels), the subset of sensor_msgs/image_encodings we use.
IMAGE_ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "16UC1": (np.uint16, 1),
    "mono16": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def time_msg(seconds: float) -> Time:
    nanoseconds = int(round(seconds * 1e9))
    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def duration_msg(seconds: float) -> Duration:
    """A builtin_interfaces Duration (a trajectory point's time_from_start)."""
    nanoseconds = int(round(seconds * 1e9))
    return Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def time_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def image_msg(array: np.ndarray, encoding: str, stamp: Time, frame_id: str) -> Image:
    dtype, channels = IMAGE_ENCODINGS[encoding]
    array = np.ascontiguousarray(array, dtype=dtype)
    if array.ndim != (3 if channels > 1 else 2) or (channels > 1 and array.shape[2] != channels):
        raise ValueError(f"{encoding} needs shape (H, W{', %d' % channels if channels > 1 else ''}), got {array.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = int(sys.byteorder == "big")
    msg.step = array.shape[1] * channels * np.dtype(dtype).itemsize
    msg.data = array.tobytes()
    return msg


def image_array(msg: Image) -> np.ndarray:
    """The image as an (H, W[, C]) array; honours row padding and byte order."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"unsupported image encoding '{msg.encoding}'")
    dtype, channels = IMAGE_ENCODINGS[msg.encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = msg.width * channels * dtype.itemsize
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise ValueError(f"image data too short: step {msg.step}, {len(msg.data)} bytes for {msg.height} rows")
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :row_bytes]
    array = rows.copy().view(dtype).astype(dtype.newbyteorder("="))
    shape = (msg.height, msg.width, channels) if channels > 1 else (msg.height, msg.width)
    return array.reshape(shape)


MIN_IMAGE_SIDE_PX = 32  # smaller frames are not a camera's: models resize from at least this
MAX_IMAGE_PIXELS = 4096 * 4096


def image_problem(msg: Image, encodings: tuple[str, ...]) -> str:
    """Why a frame cannot be used ('' if it can): an encoding not in `encodings`, a size no
    camera has, or data that does not fill its rows. Nodes keep only frames without one,
    so a bad message never replaces the newest good frame."""
    if msg.encoding not in encodings:
        return f"encoding '{msg.encoding[:20]}', expected {' or '.join(encodings)}"
    if min(msg.width, msg.height) < MIN_IMAGE_SIDE_PX or msg.width * msg.height > MAX_IMAGE_PIXELS:
        return f"size {msg.width}x{msg.height}"
    dtype, channels = IMAGE_ENCODINGS[msg.encoding]
    if msg.step < msg.width * channels * np.dtype(dtype).itemsize or len(msg.data) < msg.step * msg.height:
        return f"{len(msg.data)} bytes do not fill {msg.height} rows of step {msg.step}"
    return ""


def camera_info_problem(msg: CameraInfo) -> str:
    """Why a camera_info cannot be used ('' if it can): no finite pinhole K with positive
    focal lengths, or no image size."""
    k = np.asarray(msg.k, float)
    if k.size != 9 or not np.all(np.isfinite(k)):
        return "K is not nine finite numbers"
    if k[0] <= 0 or k[4] <= 0 or k[8] != 1.0:
        return f"K is not a pinhole matrix (fx {k[0]:g}, fy {k[4]:g}, K[2][2] {k[8]:g})"
    if min(msg.width, msg.height) < MIN_IMAGE_SIDE_PX or msg.width * msg.height > MAX_IMAGE_PIXELS:
        return f"size {msg.width}x{msg.height}"
    return ""


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """Metres (0 = no return) to 16UC1 millimetres as realsense-ros publishes aligned depth."""
    depth = np.nan_to_num(np.asarray(depth_m, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)


def camera_info_msg(intrinsics: np.ndarray, width: int, height: int, stamp: Time, frame_id: str) -> CameraInfo:
    """Pinhole camera_info with no distortion (realsense-ros: colour is rectified)."""
    k = np.asarray(intrinsics, float)
    msg = CameraInfo()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = k.reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = np.hstack([k, np.zeros((3, 1))]).reshape(-1).tolist()
    return msg


def intrinsics_from_camera_info(msg: CameraInfo) -> np.ndarray:
    return np.asarray(msg.k, float).reshape(3, 3)


def transform_msg(pose: np.ndarray, parent: str, child: str, stamp: Time) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    msg.transform = transform_from_matrix(pose)
    return msg


def transform_from_matrix(pose: np.ndarray) -> Transform:
    out = Transform()
    out.translation.x, out.translation.y, out.translation.z = (float(v) for v in pose[:3, 3])
    quat = quaternion_from_matrix(pose)
    out.rotation.x, out.rotation.y, out.rotation.z, out.rotation.w = (float(v) for v in quat)
    return out


def matrix_from_transform(transform: Transform) -> np.ndarray:
    pose = np.eye(4)
    r = transform.rotation
    pose[:3, :3] = matrix_from_quaternion([r.x, r.y, r.z, r.w])
    t = transform.translation
    pose[:3, 3] = [t.x, t.y, t.z]
    return pose
