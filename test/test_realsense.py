"""The RealSense camera code through the real SDK, without a camera.

An rs.software_device with a colour and a depth sensor of known intrinsics, extrinsics and
depth units stands in for the camera; its frames go through the same conversion, alignment
and timestamping as a live device's, a recording made from it plays back through a real
rs.pipeline, and the node publishes that recording to a separate rclpy subscriber.

SDK limits found here (pyrealsense2 2.59.1): software_device.add_to(context) registers
nothing (the context keeps only a weak reference to a device-info it creates and drops), so
a live pipeline cannot open a software device: SoftwarePipeline stands in for rs.pipeline
there. The recorder writes rosbag2 (.db3) only ("Output file must have .db3 extension"), so
playback is tested on .db3; the SDK still reads ROS1 .bag through the same
enable_device_from_file, but nothing here can write one.
"""

# First: rclpy's pybind11 module must load before pyrealsense2's, or the process crashes at exit.
import rclpy

# isort: split
import os
import signal
import subprocess
import time
from types import SimpleNamespace

import numpy as np
import pyrealsense2 as rs
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from hypothesis import given, settings
from hypothesis import strategies as st
from ros_test_utils import start_node_process
from sensor_msgs.msg import CameraInfo, Image

from ros_vla.nodes.common import SENSOR_QOS, STATUS_QOS
from ros_vla.perception import ros_messages as rm
from ros_vla.perception.realsense import (
    CameraError,
    CameraSettings,
    DeviceClock,
    DeviceDescription,
    PlaybackFinished,
    RealSenseCamera,
    ReconnectingCamera,
    calibration_from_intrinsics,
    camera_info_msg,
    choose_device,
    depth_millimetres,
)

COLOR_W, COLOR_H, COLOR_F = 64, 48, 50.0
DEPTH_W, DEPTH_H, DEPTH_F = 32, 24, 25.0  # half the colour's resolution, same field of view
FPS = 30
SERIAL = "123456789"
PLANE_M = 1.0  # the scene: a wall facing the camera
BASELINE_M = 0.2  # depth sensor to colour sensor along x
# Depth reprojected into the colour camera shifts by fx * baseline / Z: no depth on the left.
HOLE_COLUMNS = round(COLOR_F * BASELINE_M / PLANE_M)


def intrinsics(width, height, f, model=rs.distortion.none, coeffs=(0.0,) * 5):
    result = rs.intrinsics()
    result.width, result.height, result.fx, result.fy = width, height, f, f
    result.ppx, result.ppy = (width - 1) / 2, (height - 1) / 2
    result.model, result.coeffs = model, list(coeffs)
    return result


def video_stream(kind, uid, width, height, fmt, bpp, intrin):
    stream = rs.video_stream()
    stream.type, stream.index, stream.uid = kind, 0, uid
    stream.width, stream.height, stream.fps, stream.fmt, stream.bpp = width, height, FPS, fmt, bpp
    stream.intrinsics = intrin
    return stream


def expected_rgb(frame_number):
    """The synthetic colour image: red along x, green along y, blue = frame number."""
    rgb = np.zeros((COLOR_H, COLOR_W, 3), np.uint8)
    rgb[..., 0] = np.arange(COLOR_W)[None, :] * 4
    rgb[..., 1] = np.arange(COLOR_H)[:, None] * 5
    rgb[..., 2] = frame_number % 256
    return rgb


def expected_depth_mm():
    depth = np.full((COLOR_H, COLOR_W), round(PLANE_M * 1000), np.uint16)
    depth[:, :HOLE_COLUMNS] = 0
    return depth


