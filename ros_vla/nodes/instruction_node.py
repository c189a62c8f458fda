"""instruction_node: /instruction in, skills dispatched, task/status and /diagnostics out.

Reads typed text with the rule-based reader in ros_vla.language (the SayCan planner
replaces this node once it exists), then runs each skill call through its executor:
pick_place -> skill/request + skill/result (oracle or CLIPort); navigate -> base/goto +
base/status. One task at a time; a new instruction while busy is refused, not queued.
"""

from __future__ import annotations

import threading
import uuid

from rclpy.node import Node
from std_msgs.msg import Bool, String

from ros_vla import protocol
from ros_vla.language import SkillCall, understand
from ros_vla.nodes.common import (
    COMMAND_QOS,
    STATUS_QOS,
    Diagnostics,
    QueueWorker,
    Replies,
    TaskJournal,
    declare,
    drive_to_station,
    publish_json,
    run_node,
    run_skill_request,
)
from ros_vla.paths import config_file
from ros_vla.sim.scene import load_scene


class InstructionNode(Node):
    def __init__(self):
        super().__init__("instruction")
        p = declare(self, scene_file="", skill_timeout_s=120.0, navigation_timeout_s=90.0)
        scene = load_scene(p["scene_file"] or config_file("scene_tabletop.yaml"))
        self.objects = {o.name: (o.kind, o.color) for o in scene.objects}
        self.stations = set(scene.stations)
        self.skill_timeout_s = p["skill_timeout_s"]
        self.navigation_timeout_s = p["navigation_timeout_s"]
        self.diag = Diagnostics(self)
        self.status_pub = self.create_publisher(String, "task/status", STATUS_QOS)
        self.skill_pub = self.create_publisher(String, "skill/request", COMMAND_QOS)
        self.goto_pub = self.create_publisher(String, "base/goto", COMMAND_QOS)
        self.skill_results = Replies()
        self.base_status = Replies()
        self.busy = threading.Event()
        self.create_subscription(String, "instruction", self.on_instruction, COMMAND_QOS)
        self.create_subscription(String, "skill/result", self.on_skill_result, STATUS_QOS)
        self.create_subscription(String, "base/status",
                                 lambda m: self.base_status.put_decoded("base_status", m.data), STATUS_QOS)
        self.estopped = threading.Event()
        self.create_subscription(Bool, "estop", lambda m: (self.estopped.set if m.data else self.estopped.clear)(),
                                 COMMAND_QOS)
        self.tasks = QueueWorker(self, self.work, "tasks")
        self.journal = TaskJournal(self, self.status_pub, self.status)

    def status(self, task_id: str, instruction: str, state: str, message: str, plan=(), step: int = 0):
        publish_json(self.status_pub, {"id": task_id, "instruction": instruction, "state": state,
                                       "message": message, "plan": list(plan), "step": step})
        level = {"failed": "warn", "refused": "warn", "stopped": "error"}.get(state, "ok")
        self.diag.publish(level, f"task {task_id} {state}: {message}", instruction=instruction[:200])

    def on_instruction(self, msg: String):
        task_id = uuid.uuid4().hex[:8]
        text = msg.data
        if self.estopped.is_set():
            self.status(task_id, text[:protocol.MAX_INSTRUCTION_CHARS], "refused",
                        "the emergency stop is engaged: release /estop, then send it again")
            return
        if self.busy.is_set():
            self.status(task_id, text[:protocol.MAX_INSTRUCTION_CHARS], "refused",
                        "busy with another task; send it again when the current one ends")
            return
        self.busy.set()
        self.tasks.put((task_id, text))

    def on_skill_result(self, msg: String):
        try:
            self.skill_results.put(protocol.decode("skill_result", msg.data))
        except protocol.ProtocolError as err:
            self.diag.publish("warn", f"ignoring malformed skill result: {err}")

    def work(self, task: tuple[str, str]):
        task_id, text = task
        self.journal.begin(task_id, text[:protocol.MAX_INSTRUCTION_CHARS])
        try:
            self.run_task(task_id, text)
        except Exception as err:  # a bug in one task must not take the node down
            if not self.context.ok():
                return
            self.status(task_id, text[:200], "failed", f"internal error: {err!r}")
        finally:
            self.journal.end()
            self.busy.clear()

    def run_task(self, task_id: str, text: str):
        shown = text[:protocol.MAX_INSTRUCTION_CHARS]
        self.status(task_id, shown, "received", "reading the instruction")
        understanding = understand(text, self.objects, self.stations)
        if understanding.refusal:
            self.status(task_id, shown, "refused", understanding.refusal)
            return
        plan = [call.text for call in understanding.calls]
        for step, call in enumerate(understanding.calls, start=1):
            self.status(task_id, shown, "executing", call.text, plan, step)
            success, message = self.run_skill(call)
            if self.estopped.is_set():
                self.status(task_id, shown, "stopped", f"emergency stop during '{call.text}': task stopped",
                            plan, step)
                return
            if not success:
                self.status(task_id, shown, "failed", f"{call.text}: {message}", plan, step)
                return
        self.status(task_id, shown, "succeeded", message, plan, len(plan))

    def run_skill(self, call: SkillCall) -> tuple[bool, str]:
        if call.skill == "navigate":
            return self.navigate(call.args["station"])
        return run_skill_request(self, self.skill_pub, self.skill_results, call.skill, call.text, call.args,
                                 self.skill_timeout_s)

    def navigate(self, station: str) -> tuple[bool, str]:
        return drive_to_station(self, self.goto_pub, self.base_status, station, self.navigation_timeout_s)

    def close(self):
        self.tasks.close()


def main(args=None) -> int:
    return run_node(InstructionNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
