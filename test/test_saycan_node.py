"""saycan_planner_node as a process over DDS, with the test playing every other part of the
stack: the pick-and-place executor (skill/request -> skill/result), the base (base/goto ->
base/status) and CLIPort's affordances (skill/affordance_query -> skill/affordance).

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
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from ros_test_utils import isolated_domain, wait_until
from std_msgs.msg import String

from ros_vla.nodes.common import COMMAND_QOS, STATUS_QOS
from ros_vla.paths import use_project_dds_profile

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
        self.instruction_pub = node.create_publisher(String, "/instruction", COMMAND_QOS)
        self.result_pub = node.create_publisher(String, "/skill/result", STATUS_QOS)
        self.base_pub = node.create_publisher(String, "/base/status", STATUS_QOS)
        self.affordance_pub = node.create_publisher(String, "/skill/affordance", STATUS_QOS)
        node.create_subscription(String, "/task/status", lambda m: self.store(self.statuses, json.loads(m.data)),
                                 STATUS_QOS)
        node.create_subscription(String, "/skill/request", self.on_request, COMMAND_QOS)
        node.create_subscription(String, "/base/goto", self.on_goto, COMMAND_QOS)
        node.create_subscription(String, "/skill/affordance_query", self.on_query, COMMAND_QOS)
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: self.store(self.diagnostics, *[s.message for s in m.status]), STATUS_QOS)

    def store(self, bucket, *items):
        with self.lock:
            bucket.extend(items)

    def on_request(self, msg):
        request = json.loads(msg.data)
        self.store(self.requests, request)
        self.result_pub.publish(String(data=json.dumps({"id": request["id"], "success": True,
                                                        "message": "placed (test executor)"})))

    def on_goto(self, msg):
        self.store(self.gotos, msg.data)
        self.base_pub.publish(String(data=json.dumps({"state": "arrived", "message": f"at {msg.data}",
                                                      "station_reached": msg.data})))

    def on_query(self, msg):
        query = json.loads(msg.data)
        self.store(self.queries, query)
        # CLIPort is sure about one placement and unsure about the rest.
        values = [self.cliport_value if "red block and place it in the green bowl" in t else self.cliport_value / 3
                  for t in query["texts"]]
        self.affordance_pub.publish(String(data=json.dumps({"id": query["id"], "source": "cliport",
                                                            "values": values})))

    def say(self, text, timeout_s=60.0):
        with self.lock:
            seen = len(self.statuses)
        self.instruction_pub.publish(String(data=text))

        def final():
            with self.lock:
                mine = [s for s in self.statuses[seen:] if s["instruction"] == text[:500]]
            done = [s for s in mine if s["state"] in ("succeeded", "failed", "refused", "stopped")]
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
    executor = SingleThreadedExecutor(context=context)
    harness = Harness(context)
    executor.add_node(harness.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert wait_until(lambda: any(m.startswith("ready") for m in list(harness.diagnostics)), 90.0), \
            "the planner did not load"
        # Publish only once discovery has matched every topic the node and the test share.
        assert wait_until(lambda: harness.instruction_pub.get_subscription_count() > 0
                          and harness.result_pub.get_subscription_count() > 0
                          and harness.affordance_pub.get_subscription_count() > 0
                          and harness.node.count_publishers("/skill/affordance_query") > 0, 30.0)
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
    node.create_subscription(String, "/broken/task/status", lambda m: statuses.append(json.loads(m.data)),
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