class SoftwareRealSense:
    """A RealSense made of rs.software_device sensors; each send_frame injects the next
    colour/depth pair of the synthetic scene with one device timestamp."""

    def __init__(self, depth_units=0.001, color_format=rs.format.rgb8, color_model=rs.distortion.none,
                 color_coeffs=(0.0,) * 5, domain=rs.timestamp_domain.hardware_clock):
        self.depth_units = depth_units
        self.color_format = color_format
        self.domain = domain
        # A hardware clock counts from power-up; a host-clock domain is time since the epoch.
        self._first_timestamp_ms = 50_000.0 if domain == rs.timestamp_domain.hardware_clock else time.time() * 1000.0
        self.plugged = True
        self.depth_running = True
        self.failing_starts = 0
        self.frames_sent = 0
        self._pixels = []  # the SDK reads injected pixels after on_video_frame returns: keep them alive
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.name, "Software RealSense")
        self.device.register_info(rs.camera_info.serial_number, SERIAL)
        self.depth_sensor = self.device.add_sensor("Stereo Module")
        self.color_sensor = self.device.add_sensor("RGB Camera")
        self.depth_sensor.add_read_only_option(rs.option.depth_units, depth_units)
        self.depth_profile = rs.video_stream_profile(self.depth_sensor.add_video_stream(video_stream(
            rs.stream.depth, 0, DEPTH_W, DEPTH_H, rs.format.z16, 2, intrinsics(DEPTH_W, DEPTH_H, DEPTH_F))))
        self.color_profile = rs.video_stream_profile(self.color_sensor.add_video_stream(video_stream(
            rs.stream.color, 1, COLOR_W, COLOR_H, color_format, 3,
            intrinsics(COLOR_W, COLOR_H, COLOR_F, color_model, color_coeffs))))
        extrinsics = rs.extrinsics()
        extrinsics.rotation, extrinsics.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [BASELINE_M, 0, 0]
        self.depth_profile.register_extrinsics_to(self.color_profile, extrinsics)
        for sensor in (self.depth_sensor, self.color_sensor):
            # The syncer pairs frames by timestamp only when it knows the rate (milli-fps, as
            # real cameras report it); without it, it gives up pairing after the first frames.
            sensor.set_metadata(rs.frame_metadata_value.actual_fps, FPS * 1000)

    def start(self, syncer):
        self.depth_sensor.open(self.depth_profile)
        self.color_sensor.open(self.color_profile)
        self.depth_sensor.start(syncer)
        self.color_sensor.start(syncer)

    def stop(self):
        for sensor in (self.depth_sensor, self.color_sensor):
            sensor.stop()
            sensor.close()

    def device_time_ms(self, frame_number):
        return self._first_timestamp_ms + frame_number * 1000.0 / FPS

    def send_frame(self):
        number = self.frames_sent
        self.frames_sent += 1
        rgb = expected_rgb(number)
        if self.color_format == rs.format.bgr8:
            rgb = np.ascontiguousarray(rgb[..., ::-1])
        raw_depth = np.full((DEPTH_H, DEPTH_W), round(PLANE_M / self.depth_units), np.uint16)
        timestamp = self.device_time_ms(number)
        streams = [(self.depth_sensor, self.depth_profile, raw_depth)] if self.depth_running else []
        for sensor, profile, pixels in streams + [(self.color_sensor, self.color_profile, rgb)]:
            self._pixels.append(pixels)
            frame = rs.software_video_frame()  # a fresh one each time: reusing one corrupts the heap
            frame.pixels, frame.bpp = pixels, pixels.itemsize * (pixels.shape[2] if pixels.ndim == 3 else 1)
            frame.stride = pixels.shape[1] * frame.bpp
            frame.timestamp, frame.domain, frame.frame_number, frame.profile = timestamp, self.domain, number, profile
            if profile is self.depth_profile:
                frame.depth_units = self.depth_units
            sensor.on_video_frame(frame)


class SoftwarePipeline:
    """Stands in for rs.pipeline over a SoftwareRealSense: starting fails while it is unplugged
    (or for its `failing_starts`), frames stop while it is unplugged, and each wait injects
    the next frame pair while it is plugged in."""

    def __init__(self, camera: SoftwareRealSense):
        self.camera = camera
        self.started = self.stopped = False
        self._syncer = rs.syncer(4)

    def start(self, config):
        if not self.camera.plugged:
            raise RuntimeError("No device connected")
        if self.camera.failing_starts:
            self.camera.failing_starts -= 1
            raise RuntimeError("xioctl(VIDIOC_S_FMT) failed, errno=16 Device or resource busy")
        self.camera.start(self._syncer)
        self.started = True
        return SimpleNamespace(get_device=lambda: self.camera.device)

    def try_wait_for_frames(self, timeout_ms):
        if not self.camera.plugged:
            return False, None  # a real pipeline would first wait timeout_ms
        self.camera.send_frame()
        return self._syncer.try_wait_for_frames(timeout_ms)

    def stop(self):
        self.camera.stop()
        self.stopped = True


