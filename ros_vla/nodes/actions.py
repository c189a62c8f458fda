"""Actions and services whose work runs on a node's worker thread.

Every node spins one single-threaded executor (common.run_node), so neither an action's
execute callback nor a service callback may block it: /estop and sensor callbacks would
wait behind a pick and place. The server side (`WorkerActionServer`, `worker_service`)
hands each goal or request to the node's worker and awaits, without blocking, the answer
the worker sets. The client side (`ActionCaller`, `call_service`) is for worker threads: they
wait while the executor thread delivers responses, feedback and results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from action_msgs.msg import GoalStatus
from rclpy.action import ActionClient, ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future


def _worker_future(node: Node) -> Future:
    """A future a worker thread completes: its done callback makes set_result wake the
    executor, so the coroutine awaiting it resumes at once."""
    future = Future(executor=node.executor)
    future.add_done_callback(lambda _: None)
    return future


class GoalRun:
    """One accepted goal as the worker sees it."""

    def __init__(self, node: Node, goal_handle):
        self.goal = goal_handle.request
        self.cancel_requested = threading.Event()
        self._handle = goal_handle
        self._done = _worker_future(node)

    def feedback(self, feedback) -> None:
        if not self._done.done():
            self._handle.publish_feedback(feedback)

    def finish(self, result, success: bool) -> None:
        """The goal's result; it ends succeeded, canceled (if cancel was asked and it did not
        succeed) or aborted. Later calls are ignored."""
        if not self._done.done():
            self._done.set_result((result, success))


class WorkerActionServer:
    """An action server whose goals `submit(run: GoalRun) -> str` queues for the node's
    worker; a non-empty return is why the goal cannot run (it is aborted with the result
    `refused(message)`, by default the action's Result with that message). `on_cancel(run)`
    is called in the executor thread when a client cancels (run.cancel_requested is already
    set): it signals the worker, or stops a motion the executor thread itself runs."""

    def __init__(self, node: Node, action_type, name: str, submit: Callable[[GoalRun], str],
                 refused: Callable[[str], object] | None = None,
                 on_cancel: Callable[[GoalRun], None] = lambda run: None):
        self._node = node
        self._submit = submit
        self._refused = refused or (lambda message: action_type.Result(message=message))
        self._on_cancel = on_cancel
        self._runs: dict[bytes, GoalRun] = {}
        self.server = ActionServer(node, action_type, name, execute_callback=self._execute,
                                   goal_callback=lambda request: GoalResponse.ACCEPT,
                                   cancel_callback=self._cancel)

    def _cancel(self, goal_handle) -> CancelResponse:
        run = self._runs.get(bytes(goal_handle.goal_id.uuid))
        if run is not None:
            run.cancel_requested.set()
            self._on_cancel(run)
        return CancelResponse.ACCEPT

    async def _execute(self, goal_handle):
        run = GoalRun(self._node, goal_handle)
        key = bytes(goal_handle.goal_id.uuid)
        self._runs[key] = run
        try:
            # Canceled before it started (rclpy allows a cancel before execute): nothing runs.
            why_not = "canceled before it started" if goal_handle.is_cancel_requested else self._submit(run)
            if why_not:
                run.finish(self._refused(why_not), False)
            result, success = await run._done
        finally:
            self._runs.pop(key, None)
        if success:
            goal_handle.succeed()
        elif goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        return result


def worker_service(node: Node, service_type, name: str, submit: Callable[[object, Callable[[object], None]], str],
                   refused: Callable[[str], object]):
    """A service whose requests `submit(request, answer)` queues for the node's worker, which
    calls `answer(response)` once; a non-empty return is why not, answered at once with
    `refused(message)`."""

    async def serve(request, _response):
        done = _worker_future(node)
        why_not = submit(request, lambda response: None if done.done() else done.set_result(response))
        if why_not:
            return refused(why_not)
        return await done

    # Reentrant: in the node's default (mutually exclusive) group every other callback of the
    # node would wait while `serve` awaits the worker.
    return node.create_service(service_type, name, serve, callback_group=ReentrantCallbackGroup())


def _wait(future, deadline: float, give_up: Callable[[], bool]) -> bool:
    while not future.done():
        if time.monotonic() > deadline or give_up():
            return False
        time.sleep(0.01)
    return True


@dataclass
class ActionOutcome:
    status: int  # action_msgs/GoalStatus; STATUS_UNKNOWN when there was no result
    result: object | None
    message: str  # why there is no result ("" when there is one)

    @property
    def succeeded(self) -> bool:
        return self.status == GoalStatus.STATUS_SUCCEEDED

    @property
    def canceled(self) -> bool:
        return self.status == GoalStatus.STATUS_CANCELED

    def verdict(self) -> tuple[bool, str]:
        """(success, message) of a result with those fields; (False, why) without one."""
        if self.result is None:
            return False, self.message
        return self.result.success, self.result.message


class ServerWatch:
    """Whether the action server that had a goal has died since, so its result will never
    come: it left the graph, or a node of the same name joined again (respawned; after a
    SIGKILL, DDS keeps the dead endpoint listed until its lease runs out). Watches the
    publishers of the action's status topic, which only its server has."""

    def __init__(self, node: Node, action_name: str):
        self._node = node
        self._topic = node.resolve_topic_name(action_name) + "/_action/status"
        self._servers = self._endpoints()

    def _endpoints(self) -> dict[bytes, tuple[str, str]]:
        return {bytes(info.endpoint_gid): (info.node_namespace, info.node_name)
                for info in self._node.get_publishers_info_by_topic(self._topic)}

    def left(self) -> bool:
        now = self._endpoints()
        names_before = set(self._servers.values())
        gone = names_before - set(now.values())
        rejoined = {name for gid, name in now.items() if gid not in self._servers} & names_before
        return bool(gone or rejoined)


class ActionCaller:
    """A node's client of one action, for a worker thread (never the executor's: it waits on
    it): `call` sends a goal and waits for the result. Never raises for a server that is
    missing, silent or gone."""

    def __init__(self, node: Node, action_type, name: str, what: str):
        self._node = node
        self._name = name
        self.what = what
        self.client = ActionClient(node, action_type, name)

    def call(self, goal, timeout_s: float, server_wait_s: float = 30.0,
             feedback: Callable[[object], None] | None = None,
             cancel: threading.Event | None = None) -> ActionOutcome:
        """While `cancel` is set the goal is canceled and its (canceled) result awaited.
        `server_wait_s`: how long a server that is not up yet (respawning) is waited for."""
        what = self.what
        if not self.client.wait_for_server(timeout_sec=server_wait_s):
            return ActionOutcome(GoalStatus.STATUS_UNKNOWN, None, f"no {what} server (is its node running?)")
        watch = ServerWatch(self._node, self._name)
        deadline = time.monotonic() + timeout_s
        on_feedback = (lambda message: feedback(message.feedback)) if feedback else None
        # Sent by the executor thread: rclpy's send_goal_async swaps the future it returns
        # after the request is out, so the goal response, handled by the executor thread,
        # could complete the first one, and the one returned to another thread never.
        sending = self._node.executor.create_task(
            lambda: self.client.send_goal_async(goal, feedback_callback=on_feedback))
        if not _wait(sending, deadline, watch.left):
            return ActionOutcome(GoalStatus.STATUS_UNKNOWN, None, f"the {what} goal could not be sent")
        sent = sending.result()
        if not _wait(sent, deadline, watch.left):
            return ActionOutcome(GoalStatus.STATUS_UNKNOWN, None, f"the {what} server did not take the goal")
        handle = sent.result()
        if not handle.accepted:
            return ActionOutcome(GoalStatus.STATUS_UNKNOWN, None, f"the {what} server rejected the goal")
        result = handle.get_result_async()
        cancel_sent = False
        while not result.done():
            if watch.left():
                return ActionOutcome(GoalStatus.STATUS_UNKNOWN, None,
                                     f"the {what} server left mid-goal (it died?): goal failed")
            if time.monotonic() > deadline:
                handle.cancel_goal_async()
                return ActionOutcome(GoalStatus.STATUS_UNKNOWN, None,
                                     f"no {what} result within {timeout_s:.0f} s (goal canceled)")
            if cancel is not None and cancel.is_set() and not cancel_sent:
                handle.cancel_goal_async()
                cancel_sent = True
            time.sleep(0.01)
        response = result.result()
        return ActionOutcome(response.status, response.result, "")


def call_service(client, request, timeout_s: float, give_up: Callable[[], bool] = lambda: False):
    """The response to one service call from a worker thread, or None when no server
    answered within `timeout_s` (counting the wait for one to appear)."""
    deadline = time.monotonic() + timeout_s
    while not client.service_is_ready():
        if time.monotonic() > deadline or give_up():
            return None
        time.sleep(0.01)
    future = client.call_async(request)
    if not _wait(future, deadline, give_up):
        client.remove_pending_request(future)
        return None
    return future.result()
