"""The stack's own messages: JSON payloads on std_msgs/String where no standard type fits.

Every payload is a JSON object. `decode` validates the fields each kind needs and raises
ProtocolError with a readable message, so a node can refuse bad input instead of crashing.

Topics (relative names; the launch files put them in the root namespace):

| topic                     | type               | payload                                              |
|---------------------------|--------------------|------------------------------------------------------|
| /instruction              | String             | plain text from a person                             |
| task/status               | String (JSON)      | TaskStatus: {id, instruction, state, message, plan, step} |
| skill/request             | String (JSON)      | {id, skill, text, args}                              |
| skill/result              | String (JSON)      | {id, success, message}                               |
| skill/affordance_query    | String (JSON)      | {id, texts:[skill text, ...]}                        |
| skill/affordance          | String (JSON)      | {id, source, values:[p(success) per text, 0..1]}     |
| attribute/query           | String (JSON)      | {id, question} e.g. "is the block red?"              |
| attribute/answer          | String (JSON)      | {id, answer, confidence, views, message, view_weights} |
| cliport/heatmaps          | Image (rgb8)       | CLIPort's pick/place heatmaps over its heightmap     |
| arm/pick_place            | String (JSON)      | {id, frame, pick:{xyz,yaw}, place:{xyz,yaw}}         |
| arm/pose_goal             | PoseStamped        | TCP pose target, frame fr3_link0                     |
| arm/ee_delta              | TransformStamped   | TCP displacement (frame fr3_link0), one per control period |
| arm/joint_trajectory      | JointTrajectory    | joint-space request, checked then forwarded          |
| arm/gripper               | Float64            | gripper width request from a policy, gated like the rest |
| arm/result                | String (JSON)      | {id, success, message, gripper_width_m}              |
| arm/status, base/status   | String (JSON)      | {state, message, ...}                                |
| base/goto                 | String             | station name (config: stations)                      |
| base/cmd_vel              | TwistStamped       | base velocity request, limited then sent to /cmd_vel |
| safety/status             | String (JSON)      | latched: {armed, estop, forwarding, controllers, message, refused} |
| safety/refused            | String (JSON)      | {command, stamp, reason}: a command the gate did not forward |
| /fr3_gripper/command      | Float64            | gripper opening width in metres (0 = grasp)          |
| speech/status             | String (JSON)      | {text, confidence, source, heard, accepted, duration_s} |
| /sim/ground_truth/objects | String (JSON)      | sim only: {stamp, frame, base_pose, objects:[...]}   |
"""

from __future__ import annotations

import json
import math
from typing import Any

TASK_STATES = ("received", "executing", "succeeded", "failed", "refused", "stopped")
TERMINAL_TASK_STATES = ("succeeded", "failed", "refused", "stopped")
MAX_INSTRUCTION_CHARS = 500
MAX_SCENE_EXTENT_M = 1000.0  # simulator poses further out than this are not the simulator's
MAX_AFFORDANCE_TEXTS = 64  # one query is one planning step's skills, not a flood


class ProtocolError(ValueError):
    pass


_REQUIRED = {
    "task_status": {"id": str, "instruction": str, "state": str, "message": str},
    "skill_request": {"id": str, "skill": str, "text": str, "args": dict},
    "skill_result": {"id": str, "success": bool, "message": str},
    "pick_place": {"id": str, "frame": str, "pick": dict, "place": dict},
    "arm_result": {"id": str, "success": bool, "message": str},
    "ground_truth": {"frame": str, "seed": int, "base_pose": list, "objects": list},
    "affordance_query": {"id": str, "texts": list},
    "affordance": {"id": str, "source": str, "values": list},
    "attribute_query": {"id": str, "question": str},
    "attribute_answer": {"id": str, "answer": str, "confidence": (int, float), "views": list},
    "base_status": {"state": str, "message": str},
    "safety_status": {"armed": bool, "estop": bool, "forwarding": bool},
    "safety_refusal": {"command": str, "stamp": (int, float), "reason": str},
}
ATTRIBUTE_ANSWERS = ("yes", "no", "cannot_see")


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_ground_truth(truth: dict) -> None:
    seed = truth["seed"]
    if isinstance(seed, bool) or seed < 0:
        raise ProtocolError("ground_truth: seed must be an integer >= 0")
    if not (isinstance(truth["base_pose"], list) and len(truth["base_pose"]) == 3
            and all(_finite_number(v) and abs(v) < MAX_SCENE_EXTENT_M for v in truth["base_pose"])):
        raise ProtocolError("ground_truth: base_pose must be three finite numbers within the scene")
    for entry in truth["objects"]:
        position, rotation = (entry.get("position"), entry.get("orientation_xyzw")) if isinstance(entry, dict) \
            else (None, None)
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and isinstance(position, list) and len(position) == 3
                and all(_finite_number(v) and abs(v) < MAX_SCENE_EXTENT_M for v in position)
                and isinstance(rotation, list) and len(rotation) == 4 and all(_finite_number(v) for v in rotation)
                and 0.5 < math.hypot(*rotation) < 2.0):
            raise ProtocolError("ground_truth: each object needs a name, a position in the scene and a rotation")


def encode(kind: str, payload: dict[str, Any]) -> str:
    decode(kind, json.dumps(payload))
    return json.dumps(payload, separators=(",", ":"))


def decode(kind: str, text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except (ValueError, TypeError) as err:  # ValueError: bad JSON, or an integer too long to read
        raise ProtocolError(f"{kind}: not JSON ({str(err)[:100]})") from err
    except RecursionError as err:
        raise ProtocolError(f"{kind}: JSON nested too deeply") from err
    if not isinstance(payload, dict):
        raise ProtocolError(f"{kind}: expected a JSON object")
    for field, expected in _REQUIRED[kind].items():
        if field not in payload:
            raise ProtocolError(f"{kind}: missing field '{field}'")
        if not isinstance(payload[field], expected):
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            raise ProtocolError(f"{kind}: field '{field}' must be {names}")
    if kind == "pick_place":
        for key in ("pick", "place"):
            target = payload[key]
            xyz = target.get("xyz")
            if not (isinstance(xyz, list) and len(xyz) == 3 and all(_finite_number(v) for v in xyz)):
                raise ProtocolError(f"pick_place: '{key}.xyz' must be three finite numbers")
            if not _finite_number(target.get("yaw", 0.0)):
                raise ProtocolError(f"pick_place: '{key}.yaw' must be a finite number")
    if kind == "affordance_query" and not all(isinstance(t, str) for t in payload["texts"]):
        raise ProtocolError("affordance_query: 'texts' must be a list of strings")
    if kind == "affordance_query" and len(payload["texts"]) > MAX_AFFORDANCE_TEXTS:
        raise ProtocolError(f"affordance_query: at most {MAX_AFFORDANCE_TEXTS} texts")
    if kind == "affordance" and not all(_finite_number(v) for v in payload["values"]):
        raise ProtocolError("affordance: 'values' must be a list of finite numbers")
    if kind == "attribute_answer" and payload["answer"] not in ATTRIBUTE_ANSWERS:
        raise ProtocolError(f"attribute_answer: answer must be one of {ATTRIBUTE_ANSWERS}")
    if kind == "ground_truth":
        _check_ground_truth(payload)
    if kind == "task_status" and payload["state"] not in TASK_STATES:
        raise ProtocolError(f"task_status: unknown state '{payload['state']}'")
    return payload
