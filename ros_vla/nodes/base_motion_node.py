"""base_motion_node: base velocity requests and go-to-station, limited, with a watchdog.

Inputs: the base/go_to_station action (ros_vla_interfaces/GoToStation: a station name from
the scene file; feedback: distance and heading error; cancel stops the base), base/goto
(String, the same for tools that publish a name), base/cmd_vel (TwistStamped, from teleop or
a policy; it ends a drive to a station), /odom, /estop. Output: safety/cmd_vel
(TwistStamped) at a fixed rate, which safety_gate limits again and forwards to /cmd_vel
while armed, and base/status (JSON). A stale velocity command or /estop sends zero velocity
on the next control tick.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from ros_vla_interfaces.action import GoToStation
from std_msgs.msg import Bool, String

from ros_vla.nodes.actions import GoalRun, WorkerActionServer
from ros_vla.nodes.common import (
    COMMAND_QOS,
    SENSOR_QOS,
    STATUS_QOS,
    Diagnostics,
    Latest,
    declare,
    publish_json,
    run_node,
)
from ros_vla.paths import config_file
from ros_vla.robot.kinematics import matrix_from_quaternion
from ros_vla.robot.safety import BaseVelocityLimiter, Watchdog, finite
from ros_vla.sim.scene import load_scene

FEEDBACK_PERIOD_S = 0.2


@dataclass
class StationGoal:
    name: str
    pose: tuple[float, float, float]
    started: float  # monotonic
    run: GoalRun | None  # the go_to_station goal (None: from base/goto)
    fed_back: float = 0.0  # monotonic time of the last feedback



def station_velocity(pose: tuple[float, float, float], goal: tuple[float, float, float],
                     gain: float) -> tuple[np.ndarray, float, float, float]:
    """Body-frame (vx, vy) and wz driving a holonomic base toward `goal`; also the
    remaining distance and heading error."""
    x, y, yaw = pose
    dx, dy = goal[0] - x, goal[1] - y
    heading_error = math.atan2(math.sin(goal[2] - yaw), math.cos(goal[2] - yaw))
    c, s = math.cos(yaw), math.sin(yaw)
    body = gain * np.array([c * dx + s * dy, -s * dx + c * dy])
    return body, gain * heading_error, math.hypot(dx, dy), abs(heading_error)


class BaseMotionNode(Node):
    def __init__(self):
        super().__init__("base_motion")
        p = declare(
            self, rate_hz=50.0, max_linear=0.5, max_angular=1.0, max_linear_accel=0.5,
            max_angular_accel=1.5, cmd_timeout_s=0.5, odom_timeout_s=0.5, goto_gain=1.5,
            goto_position_tolerance_m=0.02, goto_yaw_tolerance_rad=0.03, goto_settled_linear_mps=0.02,
            goto_settled_angular_radps=0.05, goto_timeout_s=60.0, scene_file="",
        )
        self.period_s = 1.0 / p["rate_hz"]
        self.limiter = BaseVelocityLimiter(p["max_linear"], p["max_angular"], p["max_linear_accel"],
                                           p["max_angular_accel"])
        self.cmd_watchdog = Watchdog(p["cmd_timeout_s"])
        self.odom_watchdog = Watchdog(p["odom_timeout_s"])
        self.goto_gain = p["goto_gain"]
        self.goto_tolerance = (p["goto_position_tolerance_m"], p["goto_yaw_tolerance_rad"])
        self.goto_settled_speed = (p["goto_settled_linear_mps"], p["goto_settled_angular_radps"])
        self.goto_timeout_s = p["goto_timeout_s"]
        self.stations = load_scene(p["scene_file"] or config_file("scene_tabletop.yaml")).stations
        self.diag = Diagnostics(self)

        self.cmd_pub = self.create_publisher(TwistStamped, "safety/cmd_vel", COMMAND_QOS)
        self.status_pub = self.create_publisher(String, "base/status", STATUS_QOS)
        self.command = Latest((0.0, 0.0, 0.0))
        self.odom_pose = Latest()
        self.odom_speed = Latest((0.0, 0.0))
        self.goto: StationGoal | None = None
        self.estopped = False
        self.was_moving = False
        self.create_subscription(TwistStamped, "base/cmd_vel", self.on_cmd_vel, COMMAND_QOS)
        self.create_subscription(String, "base/goto", self.on_goto, COMMAND_QOS)
        self.create_subscription(Odometry, "odom", self.on_odom, SENSOR_QOS)
        self.create_subscription(Bool, "estop", self.on_estop, COMMAND_QOS)
        self.create_timer(self.period_s, self.control)
        WorkerActionServer(self, GoToStation, "base/go_to_station", lambda run: self.start_goto(run.goal.station, run),
                           on_cancel=self.on_cancel)
        self.publish_status("idle", "ready")

    def publish_status(self, state: str, message: str, **extra):
        publish_json(self.status_pub, {"state": state, "message": message,
                                       "station": self.goto.name if self.goto else "", **extra})

    def end_goto(self, state: str, message: str, **extra):
        """The drive to a station ends: base/status says how, and its goal gets the result."""
        self.publish_status(state, message, **extra)
        goal, self.goto = self.goto, None
        if goal is not None and goal.run is not None:
            goal.run.finish(GoToStation.Result(success=state == "arrived", message=message), state == "arrived")

    def start_goto(self, station: str, run: GoalRun | None) -> str:
        """Drive to `station`, or why not."""
        station = station.strip()
        if station not in self.stations:
            why = f"unknown station '{station[:80]}'; known: {sorted(self.stations)}"
        elif self.estopped:
            why = "emergency stop is engaged"
        else:
            if self.goto is not None:
                self.end_goto("failed", f"going to {self.goto.name}: replaced by a goal for the {station}")
            self.goto = StationGoal(station, self.stations[station], time.monotonic(), run)
            self.publish_status("moving", f"going to {station}")
            return ""
        self.publish_status("refused", why)
        return why

    def on_cancel(self, run: GoalRun):
        if self.goto is not None and self.goto.run is run:
            self.end_goto("stopped", f"going to {self.goto.name}: canceled; base stopped")
            self.stop_now()

    def on_cmd_vel(self, msg: TwistStamped):
        command = (msg.twist.linear.x, msg.twist.linear.y, msg.twist.angular.z)
        if not finite(command):
            self.diag.publish("error", f"refused base command {command}: not finite; stopping")
            command = (0.0, 0.0, 0.0)
        if self.goto is not None:
            self.end_goto("failed", f"going to {self.goto.name}: a base/cmd_vel command took over")
        self.command.set(command)
        self.cmd_watchdog.feed(time.monotonic())

    def on_goto(self, msg: String):
        self.start_goto(msg.data, None)

    def on_odom(self, msg: Odometry):
        o, position = msg.pose.pose.orientation, msg.pose.pose.position
        try:
            rotation = matrix_from_quaternion([o.x, o.y, o.z, o.w])
        except ValueError:
            return  # no orientation (a zero or NaN quaternion): not a pose to drive from
        if not finite([position.x, position.y]):
            return
        twist = msg.twist.twist
        speed = (math.hypot(twist.linear.x, twist.linear.y), abs(twist.angular.z))
        self.odom_speed.set(speed if finite(speed) else (math.inf, math.inf))
        self.odom_pose.set((position.x, position.y, math.atan2(rotation[1, 0], rotation[0, 0])))
        self.odom_watchdog.feed(time.monotonic())

    def on_estop(self, msg: Bool):
        if msg.data and not self.estopped:
            self.estopped = True
            if self.goto is not None:
                self.end_goto("stopped", f"going to {self.goto.name}: emergency stop")
            self.stop_now()
            self.publish_status("stopped", "emergency stop")
            self.diag.publish("error", "emergency stop engaged")
        elif not msg.data and self.estopped:
            self.estopped = False
            self.publish_status("idle", "emergency stop released")

    def stop_now(self):
        self.limiter.reset()
        self.publish_velocity((0.0, 0.0, 0.0))

    def publish_velocity(self, velocity):
        msg = TwistStamped()
        msg.twist.linear.x, msg.twist.linear.y, msg.twist.angular.z = (float(v) for v in velocity)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = "base_link"
        self.cmd_pub.publish(msg)

    def goto_command(self, now: float):
        goal = self.goto
        name = goal.name
        pose = self.odom_pose.get()
        if pose is None or self.odom_watchdog.expired(now):
            self.end_goto("failed", f"going to {name}: no fresh /odom")
            return None
        if now - goal.started > self.goto_timeout_s:
            self.end_goto("failed", f"going to {name}: not there after {self.goto_timeout_s:.0f} s")
            return None
        body, wz, distance, heading_error = station_velocity(pose, goal.pose, self.goto_gain)
        if goal.run is not None and now - goal.fed_back > FEEDBACK_PERIOD_S:
            goal.fed_back = now
            goal.run.feedback(GoToStation.Feedback(distance_m=distance, heading_error_rad=heading_error))
        # Arrived only once settled there: a node that got its odometry late (a loaded
        # machine) passes through the station at speed and must come back, not stop past it.
        linear, angular = self.odom_speed.get()
        if (distance < self.goto_tolerance[0] and heading_error < self.goto_tolerance[1]
                and linear < self.goto_settled_speed[0] and angular < self.goto_settled_speed[1]):
            self.end_goto("arrived", f"arrived at the {name}", station_reached=name)
            return None
        return (body[0], body[1], wz)

    def control(self):
        now = time.monotonic()
        if self.estopped:
            self.stop_now()
            return
        if self.goto is not None:
            command = self.goto_command(now)
            if command is None:
                self.stop_now()
                return
        elif self.cmd_watchdog.expired(now):
            if self.was_moving:
                self.diag.publish("warn", "base command went stale: stopping")
                self.was_moving = False
            self.stop_now()
            return
        else:
            command = self.command.get()
        velocity = self.limiter.step(*command, dt=self.period_s)
        self.was_moving = any(abs(v) > 1e-6 for v in velocity)
        self.publish_velocity(velocity)


def main(args=None) -> int:
    return run_node(BaseMotionNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
