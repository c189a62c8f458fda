"""`ros-vla demo` (what `make demo` runs): the simulated robot carries out a typed instruction.

Launches launch/sim.launch.xml as separate processes, waits for the cameras, sends the
instruction over /instruction like any ROS 2 client, shows progress from task/status and
arm/status, checks the outcome against simulator ground truth, and writes a report folder
(before/after camera images, CLIPort's heatmaps of each pick-and-place, report.md,
report.json, the nodes' log). Pick and place is CLIPort's, from the head camera; the
oracle only checks the result.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sensor_msgs.msg import Image as Image_msg

from ros_vla.launcher import LaunchRunner, parse_launch_file
from ros_vla.nodes.common import STATUS_QOS
from ros_vla.paths import config_file, launch_file
from ros_vla.perception.ros_messages import image_array
from ros_vla.sim.goals import object_in_container
from ros_vla.sim.scene import load_scene
from ros_vla.tools.stack_client import StackClient

STARTUP_TIMEOUT_S = 90.0


def _labelled(image: np.ndarray, label: str) -> Image.Image:
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    draw.rectangle([0, 0, 8 + 7 * len(label), 18], fill=(0, 0, 0))
    draw.text((4, 3), label, fill=(255, 255, 255))
    return picture


def _grid(rows: list[list[Image.Image]]) -> Image.Image:
    width, height = rows[0][0].size
    sheet = Image.new("RGB", (width * len(rows[0]), height * len(rows)), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            sheet.paste(picture, (c * width, r * height))
    return sheet


PAIR = re.compile(r"\b(\w+) (?:block|cube)s? (?:in|into|inside|to) the (\w+) (?:bowl|dish|container)\b")


def expected_outcome(instruction: str, truth: dict, scene) -> tuple[bool, str]:
    """Ground-truth check of every "<colour> block ... <colour> bowl" pair the instruction
    names (the demo's instructions are pick-and-place ones)."""
    names = {o.name for o in scene.objects}
    pairs = [(f"{block}_block", f"{bowl}_bowl") for block, bowl in PAIR.findall(instruction.lower())
             if f"{block}_block" in names and f"{bowl}_bowl" in names]
    if not pairs:
        return False, "no block-in-bowl goal of this scene to check in this instruction"
    checks = [object_in_container(truth, block, bowl, scene.spawn.bowl_radius, scene.spawn.bowl_height)
              for block, bowl in pairs]
    return all(ok for ok, _ in checks), "; ".join(detail for _, detail in checks)


def run_demo(instruction: str, seed: int, output_root: str, as_json: bool = False, planner: str = "saycan") -> int:
    report_dir = Path(output_root) / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    report_dir.mkdir(parents=True, exist_ok=True)
    log = open(report_dir / "nodes.log", "w", buffering=1)
    scene = load_scene(config_file("scene_tabletop.yaml"))
    views = [cam.namespace for cam in scene.cameras]
    started = time.monotonic()

    def say(line: str):
        print(f"[demo {time.monotonic() - started:6.1f}s] {line}", flush=True)

    say(f"launching the simulated robot (seed {seed}); node logs -> {report_dir / 'nodes.log'}")
    launch_args = {"seed": str(seed), "saycan": "true" if planner == "saycan" else "false"}
    nodes = parse_launch_file(launch_file("sim.launch.xml"), launch_args)
    runner = LaunchRunner(nodes, emit=lambda line: log.write(line + "\n"))
    runner.start()
    client = StackClient("ros_vla_demo")
    try:
        for view in views:
            client.watch_camera(view)
        client.follow_json("/arm/status", lambda s: s.get("state") == "moving" and say(f"  arm: {s['message']}"))
        heatmaps: list[np.ndarray] = []
        client.node.create_subscription(Image_msg, "/cliport/heatmaps", lambda m: heatmaps.append(image_array(m)),
                                        STATUS_QOS)
        say(f"waiting for the stack and the cameras {views}")

        def node_died() -> bool:
            return any(process.poll() is not None for process in runner.processes.values())

        ready = (client.wait_for_subscribers(STARTUP_TIMEOUT_S, give_up=node_died)
                 and client.wait_for_images(views, STARTUP_TIMEOUT_S, give_up=node_died))
        if not ready:
            dead = [name for name, process in runner.processes.items() if process.poll() is not None]
            say(f"the stack did not come up ({'nodes died: ' + ', '.join(dead) if dead else 'timed out'}); "
                f"see {report_dir / 'nodes.log'}")
            return 2
        before = {view: client.latest_image(view) for view in views}

        say(f'instruction: "{instruction}"')
        final = client.say(instruction, timeout_s=300.0,
                           on_status=lambda s: say(f"task {s['state']}: {s['message']}"))
        truth = client.ground_truth()
        after_stamp = truth["stamp"] if truth else 0.0
        after = {view: client.latest_image(view, newer_than_s=after_stamp) for view in views}
        verified, detail = expected_outcome(instruction, truth, scene) if truth else (False, "no ground truth")

        rows = [[_labelled(before[v], f"before: {v}") for v in views],
                [_labelled(after[v] if after[v] is not None else np.zeros_like(before[v]), f"after: {v}")
                 for v in views]]
        _grid(rows).save(report_dir / "before_after.png")
        for view in views:
            Image.fromarray(before[view]).save(report_dir / f"before_{view}.png")
            if after[view] is not None:
                Image.fromarray(after[view]).save(report_dir / f"after_{view}.png")
        result = {
            "instruction": instruction, "seed": seed,
            "task_state": final["state"] if final else "timeout",
            "task_message": final["message"] if final else "no final status",
            "ground_truth_success": verified, "ground_truth_detail": detail,
            "duration_s": round(time.monotonic() - started, 1),
            "objects_after": truth["objects"] if truth else [],
        }
        heatmap_note = ""
        for index, picture in enumerate(heatmaps):
            Image.fromarray(picture).save(report_dir / f"cliport_heatmaps_{index}.png")
            heatmap_note += (f"\nCLIPort step {index + 1}: pick (red) and place (green) heatmaps over the heightmap "
                             f"(rows: away from the robot, columns: to its left)\n\n![cliport]"
                             f"(cliport_heatmaps_{index}.png)\n")
        (report_dir / "report.json").write_text(json.dumps(result, indent=2))
        (report_dir / "report.md").write_text(
            f"# ros_vla demo\n\nInstruction: **{instruction}** (scene seed {seed})\n\n"
            f"- stack says: {result['task_state']}: {result['task_message']}\n"
            f"- ground truth: {'SUCCESS' if verified else 'FAILURE'}: {detail}\n"
            f"- wall time: {result['duration_s']} s\n\n![before and after](before_after.png)\n{heatmap_note}")
        say(f"stack reports: {result['task_state']}: {result['task_message']}")
        say(f"ground truth:  {'SUCCESS' if verified else 'FAILURE'}: {detail}")
        say(f"report: {report_dir / 'report.md'} (images: before_after.png)")
        if as_json:
            print(json.dumps({k: v for k, v in result.items() if k != "objects_after"}))
        return 0 if verified else 1
    finally:
        client.close()
        runner.shutdown()
        log.close()