class FakeContext:
    """The part of rs.context that device discovery uses, listing the camera while it is plugged in."""

    def __init__(self, camera: SoftwareRealSense):
        self.camera = camera

    def query_devices(self):
        return [self.camera.device] if self.camera.plugged else []


def software_camera(hardware: SoftwareRealSense, pipelines=None) -> RealSenseCamera:
    def make_pipeline(context):
        pipeline = SoftwarePipeline(hardware)
        if pipelines is not None:
            pipelines.append(pipeline)
        return pipeline

    return RealSenseCamera(CameraSettings(serial_no=SERIAL), now=time.time,
                           context_factory=lambda: FakeContext(hardware), pipeline_factory=make_pipeline)


def read_frames(camera: RealSenseCamera, count: int, max_reads: int = 100, period_s: float = 0.0):
    """`period_s`: pace the reads, and so a SoftwarePipeline's frames, like a live camera."""
    frames = []
    for _ in range(max_reads):
        time.sleep(period_s)
        frame = camera.read(timeout_s=1.0)
        if frame is not None:
            frames.append(frame)
        if len(frames) == count:
            return frames
    raise AssertionError(f"only {len(frames)} of {count} frames in {max_reads} reads")


# ---------------------------------------------------------------------------------------
# Frames from a software device through the grabbing code


