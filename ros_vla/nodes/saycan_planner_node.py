"""saycan_planner_node: /instruction in, SayCan plans and runs skills, task/status out.

Each next skill = argmax over the skill library of p_LM(skill | instruction, steps so far)
x p(success | current state, skill) (ros_vla.saycan.planner), until "done", a step limit,
or too many failed skills (each failure triggers a replan from the new state).

Affordances ("Can"), re-asked before every step, per skill in its configured order:
- cliport: an affordance_query on skill/affordance_query; the reply on skill/affordance
  with source "cliport" (waited for `cliport_timeout_s`; nobody answering = next source);
- value_function: the learned value function on the newest head and wrist camera frames;
- otherwise `default_affordance`.
Executors: pick_place/pick/put_down/rt1 -> skill/request {id, skill, text, args} and its
skill/result; navigate -> base/goto and base/status. Skills whose executor is not in
`executors` are left out of the library, so they can never be chosen.

task/status carries the plan so far and the top-k scored skills per step:
{id, instruction, state, message, plan, step, scores: [{skill, llm, affordance, combined}],
explanation}; the message repeats the top 3 as text for `ros-vla say`.
One task at a time; a new instruction while busy is refused, not queued.
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String

from ros_vla import protocol
from ros_vla.nodes.common import (
    COMMAND_QOS,
    SENSOR_QOS,
    STATUS_QOS,
    Diagnostics,
    FrameFilter,
    Latest,
    QueueWorker,
    Replies,
    TaskJournal,
    declare,
    drive_to_station,
    publish_json,
    run_node,
    run_skill_request,
)
from ros_vla.paths import config_file, package_share
from ros_vla.perception.ros_messages import image_array, image_problem
from ros_vla.saycan.config import PlannerConfig, Skill, load_skill_library
from ros_vla.saycan.corpus import few_shot_examples
from ros_vla.saycan.planner import SayCanPlanner
from ros_vla.sim.scene import load_scene

SKILL_REQUEST_EXECUTORS = ("pick_place", "pick", "put_down", "rt1")


class EmergencyStop(RuntimeError):
    """/estop was engaged during the task: it ends "stopped", nothing more of it runs."""


class NoObservation(RuntimeError):
    """The value function has no fresh camera frames to look at."""


class SayCanPlannerNode(Node):
    def __init__(self):
        super().__init__("saycan_planner")
        p = declare(
            self, scene_file="", skills_file="", language_model="", lm_batch_size=0, value_function_dir="",
            executors=["pick_place", "navigate"], default_affordance=1.0, cliport_timeout_s=0.5,
            head_camera_topic="camera/camera/color/image_raw", wrist_camera_topic="wrist/camera/color/image_raw",
            stale_image_s=2.0, skill_timeout_s=120.0, navigation_timeout_s=90.0, max_steps=10, max_failures=2,
            min_affordance=0.15, top_k=5, chain_of_thought=False, report_period_s=2.0)
        scene = load_scene(p["scene_file"] or config_file("scene_tabletop.yaml"))
        library = load_skill_library(p["skills_file"] or config_file("saycan_skills.yaml"), scene)
        self.library = library.restricted_to(set(p["executors"]))
        self.default_affordance = float(p["default_affordance"])
        self.cliport_timeout_s = p["cliport_timeout_s"]
        self.stale_image_s = p["stale_image_s"]
        self.skill_timeout_s = p["skill_timeout_s"]
        self.navigation_timeout_s = p["navigation_timeout_s"]
        self.diag = Diagnostics(self)
        self.status_pub = self.create_publisher(String, "task/status", STATUS_QOS)
        self.skill_pub = self.create_publisher(String, "skill/request", COMMAND_QOS)
        self.goto_pub = self.create_publisher(String, "base/goto", COMMAND_QOS)
        self.query_pub = self.create_publisher(String, "skill/affordance_query", COMMAND_QOS)
        self.skill_results = Replies()
        self.base_status = Replies()
        self.affordance_replies = Replies()
        self.frames = {"camera": Latest(), "wrist": Latest()}
        self.busy = threading.Event()
        self.create_subscription(String, "instruction", self.on_instruction, COMMAND_QOS)
        self.create_subscription(String, "skill/result", self.on_skill_result, STATUS_QOS)
        self.create_subscription(String, "skill/affordance", self.on_affordance, STATUS_QOS)
        self.create_subscription(String, "base/status",
                                 lambda m: self.base_status.put_decoded("base_status", m.data), STATUS_QOS)
        for view, topic in (("camera", p["head_camera_topic"]), ("wrist", p["wrist_camera_topic"])):
            keep = FrameFilter(lambda m, view=view: self.frames[view].set((time.monotonic(), m)),
                               lambda m: image_problem(m, ("rgb8",)))
            self.create_subscription(Image, topic, keep, SENSOR_QOS)
        config = PlannerConfig(max_steps=p["max_steps"], max_failures=p["max_failures"],
                               min_affordance=p["min_affordance"], top_k=p["top_k"],
                               chain_of_thought=p["chain_of_thought"])
        self.planner: SayCanPlanner | None = None
        self.value_function = None
        self.load_error = ""
        self.ready_message = ""
        self.ready = threading.Event()
        # Models load in the worker so the node is on the graph (and answers "loading") at once.
        self.estopped = threading.Event()
        self.create_subscription(Bool, "estop", lambda m: (self.estopped.set if m.data else self.estopped.clear)(),
                                 COMMAND_QOS)
        self.tasks = QueueWorker(self, self.work, "saycan")
        self.journal = TaskJournal(self, self.status_pub, self.status)
        # /diagnostics also on a timer: a monitor that starts later still learns whether the planner is up.
        self.create_timer(p["report_period_s"], self.report)
        self.tasks.put(("load", p, config))
        self.get_logger().info(f"skill library: {len(self.library.skills)} skills for executors {p['executors']}")

    # ----------------------------------------------------------------- callbacks: store only
    def on_instruction(self, msg: String):
        task_id = uuid.uuid4().hex[:8]
        shown = msg.data[:protocol.MAX_INSTRUCTION_CHARS]
        if self.estopped.is_set():
            self.status(task_id, shown, "refused", "the emergency stop is engaged: release /estop, then send it again")
            return
        if self.busy.is_set():
            self.status(task_id, shown, "refused", "busy with another task; send it again when the current one ends")
            return
        self.busy.set()
        self.tasks.put(("task", task_id, msg.data))

    def on_skill_result(self, msg: String):
        try:
            self.skill_results.put(protocol.decode("skill_result", msg.data))
        except protocol.ProtocolError as err:
            self.diag.publish("warn", f"ignoring malformed skill result: {err}")

    def on_affordance(self, msg: String):
        try:
            self.affordance_replies.put(protocol.decode("affordance", msg.data))
        except protocol.ProtocolError as err:
            self.diag.publish("warn", f"ignoring malformed affordance reply: {err}")

    def report(self):
        if self.load_error:
            self.diag.publish("error", self.load_error)
        elif not self.ready.is_set():
            self.diag.publish("ok", "loading the language model and the value function")
        elif not self.busy.is_set():
            self.diag.publish("ok", self.ready_message)

    # ----------------------------------------------------------------- worker
    def status(self, task_id: str, instruction: str, state: str, message: str, plan=(), scores=(),
               explanation: str = ""):
        publish_json(self.status_pub, {
            "id": task_id, "instruction": instruction, "state": state, "message": message, "plan": list(plan),
            "step": len(plan), "scores": [s.as_dict() for s in scores], "explanation": explanation})
        level = {"failed": "warn", "refused": "warn"}.get(state, "ok")
        self.diag.publish(level, f"task {task_id} {state}: {message}"[:400], instruction=instruction[:200])

    def work(self, item: tuple):
        if item[0] == "load":
            self.load(*item[1:])
            return
        _, task_id, text = item
        self.journal.begin(task_id, text[:protocol.MAX_INSTRUCTION_CHARS])
        try:
            self.run_task(task_id, text)
        except Exception as err:  # a bug in one task must not take the node down
            if self.context.ok():
                self.status(task_id, text[:200], "failed", f"internal error: {err!r}")
        finally:
            self.journal.end()
            self.busy.clear()

    def load(self, p: dict, config: PlannerConfig):
        from ros_vla.saycan.llm import load_language_model

        vf_dir = p["value_function_dir"] or str(package_share() / "models" / "saycan_value")
        try:
            lm = load_language_model(p["language_model"] or str(package_share() / "models" / "saycan_lm"),
                                     batch_size=p["lm_batch_size"])
            if vf_dir != "none":
                from ros_vla.saycan.affordance import ValueFunction

                self.value_function = ValueFunction(vf_dir)
        except (OSError, ValueError) as err:  # a missing or broken model directory: say so on every task
            self.load_error = f"cannot load the planner's models: {err}"
            self.diag.publish("error", self.load_error)
            return
        self.planner = SayCanPlanner(self.library, lm, self.affordances, config,
                                     few_shot_examples(config.chain_of_thought))
        self.ready_message = f"ready: language model {lm.name}, value function {vf_dir}"
        self.ready.set()
        self.report()

    def run_task(self, task_id: str, text: str):
        shown = text[:protocol.MAX_INSTRUCTION_CHARS]
        if not self.ready.is_set():
            self.status(task_id, shown, "refused",
                        self.load_error or "still loading the language model; try again in a moment")
            return
        self.status(task_id, shown, "received", "planning")

        def progress(state, message, plan, scores):
            self.status(task_id, shown, state, message, plan, scores)

        try:
            outcome = self.planner.run(text, self.execute, progress)
        except NoObservation as err:
            self.status(task_id, shown, "failed", str(err))
            return
        except EmergencyStop as err:
            self.status(task_id, shown, "stopped", str(err))
            return
        self.status(task_id, shown, outcome.state, outcome.message, outcome.steps, outcome.scores,
                    outcome.explanation)

    # ----------------------------------------------------------------- affordances
    def affordances(self, skills: list[Skill]) -> np.ndarray:
        values = np.full(len(skills), np.nan)
        cliport = [i for i, s in enumerate(skills) if "cliport" in s.affordance]
        if cliport:
            answer = self.ask_cliport([skills[i].text for i in cliport])
            if answer is not None:
                values[cliport] = answer
        wanted = [i for i, s in enumerate(skills) if np.isnan(values[i]) and "value_function" in s.affordance]
        if wanted and self.value_function is not None:
            values[wanted] = self.value_function.predict(self.observation(), [skills[i].text for i in wanted])
        return np.where(np.isnan(values), self.default_affordance, values)

    def ask_cliport(self, texts: list[str]) -> np.ndarray | None:
        query_id = uuid.uuid4().hex[:8]
        self.affordance_replies.clear()
        publish_json(self.query_pub, {"id": query_id, "texts": texts})
        reply = self.affordance_replies.wait(
            lambda r: r["id"] == query_id and r["source"] == "cliport" and len(r["values"]) == len(texts),
            self.cliport_timeout_s)
        return None if reply is None else np.clip(np.asarray(reply["values"], float), 0.0, 1.0)

    def observation(self) -> np.ndarray:
        from ros_vla.saycan.affordance import VIEWS, observation

        frames = {}
        for view in VIEWS:
            latest = self.frames[view].get()
            if latest is None or time.monotonic() - latest[0] > self.stale_image_s:
                raise NoObservation(f"no {view} camera frame in the last {self.stale_image_s:.0f} s: "
                                   f"the value function needs the cameras")
            frames[view] = image_array(latest[1])[:, :, :3]
        return observation(frames)

    # ----------------------------------------------------------------- executors
    def execute(self, skill: Skill) -> tuple[bool, str]:
        success, message = self.execute_skill(skill)
        if self.estopped.is_set():
            raise EmergencyStop(f"emergency stop during '{skill.text}': task stopped")
        return success, message

    def execute_skill(self, skill: Skill) -> tuple[bool, str]:
        if skill.executor == "navigate":
            return self.navigate(skill.args["station"])
        if skill.executor not in SKILL_REQUEST_EXECUTORS:
            return False, f"no executor for '{skill.executor}' skills"
        return run_skill_request(self, self.skill_pub, self.skill_results, skill.executor, skill.text, skill.args,
                                 self.skill_timeout_s)

    def navigate(self, station: str) -> tuple[bool, str]:
        return drive_to_station(self, self.goto_pub, self.base_status, station, self.navigation_timeout_s)

    def close(self):
        self.tasks.close()


def main(args=None) -> int:
    return run_node(SayCanPlannerNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
