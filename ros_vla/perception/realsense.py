"""RealSense RGB-D cameras through pyrealsense2: device discovery, stream configuration,
frame grabbing, depth-to-colour alignment, intrinsics, device-clock timestamps and
reconnection.

What comes out is what realsense-ros publishes with `align_depth.enable`: an rgb8 colour
image and a depth image aligned to it (here always in millimetres), both described by the
colour stream's intrinsics and carrying one stamp per frameset. No rclpy here
(ros_vla/nodes/realsense_node.py publishes), so tests and tools use the same code.

A process that also runs rclpy must import rclpy before this module: when pyrealsense2's
pybind11 extension loads first, the process crashes at exit (SIGSEGV) once an rclpy
executor has existed (pyrealsense2 2.59.1 with rclpy from ROS 2 Kilted).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyrealsense2 as rs
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo

from ros_vla.perception import ros_messages as rm


class CameraError(RuntimeError):
    """The camera cannot stream now: absent, unplugged, silent or unusable. pyrealsense2
    raises RuntimeError for its own failures, so one `except RuntimeError` covers both."""


class PlaybackFinished(Exception):
    """A recording played without repeat has reached its end (not an error: nothing to retry)."""


@dataclass(frozen=True)
class StreamSettings:
    width: int = 640
    height: int = 480
    fps: int = 30


@dataclass(frozen=True)
class CameraSettings:
    """Which camera to stream and how. `serial_no` empty: the first device found;
    `bag_file` set: play that recording instead of a live device (its own streams and sizes)."""

    serial_no: str = ""
    bag_file: str = ""
    repeat_playback: bool = True
    color: StreamSettings = StreamSettings()
    depth: StreamSettings = StreamSettings()


# ---------------------------------------------------------------------------------------
# Devices


@dataclass(frozen=True)
class DeviceDescription:
    name: str
    serial_no: str
    firmware: str
    usb: str

    def __str__(self) -> str:
        return f"{self.name} (serial {self.serial_no})"


def describe_device(device: rs.device) -> DeviceDescription:
    def info(key):
        return device.get_info(key) if device.supports(key) else ""

    return DeviceDescription(info(rs.camera_info.name), info(rs.camera_info.serial_number),
                             info(rs.camera_info.firmware_version), info(rs.camera_info.usb_type_descriptor))


def list_devices(context: rs.context | None = None) -> list[DeviceDescription]:
    """The RealSense devices connected now."""
    context = context if context is not None else rs.context()
    return [describe_device(device) for device in context.query_devices()]


def choose_device(devices: list[DeviceDescription], serial_no: str) -> DeviceDescription:
    """The device with this serial number, or the first one when `serial_no` is empty."""
    # realsense-ros accepts a leading underscore so YAML keeps an all-digit serial a string.
    wanted = serial_no.strip().lstrip("_")
    if not devices:
        raise CameraError("no RealSense device connected")
    if not wanted:
        return devices[0]
    for device in devices:
        if device.serial_no == wanted:
            return device
    raise CameraError(f"RealSense {wanted} is not connected (connected: {', '.join(map(str, devices))})")


def pipeline_config(settings: CameraSettings, serial_no: str) -> rs.config:
    """The rs.config for a live device with this serial number, or for the recording in
    `settings.bag_file` (then `serial_no` is ignored)."""
    config = rs.config()
    if settings.bag_file:
        config.enable_device_from_file(settings.bag_file, settings.repeat_playback)
        # A recording offers only the streams it holds, in their recorded sizes and formats.
        config.enable_stream(rs.stream.color)
        config.enable_stream(rs.stream.depth)
        return config
    config.enable_device(serial_no)
    color, depth = settings.color, settings.depth
    config.enable_stream(rs.stream.color, color.width, color.height, rs.format.rgb8, color.fps)
    config.enable_stream(rs.stream.depth, depth.width, depth.height, rs.format.z16, depth.fps)
    return config


# ---------------------------------------------------------------------------------------
# Intrinsics -> camera_info

# librealsense model -> (CameraInfo.distortion_model, coefficients it takes). As realsense-ros
# does, the Brown-Conrady family goes out as plumb_bob with the device's (k1, k2, p1, p2, k3),
# which is OpenCV's order, and Kannala-Brandt as equidistant (k1..k4).
ROS_DISTORTION_MODELS = {
    rs.distortion.none: ("plumb_bob", 0),
    rs.distortion.brown_conrady: ("plumb_bob", 5),
    rs.distortion.inverse_brown_conrady: ("plumb_bob", 5),
    rs.distortion.modified_brown_conrady: ("plumb_bob", 5),
    rs.distortion.kannala_brandt4: ("equidistant", 4),
}


@dataclass(frozen=True, eq=False)
class Calibration:
    """One stream's intrinsics as CameraInfo carries them."""

    width: int
    height: int
    k: np.ndarray  # 3x3
    distortion_model: str
    d: tuple[float, ...]


