"""saycan_planner_node: /instruction or a run_task goal in, SayCan plans and runs skills,
task/status out.

Each next skill = argmax over the skill library of p_LM(skill | instruction, steps so far)
x p(success | current state, skill) (ros_vla.saycan.planner), until "done", a step limit,
or too many failed skills (each failure triggers a replan from the new state).

Affordances ("Can"), re-asked before every step, per skill in its configured order:
- cliport: one cliport/affordance call (ros_vla_interfaces/AffordanceQuery) with every
  cliport-scored text, answered within `cliport_timeout_s` (no answer = next source);
- value_function: the learned value function on the newest head and wrist camera frames;
- otherwise `default_affordance`.
Each step's status message ends with how many affordances each source gave.
Executors: pick_place/pick/put_down/rt1 -> the skill/<executor> action (ExecuteSkill);
navigate -> base/go_to_station. Skills whose executor is not in `executors` are left out of
the library, so they can never be chosen.

task/status (TaskStatus) carries the plan so far and the top-k scored skills per step; the
message repeats the top 3 as text for `ros-vla say`. Tasks, cancel and the emergency stop
are the shared task runner's (nodes/task_runner.py).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from rclpy.node import Node
from ros_vla_interfaces.srv import AffordanceQuery
from sensor_msgs.msg import Image

from ros_vla.models import shipped
from ros_vla.nodes.actions import call_service
from ros_vla.nodes.common import SENSOR_QOS, Diagnostics, FrameFilter, Latest, declare, run_node, start_worker
from ros_vla.nodes.task_runner import Task, TaskRunner
from ros_vla.paths import config_file
from ros_vla.perception.ros_messages import image_array, image_problem
from ros_vla.saycan.config import PlannerConfig, Skill, load_skill_library
from ros_vla.saycan.corpus import few_shot_examples
from ros_vla.saycan.planner import SayCanPlanner
from ros_vla.sim.scene import load_scene


class NoObservation(RuntimeError):
    """The value function has no fresh camera frames to look at."""


class SayCanPlannerNode(Node):
    def __init__(self):
        super().__init__("saycan_planner")
        p = declare(
            self, scene_file="", skills_file="", language_model="", lm_batch_size=0, value_function_dir="",
            executors=["pick_place", "navigate"], default_affordance=1.0, cliport_timeout_s=1.5,
            head_camera_topic="camera/camera/color/image_raw", wrist_camera_topic="wrist/camera/color/image_raw",
            stale_image_s=2.0, skill_timeout_s=120.0, navigation_timeout_s=90.0, max_steps=10, max_failures=2,
            min_affordance=0.15, top_k=5, chain_of_thought=False, report_period_s=2.0)
        scene = load_scene(p["scene_file"] or config_file("scene_tabletop.yaml"))
        library = load_skill_library(p["skills_file"] or config_file("saycan_skills.yaml"), scene)
        self.library = library.restricted_to(set(p["executors"]))
        self.default_affordance = float(p["default_affordance"])
        self.cliport_timeout_s = p["cliport_timeout_s"]
        self.stale_image_s = p["stale_image_s"]
        self.diag = Diagnostics(self)
        self.cliport = self.create_client(AffordanceQuery, "cliport/affordance")
        self.frames = {"camera": Latest(), "wrist": Latest()}
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
        self.loaded = threading.Event()  # the models loaded, or failed to (load_error)
        self.affordance_sources = ""  # how many of the last step's affordances each source gave
        self.tasks = TaskRunner(self, self.diag, self.run_task, p["executors"], p["skill_timeout_s"],
                                p["navigation_timeout_s"], name="saycan")
        # /diagnostics also on a timer: a monitor that starts later still learns whether the planner is up.
        self.create_timer(p["report_period_s"], self.report)
        # Models load in a thread so the node is on the graph (and answers "loading") at once.
        start_worker(self, lambda: self.load(p, config), "saycan_load")
        self.get_logger().info(f"skill library: {len(self.library.skills)} skills for executors {p['executors']}")

    def report(self):
        if self.load_error:
            self.diag.publish("error", self.load_error)
        elif not self.loaded.is_set():
            self.diag.publish("ok", "loading the language model and the value function")
        elif not self.tasks.busy.is_set():
            self.diag.publish("ok", self.ready_message)

    # ----------------------------------------------------------------- worker
    def load(self, p: dict, config: PlannerConfig):
        from ros_vla.saycan.llm import load_language_model

        vf_dir = p["value_function_dir"] or str(shipped("saycan_value"))
        try:
            lm = load_language_model(p["language_model"] or str(shipped("saycan_lm")),
                                     batch_size=p["lm_batch_size"])
            if vf_dir != "none":
                from ros_vla.saycan.value_model import ValueFunction

                self.value_function = ValueFunction(vf_dir)
        except (OSError, ValueError) as err:  # a missing or broken model directory: say so on every task
            self.load_error = f"cannot load the planner's models: {err}"
            self.diag.publish("error", self.load_error)
            return
        finally:
            self.loaded.set()
        self.planner = SayCanPlanner(self.library, lm, self.affordances, config,
                                     few_shot_examples(config.chain_of_thought))
        self.ready_message = f"ready: language model {lm.name}, value function {vf_dir}"
        self.report()

    def run_task(self, task: Task):
        # A task sent while the models load waits for them.
        self.loaded.wait()
        task.check_interrupted("loading the models")
        if self.planner is None:
            task.status("refused", self.load_error or "the planner's models did not load")
            return
        task.status("received", "planning")

        def progress(state, message, plan, scores):
            # A cancel or /estop while the language model scored ends the task here, before
            # the step it chose runs (or "done" ends it succeeded).
            task.check_interrupted("planning")
            # Which source answered the step's affordances, so a fallback is seen, not hidden.
            if scores and self.affordance_sources:
                message = f"{message}; affordances: {self.affordance_sources}"
            task.status(state, message, plan, scores=scores)

        def execute(skill: Skill) -> tuple[bool, str]:
            if skill.executor == "navigate":
                return task.navigate(skill.args["station"])
            return task.run_skill(skill.executor, skill.text, skill.args)

        try:
            outcome = self.planner.run(task.text, execute, progress)
        except NoObservation as err:
            task.status("failed", str(err))
            return
        task.status(outcome.state, outcome.message, outcome.steps, scores=outcome.scores,
                    explanation=outcome.explanation)

    # ----------------------------------------------------------------- affordances
    def affordances(self, skills: list[Skill]) -> np.ndarray:
        values = np.full(len(skills), np.nan)
        sources = np.full(len(skills), "default", dtype=object)
        cliport = [i for i, s in enumerate(skills) if "cliport" in s.affordance]
        if cliport:
            answer = self.ask_cliport([skills[i].text for i in cliport])
            if answer is not None:
                values[cliport], sources[cliport] = answer, "cliport"
        wanted = [i for i, s in enumerate(skills) if np.isnan(values[i]) and "value_function" in s.affordance]
        if wanted and self.value_function is not None:
            values[wanted] = self.value_function.predict(self.observation(), [skills[i].text for i in wanted])
            sources[wanted] = "value function"
        names, counts = np.unique(sources, return_counts=True)
        self.affordance_sources = ", ".join(f"{name} {count}" for name, count in zip(names, counts))
        return np.where(np.isnan(values), self.default_affordance, values)

    def ask_cliport(self, texts: list[str]) -> np.ndarray | None:
        response = call_service(self.cliport, AffordanceQuery.Request(texts=texts), self.cliport_timeout_s)
        if response is None or not response.answered or len(response.values) != len(texts):
            return None
        return np.clip(np.asarray(response.values, float), 0.0, 1.0)

    def observation(self) -> np.ndarray:
        from ros_vla.saycan.value_model import VIEWS, observation

        frames = {}
        for view in VIEWS:
            latest = self.frames[view].get()
            if latest is None or time.monotonic() - latest[0] > self.stale_image_s:
                raise NoObservation(f"no {view} camera frame in the last {self.stale_image_s:.0f} s: "
                                   f"the value function needs the cameras")
            frames[view] = image_array(latest[1])[:, :, :3]
        return observation(frames)

    def close(self):
        self.tasks.close()


def main(args=None) -> int:
    return run_node(SayCanPlannerNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
