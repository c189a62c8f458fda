"""saycan_planner_node as a process over DDS, with the test playing every other part of the
stack through ros_vla_interfaces: the pick-and-place executor (the skill/pick_place action),
the base (base/go_to_station) and CLIPort's affordances (the cliport/affordance service).

The node's language model is a scripted OpenAI-compatible completions server in the test
(so the node's HTTP backend runs for real, and the plan does not depend on how well the
shipped model is trained); without a value function (value_function_dir none) skills that
CLIPort does not score get default_affordance. Timing bounds are loose: the machine is shared.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionClient, ActionServer, CancelResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from ros_test_utils import isolated_domain, wait_until
from ros_vla_interfaces.action import ExecuteSkill, GoToStation, RunTask
from ros_vla_interfaces.msg import TaskStatus
from ros_vla_interfaces.srv import AffordanceQuery
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ros_vla.nodes.common import COMMAND_QOS, STATUS_QOS
from ros_vla.paths import use_project_dds_profile
from ros_vla.tools.stack_client import status_dict

DEFAULT_AFFORDANCE = 0.05
PLANS = {  # what the scripted language model prefers, step by step
    "put the red block in the green bowl": ["pick up the red block and place it in the green bowl", "done"],
    "put the blue block in the purple bowl": ["pick up the blue block and place it in the purple bowl", "done"],
}


class ScriptedCompletions:
    """/v1/completions with echo + logprobs: the option that is the scripted next step gets log-probability
    0, every other -5 (unknown instructions: done). The shared prompt is the list's common prefix."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                payload = json.dumps({"choices": ScriptedCompletions.choices(body["prompt"])}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def choices(prompts: list[str]) -> list[dict]:
        shared = os.path.commonprefix(prompts)
        instruction = shared.rsplit("Human: ", 1)[1].split("\n", 1)[0]
        steps = shared.rsplit("Robot:", 1)[1].count(",")
        plan = PLANS.get(instruction, ["done"])
        wanted = plan[min(steps, len(plan) - 1)]
        choices = []
        for index, text in enumerate(prompts):
            option = text[len(shared):]
            score = 0.0 if option.strip(" ,.") == wanted else -5.0
            choices.append({"index": index, "text": text, "logprobs": {
                "tokens": [shared, option], "token_logprobs": [None, score], "text_offset": [0, len(shared)]}})
        return choices

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Harness:
    def __init__(self, context):
        self.node = rclpy.create_node("saycan_node_test", context=context)
        node = self.node
        self.lock = threading.Lock()
        self.statuses, self.requests, self.gotos, self.queries, self.diagnostics = [], [], [], [], []
        self.cliport_value = 0.9
        self.skill_duration_s = 0.0  # > 0: the skill takes this long, unless canceled
        self.canceled_skills = []
        group = ReentrantCallbackGroup()  # a slow skill must not hold up the planner's other calls
        self.instruction_pub = node.create_publisher(String, "/instruction", COMMAND_QOS)
        node.create_subscription(TaskStatus, "/task/status", lambda m: self.store(self.statuses, status_dict(m)),
                                 STATUS_QOS)
        self.skill_server = ActionServer(node, ExecuteSkill, "/skill/pick_place", self.on_skill,
                                         cancel_callback=lambda goal: CancelResponse.ACCEPT, callback_group=group)
        self.base_server = ActionServer(node, GoToStation, "/base/go_to_station", self.on_goto, callback_group=group)
        node.create_service(AffordanceQuery, "/cliport/affordance", self.on_query, callback_group=group)
        self.task_client = ActionClient(node, RunTask, "/run_task", callback_group=group)
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: self.store(self.diagnostics, *[s.message for s in m.status]), STATUS_QOS)

    def store(self, bucket, *items):
        with self.lock:
            bucket.extend(items)

    def on_skill(self, goal_handle):
        goal = goal_handle.request
        self.store(self.requests, {"skill": goal.skill, "text": goal.text,
                                   "args": {kv.key: kv.value for kv in goal.args}})
        deadline = time.monotonic() + self.skill_duration_s
        while time.monotonic() < deadline:
            if goal_handle.is_cancel_requested:
                self.store(self.canceled_skills, goal.text)
                goal_handle.canceled()
                return ExecuteSkill.Result(success=False, message="canceled (test executor)")
            time.sleep(0.02)
        goal_handle.succeed()
        return ExecuteSkill.Result(success=True, message="placed (test executor)")

    def on_goto(self, goal_handle):
        station = goal_handle.request.station
        self.store(self.gotos, station)
        goal_handle.succeed()
        return GoToStation.Result(success=True, message=f"arrived at the {station}")

    def on_query(self, request, response):
        self.store(self.queries, {"texts": list(request.texts)})
        # CLIPort is sure about one placement and unsure about the rest.
        response.values = [self.cliport_value if "red block and place it in the green bowl" in t
                           else self.cliport_value / 3 for t in request.texts]
        response.answered, response.source = True, "cliport"
        return response

    def say(self, text, timeout_s=60.0):
        with self.lock:
            seen = len(self.statuses)
        self.instruction_pub.publish(String(data=text))

        def final():
            with self.lock:
                mine = [s for s in self.statuses[seen:] if s["instruction"] == text[:500]]
            done = [s for s in mine if s["state"] in ("succeeded", "failed", "refused", "stopped", "canceled")]
            return (mine, done[-1]) if done else None

        found = wait_until(final, timeout_s)
        assert found is not None, f"no final status for {text!r}"
        return found