def calibration_from_intrinsics(intrinsics: rs.intrinsics) -> Calibration:
    if intrinsics.model not in ROS_DISTORTION_MODELS:
        raise CameraError(f"{intrinsics.model} has no ROS camera_info distortion model")
    model, count = ROS_DISTORTION_MODELS[intrinsics.model]
    k = np.array([[intrinsics.fx, 0.0, intrinsics.ppx], [0.0, intrinsics.fy, intrinsics.ppy], [0.0, 0.0, 1.0]])
    d = tuple(float(c) for c in intrinsics.coeffs[:count]) if count else (0.0,) * 5
    return Calibration(int(intrinsics.width), int(intrinsics.height), k, model, d)


def camera_info_msg(calibration: Calibration, stamp: Time, frame_id: str) -> CameraInfo:
    msg = rm.camera_info_msg(calibration.k, calibration.width, calibration.height, stamp, frame_id)
    msg.distortion_model = calibration.distortion_model
    msg.d = list(calibration.d)
    return msg


# ---------------------------------------------------------------------------------------
# Pixels

# Channel selection that turns each supported colour format into RGB.
_RGB_CHANNELS = {
    rs.format.rgb8: np.s_[..., :],
    rs.format.bgr8: np.s_[..., ::-1],
    rs.format.rgba8: np.s_[..., :3],
    rs.format.bgra8: np.s_[..., 2::-1],
}


def rgb_array(frame: rs.video_frame) -> np.ndarray:
    """(H, W, 3) uint8 copy of a colour frame (the SDK reuses the frame's memory)."""
    fmt = frame.get_profile().format()
    if fmt not in _RGB_CHANNELS:
        raise CameraError(f"colour format {fmt} is not supported (rgb8, bgr8, rgba8, bgra8 are)")
    return np.array(np.asanyarray(frame.get_data())[_RGB_CHANNELS[fmt]], order="C")


def depth_millimetres(raw: np.ndarray, units_m: float) -> np.ndarray:
    """Z16 depth in the device's units -> uint16 millimetres, 0 = no depth. The unit is
    1 mm on most D4xx but 0.1 mm on a D405 or after changing the depth_units option."""
    if math.isclose(units_m, 0.001, rel_tol=1e-6):
        return np.array(raw, np.uint16)  # already millimetres: skip the float round trip
    return rm.depth_to_millimetres(np.asarray(raw, np.float32) * np.float32(units_m))


# ---------------------------------------------------------------------------------------
# Timestamps

# Domains whose timestamps are already host time (ms since the epoch): system_time is the
# host's clock at arrival, global_time is librealsense's own drift-corrected mapping of the
# device clock (on by default for D4xx).
HOST_CLOCK_DOMAINS = (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time)


