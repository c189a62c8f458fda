"""The action and service helpers every node uses (ros_vla/nodes/actions.py), in one process:
a server node and a client node, each on its own single-threaded executor as in run_node."""

import threading
import time

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from ros_test_utils import isolated_domain, wait_until
from ros_vla_interfaces.action import GoToStation
from ros_vla_interfaces.srv import AttributeQuery
from std_msgs.msg import String

from ros_vla.nodes.actions import ActionCaller, WorkerActionServer, call_service, worker_service
from ros_vla.nodes.common import COMMAND_QOS


class Spun:
    def __init__(self, context, name):
        self.node = rclpy.create_node(name, context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()


@pytest.fixture
def pair(request):
    # Names of their own per test: a server the previous test destroyed may still be listed
    # under its name for a moment, and ServerWatch would take its successor for a respawn.
    isolated_domain(29)
    context = rclpy.Context()
    rclpy.init(context=context)
    name = request.node.name.removeprefix("test_")[:40]
    server, client = Spun(context, f"server_{name}"), Spun(context, f"client_{name}")
    yield server, client
    client.close()
    server.close()
    rclpy.shutdown(context=context)


def later(seconds, action):
    threading.Timer(seconds, action).start()


def test_a_pending_service_call_does_not_hold_up_the_servers_other_callbacks(pair):
    server, client = pair
    heard = []
    server.node.create_subscription(String, "/chatter", lambda m: heard.append(time.monotonic()), COMMAND_QOS)
    answered = []

    def submit(request, answer):  # the worker answers a second later
        later(1.0, lambda: (answered.append(time.monotonic()), answer(AttributeQuery.Response(answer="yes"))))
        return ""

    worker_service(server.node, AttributeQuery, "/check", submit, lambda why: AttributeQuery.Response(message=why))
    publisher = client.node.create_publisher(String, "/chatter", COMMAND_QOS)
    service = client.node.create_client(AttributeQuery, "/check")
    assert wait_until(lambda: publisher.get_subscription_count() and service.service_is_ready(), 10.0)
    response = []
    threading.Thread(target=lambda: response.append(call_service(service, AttributeQuery.Request(), 5.0))).start()
    for _ in range(6):
        time.sleep(0.1)
        publisher.publish(String(data="x"))
    assert wait_until(lambda: response, 5.0) and response[0].answer == "yes"
    assert len([t for t in heard if t < answered[0]]) >= 3, "the server heard nothing while the call was pending"


def test_refused_service_request_is_answered_at_once(pair):
    server, client = pair
    worker_service(server.node, AttributeQuery, "/busy", lambda request, answer: "busy",
                   lambda why: AttributeQuery.Response(answer="cannot_see", message=why))
    service = client.node.create_client(AttributeQuery, "/busy")
    response = call_service(service, AttributeQuery.Request(), 10.0)
    assert response.answer == "cannot_see" and response.message == "busy"


def make_station_server(node, hold_s: float):
    """Goals run on a thread: feedback every 50 ms, success after hold_s unless canceled."""

    def submit(run):
        def work():
            deadline = time.monotonic() + hold_s
            while time.monotonic() < deadline and not run.cancel_requested.is_set():
                run.feedback(GoToStation.Feedback(distance_m=deadline - time.monotonic()))
                time.sleep(0.05)
            canceled = run.cancel_requested.is_set()
            run.finish(GoToStation.Result(success=not canceled, message="stopped" if canceled else "there"),
                       not canceled)

        if run.goal.station == "nowhere":
            return "unknown station"
        threading.Thread(target=work, daemon=True).start()
        return ""

    return WorkerActionServer(node, GoToStation, action_name(node), submit)


def action_name(server_node) -> str:
    return f"/{server_node.get_name()}/go"


def test_action_caller_gets_feedback_and_the_result(pair):
    server, client = pair
    make_station_server(server.node, 0.5)
    caller = ActionCaller(client.node, GoToStation, action_name(server.node), "test")
    feedback = []
    outcome = caller.call(GoToStation.Goal(station="table"), 10.0, feedback=feedback.append)
    assert outcome.succeeded and outcome.result.message == "there"
    assert len(feedback) >= 3 and feedback[0].distance_m > feedback[-1].distance_m


def test_canceling_through_the_caller_ends_the_goal_canceled(pair):
    server, client = pair
    make_station_server(server.node, 30.0)
    caller = ActionCaller(client.node, GoToStation, action_name(server.node), "test")
    cancel = threading.Event()
    later(0.5, cancel.set)
    started = time.monotonic()
    outcome = caller.call(GoToStation.Goal(station="table"), 20.0, cancel=cancel)
    assert outcome.canceled and outcome.result.message == "stopped"
    assert time.monotonic() - started < 5.0


def test_a_refused_goal_is_aborted_with_the_reason(pair):
    server, client = pair
    make_station_server(server.node, 0.5)
    caller = ActionCaller(client.node, GoToStation, action_name(server.node), "test")
    outcome = caller.call(GoToStation.Goal(station="nowhere"), 10.0)
    assert not outcome.succeeded and not outcome.canceled and outcome.result.message == "unknown station"


def test_no_server_is_said_plainly(pair):
    _, client = pair
    outcome = ActionCaller(client.node, GoToStation, "/nobody", "test").call(GoToStation.Goal(), 1.0,
                                                                            server_wait_s=0.5)
    assert outcome.result is None and "no test server" in outcome.message
