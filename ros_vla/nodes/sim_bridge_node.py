"""sim_bridge_node: the simulated robot, speaking the real robot's ROS interfaces.

Publishes what franka_ros2 and the base driver publish on the robot (/joint_states,
/odom, /tf) plus /clock, and obeys the same commands (/fr3_arm_controller/joint_trajectory,
/fr3_gripper/command, /cmd_vel). Object poses go to /sim/ground_truth/objects, for the
simulated cameras (sim_camera_node) and evaluation only.

Like the robot's own stop, /estop true holds the arm where it is, stops the base and
refuses every arm, gripper and base command, whoever sends it, until /estop is false;
each refusal is on /diagnostics.

The simulation runs in its own thread; subscription callbacks only store commands.
"""

from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Int32, String
from tf2_msgs.msg import TFMessage
from trajectory_msgs.msg import JointTrajectory

from ros_vla.nodes.common import (
    COMMAND_QOS,
    LATCHED_QOS,
    Diagnostics,
    Latest,
    declare,
    publish_json,
    run_node,
    start_worker,
)
from ros_vla.paths import config_file
from ros_vla.perception import ros_messages as rm
from ros_vla.robot import panda
from ros_vla.robot.safety import JointLimits, Watchdog, reorder_positions, validate_joint_trajectory
from ros_vla.sim.scene import load_scene
from ros_vla.sim.world import SimWorld

# Rotation from a camera's body frame (x forward, z up) to its optical frame (z forward).
BODY_TO_OPTICAL = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float).T