@pytest.mark.parametrize("depth_units", [0.001, 0.0001])
@pytest.mark.parametrize("color_format", [rs.format.rgb8, rs.format.bgr8])
def test_frames_are_aligned_converted_and_stamped(depth_units, color_format):
    hardware = SoftwareRealSense(depth_units=depth_units, color_format=color_format)
    camera = software_camera(hardware)
    assert SERIAL in camera.start()
    try:
        before = time.time()
        frames = read_frames(camera, 6, period_s=1.0 / FPS)
    finally:
        camera.stop()
    for frame in frames:
        np.testing.assert_array_equal(frame.rgb, expected_rgb(frame.frame_number))
        assert frame.depth_mm.dtype == np.uint16
        # Depth at half resolution, 0.2 m beside the colour camera, comes out at the colour's
        # resolution with the band the baseline hides, in millimetres whatever the units.
        np.testing.assert_array_equal(frame.depth_mm, expected_depth_mm())
    calibration = frames[0].calibration
    info = camera_info_msg(calibration, rm.time_msg(frames[0].stamp_s), "camera_color_optical_frame")
    assert (info.width, info.height, info.distortion_model) == (COLOR_W, COLOR_H, "plumb_bob")
    np.testing.assert_allclose(info.k, [COLOR_F, 0, 31.5, 0, COLOR_F, 23.5, 0, 0, 1])
    np.testing.assert_allclose(info.p, [COLOR_F, 0, 31.5, 0, 0, COLOR_F, 23.5, 0, 0, 0, 1, 0])
    assert list(info.d) == [0.0] * 5
    stamps = [frame.stamp_s for frame in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    # Device time mapped to host time: spaced by the device clock, never after arrival.
    np.testing.assert_allclose(np.diff(stamps), 1.0 / FPS, atol=0.005)
    assert before - 0.5 < stamps[0] and stamps[-1] <= time.time()


def test_host_clock_timestamps_are_used_as_they_are():
    hardware = SoftwareRealSense(domain=rs.timestamp_domain.system_time)
    camera = software_camera(hardware)
    camera.start()
    try:
        frames = read_frames(camera, 3, period_s=1.0 / FPS)
    finally:
        camera.stop()
    for frame in frames:  # the device's own host-clock time, not remapped
        assert frame.stamp_s == pytest.approx(hardware.device_time_ms(frame.frame_number) / 1000.0, abs=1e-6)


def test_colour_without_depth_counts_as_stopped():
    hardware = SoftwareRealSense()
    hardware.depth_running = False  # the depth sensor hangs, colour goes on
    camera = software_camera(hardware)
    started = time.monotonic()
    camera.start()
    try:
        with pytest.raises(CameraError, match="no frameset with both colour and depth for 0.2 s"):
            for _ in range(100):
                assert camera.read(timeout_s=0.2) is None
                time.sleep(1.0 / FPS)
        # Not before 0.2 s, and long before the 100 reads would end (a loaded machine is slow).
        assert 0.2 <= time.monotonic() - started < 5.0
    finally:
        camera.stop()


@pytest.mark.parametrize("model,coeffs,ros_model,d", [
    (rs.distortion.brown_conrady, (0.1, -0.05, 0.001, 0.002, 0.01), "plumb_bob", [0.1, -0.05, 0.001, 0.002, 0.01]),
    (rs.distortion.inverse_brown_conrady, (0.05, 0.0, 0.0, 0.0, 0.0), "plumb_bob", [0.05, 0.0, 0.0, 0.0, 0.0]),
    (rs.distortion.kannala_brandt4, (0.2, 0.1, -0.1, 0.05, 0.0), "equidistant", [0.2, 0.1, -0.1, 0.05]),
])
def test_the_devices_distortion_reaches_camera_info(model, coeffs, ros_model, d):
    camera = software_camera(SoftwareRealSense(color_model=model, color_coeffs=coeffs))
    camera.start()
    try:
        frame = read_frames(camera, 1)[0]
    finally:
        camera.stop()
    info = camera_info_msg(frame.calibration, rm.time_msg(0.0), "f")
    assert info.distortion_model == ros_model
    np.testing.assert_allclose(info.d, d, atol=1e-7)  # the SDK keeps float32


def test_intrinsics_map_to_camera_info_models():
    none = calibration_from_intrinsics(intrinsics(640, 480, 600.0))
    assert (none.distortion_model, none.d, none.width, none.height) == ("plumb_bob", (0.0,) * 5, 640, 480)
    np.testing.assert_allclose(none.k, [[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
    modified = calibration_from_intrinsics(intrinsics(640, 480, 600.0, rs.distortion.modified_brown_conrady,
                                                      (0.5, 0.25, 0.125, 0.0625, 0.03125)))
    assert modified.distortion_model == "plumb_bob" and modified.d == (0.5, 0.25, 0.125, 0.0625, 0.03125)
    with pytest.raises(CameraError, match="ftheta"):
        calibration_from_intrinsics(intrinsics(640, 480, 600.0, rs.distortion.ftheta))


def test_depth_units_become_millimetres():
    raw = np.array([[0, 2, 12346, 65534]], np.uint16)
    millimetres = depth_millimetres(raw, 0.001)
    np.testing.assert_array_equal(millimetres, raw)
    assert not np.shares_memory(millimetres, raw)  # the SDK reuses frame memory
    np.testing.assert_array_equal(depth_millimetres(raw, 0.0001), [[0, 0, 1235, 6553]])
    # A coarse unit beyond 65.535 m saturates rather than wrapping around.
    np.testing.assert_array_equal(depth_millimetres(raw, 0.0025), [[0, 5, 30865, 65535]])


def test_devices_are_chosen_by_serial_number():
    devices = [DeviceDescription("Intel RealSense D435", "111", "5.16", "3.2"),
               DeviceDescription("Intel RealSense D405", "222", "5.16", "3.2")]
    assert choose_device(devices, "").serial_no == "111"
    assert choose_device(devices, "222").serial_no == "222"
    assert choose_device(devices, "_222").serial_no == "222"  # realsense-ros's YAML-safe spelling
    with pytest.raises(CameraError, match="333 is not connected.*D435 \\(serial 111\\)"):
        choose_device(devices, "333")
    with pytest.raises(CameraError, match="no RealSense device"):
        choose_device([], "")


# ---------------------------------------------------------------------------------------
# Device clock -> host time


def simulate(clock, device_ms, delays_s, true_offset_s=1000.0, drift=0.0):
    """Stamps for frames taken at device_ms that arrive delays_s after they were taken, in
    order (a frame cannot overtake the one before it; each read takes a microsecond)."""
    truth = np.asarray(device_ms) / 1000.0 * (1.0 - drift) + true_offset_s
    arrivals = truth + np.asarray(delays_s)
    for i in range(1, len(arrivals)):
        arrivals[i] = max(arrivals[i], arrivals[i - 1] + 1e-6)
    stamps = np.array([clock.host_time(d, a) for d, a in zip(device_ms, arrivals)])
    return stamps, truth, arrivals


def test_device_clock_keeps_the_least_delayed_offset():
    rng = np.random.default_rng(0)
    device_ms = 2_000.0 + np.arange(600) * 1000.0 / FPS  # 20 s at 30 Hz
    delays = 0.002 + rng.exponential(0.005, device_ms.size)  # USB transfer and scheduling
    stamps, truth, arrivals = simulate(DeviceClock(window_s=5.0), device_ms, delays)
    assert stamps[0] == arrivals[0]  # first frame: the only estimate there is
    assert np.all(np.diff(stamps) > 0) and np.all(stamps <= arrivals)
    error = stamps[FPS:] - truth[FPS:]  # after a second of frames
    assert np.all(error >= 0) and error.max() < 0.003, f"error up to {error.max() * 1e3:.2f} ms"
    assert np.mean(delays) > 0.006  # ... where the delays themselves average over 6 ms


@pytest.mark.parametrize("drift", [-200e-6, 200e-6])
def test_device_clock_follows_drift(drift):
    device_ms = np.arange(3000) * 1000.0 / FPS  # 100 s
    delays = np.where(np.arange(3000) % 7 == 0, 0.001, 0.008)
    stamps, truth, _ = simulate(DeviceClock(window_s=5.0), device_ms, delays, drift=drift)
    # A fixed offset would be 20 ms off after 100 s; the window keeps it within its span of drift.
    assert np.abs(stamps[FPS:] - truth[FPS:]).max() < 0.001 + 5.0 * abs(drift) + 1e-6


def test_device_clock_restarts_with_the_device():
    clock = DeviceClock(window_s=5.0)
    before, _, _ = simulate(clock, [100_000.0, 100_033.3], [0.004, 0.004])
    # Camera replugged a minute later: its clock starts again near zero.
    after, truth, _ = simulate(clock, [10.0, 43.3], [0.002, 0.009], true_offset_s=1160.0)
    assert after[0] > before[-1] and after[1] > after[0]
    np.testing.assert_allclose(after - truth, [0.002, 0.002], atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 200.0), st.floats(0.0, 0.5)), min_size=1, max_size=60),
       st.floats(0.05, 20.0))
def test_device_clock_stamps_increase_and_never_follow_arrival(steps, window_s):
    device_ms = np.cumsum([interval for interval, _ in steps])
    delays = [delay for _, delay in steps]
    stamps, truth, arrivals = simulate(DeviceClock(window_s), device_ms, delays)
    assert np.all(np.diff(stamps) > 0)
    assert np.all(stamps <= arrivals) and np.all(stamps >= truth - 1e-9)


# ---------------------------------------------------------------------------------------
# Reconnection


class FakeTime:
    def __init__(self):
        self.now_s = 0.0

    def clock(self):
        return self.now_s

    def sleep(self, seconds):
        self.now_s += seconds


def test_camera_restarts_after_unplugging_and_never_raises():
    hardware = SoftwareRealSense()
    hardware.plugged = False
    pipelines, reports, fake = [], [], FakeTime()
    camera = ReconnectingCamera(software_camera(hardware, pipelines),
                                report=lambda level, message: reports.append((fake.now_s, level, message)),
                                frame_timeout_s=0.05, retry_period_s=2.0, clock=fake.clock, sleep=fake.sleep)

    def run(steps):
        frames = [camera.next_frame() for _ in range(steps)]
        return [frame for frame in frames if frame is not None]

    assert run(55) == []  # 5.5 s of nobody there: an attempt every 2 s, each a warning
    assert [(t, level) for t, level, _ in reports] == [(0.0, "warn"), (2.0, "warn"), (4.0, "warn")]
    assert all("not connected" in message or "no RealSense device" in message for _, _, message in reports)

    hardware.plugged, hardware.failing_starts = True, 1  # plugged in, but busy at the first try
    frames = run(80)  # 2.6 s of waiting to retry, then about 50 reads
    assert [level for _, level, _ in reports[3:]] == ["warn", "ok"]
    assert "Device or resource busy" in reports[3][2] and SERIAL in reports[4][2]
    assert reports[4][0] - reports[3][0] == pytest.approx(2.0)
    assert camera.streaming and len(frames) >= 20

    hardware.plugged = False  # unplugged while streaming: frames stop
    assert run(30) == []
    assert pipelines[-1].stopped and not camera.streaming
    assert "stopped streaming: no frames for 0.05 s" in reports[5][2] and reports[5][1] == "warn"
    assert all(level == "warn" for _, level, _ in reports[5:])

    hardware.plugged = True
    frames_after = run(60)
    assert reports[-1][1] == "ok" and len(frames_after) >= 20
    assert all(p.stopped for p in pipelines if p.started and p is not pipelines[-1])
    stamps = [frame.stamp_s for frame in frames + frames_after]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # monotonic across the reconnect
    np.testing.assert_array_equal(frames_after[-1].depth_mm, expected_depth_mm())
    camera.close()
    assert pipelines[-1].stopped


def test_a_missing_camera_is_reported_without_waiting_for_it():
    """The real SDK on a machine without this camera (pipeline.start alone would wait 15 s)."""
    reports = []
    camera = ReconnectingCamera(RealSenseCamera(CameraSettings(serial_no="000000000000"), now=time.time),
                                report=lambda level, message: reports.append((level, message)))
    started = time.monotonic()
    assert camera.next_frame() is None
    assert time.monotonic() - started < 7.0
    assert reports[0][0] == "warn" and ("000000000000 is not connected" in reports[0][1]
                                        or "no RealSense device connected" in reports[0][1])
    assert not camera.streaming


# ---------------------------------------------------------------------------------------
# Recordings


RECORDED_FRAMES = 12


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A rosbag2 recording of the software camera, 0.1 mm depth units (as a D405's)."""
    path = str(tmp_path_factory.mktemp("realsense") / "camera.db3")
    hardware = SoftwareRealSense(depth_units=0.0001)
    recorder = rs.recorder(path, hardware.device)
    hardware.start(rs.syncer(RECORDED_FRAMES))
    for _ in range(RECORDED_FRAMES):
        hardware.send_frame()
        time.sleep(1.0 / FPS)
    hardware.stop()
    recorder.pause()
    del recorder  # closes the file
    return path


def test_a_recording_plays_once_through_the_pipeline(recording):
    camera = RealSenseCamera(CameraSettings(bag_file=recording, repeat_playback=False), now=time.time)
    assert recording in camera.start()
    frames = []
    try:
        with pytest.raises(PlaybackFinished):
            for _ in range(100):
                frame = camera.read(timeout_s=0.5)
                if frame is not None:
                    frames.append(frame)
    finally:
        camera.stop()
    # Every recorded frame in order, but the playback syncer may not pair the first ones.
    numbers = [frame.frame_number for frame in frames]
    assert numbers == list(range(numbers[0], RECORDED_FRAMES)) and numbers[0] <= 2, numbers
    for frame in frames:
        np.testing.assert_array_equal(frame.rgb, expected_rgb(frame.frame_number))
        np.testing.assert_array_equal(frame.depth_mm, expected_depth_mm())
    stamps = np.array([frame.stamp_s for frame in frames])
    # Restamped to now (the recorded clock ran in the past), paced as recorded.
    assert np.all(np.diff(stamps) > 0) and abs(stamps[-1] - time.time()) < 10.0
    assert np.median(np.diff(stamps)) == pytest.approx(1.0 / FPS, abs=0.01)


def test_a_repeated_recording_loops_with_increasing_stamps(recording):
    camera = RealSenseCamera(CameraSettings(bag_file=recording, repeat_playback=True), now=time.time)
    camera.start()
    try:
        frames = read_frames(camera, RECORDED_FRAMES + 4)
    finally:
        camera.stop()
    numbers = [frame.frame_number for frame in frames]
    loops = [i for i in range(1, len(numbers)) if numbers[i] < numbers[i - 1]]
    assert len(loops) == 1 and numbers[loops[0] - 1] == RECORDED_FRAMES - 1, numbers
    stamps = [frame.stamp_s for frame in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


# ---------------------------------------------------------------------------------------
# The node, end to end


def test_node_publishes_a_recording_as_realsense_ros_does(recording):
    previous_domain = os.environ.get("ROS_DOMAIN_ID")
    # Before the node starts and rclpy initialises: never talk to another run's nodes.
    os.environ["ROS_DOMAIN_ID"] = str(101 + (os.getpid() + 97) % 131)
    node_process = start_node_process(
        "ros_vla.nodes.realsense_node", "-r", "__ns:=/rs_test", "-p", f"bag_file:={recording}",
        "-p", "frame_prefix:=rs_test_camera", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("realsense_test_client", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received = {}
    topics = {
        "color": (Image, "/rs_test/camera/color/image_raw"),
        "color_info": (CameraInfo, "/rs_test/camera/color/camera_info"),
        "depth": (Image, "/rs_test/camera/aligned_depth_to_color/image_raw"),
        "depth_info": (CameraInfo, "/rs_test/camera/aligned_depth_to_color/camera_info"),
    }
    for key, (msg_type, topic) in topics.items():
        node.create_subscription(msg_type, topic, lambda msg, key=key: received.setdefault(key, []).append(msg),
                                 SENSOR_QOS)
    node.create_subscription(DiagnosticArray, "/diagnostics",
                             lambda msg: received.setdefault("diagnostics", []).extend(msg.status), STATUS_QOS)
    try:
        deadline = time.monotonic() + 30.0
        def healthy():  # the start is reported once, maybe before discovery; then every 5 s
            return any(s.name == "ros_vla: realsense" and s.level == DiagnosticStatus.OK
                       for s in received.get("diagnostics", []))

        while time.monotonic() < deadline and not (
                all(len(received.get(key, [])) >= 3 for key in topics) and healthy()):
            executor.spin_once(timeout_sec=0.1)
        assert node_process.poll() is None, node_process.stdout.read()
        assert all(len(received.get(key, [])) >= 3 for key in topics), {k: len(v) for k, v in received.items()}
        published = dict(node.get_topic_names_and_types())
        for msg_type, topic in topics.values():
            assert published[topic] == [f"sensor_msgs/msg/{msg_type.__name__}"]

        frame_id = "rs_test_camera_color_optical_frame"
        color, depth = received["color"][-1], received["depth"][-1]
        assert (color.encoding, color.width, color.height, color.header.frame_id) == ("rgb8", 64, 48, frame_id)
        assert (depth.encoding, depth.width, depth.height, depth.header.frame_id) == ("16UC1", 64, 48, frame_id)
        np.testing.assert_array_equal(rm.image_array(color)[..., :2], expected_rgb(0)[..., :2])
        np.testing.assert_array_equal(rm.image_array(depth), expected_depth_mm())  # recorded in 0.1 mm units
        for info in received["color_info"][-1], received["depth_info"][-1]:
            assert (info.width, info.height, info.header.frame_id, info.distortion_model) == (64, 48, frame_id,
                                                                                              "plumb_bob")
            np.testing.assert_allclose(info.k, [COLOR_F, 0, 31.5, 0, COLOR_F, 23.5, 0, 0, 1])
            assert list(info.d) == [0.0] * 5
        # One stamp per frameset, near now (a recording is restamped), increasing.
        color_stamps = [rm.time_seconds(m.header.stamp) for m in received["color"]]
        depth_stamps = {rm.time_seconds(m.header.stamp) for m in received["depth"]}
        assert set(color_stamps) & depth_stamps
        assert all(b > a for a, b in zip(color_stamps, color_stamps[1:]))
        assert abs(color_stamps[-1] - time.time()) < 10.0
        ours = [(s.level, s.message) for s in received["diagnostics"] if s.name == "ros_vla: realsense"]
        assert healthy() and all(level == DiagnosticStatus.OK and "streaming" in message
                                 for level, message in ours), ours
    finally:
        node_process.send_signal(signal.SIGINT)
        try:
            return_code = node_process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node_process.kill()
            return_code = None
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        if previous_domain is None:
            os.environ.pop("ROS_DOMAIN_ID")
        else:
            os.environ["ROS_DOMAIN_ID"] = previous_domain
    assert return_code == 0, node_process.stdout.read()