class DeviceClock:
    """Maps device timestamps (ms, device clock) to host time (s).

    host = device + offset, where offset is the smallest (host arrival - device time) seen
    over the last `window_s` of device time: transport delay only ever adds to that
    difference, so the minimum is the least delayed frame's. A sliding window follows the
    slow drift between the two clocks. A stamp is never later than its frame's arrival, and
    stamps increase as frames arrive: a new minimum stamps its frame exactly at its arrival,
    after every earlier arrival and so after every earlier stamp, and a minimum leaving the
    window only moves stamps forward.
    A device clock going backwards (camera reset after a reconnect, a recording looping)
    starts a new estimate.
    """

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        # (device_s, offset_s) with increasing offsets: the front is the window's minimum.
        self._candidates: deque[tuple[float, float]] = deque()
        self._last_device_s = -math.inf

    def host_time(self, device_ms: float, host_arrival_s: float) -> float:
        device_s = device_ms / 1000.0
        if device_s < self._last_device_s:
            self._candidates.clear()
        self._last_device_s = device_s
        offset = host_arrival_s - device_s
        while self._candidates and self._candidates[-1][1] >= offset:
            self._candidates.pop()
        self._candidates.append((device_s, offset))
        while self._candidates[0][0] < device_s - self.window_s:
            self._candidates.popleft()
        return device_s + self._candidates[0][1]


# ---------------------------------------------------------------------------------------
# Frames


@dataclass(eq=False)
class RgbdFrame:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth_mm: np.ndarray  # (H, W) uint16, aligned to rgb, 0 = no depth
    calibration: Calibration  # of the colour stream, which the aligned depth shares
    stamp_s: float  # host time of the colour frame
    frame_number: int


class FramesetConverter:
    """Aligns a frameset's depth to its colour and turns both into numpy with a host-time stamp.
    One per streaming session: its calibration and clock estimate belong to that session."""

    def __init__(self, restamp: bool, clock_window_s: float = 10.0):
        # Recordings are always restamped: their clocks, host-time ones included, ran in the past.
        self._restamp = restamp
        self._align = rs.align(rs.stream.color)
        self._device_clock = DeviceClock(clock_window_s)
        self._calibration: Calibration | None = None
        self._last_color: tuple[int, float] | None = None

    def convert(self, frames: rs.composite_frame, arrival_s: float) -> RgbdFrame | None:
        """None for a frameset without both streams (a syncer's first ones, before it pairs
        them) or whose colour frame was converted already: a pipeline repeats the slower
        stream's last frame in the next frameset, e.g. with depth faster than colour or
        where a recording loops."""
        color = frames.get_color_frame()
        if not color or not frames.get_depth_frame():
            return None
        color_id = (color.get_frame_number(), color.get_timestamp())
        if color_id == self._last_color:
            return None
        self._last_color = color_id
        aligned = self._align.process(frames)
        color, depth = aligned.get_color_frame(), aligned.get_depth_frame()
        if self._calibration is None:
            self._calibration = calibration_from_intrinsics(color.get_profile().as_video_stream_profile().intrinsics)
        return RgbdFrame(
            rgb=rgb_array(color),
            depth_mm=depth_millimetres(np.asanyarray(depth.get_data()), depth.get_units()),
            calibration=self._calibration,
            stamp_s=self.stamp(color, arrival_s),
            frame_number=color.get_frame_number(),
        )

    def stamp(self, frame: rs.frame, arrival_s: float) -> float:
        if frame.get_frame_timestamp_domain() in HOST_CLOCK_DOMAINS and not self._restamp:
            return frame.get_timestamp() / 1000.0
        return self._device_clock.host_time(frame.get_timestamp(), arrival_s)


