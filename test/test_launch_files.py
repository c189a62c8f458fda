"""Every <node> in every launch file names a console_scripts entry point of setup.py, its
parameter files exist and have a section for it, and every parameter set there is one
the node declares."""

import ast
import re
from pathlib import Path

import pytest
import rclpy
import yaml

from ros_vla.launcher import parse_launch_file

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL_LAUNCH_FILES = ["sim.launch.xml", "robot.launch.xml"]
# Parameters every rclpy node has without declaring them.
BUILT_IN_PARAMETERS = {"use_sim_time"}


def console_scripts() -> dict[str, str]:
    setup = (ROOT / "setup.py").read_text()
    nodes = re.search(r"NODES = \[(.*?)\]", setup, re.S).group(1)
    scripts = {name: f"ros_vla.nodes.{name}" for name in re.findall(r'"(\w+)"', nodes)}
    assert "ros-vla = ros_vla.cli:main" in setup
    return scripts


def declared_parameters(module: str) -> set[str]:
    """Names passed to declare(self, name=default, ...) in a node module."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    names = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "declare":
            names |= {keyword.arg for keyword in call.keywords}
    return names


def launched_nodes():
    for launch in TOP_LEVEL_LAUNCH_FILES:
        # Every optional node switched on, so each is checked.
        for node in parse_launch_file(ROOT / "launch" / launch, {"speech": "true", "rt1": "true"}):
            yield pytest.param(node, id=f"{launch}:{node.name}")


def test_every_launch_file_is_covered():
    included = {"stack.launch.xml"}
    assert {p.name for p in (ROOT / "launch").glob("*.xml")} == set(TOP_LEVEL_LAUNCH_FILES) | included


def test_robot_launch_has_no_simulation_or_oracle():
    names = {node.executable for node in parse_launch_file(ROOT / "launch" / "robot.launch.xml")}
    assert not {n for n in names if n.startswith("sim_") or "oracle" in n}


@pytest.mark.parametrize("node", list(launched_nodes()))
def test_node_matches_entry_point_and_parameters(node):
    scripts = console_scripts()
    assert node.pkg == "ros_vla"
    assert node.executable in scripts, f"{node.executable} is not a console_scripts entry point"
    declared = declared_parameters(scripts[node.executable]) | BUILT_IN_PARAMETERS
    assert node.parameter_files, f"{node.name} has no parameter file"
    for parameter_file in node.parameter_files:
        assert parameter_file.is_file()
        sections = yaml.safe_load(parameter_file.read_text())
        # A namespaced node's section is keyed by its full name, as rcl requires.
        key = f"{node.namespace}/{node.name}" if node.namespace else node.name
        assert key in sections, f"{parameter_file.name} has no section for {key}"
        parameters = sections[key]["ros__parameters"]
        assert set(parameters) <= declared, f"undeclared in {node.name}: {set(parameters) - declared}"
    assert set(node.parameters) <= declared


def node_parameter_files():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        if "ros__parameters" in path.read_text():
            yield pytest.param(path, id=path.name)


@pytest.mark.parametrize("parameter_file", list(node_parameter_files()))
def test_parameter_files_parse_in_rcl(parameter_file):
    """rcl's own YAML parser is stricter than PyYAML (no anchors, for one)."""
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(parameter_file)], context=context)
    rclpy.shutdown(context=context)


def test_robot_starts_disarmed_and_must_be_armed_after_every_stop():
    gate = yaml.safe_load((ROOT / "config" / "robot.yaml").read_text())["safety_gate"]["ros__parameters"]
    assert gate["armed"] is False and gate["rearm_after_estop"] is True
    assert gate["controller_manager"] and "fr3_arm_controller" in gate["stop_controllers"]


@pytest.mark.parametrize("name", ["sim.yaml", "robot.yaml"])
def test_the_gate_allows_what_the_planners_plan(name):
    """arm_motion and base_motion plan within the safety gate's limits, or the gate would
    refuse their own commands."""
    sections = yaml.safe_load((ROOT / "config" / name).read_text())
    gate, arm, base = (sections[key]["ros__parameters"] for key in ("safety_gate", "arm_motion", "base_motion"))
    assert arm["velocity_scale"] <= gate["velocity_scale"] <= 1.0
    assert all(g <= a for g, a in zip(gate["workspace_min"], arm["workspace_min"]))
    assert all(a <= g for g, a in zip(gate["workspace_max"], arm["workspace_max"]))
    for limit in ("max_linear", "max_angular", "max_linear_accel", "max_angular_accel"):
        assert base[limit] <= gate[limit], limit
    assert arm["joint_state_timeout_s"] == gate["joint_state_timeout_s"]


def test_nodes_folder_holds_only_nodes():
    """ros_vla/nodes/ is one node per module (each a console script) plus the helpers they
    share; command-line clients live in ros_vla/tools/."""
    helpers = {"__init__", "common", "actions", "task_runner"}
    modules = {path.stem for path in (ROOT / "ros_vla" / "nodes").glob("*.py")} - helpers
    assert modules == set(console_scripts())


def test_only_nodes_and_tools_use_rclpy():
    """Methods, simulation, robot and perception code run under plain pytest, training and
    evaluation: nothing outside nodes/ and tools/ imports rclpy or a node module, not even
    inside a function (tools may be imported lazily, e.g. rt1's --ros evaluation)."""
    import ast

    offenders = []
    for path in sorted((ROOT / "ros_vla").rglob("*.py")):
        if path.parent.name in ("nodes", "tools"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names
                          if name.split(".")[0] == "rclpy" or name.startswith("ros_vla.nodes")]
    assert not offenders, offenders
