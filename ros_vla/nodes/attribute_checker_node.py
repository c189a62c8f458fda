"""attribute_checker_node: MIAVLM answers yes/no questions about an object's attributes
("is the block red?") from every camera view it has, fused so that neither the order nor
the number of views (1..9) changes how an answer is reached.

Input:  the attribute/check service (ros_vla_interfaces/AttributeQuery), or attribute/query
        (String, JSON {id, question}, the compatibility layer); views: for each namespace NS in the
        `views` parameter, NS/`image_topic` (rgb8 or bgr8, SensorDataQoS) and, to crop the
        image to the field of view the network was trained on, NS/`camera_info_topic`.
Output: the service's response, or attribute/answer (String, JSON {id, answer, confidence,
        views, view_weights, message}) for a JSON query:
        answer "yes" or "no" with confidence = the probability of that answer (0.5..1),
        views = the namespaces whose frames were used, view_weights = their fusion weights.
        "cannot_see" with confidence 0 when there is no usable view, and for a request that
        is malformed or whose question names no known colour, shape or size; `message` says
        why. Every request gets exactly one answer (id "" if the request had none).

The model answers about the object in the middle of the views (see ros_vla/miavlm/README.md):
the planner asks after it has aimed the cameras at the object, e.g. the wrist camera above
the object it is about to grasp.

Views: the newest frame per view is kept; a view whose frame is missing, older than
`stale_view_s` (or stamped that far ahead of this node's clock) is left out of the answer.

Weights: `model_path`, "" = the shipped models/miavlm/miavlm.pt (see its model card: with
8 views of the benchmark HoOA 0.986, colour 0.998, shape 0.962, size 0.998; one view 0.889).
If they cannot be loaded the node stays up and answers every query "cannot_see" with the reason.

Threads: callbacks only store frames or queue requests; a worker thread loads the weights
and the sentence encoder at start, then answers requests one at a time (queries sent while
it loads are answered once it is ready).
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.time import Time
from ros_vla_interfaces.srv import AttributeQuery
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from ros_vla import protocol
from ros_vla.nodes.actions import worker_service
from ros_vla.nodes.common import (
    COMMAND_QOS,
    SENSOR_QOS,
    STATUS_QOS,
    Diagnostics,
    FrameFilter,
    Latest,
    QueueWorker,
    declare,
    run_node,
)
from ros_vla.perception.ros_messages import camera_info_problem, image_array, image_problem

REPORT_PERIOD_S = 2.0
BUSY = "busy: too many questions already waiting"


class CameraView:
    """The newest frame and focal length of one camera namespace."""

    def __init__(self, node: Node, namespace: str, image_topic: str, camera_info_topic: str):
        self.namespace = namespace
        self.frame = Latest()
        self.focal_px = Latest()
        node.create_subscription(Image, f"{namespace}/{image_topic}",
                                 FrameFilter(self.frame.set, lambda m: image_problem(m, ("rgb8", "bgr8"))), SENSOR_QOS)
        node.create_subscription(CameraInfo, f"{namespace}/{camera_info_topic}",
                                 FrameFilter(lambda info: self.focal_px.set(float(info.k[0])), camera_info_problem),
                                 SENSOR_QOS)


class AttributeCheckerNode(Node):
    def __init__(self):
        super().__init__("attribute_checker")
        p = declare(self, views=["camera", "side", "wrist"], image_topic="camera/color/image_raw",
                    camera_info_topic="camera/color/camera_info", model_path="", stale_view_s=1.0)
        namespaces = [name for name in p["views"] if name]
        if not namespaces:
            raise ValueError("parameter views must name at least one camera namespace")
        self.stale_view_s = float(p["stale_view_s"])
        if not (math.isfinite(self.stale_view_s) and self.stale_view_s > 0):
            raise ValueError(f"parameter stale_view_s must be positive, got {p['stale_view_s']}")
        self.views = [CameraView(self, ns, p["image_topic"], p["camera_info_topic"]) for ns in namespaces]
        self.diag = Diagnostics(self)
        self.answer_pub = self.create_publisher(String, "attribute/answer", STATUS_QOS)
        self.checker = None
        self.unavailable = "loading MIAVLM"
        self.answered = self.cannot_see = 0
        self.create_subscription(String, "attribute/query", self.on_query, COMMAND_QOS)
        worker_service(self, AttributeQuery, "attribute/check", self.submit_question,
                       lambda why: AttributeQuery.Response(answer="cannot_see", message=why))
        self.worker = QueueWorker(self, lambda job: job(), "attribute_checker")
        self.worker.put(partial(self.load, p["model_path"]))
        self.create_timer(REPORT_PERIOD_S, self.report)

    # ----------------------------------------------------------------- worker
    def load(self, model_path: str):
        from ros_vla.miavlm.checker import AttributeChecker
        from ros_vla.models import shipped

        weights = Path(model_path).expanduser() if model_path else shipped("miavlm")
        try:
            self.checker = AttributeChecker(weights)
        except Exception as err:  # the node stays up and answers every question "cannot_see" with the reason
            self.unavailable = f"cannot load MIAVLM from {weights}: {err}"
            self.diag.publish("error", self.unavailable)
            return
        self.unavailable = ""
        self.diag.publish("ok", f"ready: MIAVLM from {weights}, views {[v.namespace for v in self.views]}")

    def verdict(self, question: str) -> tuple[str, float, list[str], list[float], str]:
        """(answer, confidence, views used, their weights, message) for one question."""
        from ros_vla.miavlm.checker import question_problem

        problem = question_problem(question)
        if problem:
            return "cannot_see", 0.0, [], [], f"refused: {problem}"
        if self.unavailable:
            return "cannot_see", 0.0, [], [], self.unavailable
        used, images, focal_lengths, left_out = self.fresh_views()
        if not used:
            return "cannot_see", 0.0, [], [], f"no usable camera view: {'; '.join(left_out)}"
        try:
            verdict = self.checker.check(question, images, focal_lengths)
        except Exception as err:  # a failed answer fails this request, not the node
            self.diag.publish("error", f"attribute query: inference failed: {err!r}")
            return "cannot_see", 0.0, [], [], f"inference failed: {err!r}"
        message = f"from {len(used)} view{'s' if len(used) > 1 else ''}"
        if left_out:
            message += f"; left out: {'; '.join(left_out)}"
        return verdict.answer, verdict.confidence, used, list(verdict.view_weights), message

    def answer_json(self, text: str):
        try:
            request = protocol.decode("attribute_query", text)
        except protocol.ProtocolError as err:
            self.reply(_request_id(text), "cannot_see", 0.0, [], [], f"refused: {err}")
            self.diag.publish("warn", f"attribute query refused: {err}")
            return
        self.reply(request["id"], *self.verdict(request["question"]))

    def answer_service(self, question: str, respond):
        answer, confidence, views, weights, message = self.verdict(question)
        self.count(answer)
        respond(AttributeQuery.Response(answer=answer, confidence=float(confidence), views=views,
                                        view_weights=[float(w) for w in weights], message=message))

    def fresh_views(self) -> tuple[list[str], list[np.ndarray], list[float | None], list[str]]:
        """The namespaces, images and focal lengths of the usable views, and why the others
        are left out."""
        now = self.get_clock().now()
        used, images, focal_lengths, left_out = [], [], [], []
        for view in self.views:
            frame = view.frame.get()
            problem = self.frame_problem(frame, now)
            if not problem:
                try:
                    image = image_array(frame)
                    if frame.encoding == "bgr8":
                        image = image[:, :, ::-1]
                    elif frame.encoding != "rgb8":
                        raise ValueError(f"encoding {frame.encoding}, not rgb8 or bgr8")
                except ValueError as err:
                    problem = str(err)
            if problem:
                left_out.append(f"{view.namespace}: {problem}")
                continue
            used.append(view.namespace)
            images.append(image)
            focal_lengths.append(view.focal_px.get())
        return used, images, focal_lengths, left_out

    def frame_problem(self, frame: Image | None, now: Time) -> str:
        if frame is None:
            return "no frame yet"
        age_s = (now - Time.from_msg(frame.header.stamp, clock_type=now.clock_type)).nanoseconds * 1e-9
        if age_s > self.stale_view_s:
            return f"newest frame is {age_s:.2f} s old (stale_view_s {self.stale_view_s:g})"
        if age_s < -self.stale_view_s:
            return f"newest frame is stamped {-age_s:.2f} s ahead of this node's clock (use_sim_time?)"
        return ""

    def reply(self, request_id: str, answer: str, confidence: float, views: list[str], weights: list[float],
              message: str):
        payload = {"id": request_id, "answer": answer, "confidence": round(float(confidence), 4), "views": views,
                   "view_weights": [round(float(w), 4) for w in weights], "message": message}
        self.answer_pub.publish(String(data=protocol.encode("attribute_answer", payload)))
        self.count(answer)

    def count(self, answer: str):
        self.answered += 1
        self.cannot_see += answer == "cannot_see"

    # ----------------------------------------------------------------- inputs and health
    def on_query(self, msg: String):
        if not self.worker.put(partial(self.answer_json, msg.data)):
            self.reply(_request_id(msg.data), "cannot_see", 0.0, [], [], BUSY)

    def submit_question(self, request: AttributeQuery.Request, respond) -> str:
        if self.worker.put(partial(self.answer_service, request.question, respond)):
            return ""
        self.count("cannot_see")
        return BUSY

    def report(self):
        now = self.get_clock().now()
        fresh = [v.namespace for v in self.views if not self.frame_problem(v.frame.get(), now)]
        level = "warn" if self.unavailable or not fresh else "ok"
        message = self.unavailable or f"fresh views: {fresh or 'none'}"
        self.diag.publish(level, message, answered=self.answered, cannot_see=self.cannot_see,
                          views=",".join(v.namespace for v in self.views))

    def close(self):
        self.worker.close()


def _request_id(text: str) -> str:
    """The id of a request that failed validation, if it has one, so the reply can name it."""
    try:
        payload = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return ""
    request_id = payload.get("id") if isinstance(payload, dict) else None
    return request_id if isinstance(request_id, str) else ""


def main(args=None) -> int:
    return run_node(AttributeCheckerNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
