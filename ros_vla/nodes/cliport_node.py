"""cliport_node: language-conditioned pick-and-place from RGB-D (CLIPort).

The skill/<skill_name> action (ExecuteSkill; skill_name defaults to "pick_place"; or
skill/request JSON): its `text` is the instruction ("put the red block in the green bowl").
The node takes the newest colour + aligned depth frames of each view in `views` that
arrived after the request (the arm is then back at its ready pose, out of the way), fuses
them into a heightmap in fr3_link0 (view poses from the calibration files, fr3_link0 from
the scene's arm mount), asks the model for pick and place, and runs them as an
arm/pick_and_place goal (PickPlace); canceling the skill cancels that goal (the arm holds).
It publishes the input heightmap with the pick (red) and place (green) heatmaps laid
over it on `cliport/heatmaps` (rgb8).

Refusals (the skill fails with the reason, nothing sent to the arm): empty or
over-long text; text naming nothing the skill can handle (no block, bowl or stand);
a model confidence below `min_confidence` (nothing in view fits the text, e.g. a colour
not on the table); no fresh frames from any view.

The cliport/affordance service (AffordanceQuery; or skill/affordance_query {id, texts} ->
skill/affordance {id, source: "cliport", values} in JSON): the model's confidence for each
skill text on the newest frames, all texts in one call, for the SayCan planner.

Threads: callbacks only keep the newest messages; loading the model, heightmaps and
inference run on one worker thread, requests in order.
"""

from __future__ import annotations

import re
import time

import numpy as np
import yaml
from rclpy.node import Node
from ros_vla_interfaces.srv import AffordanceQuery
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from ros_vla import protocol
from ros_vla.cliport.config import WORKSPACE
from ros_vla.language import KIND_SYNONYMS
from ros_vla.models import shipped
from ros_vla.nodes.actions import worker_service
from ros_vla.nodes.common import (
    COMMAND_QOS,
    SENSOR_QOS,
    STATUS_QOS,
    Diagnostics,
    FrameFilter,
    Latest,
    PickPlaceCaller,
    QueueWorker,
    SkillRequest,
    SkillServer,
    declare,
    publish_json,
    run_node,
)
from ros_vla.paths import config_file, package_share
from ros_vla.perception.calibration import read_calibration
from ros_vla.perception.heightmap import RgbdView, fuse_heightmap
from ros_vla.perception.ros_messages import (
    camera_info_problem,
    image_array,
    image_msg,
    image_problem,
    intrinsics_from_camera_info,
    time_seconds,
)
from ros_vla.sim.scene import load_scene

OBJECT_WORDS = set(KIND_SYNONYMS) | {"stand", "stands"}
WARM_UP_TEXTS = 12  # as many as the skill library's pick-and-places: SayCan's affordance query


def skill_text_problem(text: str) -> str:
    """Why a text cannot be a pick-and-place instruction for this skill; "" if it can."""
    if not text.strip():
        return "the instruction is empty"
    if len(text) > protocol.MAX_INSTRUCTION_CHARS:
        return f"the instruction is {len(text)} characters; the limit is {protocol.MAX_INSTRUCTION_CHARS}"
    if not OBJECT_WORDS & set(re.findall(r"[a-z]+", text.lower())):
        return f"'{text[:80]}' names nothing this skill can move or place into (blocks, bowls, the stand)"
    return ""


