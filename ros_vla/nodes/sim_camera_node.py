"""sim_camera_node: the simulated RealSense cameras, publishing as realsense-ros does.

Rendering 640x480 views costs far more CPU than the physics, so it runs in its own
process, beside sim_bridge_node: a render-only copy of the world (same scene file and
seed) is posed from the simulator's published state (/joint_states, /odom and the
simulator's object poses) and rendered for every view on a fixed rate of sim time.
Each image carries the stamp of the robot state it shows.

Per view (namespace NS from the scene file): /NS/camera/color/image_raw (rgb8),
/NS/camera/color/camera_info, /NS/camera/aligned_depth_to_color/image_raw (16UC1, mm)
and /NS/camera/aligned_depth_to_color/camera_info.
"""

from __future__ import annotations

import time

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from ros_vla import protocol
from ros_vla.nodes.common import (
    CAMERA_PUB_QOS,
    COMMAND_QOS,
    SENSOR_QOS,
    Diagnostics,
    FrameFilter,
    Latest,
    declare,
    run_node,
    start_worker,
)
from ros_vla.paths import config_file
from ros_vla.perception import ros_messages as rm
from ros_vla.robot import panda
from ros_vla.robot.gate import joint_state_positions
from ros_vla.robot.kinematics import matrix_from_quaternion
from ros_vla.sim.scene import CameraSpec, load_scene
from ros_vla.sim.world import SimWorld

# What the simulator can report: a state outside these is not its, and is not mirrored.
MAX_BASE_DISTANCE_M = 1000.0
STATE_TOLERANCE_RAD = 0.1


def joint_state_problem(msg: JointState) -> str:
    _, problem = joint_state_positions(msg.name, msg.position, tolerance_rad=STATE_TOLERANCE_RAD)
    if problem:
        return problem
    position = dict(zip(msg.name, msg.position))
    fingers = [position.get(name, np.nan) for name in panda.FINGER_JOINT_NAMES]
    if not all(np.isfinite(v) and abs(v) <= panda.FINGER_WIDTH_MAX_M for v in fingers):
        return "finger joints missing, non-finite or beyond the hand's travel"
    return ""


def odometry_problem(msg: Odometry) -> str:
    pose = msg.pose.pose
    quaternion = np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    position = np.array([pose.position.x, pose.position.y, pose.position.z])
    if not (np.all(np.isfinite(quaternion)) and np.all(np.isfinite(position))):
        return "non-finite pose"
    if np.any(np.abs(position) > MAX_BASE_DISTANCE_M) or not 0.5 < np.linalg.norm(quaternion) < 2.0:
        return "not a pose of the base: too far or not a rotation"
    return ""


class CameraOutput:
    def __init__(self, node: Node, spec: CameraSpec, rate_hz: float):
        prefix = f"{spec.namespace}/camera"
        self.spec = spec
        self.period_s = 1.0 / rate_hz
        self.next_due_s = 0.0
        self.color = node.create_publisher(Image, f"{prefix}/color/image_raw", CAMERA_PUB_QOS)
        self.color_info = node.create_publisher(CameraInfo, f"{prefix}/color/camera_info", CAMERA_PUB_QOS)
        self.depth = node.create_publisher(Image, f"{prefix}/aligned_depth_to_color/image_raw", CAMERA_PUB_QOS)
        self.depth_info = node.create_publisher(
            CameraInfo, f"{prefix}/aligned_depth_to_color/camera_info", CAMERA_PUB_QOS)

    def publish(self, rgb: np.ndarray, depth_m: np.ndarray, stamp):
        spec = self.spec
        info = rm.camera_info_msg(spec.intrinsics, spec.width, spec.height, stamp, spec.color_frame)
        self.color.publish(rm.image_msg(rgb, "rgb8", stamp, spec.color_frame))
        self.color_info.publish(info)
        # Depth is rendered from the colour camera's viewpoint: aligned to colour by construction.
        self.depth.publish(rm.image_msg(rm.depth_to_millimetres(depth_m), "16UC1", stamp, spec.color_frame))
        self.depth_info.publish(info)