@pytest.fixture(scope="module")
def stack():
    isolated_domain(41)
    use_project_dds_profile()
    completions = ScriptedCompletions()
    process = subprocess.Popen([sys.executable, "-m", "ros_vla.nodes.saycan_planner_node", "--ros-args",
                                "-p", f"language_model:=openai:{completions.url}#scripted",
                                "-p", "value_function_dir:=none", "-p", f"default_affordance:={DEFAULT_AFFORDANCE}",
                                "-p", "cliport_timeout_s:=5.0", "-p", "skill_timeout_s:=20.0"],
                               env=dict(os.environ))
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=4, context=context)
    harness = Harness(context)
    executor.add_node(harness.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert wait_until(lambda: any(m.startswith("ready") for m in list(harness.diagnostics)), 90.0), \
            "the planner did not load"
        # Publish only once discovery has matched every topic the node and the test share.
        assert wait_until(lambda: harness.instruction_pub.get_subscription_count() > 0
                          and harness.node.count_publishers("/task/status") > 0
                          and harness.task_client.server_is_ready(), 30.0)
        yield harness
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        executor.shutdown()
        harness.node.destroy_node()
        rclpy.shutdown(context=context)
        completions.close()


def test_instruction_is_planned_and_executed_with_scores_visible(stack):
    statuses, final = stack.say("put the red block in the green bowl")
    assert final["state"] == "succeeded", final
    assert final["plan"] == ["pick up the red block and place it in the green bowl"]
    executing = [s for s in statuses if s["state"] == "executing"]
    assert executing and executing[0]["plan"] == final["plan"] and executing[0]["step"] == 1
    top = executing[0]["scores"][0]
    assert top["skill"] == final["plan"][0] and set(top) == {"skill", "llm", "affordance", "combined"}
    assert top["affordance"] == pytest.approx(0.9) and top["combined"] == pytest.approx(top["llm"] * 0.9, abs=1e-3)
    assert len(executing[0]["scores"]) == 5 and "LM" in executing[0]["message"]
    # The step says where its affordances came from: CLIPort for the pick-and-places, the
    # default for the rest (no value function here).
    assert "affordances: cliport 12, default 3" in executing[0]["message"], executing[0]["message"]
    request = stack.requests[-1]
    assert request["skill"] == "pick_place" and request["text"] == final["plan"][0]
    assert request["args"] == {"pick": "red_block", "place": "green_bowl"}
    assert stack.queries and all(t.startswith("pick up") for t in stack.queries[-1]["texts"])


def test_out_of_scope_and_empty_instructions_are_refused_without_moving(stack):
    before = len(stack.requests), len(stack.gotos)
    for text, words in [("make me a sandwich", "none of my skills"), ("", "empty"), ("x" * 600, "limit")]:
        _, final = stack.say(text)
        assert final["state"] == "refused" and words in final["message"], final
    assert (len(stack.requests), len(stack.gotos)) == before


def test_nothing_feasible_is_refused(stack):
    stack.cliport_value = 0.0
    try:
        _, final = stack.say("put the blue block in the purple bowl")
    finally:
        stack.cliport_value = 0.9
    assert final["state"] == "refused" and "no skill is feasible" in final["message"], final


def test_a_missing_model_is_reported_and_every_task_refused_with_the_reason(stack, tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "ros_vla.nodes.saycan_planner_node", "--ros-args",
                                "-r", "__ns:=/broken", "-p", f"language_model:={tmp_path / 'no_such_model'}"],
                               env=dict(os.environ))
    node = stack.node
    statuses = []
    node.create_subscription(TaskStatus, "/broken/task/status", lambda m: statuses.append(status_dict(m)),
                             STATUS_QOS)
    publisher = node.create_publisher(String, "/broken/instruction", COMMAND_QOS)
    try:
        assert wait_until(lambda: any("cannot load the planner's models" in m for m in list(stack.diagnostics)), 60.0)
        assert wait_until(lambda: publisher.get_subscription_count() > 0
                          and node.count_publishers("/broken/task/status") > 0, 30.0)
        publisher.publish(String(data="put the red block in the green bowl"))
        assert wait_until(lambda: any(s["state"] == "refused" and "cannot load" in s["message"] for s in statuses),
                          30.0), statuses
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def send_task(stack, text, on_feedback=None):
    sent = stack.task_client.send_goal_async(RunTask.Goal(instruction=text), feedback_callback=on_feedback)
    assert wait_until(sent.done, 10.0) and sent.result().accepted
    return sent.result()


