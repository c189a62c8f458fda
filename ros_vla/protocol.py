"""The stack's JSON compatibility layer: payloads on std_msgs/String, checked at run time.

The stack's interfaces are the ROS types of ros_vla_interfaces (interfaces/ros_vla_interfaces:
`ros2 interface show ros_vla_interfaces/action/RunTask`) and standard messages; the README's
interface table lists them. The JSON topics below stay for tools and scripts that publish a
line of text (the fuzzer, benches, `ros2 topic pub`), and for the status topics no standard
type fits. `decode` validates the fields each kind needs and raises ProtocolError with a
readable message, so a node can refuse bad input instead of crashing.

| topic                     | type               | payload (typed equivalent)                           |
|---------------------------|--------------------|------------------------------------------------------|
| skill/request             | String (JSON)      | {id, skill, text, args} (action skill/<executor>)    |
| skill/result              | String (JSON)      | {id, success, message}                               |
| skill/affordance_query    | String (JSON)      | {id, texts:[skill text, ...]} (srv cliport/affordance) |
| skill/affordance          | String (JSON)      | {id, source, values:[p(success) per text, 0..1]}     |
| attribute/query           | String (JSON)      | {id, question} e.g. "is the block red?" (srv attribute/check) |
| attribute/answer          | String (JSON)      | {id, answer, confidence, views, message, view_weights} |
| arm/pick_place            | String (JSON)      | {id, frame, pick:{xyz,yaw}, place:{xyz,yaw}} (arm/pick_and_place) |
| arm/result                | String (JSON)      | {id, success, message, gripper_width_m}              |
| base/goto                 | String             | station name (action base/go_to_station)             |
| arm/status, base/status   | String (JSON)      | {state, message, ...}                                |
| safety/status             | String (JSON)      | latched: {armed, estop, forwarding, controllers, message, refused} |
| safety/refused            | String (JSON)      | {command, stamp, reason}: a command the gate did not forward |
| speech/status             | String (JSON)      | {text, confidence, source, heard, accepted, duration_s} |
| /sim/ground_truth/objects | String (JSON)      | sim only: {stamp, frame, base_pose, objects:[...]}   |
"""

from __future__ import annotations

import json
import math
from typing import Any

# ros_vla_interfaces/TaskStatus's states.
TASK_STATES = ("received", "executing", "succeeded", "failed", "refused", "stopped", "canceled")
TERMINAL_TASK_STATES = ("succeeded", "failed", "refused", "stopped", "canceled")
MAX_INSTRUCTION_CHARS = 500
MAX_SCENE_EXTENT_M = 1000.0  # simulator poses further out than this are not the simulator's
MAX_AFFORDANCE_TEXTS = 64  # one query is one planning step's skills, not a flood


class ProtocolError(ValueError):
    pass


_REQUIRED = {
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
    return payload