class SimCameraNode(Node):
    def __init__(self):
        super().__init__("sim_camera")
        p = declare(self, scene_file="", cameras=[""], rate_hz=0.0, renderer="gl")
        scene_path = p["scene_file"] or str(config_file("scene_tabletop.yaml"))
        self.scene = load_scene(scene_path)
        wanted = [name for name in p["cameras"] if name]
        unknown = set(wanted) - {c.namespace for c in self.scene.cameras}
        if unknown:
            raise ValueError(f"cameras {sorted(unknown)} are not in {scene_path}")
        specs = [c for c in self.scene.cameras if not wanted or c.namespace in wanted]
        self.outputs = [CameraOutput(self, spec, p["rate_hz"] or spec.rate_hz) for spec in specs]
        self.renderer = p["renderer"]
        self.diag = Diagnostics(self, hardware_id="pybullet-camera")

        self.joint_state = Latest()
        self.odom = Latest()
        self.objects = Latest()
        # Only well-formed states are mirrored: a malformed one (from anyone) must not stop the render loop.
        self.create_subscription(JointState, "joint_states", FrameFilter(self.joint_state.set, joint_state_problem),
                                 SENSOR_QOS)
        self.create_subscription(Odometry, "odom", FrameFilter(self.odom.set, odometry_problem), SENSOR_QOS)
        self.create_subscription(String, "sim/ground_truth/objects", self.on_objects, COMMAND_QOS)

        self.render_times: list[float] = []
        self._running = True
        self._thread = start_worker(self, self.render_loop, "render")

    def on_objects(self, msg: String):
        try:
            self.objects.set(protocol.decode("ground_truth", msg.data))
        except protocol.ProtocolError:
            pass  # not the simulator's: the mirror keeps the last good state

    def mirror_state(self, world: SimWorld):
        """Pose the render copy like the simulator; returns the stamp of that state, or None."""
        joints, odom, truth = self.joint_state.get(), self.odom.get(), self.objects.get()
        if joints is None or odom is None or truth is None:
            return None
        if truth["seed"] != world.seed:
            world.reset(truth["seed"])
        position = dict(zip(joints.name, joints.position))
        arm_q = [position[name] for name in panda.ARM_JOINT_NAMES]
        finger_q = [position[name] for name in panda.FINGER_JOINT_NAMES]
        pose = odom.pose.pose
        rotation = matrix_from_quaternion([pose.orientation.x, pose.orientation.y,
                                           pose.orientation.z, pose.orientation.w])
        base_pose = (pose.position.x, pose.position.y, float(np.arctan2(rotation[1, 0], rotation[0, 0])))
        objects = {o["name"]: (o["position"], o["orientation_xyzw"]) for o in truth["objects"]}
        world.set_kinematic_state(base_pose, arm_q, finger_q, objects)
        return joints.header.stamp

    def render_loop(self):
        # The render world lives in this thread: an OpenGL (EGL) context may only be used
        # by the thread that created it.
        world = SimWorld(self.scene, renderer=self.renderer)
        self.get_logger().info(
            f"rendering {[o.spec.namespace for o in self.outputs]} with the {world.renderer} renderer")
        last_report = time.monotonic()
        try:
            while self._running:
                # Frames are due on the simulator's clock, read from the newest joint state
                # (cheaper than following /clock, which ticks every physics step).
                joints = self.joint_state.get()
                now_s = rm.time_seconds(joints.header.stamp) if joints is not None else 0.0
                due = [o for o in self.outputs if now_s >= o.next_due_s]
                if not due:
                    time.sleep(0.002)
                    continue
                stamp = self.mirror_state(world)
                if stamp is None:
                    time.sleep(0.01)
                    continue
                for output in due:
                    # A late frame is not made up for: the next one is a period after now.
                    output.next_due_s = max(output.next_due_s + output.period_s, now_s)
                    started = time.perf_counter()
                    rgb, depth = world.render(output.spec)
                    self.render_times.append(time.perf_counter() - started)
                    output.publish(rgb, depth, stamp)
                if time.monotonic() - last_report > 5.0:
                    last_report = time.monotonic()
                    self.report()
        finally:
            world.close()

    def report(self):
        times, self.render_times = self.render_times, []
        if times:
            self.diag.publish("ok", f"rendered {len(times)} views in 5 s",
                              render_ms_median=f"{np.median(times) * 1e3:.1f}")

    def close(self):
        self._running = False
        self._thread.join(timeout=2.0)


def main(args=None) -> int:
    return run_node(SimCameraNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
