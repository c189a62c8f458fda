"""oracle_skill_node: a scripted pick-and-place skill that reads simulator ground truth.

ORACLE: it looks up object poses on /sim/ground_truth/objects, which exists only in
simulation. It stands in for a perception-driven skill (CLIPort) so the rest of the
stack can be exercised end to end, and it is what evaluation compares learned skills to.

The skill/pick_place action (ExecuteSkill, args pick and place: scene object names; or
skill/request JSON) -> arm/pick_and_place (PickPlace, poses in fr3_link0) -> ground-truth
check -> the skill's result. Canceling the skill cancels the arm's goal (the arm holds).
"""

from __future__ import annotations

import time

from rclpy.node import Node
from std_msgs.msg import String

from ros_vla import protocol
from ros_vla.nodes.common import (
    COMMAND_QOS,
    Diagnostics,
    Latest,
    PickPlaceCaller,
    QueueWorker,
    SkillRequest,
    SkillServer,
    declare,
    run_node,
)
from ros_vla.paths import config_file
from ros_vla.sim.goals import object_in_container
from ros_vla.sim.oracle import pick_place_targets
from ros_vla.sim.scene import load_scene


class OracleSkillNode(Node):
    def __init__(self):
        super().__init__("oracle_skill")
        p = declare(self, scene_file="", arm_timeout_s=90.0, settle_s=1.0, truth_timeout_s=1.0)
        self.scene = load_scene(p["scene_file"] or config_file("scene_tabletop.yaml"))
        self.arm_timeout_s = p["arm_timeout_s"]
        self.settle_s = p["settle_s"]
        self.truth_timeout_s = p["truth_timeout_s"]
        self.diag = Diagnostics(self)
        self.truth = Latest()
        self.truth_received = Latest(0.0)
        self.arm = PickPlaceCaller(self)
        self.create_subscription(String, "sim/ground_truth/objects", self.on_truth, COMMAND_QOS)
        self.requests = QueueWorker(self, self.work, "oracle")
        self.skill = SkillServer(self, self.diag, "pick_place", self.submit)

    def on_truth(self, msg: String):
        try:
            self.truth.set(protocol.decode("ground_truth", msg.data))
        except protocol.ProtocolError as err:
            self.diag.publish("warn", f"ignoring malformed ground truth: {err}")
            return
        self.truth_received.set(time.monotonic())

    def submit(self, request: SkillRequest) -> str:
        return "" if self.requests.put(request) else "oracle busy: too many requests already waiting"

    def fresh_truth(self) -> dict | None:
        if time.monotonic() - self.truth_received.get() > self.truth_timeout_s:
            return None
        return self.truth.get()

    def work(self, request: SkillRequest):
        success, message = self.pick_place(request)
        if self.context.ok():
            request.answer(success, message)

    def pick_place(self, request: SkillRequest) -> tuple[bool, str]:
        pick, place = request.args.get("pick"), request.args.get("place")
        truth = self.fresh_truth()
        if truth is None:
            return False, "oracle: no fresh ground truth (is the simulator running?)"
        names = {o["name"] for o in truth["objects"]}
        if pick not in names or place not in names:
            return False, f"oracle: unknown object(s) {pick!r}, {place!r}; scene has {sorted(names)}"
        pick_xyz, pick_yaw, place_xyz, place_yaw = pick_place_targets(truth, pick, place, self.scene)
        moved, message = self.arm.run(pick_xyz, pick_yaw, place_xyz, place_yaw, self.arm_timeout_s, request)
        if not moved:
            return False, message
        time.sleep(self.settle_s)
        truth = self.fresh_truth()
        if truth is None:
            return False, "oracle: ground truth went stale"
        return object_in_container(truth, pick, place, self.scene.spawn.bowl_radius, self.scene.spawn.bowl_height)

    def close(self):
        self.requests.close()


def main(args=None) -> int:
    return run_node(OracleSkillNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
