"""oracle_skill_node: a scripted pick-and-place skill that reads simulator ground truth.

ORACLE: it looks up object poses on /sim/ground_truth/objects, which exists only in
simulation. It stands in for a perception-driven skill (CLIPort) so the rest of the
stack can be exercised end to end, and it is what evaluation compares learned skills to.

skill/request (JSON, skill "pick_place", args {pick, place}) -> arm/pick_place (poses in
fr3_link0) -> arm/result -> ground-truth check -> skill/result (JSON).
"""

from __future__ import annotations

import time

from rclpy.node import Node
from std_msgs.msg import String

from ros_vla import protocol
from ros_vla.nodes.common import (
    COMMAND_QOS,
    STATUS_QOS,
    Diagnostics,
    Latest,
    QueueWorker,
    Replies,
    declare,
    publish_json,
    run_node,
    run_pick_place_goal,
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
        self.arm_results = Replies()
        self.result_pub = self.create_publisher(String, "skill/result", STATUS_QOS)
        self.pick_place_pub = self.create_publisher(String, "arm/pick_place", COMMAND_QOS)
        self.create_subscription(String, "sim/ground_truth/objects", self.on_truth, COMMAND_QOS)
        self.create_subscription(String, "skill/request", self.on_request, COMMAND_QOS)
        self.create_subscription(String, "arm/result", self.on_arm_result, STATUS_QOS)
        self.requests = QueueWorker(self, self.work, "oracle")

    def on_truth(self, msg: String):
        try:
            self.truth.set(protocol.decode("ground_truth", msg.data))
        except protocol.ProtocolError as err:
            self.diag.publish("warn", f"ignoring malformed ground truth: {err}")
            return
        self.truth_received.set(time.monotonic())

    def on_request(self, msg: String):
        try:
            request = protocol.decode("skill_request", msg.data)
        except protocol.ProtocolError as err:
            self.diag.publish("error", f"skill request refused: {err}")
            return
        if request["skill"] == "pick_place" and not self.requests.put(request):
            publish_json(self.result_pub, {"id": request["id"], "success": False,
                                           "message": "oracle busy: too many requests already waiting"})

    def on_arm_result(self, msg: String):
        try:
            self.arm_results.put(protocol.decode("arm_result", msg.data))
        except protocol.ProtocolError as err:
            self.diag.publish("warn", f"ignoring malformed arm result: {err}")

    def fresh_truth(self) -> dict | None:
        if time.monotonic() - self.truth_received.get() > self.truth_timeout_s:
            return None
        return self.truth.get()

    def work(self, request: dict):
        success, message = self.pick_place(request["args"])
        if self.context.ok():
            publish_json(self.result_pub, {"id": request["id"], "success": success, "message": message})

    def pick_place(self, args: dict) -> tuple[bool, str]:
        pick, place = args.get("pick"), args.get("place")
        truth = self.fresh_truth()
        if truth is None:
            return False, "oracle: no fresh ground truth (is the simulator running?)"
        names = {o["name"] for o in truth["objects"]}
        if pick not in names or place not in names:
            return False, f"oracle: unknown object(s) {pick!r}, {place!r}; scene has {sorted(names)}"
        pick_xyz, pick_yaw, place_xyz, place_yaw = pick_place_targets(truth, pick, place, self.scene)
        moved, message = run_pick_place_goal(self, self.pick_place_pub, self.arm_results, pick_xyz, pick_yaw, place_xyz,
                                             place_yaw, self.arm_timeout_s)
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
