"""The task side both planners share: tasks in, skills out, task/status published.

instruction_node (the rule-based reader) and saycan_planner_node differ only in how they
turn an instruction into skills (`run(task)`); everything around that lives here:
- /instruction (std_msgs/String, for people and `ros-vla say`) and the run_task action
  (ros_vla_interfaces/RunTask) start a task. One at a time: a new one while busy, or while
  /estop is engaged, is refused, not queued.
- task/status (ros_vla_interfaces/TaskStatus) at every change; the same status is the
  action's feedback, and the last one its result.
- Skills run through the skill/<executor> actions (ExecuteSkill), drives through
  base/go_to_station (GoToStation). Canceling a run_task goal, or calling cancel_task
  (std_srvs/Trigger: the running task, however it was sent), cancels the running skill or
  drive (the arm and base hold) and ends the task "canceled"; /estop ends it "stopped".
- The task journal: a planner that died mid-task reports that task failed after respawn.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rclpy.node import Node
from ros_vla_interfaces.action import ExecuteSkill, GoToStation, RunTask
from ros_vla_interfaces.msg import SkillScore, TaskStatus
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from ros_vla import protocol
from ros_vla.nodes.actions import ActionCaller, GoalRun, WorkerActionServer
from ros_vla.nodes.common import COMMAND_QOS, STATUS_QOS, QueueWorker, TaskJournal, skill_goal

DIAGNOSTIC_LEVELS = {"failed": "warn", "refused": "warn", "canceled": "warn", "stopped": "error"}


class TaskInterrupted(RuntimeError):
    """The task ends now with `state` (stopped: /estop; canceled: its goal was canceled)."""

    def __init__(self, state: str, message: str):
        super().__init__(message)
        self.state = state


def task_status_msg(stamp, task_id: str, instruction: str, state: str, message: str, plan: Iterable[str] = (),
                    step: int = 0, scores: Iterable = (), explanation: str = "") -> TaskStatus:
    """One TaskStatus; `scores` are SayCan's ScoredSkill (text, llm, affordance, combined)."""
    return TaskStatus(
        stamp=stamp, id=task_id, instruction=instruction[:protocol.MAX_INSTRUCTION_CHARS], state=state,
        message=message, plan=list(plan), step=int(step), explanation=explanation,
        scores=[SkillScore(skill=s.text, llm=float(s.llm), affordance=float(s.affordance),
                           combined=float(s.combined)) for s in scores])


@dataclass
class Task:
    """One task as a planner's `run` sees it."""

    id: str
    text: str
    runner: TaskRunner
    goal: GoalRun | None = None  # the run_task goal it came from (None: from /instruction)
    canceled: threading.Event = field(default_factory=threading.Event)
    last: TaskStatus | None = None

    def __post_init__(self):
        if self.goal is not None:
            self.canceled = self.goal.cancel_requested

    @property
    def shown(self) -> str:
        return self.text[:protocol.MAX_INSTRUCTION_CHARS]

    def status(self, state: str, message: str, plan: Iterable[str] = (), step: int | None = None,
               scores: Iterable = (), explanation: str = ""):
        """Publish the task's status (and the goal's feedback); `step` defaults to len(plan)."""
        plan = list(plan)
        self.last = self.runner.publish(self.id, self.text, state, message, plan,
                                        len(plan) if step is None else step, scores, explanation)
        if self.goal is not None:
            self.goal.feedback(RunTask.Feedback(status=self.last))
        return self.last

    def finish_goal(self):
        if self.goal is not None:
            last = self.last
            self.goal.finish(RunTask.Result(id=self.id, state=last.state, message=last.message,
                                            plan=list(last.plan)), last.state == "succeeded")

    def check_interrupted(self, during: str):
        if self.runner.estopped.is_set():
            raise TaskInterrupted("stopped", f"emergency stop during '{during}': task stopped")
        if self.canceled.is_set():
            raise TaskInterrupted("canceled", f"canceled during '{during}': the arm and base hold")

    def run_skill(self, executor: str, text: str, args: dict) -> tuple[bool, str]:
        """Run one skill on the node that serves `executor`; raises TaskInterrupted when the
        emergency stop or a cancel ended it."""
        self.check_interrupted(text)
        caller = self.runner.skills.get(executor)
        if caller is None:
            return False, f"no executor for '{executor}' skills"
        outcome = caller.call(skill_goal(executor, text, args), self.runner.skill_timeout_s, cancel=self.canceled)
        self.check_interrupted(text)
        return outcome.verdict()

    def navigate(self, station: str) -> tuple[bool, str]:
        what = f"go to the {station}"
        self.check_interrupted(what)
        outcome = self.runner.base.call(GoToStation.Goal(station=station), self.runner.navigation_timeout_s,
                                        cancel=self.canceled)
        self.check_interrupted(what)
        return outcome.verdict()