class CLIPortNode(Node):
    def __init__(self):
        super().__init__("cliport")
        p = declare(self, model_dir="", views=["camera"], calibration_files=["calibration/sim_camera.yaml"],
                    scene_file="", skill_name="pick_place", min_confidence=0.15, frame_timeout_s=3.0,
                    arm_timeout_s=90.0, threads=0)
        if len(p["views"]) != len(p["calibration_files"]) or not p["views"]:
            raise ValueError("parameters views and calibration_files must list the same cameras, one file per view")
        self.p = p
        self.skill_name = p["skill_name"]
        self.diag = Diagnostics(self)
        scene = load_scene(p["scene_file"] or config_file("scene_tabletop.yaml"))
        self.link0_in_base = scene.arm_mount_matrix()
        # A camera without a usable calibration is left out rather than taking the node down:
        # a missing file would otherwise restart it in a loop (launch respawn), loading the
        # model each time, and the planner could not hear why pick-and-place is unavailable.
        self.view_poses, problems = {}, []
        for view, path in zip(p["views"], p["calibration_files"]):
            try:
                self.view_poses[view] = self.camera_pose_in_link0(path)
            except (OSError, ValueError, yaml.YAMLError) as err:
                problems.append(f"view '{view}' left out: {err} (make one with: ros-vla calibrate)")
        self.calibration_problem = "; ".join(problems)
        if problems:
            self.get_logger().error(self.calibration_problem)
        self.frames = {view: {"rgb": Latest(), "depth": Latest(), "info": Latest()} for view in self.view_poses}
        for view in self.view_poses:
            base = f"{view}/camera"
            latest = self.frames[view]
            self.create_subscription(Image, f"{base}/color/image_raw",
                                     FrameFilter(latest["rgb"].set, lambda m: image_problem(m, ("rgb8",))), SENSOR_QOS)
            self.create_subscription(Image, f"{base}/aligned_depth_to_color/image_raw",
                                     FrameFilter(latest["depth"].set, lambda m: image_problem(m, ("16UC1",))),
                                     SENSOR_QOS)
            self.create_subscription(CameraInfo, f"{base}/aligned_depth_to_color/camera_info",
                                     FrameFilter(latest["info"].set, camera_info_problem), SENSOR_QOS)
        self.arm = PickPlaceCaller(self)
        self.affordance_pub = self.create_publisher(String, "skill/affordance", STATUS_QOS)
        self.heatmap_pub = self.create_publisher(Image, "cliport/heatmaps", STATUS_QOS)
        self.create_subscription(String, "skill/affordance_query", self.on_affordance_query, COMMAND_QOS)
        self.agent = None
        self.load_error = ""
        self.work = QueueWorker(self, self.serve, "cliport")
        self.work.put(("load", None))
        self.skill = SkillServer(self, self.diag, self.skill_name, self.submit)
        worker_service(self, AffordanceQuery, "cliport/affordance", self.submit_affordance_query,
                       lambda why: AffordanceQuery.Response(answered=False, source="cliport", message=why))

    def camera_pose_in_link0(self, path: str) -> np.ndarray:
        full = package_share() / path if not path.startswith("/") else path
        calibration = read_calibration(full)
        if calibration.parent_frame == "base_link":
            return np.linalg.inv(self.link0_in_base) @ calibration.pose
        if calibration.parent_frame == "fr3_link0":
            return calibration.pose
        raise ValueError(f"{full}: the camera is calibrated in '{calibration.parent_frame}'; cliport_node needs "
                         "cameras fixed to the robot (base_link or fr3_link0)")

    # ----------------------------------------------------------------- callbacks: queue
    def submit(self, request: SkillRequest) -> str:
        return "" if self.work.put(("skill", request)) else "cliport busy: too many requests already waiting"

    def submit_affordance_query(self, request: AffordanceQuery.Request, answer) -> str:
        texts = list(request.texts)
        if len(texts) > protocol.MAX_AFFORDANCE_TEXTS:
            return f"at most {protocol.MAX_AFFORDANCE_TEXTS} texts in one query"
        if not self.work.put(("affordance_service", (texts, answer))):
            return "cliport busy: too many requests already waiting"
        return ""

    def on_affordance_query(self, msg: String):
        try:
            query = protocol.decode("affordance_query", msg.data)
        except protocol.ProtocolError as err:
            self.diag.publish("warn", f"affordance query ignored: {err}")
            return
        if not self.work.put(("affordance", query)):
            self.diag.publish("warn", f"affordance query {query['id'][:40]} dropped: too many requests waiting")

    # ----------------------------------------------------------------- worker
    def serve(self, item):
        kind, payload = item
        if kind == "load":
            self.load()
        elif kind == "skill":
            success, message = self.run_skill(payload)
            if self.context.ok():
                payload.answer(success, message)
        elif kind == "affordance_service":
            texts, answer = payload
            values, why_not = self.affordances(texts)
            answer(AffordanceQuery.Response(answered=not why_not, source="cliport", values=values, message=why_not))
        else:
            values, why_not = self.affordances(payload["texts"])
            if why_not:  # the JSON reply has no field for why: zeros, as it always answered
                values = [0.0] * len(payload["texts"])
            publish_json(self.affordance_pub, {"id": payload["id"], "source": "cliport", "values": values})

    def load(self):
        from ros_vla.cliport.agent import load_agent

        folder = self.p["model_dir"] or str(shipped("cliport_small"))
        try:
            self.agent = load_agent(folder, threads=self.p["threads"])
            # The first pass allocates and picks kernels (seconds): done here, not in the
            # first affordance query, which SayCan waits for only cliport_timeout_s.
            height, width = WORKSPACE.shape
            self.agent.affordances(np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.float32),
                                   ["put the red block in the green bowl"] * WARM_UP_TEXTS)
            if self.calibration_problem:
                self.diag.publish("error", f"CLIPort {self.agent.cfg.name} loaded; {self.calibration_problem}")
            else:
                self.diag.publish("ok", f"CLIPort {self.agent.cfg.name} loaded from {folder}")
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            self.load_error = f"no CLIPort model: {err}"
            self.diag.publish("error", self.load_error)

    def heightmap(self, newer_than_s: float):
        """Fused heightmap from every view with colour, depth and camera_info newer than
        `newer_than_s` (node clock); waits up to frame_timeout_s. None if no view has them."""
        deadline = time.monotonic() + self.p["frame_timeout_s"]
        while True:
            views = []
            for view, latest in self.frames.items():
                rgb, depth, info = latest["rgb"].get(), latest["depth"].get(), latest["info"].get()
                if rgb is None or depth is None or info is None:
                    continue
                if min(time_seconds(rgb.header.stamp), time_seconds(depth.header.stamp)) < newer_than_s:
                    continue
                if not (rgb.width == depth.width == info.width and rgb.height == depth.height == info.height):
                    continue  # colour, depth and intrinsics of different frames: no aligned RGB-D
                depth_m = image_array(depth).astype(np.float32) / 1000.0
                views.append(RgbdView(image_array(rgb), depth_m, intrinsics_from_camera_info(info),
                                      self.view_poses[view]))
            if views or time.monotonic() > deadline or not self.context.ok():
                break
            time.sleep(0.05)
        if not views:
            return None
        return fuse_heightmap(views, WORKSPACE)

    def run_skill(self, request: SkillRequest) -> tuple[bool, str]:
        text = request.text
        problem = skill_text_problem(text)
        if problem:
            return False, f"cliport refused: {problem}"
        if self.agent is None:
            return False, self.load_error or "cliport: the model is still loading"
        if not self.view_poses:
            return False, f"cliport: no calibrated camera: {self.calibration_problem}"
        request.report("perceiving", 0.0)
        heightmap = self.heightmap(request.requested_at)
        if heightmap is None:
            return False, (f"cliport: no fresh colour + depth frames from {', '.join(self.frames)} within "
                           f"{self.p['frame_timeout_s']:.0f} s")
        colour, height = heightmap
        prediction = self.agent.predict(colour, height, text)
        self.publish_heatmaps(colour, prediction)
        if prediction.confidence < self.p["min_confidence"]:
            return False, (f"cliport refused: nothing in view fits '{text[:80]}' (confidence "
                           f"{prediction.confidence:.2f} < {self.p['min_confidence']:.2f})")
        if request.canceled.is_set():
            return False, "canceled before the arm moved"
        moved, message = self.arm.run(prediction.pick_xyz, prediction.pick_yaw, prediction.place_xyz,
                                      prediction.place_yaw, self.p["arm_timeout_s"], request)
        if not moved:
            return False, message
        return True, (f"picked at {np.round(prediction.pick_xyz, 3).tolist()} and placed at "
                      f"{np.round(prediction.place_xyz, 3).tolist()} (confidence {prediction.confidence:.2f})")

    def publish_heatmaps(self, colour: np.ndarray, prediction):
        from ros_vla.cliport.agent import heatmap_picture

        picture = heatmap_picture(colour, prediction, self.agent.cfg.downsample)
        self.heatmap_pub.publish(image_msg(picture, "rgb8", self.get_clock().now().to_msg(), "fr3_link0"))

    def affordances(self, texts: list[str]) -> tuple[list[float], str]:
        """The model's confidence per text on the newest frames (0 for a text the skill cannot
        handle), and why there are none ("" when there are)."""
        if self.agent is None:
            return [], self.load_error or "cliport: the model is still loading"
        heightmap = self.heightmap(0.0)
        if heightmap is None:
            return [], f"cliport: no colour + depth frames from {', '.join(self.frames) or 'any camera'}"
        values = [0.0] * len(texts)
        checked = [i for i, t in enumerate(texts) if not skill_text_problem(t)]
        for i, value in zip(checked, self.agent.affordances(*heightmap, [texts[i] for i in checked])):
            values[i] = float(value)
        return values, ""

    def close(self):
        self.work.close()


def main(args=None) -> int:
    return run_node(CLIPortNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