class SimBridgeNode(Node):
    def __init__(self):
        super().__init__("sim_bridge")
        p = declare(
            self, scene_file="", seed=0, time_step_s=1.0 / 240.0, real_time_factor=1.0,
            joint_state_rate_hz=100.0, clock_rate_hz=100.0, ground_truth_rate_hz=30.0, cmd_vel_timeout_s=0.5,
            base_max_linear=1.0, base_max_angular=2.0,
        )
        # The base driver's own limits (as a real one clamps to its motors'), above the gate's.
        self.base_max = np.array([p["base_max_linear"], p["base_max_linear"], p["base_max_angular"]], float)
        self.scene_path = p["scene_file"] or str(config_file("scene_tabletop.yaml"))
        self.scene = load_scene(self.scene_path)
        self.world_options = {"seed": p["seed"], "time_step_s": p["time_step_s"], "renderer": None}
        self.world: SimWorld | None = None
        self.real_time_factor = float(p["real_time_factor"])
        self.joint_state_period = 1.0 / p["joint_state_rate_hz"]
        self.clock_period = 1.0 / p["clock_rate_hz"]
        self.ground_truth_period = 1.0 / p["ground_truth_rate_hz"]
        self.limits = JointLimits()
        self.diag = Diagnostics(self, hardware_id="pybullet")

        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.joint_pub = self.create_publisher(JointState, "joint_states", COMMAND_QOS)
        self.odom_pub = self.create_publisher(Odometry, "odom", COMMAND_QOS)
        self.tf_pub = self.create_publisher(TFMessage, "/tf", COMMAND_QOS)
        self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", LATCHED_QOS)
        self.truth_pub = self.create_publisher(String, "sim/ground_truth/objects", COMMAND_QOS)

        self.pending_trajectory = Latest()
        self.pending_gripper = Latest()
        self.pending_reset = Latest()
        self.base_command = Latest((0.0, 0.0, 0.0))
        self.base_watchdog = Watchdog(p["cmd_vel_timeout_s"])
        self.estop = Latest(False)
        self.estop_engaged = False  # as the simulation loop last acted on it
        self.create_subscription(JointTrajectory, "fr3_arm_controller/joint_trajectory",
                                 self.pending_trajectory.set, COMMAND_QOS)
        self.create_subscription(Float64, "fr3_gripper/command", lambda m: self.pending_gripper.set(m.data),
                                 COMMAND_QOS)
        self.create_subscription(TwistStamped, "cmd_vel", self.on_cmd_vel, COMMAND_QOS)
        self.create_subscription(Bool, "estop", lambda m: self.estop.set(bool(m.data)), COMMAND_QOS)
        self.create_subscription(Int32, "sim/reset", lambda m: self.pending_reset.set(m.data), COMMAND_QOS)

        self.publish_static_transforms()
        self.stats = {"refused_trajectories": 0, "refused_under_estop": 0}
        self._running = True
        self._thread = start_worker(self, self.simulate, "simulation")

    # ----------------------------------------------------------------- commands
    def on_cmd_vel(self, msg: TwistStamped):
        if self.estop.get():
            self.stats["refused_under_estop"] += 1
            return
        command = np.array([msg.twist.linear.x, msg.twist.linear.y, msg.twist.angular.z], float)
        if not np.all(np.isfinite(command)):
            self.diag.publish("error", "refused cmd_vel: not finite; base stopped")
            command = np.zeros(3)
        self.base_command.set(tuple(np.clip(command, -self.base_max, self.base_max)))
        self.base_watchdog.feed(time.monotonic())

    def apply_trajectory(self, msg: JointTrajectory):
        """Check a trajectory as the real controller would, then follow it or refuse it."""
        q_now, _ = self.world.arm_joint_state()
        points = [(list(pt.positions), pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9)
                  for pt in msg.points]
        errors = validate_joint_trajectory(list(msg.joint_names), points, self.limits,
                                           panda.ARM_JOINT_NAMES, q_current=q_now)
        if errors:
            self.stats["refused_trajectories"] += 1
            self.diag.publish("error", "refused joint trajectory: " + "; ".join(errors))
            return
        ordered = [(reorder_positions(msg.joint_names, q, panda.ARM_JOINT_NAMES), t) for q, t in points]
        self.world.set_arm_trajectory(ordered)

    def apply_estop(self) -> bool:
        """The robot's own stop: True while engaged (the arm held, the base stopped, and
        every arm and gripper command that arrives refused)."""
        engaged = self.estop.get()
        if engaged and not self.estop_engaged:
            q_now, _ = self.world.arm_joint_state()
            self.world.set_arm_trajectory([(q_now, 0.05)])
            self.world.set_base_velocity(0.0, 0.0, 0.0)
            self.base_command.set((0.0, 0.0, 0.0))
            self.diag.publish("error", "emergency stop engaged: arm held, base stopped, "
                                       "every arm, gripper and base command refused")
        elif self.estop_engaged and not engaged:
            self.diag.publish("ok", "emergency stop released: commands accepted again")
        self.estop_engaged = engaged
        if engaged:
            for what, pending in (("joint trajectory", self.pending_trajectory), ("gripper command",
                                                                                 self.pending_gripper)):
                if pending.take() is not None:
                    self.stats["refused_under_estop"] += 1
                    self.diag.publish("error", f"refused {what}: the emergency stop is engaged")
            self.world.set_base_velocity(0.0, 0.0, 0.0)
        return engaged

    def apply_commands(self):
        if self.apply_estop():
            if self.pending_reset.take() is not None:
                self.diag.publish("error", "refused scene reset: the emergency stop is engaged")
            return
        reset_seed = self.pending_reset.take()
        if reset_seed is not None:
            if reset_seed < 0:
                self.diag.publish("error", f"refused scene reset with seed {reset_seed}: seeds are 0 or more")
            else:
                self.world.reset(int(reset_seed))
                self.get_logger().info(f"scene reset with seed {reset_seed}")
        trajectory = self.pending_trajectory.take()
        if trajectory is not None:
            self.apply_trajectory(trajectory)
        width = self.pending_gripper.take()
        if width is not None:
            if np.isfinite(width) and panda.FINGER_WIDTH_MIN_M <= width <= panda.FINGER_WIDTH_MAX_M:
                self.world.set_gripper_width(width)
            else:
                self.diag.publish("error", f"refused gripper command {width}: not within "
                                           f"{panda.FINGER_WIDTH_MIN_M}..{panda.FINGER_WIDTH_MAX_M} m")
        if self.base_watchdog.expired(time.monotonic()):
            self.world.set_base_velocity(0.0, 0.0, 0.0)
        else:
            self.world.set_base_velocity(*self.base_command.get())

    # ----------------------------------------------------------------- simulation loop
    def simulate(self):
        self.world = world = SimWorld(self.scene, **self.world_options)
        self.get_logger().info(f"simulating {self.scene_path} (seed {world.seed})")
        # The ROS clock keeps running across /sim/reset (the world's own time restarts),
        # so nodes using sim time never see time go backwards.
        sim_time = next_clock = next_joint_state = next_truth = 0.0
        wall_start = last_report = time.monotonic()
        try:
            while self._running:
                self.apply_commands()
                world.step(1)
                sim_time += world.time_step_s
                stamp = rm.time_msg(sim_time)
                # Each stream is due on its own period of sim time; a small epsilon keeps
                # rates exact when a period is a multiple of the physics step.
                if sim_time + 1e-9 >= next_clock:
                    next_clock += self.clock_period
                    self.clock_pub.publish(Clock(clock=stamp))
                if sim_time + 1e-9 >= next_joint_state:
                    next_joint_state += self.joint_state_period
                    self.publish_robot_state(stamp)
                if sim_time + 1e-9 >= next_truth:
                    next_truth += self.ground_truth_period
                    self.publish_ground_truth(sim_time)
                if self.real_time_factor > 0:
                    ahead = sim_time / self.real_time_factor - (time.monotonic() - wall_start)
                    if ahead > 0:
                        time.sleep(ahead)
                if time.monotonic() - last_report > 5.0:
                    last_report = time.monotonic()
                    self.report(sim_time, last_report - wall_start)
        finally:
            world.close()

    def report(self, sim_elapsed: float, wall_elapsed: float):
        rtf = sim_elapsed / max(wall_elapsed, 1e-9)
        self.diag.publish("ok" if rtf > 0.9 * max(self.real_time_factor, 0.01) else "warn",
                          f"real-time factor {rtf:.2f}", real_time_factor=f"{rtf:.3f}",
                          refused_trajectories=self.stats["refused_trajectories"],
                          refused_under_estop=self.stats["refused_under_estop"], estop=self.estop_engaged,
                          held_object=self.world.held_object() or "")

    # ----------------------------------------------------------------- publishing
    def publish_robot_state(self, stamp):
        q, dq = self.world.arm_joint_state()
        fingers, finger_velocity = self.world.finger_joint_state()
        msg = JointState()
        msg.header.stamp = stamp
        msg.name = list(panda.ARM_JOINT_NAMES) + list(panda.FINGER_JOINT_NAMES)
        msg.position = q.tolist() + fingers.tolist()
        msg.velocity = dq.tolist() + finger_velocity.tolist()
        self.joint_pub.publish(msg)

        base = self.world.base_matrix()
        vx, vy, wz = self.world.base_velocity()
        odom = Odometry()
        odom.header.stamp = stamp
        odom.header.frame_id = "odom"
        odom.child_frame_id = "base_link"
        transform = rm.transform_from_matrix(base)
        odom.pose.pose.position.x, odom.pose.pose.position.y = transform.translation.x, transform.translation.y
        odom.pose.pose.orientation = transform.rotation
        odom.twist.twist.linear.x, odom.twist.twist.linear.y, odom.twist.twist.angular.z = vx, vy, wz
        self.odom_pub.publish(odom)

        arm_base = self.world.link_pose("fr3_link0")
        hand = np.linalg.inv(arm_base) @ self.world.link_pose("fr3_hand")
        self.tf_pub.publish(TFMessage(transforms=[
            rm.transform_msg(base, "odom", "base_link", stamp),
            # robot_state_publisher would give the whole chain; the hand is what a
            # wrist camera hangs from.
            rm.transform_msg(hand, "fr3_link0", "fr3_hand", stamp),
        ]))

    def publish_static_transforms(self):
        stamp = rm.time_msg(0.0)
        arm_mount = self.scene.arm_mount_matrix()
        transforms = [
            rm.transform_msg(np.eye(4), "map", "odom", stamp),
            rm.transform_msg(arm_mount, "base_link", "fr3_link0", stamp),
        ]
        for cam in self.scene.cameras:
            body = cam.mount_pose() @ np.linalg.inv(BODY_TO_OPTICAL)
            transforms.append(rm.transform_msg(body, cam.parent, cam.link_frame, stamp))
            transforms.append(rm.transform_msg(BODY_TO_OPTICAL, cam.link_frame, cam.color_frame, stamp))
        self.tf_static_pub.publish(TFMessage(transforms=transforms))

    def publish_ground_truth(self, now: float):
        objects = [
            {"name": o.name, "kind": o.kind, "color": o.color, "position": list(o.position),
             "orientation_xyzw": list(o.quaternion_xyzw), "held": o.held}
            for o in self.world.object_poses()
        ]
        publish_json(self.truth_pub, {
            "stamp": now, "seed": self.world.seed, "frame": "map", "base_pose": list(self.world.base_pose()),
            "arm_base_in_map": self.world.link_pose("fr3_link0").tolist(), "objects": objects,
        })

    def close(self):
        self._running = False
        self._thread.join(timeout=2.0)


def main(args=None) -> int:
    return run_node(SimBridgeNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