class RealSenseCamera:
    """One RealSense, or a recording of one, streamed through an rs.pipeline: start, read, stop.

    `now` gives host (ROS) time in seconds. The factories are rs.context and rs.pipeline
    except in tests.
    """

    def __init__(self, settings: CameraSettings, now: Callable[[], float], clock_window_s: float = 10.0,
                 context_factory: Callable[[], rs.context] = rs.context,
                 pipeline_factory: Callable[[rs.context], rs.pipeline] = rs.pipeline):
        self.settings = settings
        self._now = now
        self._clock_window_s = clock_window_s
        self._context_factory = context_factory
        self._pipeline_factory = pipeline_factory
        self._pipeline = None
        self._playback: rs.playback | None = None
        self._converter: FramesetConverter | None = None
        self._last_frame_s = 0.0  # time.monotonic() of the last complete frameset

    def start(self) -> str:
        """Starts streaming and says from what; raises RuntimeError (CameraError or the SDK's) if it cannot."""
        # A fresh context each time: its device list then sees a replugged camera, and it
        # holds no playback device left over from an earlier start.
        context = self._context_factory()
        if self.settings.bag_file:
            serial_no, source = "", f"recording {self.settings.bag_file}"
        else:
            # Checked here because pipeline.start waits 15 s for an absent device.
            device = choose_device(list_devices(context), self.settings.serial_no)
            serial_no, source = device.serial_no, str(device)
        pipeline = self._pipeline_factory(context)
        profile = pipeline.start(pipeline_config(self.settings, serial_no))
        self._pipeline = pipeline  # from here on stop() must stop it, whatever fails next
        device = profile.get_device()
        self._playback = device.as_playback() if device.is_playback() else None
        self._converter = FramesetConverter(restamp=self._playback is not None, clock_window_s=self._clock_window_s)
        self._last_frame_s = time.monotonic()
        return source

    def read(self, timeout_s: float) -> RgbdFrame | None:
        """The next frame, or None for a frameset that gives none. Raises CameraError when no
        frames, or no colour and depth pair, came for `timeout_s` (one stream alone is as
        broken as none), PlaybackFinished at the end of a recording played once."""
        arrived, frames = self._pipeline.try_wait_for_frames(int(timeout_s * 1000))
        arrival_s = self._now()
        if not arrived:
            if self._playback is not None and self._playback.current_status() == rs.playback_status.stopped:
                raise PlaybackFinished(self.settings.bag_file)
            raise CameraError(f"no frames for {timeout_s:g} s")
        frame = self._converter.convert(frames, arrival_s)
        if frame is not None:
            self._last_frame_s = time.monotonic()
        elif time.monotonic() - self._last_frame_s > timeout_s:
            raise CameraError(f"no frameset with both colour and depth for {timeout_s:g} s")
        return frame

    def stop(self):
        if self._pipeline is None:
            return
        pipeline, self._pipeline = self._pipeline, None
        try:
            pipeline.stop()
        except RuntimeError:
            pass  # an unplugged device can fail to stop; it is gone either way


class ReconnectingCamera:
    """Keeps a camera streaming whatever happens to it. When it cannot start, or frames stop,
    it stops the pipeline, reports a warning and tries again every `retry_period_s`; camera
    trouble never raises out of `next_frame`. `report(level, message)` takes "ok" or "warn".
    `clock` and `sleep` are time.monotonic and time.sleep except in tests."""

    # Longest sleep while waiting to retry, so that a caller stopping its loop is not kept waiting.
    MAX_IDLE_S = 0.1

    def __init__(self, camera: RealSenseCamera, report: Callable[[str, str], None], frame_timeout_s: float = 2.0,
                 retry_period_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.camera = camera
        self.streaming = False
        self.finished = False
        self._report = report
        self._frame_timeout_s = frame_timeout_s
        self._retry_period_s = retry_period_s
        self._clock = clock
        self._sleep = sleep
        self._next_start_s = -math.inf

    def next_frame(self) -> RgbdFrame | None:
        """A frame, or None after a step of starting, waiting or recovering."""
        if self.finished:
            self._sleep(self.MAX_IDLE_S)
            return None
        if not self.streaming:
            return self._try_start()
        try:
            return self.camera.read(self._frame_timeout_s)
        except PlaybackFinished as end:
            self.close()
            self.finished = True
            self._report("ok", f"recording {end} played to its end")
        except RuntimeError as error:
            self.close()
            self._next_start_s = self._clock() + self._retry_period_s
            self._report("warn", f"camera stopped streaming: {error}; restarting every {self._retry_period_s:g} s")
        return None

    def _try_start(self) -> None:
        wait_s = self._next_start_s - self._clock()
        if wait_s > 0:
            self._sleep(min(wait_s, self.MAX_IDLE_S))
            return None
        try:
            source = self.camera.start()
        except RuntimeError as error:
            self.camera.stop()  # a pipeline that started before the failure
            self._next_start_s = self._clock() + self._retry_period_s
            self._report("warn", f"cannot start the camera: {error}; retrying every {self._retry_period_s:g} s")
            return None
        self.streaming = True
        self._report("ok", f"streaming from {source}")
        return None

    def close(self):
        self.camera.stop()
        self.streaming = False
