"""The sim stack as the safety benches (fuzz, faults, soak) run it.

`BenchStack` launches sim.launch.xml, writes every node's output to
OUTPUT/<name>-<time>/nodes.log, counts the launcher's "process has died" lines (nodes
respawn, so a crash would otherwise pass unseen), gives a StackClient, and on leaving
shuts it all down. `write_report` puts the result next to the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ros_vla.launcher import LaunchRunner, parse_launch_file
from ros_vla.paths import config_file, launch_file
from ros_vla.sim.scene import load_scene
from ros_vla.tools.stack_client import StackClient

STARTUP_TIMEOUT_S = 180.0
TASK = "put the red block in the green bowl"


class BenchStack:
    def __init__(self, name: str, output_root: str, launch_args: dict[str, str],
                 say: Callable[[str], None] = lambda line: None):
        self.report_dir = Path(output_root) / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
        self.report_dir.mkdir(parents=True, exist_ok=True)
        self.scene = load_scene(config_file("scene_tabletop.yaml"))
        self.views = [camera.namespace for camera in self.scene.cameras]
        self.deaths: list[str] = []
        self._say = say
        self._name = name
        self._log = open(self.report_dir / "nodes.log", "w", buffering=1)
        say(f"node logs -> {self.report_dir / 'nodes.log'}")
        self.runner = LaunchRunner(parse_launch_file(launch_file("sim.launch.xml"), launch_args), emit=self._on_line)
        self.client: StackClient | None = None

    def _on_line(self, line: str):
        self._log.write(line + "\n")
        if "process has died" in line:
            self.deaths.append(line)
            self._say(line)

    def __enter__(self) -> BenchStack:
        self.runner.start()
        self.client = StackClient(f"ros_vla_bench_{self._name}")
        return self

    def wait_until_up(self):
        """Until the planner listens on /instruction and every camera has sent a frame."""
        for view in self.views:
            self.client.watch_camera(view)
        self._say("launching the sim stack and waiting for it")
        if not (self.client.wait_for_subscribers(STARTUP_TIMEOUT_S)
                and self.client.wait_for_images(self.views, STARTUP_TIMEOUT_S)):
            raise RuntimeError(f"the sim stack did not come up; see {self.report_dir / 'nodes.log'}")

    def __exit__(self, *exc_info):
        if self.client is not None:
            self.client.close()
        self.runner.shutdown()
        self._log.close()

    def write_report(self, result: dict) -> dict:
        result["report_dir"] = str(self.report_dir)
        (self.report_dir / "report.json").write_text(json.dumps(result, indent=2))
        return result
