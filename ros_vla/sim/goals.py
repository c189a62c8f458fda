"""Goal checks on the simulator's ground truth (the /sim/ground_truth/objects payload): every
task's success check lives here (CLIPort's placements, RT-1's pick and push, SayCan's
"in", "on", "on a table" conditions), each returning (success, why).

For evaluation and for oracles named as such; a policy never calls these.
"""

from __future__ import annotations

import math

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


def object_on_object(truth: dict, top: str, bottom: str, block_size: float) -> tuple[bool, str]:
    """True when `top` rests on `bottom`: centred within half a block, one block higher, not held."""
    upper, lower = object_entry(truth, top), object_entry(truth, bottom)
    offset = np.asarray(upper["position"]) - np.asarray(lower["position"])
    horizontal = float(np.linalg.norm(offset[:2]))
    if upper["held"]:
        return False, f"{top} is still in the gripper"
    if horizontal > block_size / 2 or not 0.5 * block_size <= offset[2] <= 1.5 * block_size:
        return False, f"{top} is not on {bottom} (offset {np.round(offset * 100, 1).tolist()} cm)"
    return True, f"{top} is on {bottom}"


def object_on_surface(truth: dict, name: str, scene) -> tuple[bool, str]:
    """(True, table name) when `name` rests on a table top (not held, not on another object)."""
    obj = object_entry(truth, name)
    if obj["held"]:
        return False, f"{name} is still in the gripper"
    x, y, z = obj["position"]
    for table in scene.furniture:
        inside = abs(x - table.center[0]) <= table.size[0] / 2 and abs(y - table.center[1]) <= table.size[1] / 2
        # Blocks rest with their centre half a block up, bowls with their floor just above the top.
        if inside and table.top_z - 0.005 <= z <= table.top_z + 0.75 * scene.spawn.block_size:
            return True, f"{name} is on the {table.name}"
    return False, f"{name} is not resting on a table (at {np.round(obj['position'], 3).tolist()})"


def _yaw(orientation_xyzw) -> float:
    x, y, z, w = orientation_xyzw
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def block_at_pose(truth: dict, name: str, xyz, yaw: float, position_tolerance_m: float,
                  rotation_tolerance_rad: float) -> tuple[bool, str]:
    """True when block `name` rests at `xyz` (map) turned `yaw` (modulo its 90-degree
    symmetry) and upright, within the tolerances; not held."""
    item = object_entry(truth, name)
    if item["held"]:
        return False, f"{name} is still in the gripper"
    error = float(np.linalg.norm(np.asarray(item["position"]) - np.asarray(xyz)))
    yaw_error = abs((_yaw(item["orientation_xyzw"]) - yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4)
    x, y = item["orientation_xyzw"][:2]
    tilt = 1 - 2 * (x * x + y * y)  # cosine of the block's tilt from upright
    if error > position_tolerance_m:
        return False, f"{name} is {error * 100:.1f} cm from its target"
    if yaw_error > rotation_tolerance_rad or tilt < math.cos(rotation_tolerance_rad):
        return False, f"{name} is placed but turned more than {math.degrees(rotation_tolerance_rad):.0f} degrees"
    return True, f"{name} is at its target ({error * 1000:.0f} mm)"


def block_lifted(truth: dict, scene, block: str, min_height_m: float = 0.05) -> tuple[bool, str]:
    """True when `block` is held with its centre at least `min_height_m` above the work table."""
    entry = object_entry(truth, block)
    height = entry["position"][2] - scene.work_table.top_z
    held = "held" if entry["held"] else "not held"
    return (bool(entry["held"] and height >= min_height_m),
            f"{block} {held}, centre {height * 100:.1f} cm above the table")


def block_at_bowl_rim(truth: dict, scene, block: str, bowl: str, gap_m: float) -> tuple[bool, str]:
    """True when `block` lies on the table, not held, against `bowl` (centres at most bowl
    radius + half a block + `gap_m` apart)."""
    spawn = scene.spawn
    success_distance = spawn.bowl_radius + spawn.block_size / 2 + gap_m
    block_entry, bowl_entry = object_entry(truth, block), object_entry(truth, bowl)
    distance = float(np.linalg.norm(np.subtract(block_entry["position"][:2], bowl_entry["position"][:2])))
    on_table = block_entry["position"][2] - scene.work_table.top_z < spawn.block_size
    ok = bool(distance <= success_distance and on_table and not block_entry["held"])
    return ok, (f"{block} centre {distance * 100:.1f} cm from {bowl}'s (success within "
                f"{success_distance * 100:.1f} cm){'' if on_table else ', off the table'}")


def pose_in_frame(truth: dict, name: str, frame_in_map: np.ndarray) -> tuple[np.ndarray, float]:
    """Position and yaw of an object in a frame given by its pose in map (e.g. fr3_link0)."""
    obj = object_entry(truth, name)
    yaw_map = _yaw(obj["orientation_xyzw"])
    position = np.linalg.inv(frame_in_map) @ np.append(obj["position"], 1.0)
    frame_yaw = float(np.arctan2(frame_in_map[1, 0], frame_in_map[0, 0]))
    return position[:3], yaw_map - frame_yaw