def test_run_task_action_streams_the_plan_and_scores_and_returns_the_result(stack):
    feedback = []
    handle = send_task(stack, "put the red block in the green bowl", lambda m: feedback.append(m.feedback.status))
    result = handle.get_result_async()
    assert wait_until(result.done, 60.0)
    answer = result.result()
    assert answer.result.state == "succeeded", answer.result
    assert list(answer.result.plan) == ["pick up the red block and place it in the green bowl"]
    executing = [f for f in feedback if f.state == "executing"]
    assert executing and executing[0].scores and executing[0].scores[0].skill == answer.result.plan[0]
    assert all(f.id == answer.result.id for f in feedback)


def test_canceling_run_task_cancels_the_running_skill_and_ends_canceled(stack):
    stack.skill_duration_s = 30.0
    try:
        feedback = []
        handle = send_task(stack, "put the blue block in the purple bowl",
                           lambda m: feedback.append(m.feedback.status.state))
        assert wait_until(lambda: "executing" in feedback, 30.0), feedback
        canceled_at = time.monotonic()
        handle.cancel_goal_async()
        result = handle.get_result_async()
        assert wait_until(result.done, 10.0), "the canceled task did not end"
        answer = result.result()
    finally:
        stack.skill_duration_s = 0.0
    assert answer.result.state == "canceled" and "canceled during" in answer.result.message, answer.result
    assert answer.status == 5  # action_msgs/GoalStatus.STATUS_CANCELED
    assert stack.canceled_skills[-1] == "pick up the blue block and place it in the purple bowl"
    assert time.monotonic() - canceled_at < 10.0
    # The planner is free again: the next task runs.
    _, final = stack.say("put the red block in the green bowl")
    assert final["state"] == "succeeded", final


def test_cancel_task_stops_a_task_sent_on_instruction(stack):
    canceler = stack.node.create_client(Trigger, "/cancel_task")
    assert canceler.wait_for_service(timeout_sec=10.0)
    idle = canceler.call_async(Trigger.Request())
    assert wait_until(idle.done, 10.0) and not idle.result().success and "no task" in idle.result().message
    stack.skill_duration_s = 30.0
    try:
        with stack.lock:
            seen = len(stack.statuses)
        stack.instruction_pub.publish(String(data="put the blue block in the purple bowl"))
        assert wait_until(lambda: any(s["state"] == "executing" for s in stack.statuses[seen:]), 30.0)
        asked = canceler.call_async(Trigger.Request())
        assert wait_until(asked.done, 10.0) and asked.result().success, asked.result()
        final = wait_until(lambda: next((s for s in stack.statuses[seen:]
                                         if s["state"] in ("canceled", "succeeded", "failed")), None), 10.0)
    finally:
        stack.skill_duration_s = 0.0
    assert final is not None and final["state"] == "canceled", final
    assert stack.canceled_skills[-1] == "pick up the blue block and place it in the purple bowl"
