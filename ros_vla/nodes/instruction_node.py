"""instruction_node: /instruction or a run_task goal in, skills dispatched, task/status out.

Reads typed text with the rule-based reader in ros_vla.language (saycan_planner_node is
the learned planner), then runs each skill call through its executor: pick_place ->
skill/pick_place (oracle or CLIPort); navigate -> base/go_to_station. Tasks, status,
cancel and the emergency stop are the shared task runner's (nodes/task_runner.py).
"""

from __future__ import annotations

from rclpy.node import Node

from ros_vla.language import understand
from ros_vla.nodes.common import Diagnostics, declare, run_node
from ros_vla.nodes.task_runner import Task, TaskRunner
from ros_vla.paths import config_file
from ros_vla.sim.scene import load_scene


class InstructionNode(Node):
    def __init__(self):
        super().__init__("instruction")
        p = declare(self, scene_file="", skill_timeout_s=120.0, navigation_timeout_s=90.0)
        scene = load_scene(p["scene_file"] or config_file("scene_tabletop.yaml"))
        self.objects = {o.name: (o.kind, o.color) for o in scene.objects}
        self.stations = set(scene.stations)
        self.tasks = TaskRunner(self, Diagnostics(self), self.run_task, ["pick_place"], p["skill_timeout_s"],
                                p["navigation_timeout_s"])

    def run_task(self, task: Task):
        task.status("received", "reading the instruction")
        understanding = understand(task.text, self.objects, self.stations)
        if understanding.refusal:
            task.status("refused", understanding.refusal)
            return
        plan = [call.text for call in understanding.calls]
        message = ""
        for step, call in enumerate(understanding.calls, start=1):
            task.status("executing", call.text, plan, step)
            if call.skill == "navigate":
                success, message = task.navigate(call.args["station"])
            else:
                success, message = task.run_skill(call.skill, call.text, call.args)
            if not success:
                task.status("failed", f"{call.text}: {message}", plan, step)
                return
        task.status("succeeded", message, plan)

    def close(self):
        self.tasks.close()


def main(args=None) -> int:
    return run_node(InstructionNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
