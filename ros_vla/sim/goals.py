"""Goal checks on the simulator's ground truth (the /sim/ground_truth/objects payload).

For evaluation and for oracles named as such; a policy never calls these.
"""

from __future__ import annotations

import numpy as np


def object_entry(truth: dict, name: str) -> dict:
    for obj in truth["objects"]:
        if obj["name"] == name:
            return obj
    raise KeyError(f"no object '{name}' in the ground truth")


def object_in_container(truth: dict, obj: str, container: str, radius_m: float, height_m: float) -> tuple[bool, str]:
    """True when `obj` rests inside `container`: centre within the rim and not held."""
    item, bowl = object_entry(truth, obj), object_entry(truth, container)
    offset = np.asarray(item["position"]) - np.asarray(bowl["position"])
    horizontal = float(np.linalg.norm(offset[:2]))
    if item["held"]:
        return False, f"{obj} is still in the gripper"
    if horizontal > radius_m:
        return False, (f"{obj} is {horizontal * 100:.1f} cm from the centre of {container} "
                       f"(rim at {radius_m * 100:.1f} cm)")
    if not -0.01 <= offset[2] <= height_m + 0.03:
        return False, f"{obj} is {offset[2] * 100:.1f} cm above {container}'s floor"
    return True, f"{obj} is in {container} ({horizontal * 100:.1f} cm from its centre)"


def pose_in_frame(truth: dict, name: str, frame_in_map: np.ndarray) -> tuple[np.ndarray, float]:
    """Position and yaw of an object in a frame given by its pose in map (e.g. fr3_link0)."""
    obj = object_entry(truth, name)
    x, y, z, w = obj["orientation_xyzw"]
    yaw_map = float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))
    position = np.linalg.inv(frame_in_map) @ np.append(obj["position"], 1.0)
    frame_yaw = float(np.arctan2(frame_in_map[1, 0], frame_in_map[0, 0]))
    return position[:3], yaw_map - frame_yaw