class TaskRunner:
    """Starts tasks from /instruction and run_task goals and carries them out one at a time
    on a worker thread with `run(task)`, which must end with a terminal `task.status`."""

    def __init__(self, node: Node, diag, run: Callable[[Task], None], skill_executors: Iterable[str],
                 skill_timeout_s: float, navigation_timeout_s: float, name: str = "tasks"):
        self.node = node
        self.diag = diag
        self._run = run
        self.skill_timeout_s = skill_timeout_s
        self.navigation_timeout_s = navigation_timeout_s
        self.status_pub = node.create_publisher(TaskStatus, "task/status", STATUS_QOS)
        self.skills = {executor: ActionCaller(node, ExecuteSkill, f"skill/{executor}", f"'{executor}' skill")
                       for executor in skill_executors if executor != "navigate"}
        self.base = ActionCaller(node, GoToStation, "base/go_to_station", "base go-to-station")
        self.busy = threading.Event()
        self.current: Task | None = None  # the task the worker is carrying out
        self.estopped = threading.Event()
        node.create_subscription(Bool, "estop", lambda m: (self.estopped.set if m.data else self.estopped.clear)(),
                                 COMMAND_QOS)
        node.create_subscription(String, "instruction", lambda m: self.start(m.data, None), COMMAND_QOS)
        self.tasks = QueueWorker(node, self._work, name)
        self.journal = TaskJournal(node, self.status_pub, lambda *fields: self.publish(*fields))
        self.action = WorkerActionServer(node, RunTask, "run_task", self._submit,
                                         lambda why: RunTask.Result(state="canceled", message=why))
        node.create_service(Trigger, "cancel_task", self._cancel_current)

    def publish(self, task_id: str, instruction: str, state: str, message: str, plan=(), step: int = 0,
                scores=(), explanation: str = "") -> TaskStatus:
        status = task_status_msg(self.node.get_clock().now().to_msg(), task_id, instruction, state, message,
                                 plan, step, scores, explanation)
        self.status_pub.publish(status)
        self.diag.publish(DIAGNOSTIC_LEVELS.get(state, "ok"), f"task {task_id} {state}: {message}"[:400],
                          instruction=instruction[:200])
        return status

    def _cancel_current(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        task = self.current
        response.success = task is not None
        if task is None:
            response.message = "no task is running"
        else:
            task.canceled.set()
            response.message = f"canceling task {task.id} ({task.shown[:80]}): the arm and base hold"
        return response

    def _submit(self, run: GoalRun) -> str:
        """Never refuses here: a refused task gets a task id and a status like any other."""
        self.start(run.goal.instruction, run)
        return ""

    def start(self, text: str, run: GoalRun | None):
        """A task from /instruction (run None) or a run_task goal: queued, or refused with the reason."""
        task = Task(uuid.uuid4().hex[:8], text, self, run)
        refusal = ""
        if self.estopped.is_set():
            refusal = "the emergency stop is engaged: release /estop, then send it again"
        elif self.busy.is_set():
            refusal = "busy with another task; send it again when the current one ends"
        if not refusal:
            self.busy.set()
            if self.tasks.put(task):
                return
            self.busy.clear()
            refusal = "too many tasks waiting"
        task.status("refused", refusal)
        task.finish_goal()

    def _work(self, task: Task):
        if not self.node.context.ok():
            return
        self.journal.begin(task.id, task.shown)
        self.current = task
        try:
            self._run(task)
        except TaskInterrupted as interrupted:
            last = task.last
            task.status(interrupted.state, str(interrupted), last.plan if last else (), last.step if last else 0)
        except Exception as err:  # a bug in one task must not take the node down
            if self.node.context.ok():
                task.status("failed", f"internal error: {err!r}")
        finally:
            self.current = None
            self.journal.end()
            self.busy.clear()
        if task.last is None or task.last.state not in protocol.TERMINAL_TASK_STATES:
            task.status("failed", "the planner ended the task without a result (a bug): task failed")
        task.finish_goal()

    def close(self):
        self.tasks.close()
