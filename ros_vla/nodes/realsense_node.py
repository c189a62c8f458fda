"""realsense_node: one RealSense camera, or a recording of one, published as realsense-ros
publishes it with align_depth.enable:=true.

Topics are relative, so the launch namespace places them (namespace `camera`, camera_name
`camera`: /camera/camera/color/image_raw, as in simulation):
  <camera_name>/color/image_raw                      sensor_msgs/Image rgb8
  <camera_name>/color/camera_info                    sensor_msgs/CameraInfo
  <camera_name>/aligned_depth_to_color/image_raw     sensor_msgs/Image 16UC1, millimetres
  <camera_name>/aligned_depth_to_color/camera_info   sensor_msgs/CameraInfo (the colour's)
all four in frame <frame_prefix>_color_optical_frame with one stamp per frameset; health on
/diagnostics. One node per camera, chosen by serial_no (empty: the first found), or playing
bag_file. A grabbing thread does all the work; it survives unplugging and restarts the
camera every reconnect_period_s until it is back.
"""

from __future__ import annotations

import time

from rclpy.node import Node  # before pyrealsense2 (imported by realsense.py): see there
from sensor_msgs.msg import CameraInfo, Image

from ros_vla.nodes.common import CAMERA_PUB_QOS, Diagnostics, declare, run_node, start_worker
from ros_vla.perception import ros_messages as rm
from ros_vla.perception.realsense import (
    CameraSettings,
    RealSenseCamera,
    ReconnectingCamera,
    RgbdFrame,
    StreamSettings,
    camera_info_msg,
    list_devices,
)

RATE_REPORT_PERIOD_S = 5.0


class RealSenseNode(Node):
    def __init__(self):
        super().__init__("realsense")
        p = declare(self, camera_name="camera", frame_prefix="camera", serial_no="", bag_file="",
                    repeat_playback=True, color_width=640, color_height=480, color_fps=30,
                    depth_width=640, depth_height=480, depth_fps=30, frame_timeout_s=2.0,
                    reconnect_period_s=2.0, clock_window_s=10.0)
        settings = CameraSettings(
            serial_no=p["serial_no"], bag_file=p["bag_file"], repeat_playback=p["repeat_playback"],
            color=StreamSettings(p["color_width"], p["color_height"], p["color_fps"]),
            depth=StreamSettings(p["depth_width"], p["depth_height"], p["depth_fps"]))
        self.frame_id = f"{p['frame_prefix']}_color_optical_frame"
        prefix = p["camera_name"]
        self.color = self.create_publisher(Image, f"{prefix}/color/image_raw", CAMERA_PUB_QOS)
        self.color_info = self.create_publisher(CameraInfo, f"{prefix}/color/camera_info", CAMERA_PUB_QOS)
        self.depth = self.create_publisher(Image, f"{prefix}/aligned_depth_to_color/image_raw", CAMERA_PUB_QOS)
        self.depth_info = self.create_publisher(
            CameraInfo, f"{prefix}/aligned_depth_to_color/camera_info", CAMERA_PUB_QOS)
        self.diag = Diagnostics(self, hardware_id=p["bag_file"] or f"realsense {p['serial_no'] or '(first found)'}")

        if not settings.bag_file:
            self.get_logger().info(f"RealSense devices: {[str(d) for d in list_devices()] or 'none'}")
        camera = RealSenseCamera(settings, now=self.now_s, clock_window_s=p["clock_window_s"])
        self.camera = ReconnectingCamera(camera, report=self.diag.publish, frame_timeout_s=p["frame_timeout_s"],
                                         retry_period_s=p["reconnect_period_s"])
        self._join_timeout_s = p["frame_timeout_s"] + 1.0
        self._running = True
        self._thread = start_worker(self, self.stream_loop, "realsense")

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def stream_loop(self):
        published, window_start = 0, time.monotonic()
        try:
            while self._running:
                frame = self.camera.next_frame()
                if frame is not None:
                    self.publish(frame)
                    published += 1
                elapsed_s = time.monotonic() - window_start
                if elapsed_s >= RATE_REPORT_PERIOD_S:
                    if self.camera.streaming:
                        self.diag.publish("ok", "streaming", rate_hz=f"{published / elapsed_s:.1f}")
                    published, window_start = 0, time.monotonic()
        finally:
            self.camera.close()

    def publish(self, frame: RgbdFrame):
        stamp = rm.time_msg(frame.stamp_s)
        info = camera_info_msg(frame.calibration, stamp, self.frame_id)
        self.color.publish(rm.image_msg(frame.rgb, "rgb8", stamp, self.frame_id))
        self.color_info.publish(info)
        self.depth.publish(rm.image_msg(frame.depth_mm, "16UC1", stamp, self.frame_id))
        self.depth_info.publish(info)

    def close(self):
        self._running = False
        self._thread.join(timeout=self._join_timeout_s)


def main(args=None) -> int:
    return run_node(RealSenseNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
