"""Tests for ros_vla.launcher: launch XML parsing, command lines and process supervision."""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import ros_vla
from ros_vla import launcher
from ros_vla.launcher import (
    LaunchError,
    LaunchRunner,
    NodeSpec,
    build_command,
    launch_main,
    parse_launch_file,
    resolve_executable,
)
from ros_vla.paths import package_share


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def fake_resolver(package: str, executable: str) -> list[str]:
    return [f"/opt/{package}/lib/{executable}"]


# --------------------------------------------------------------------------- parsing


@pytest.fixture
def example_launch(tmp_path: Path) -> Path:
    write(tmp_path / "params.yaml", "driver:\n  ros__parameters:\n    gain: 2.0\n")
    write(
        tmp_path / "sub" / "child.launch.xml",
        """\
        <launch>
          <arg name="child_name"/>
          <arg name="mode" default="fast"/>
          <node pkg="demo_pkg" exec="child" name="$(arg child_name)">
            <param name="mode" value="$(arg mode)"/>
            <param name="robot" value="$(arg robot)"/>
            <param name="dir" value="$(dirname)"/>
          </node>
        </launch>
        """,
    )
    return write(
        tmp_path / "main.launch.xml",
        """\
        <launch>
          <!-- a comment is fine -->
          <arg name="robot" default="panda" description="robot name"/>
          <arg name="use_camera" default="true"/>
          <arg name="rate" default="10"/>
          <let name="topic" value="/$(var robot)/joint_states"/>
          <node pkg="demo_pkg" exec="driver" name="$(arg robot)_driver" output="screen"
                args="--fast 'two words'">
            <param from="$(dirname)/params.yaml"/>
            <param name="rate" value="$(arg rate)"/>
            <param name="home" value="$(env LAUNCHER_TEST_HOME /default/home)"/>
            <param name="debug" value="true" if="$(arg use_camera)"/>
            <remap from="joint_states" to="$(var topic)"/>
            <env name="MODE" value="sim"/>
          </node>
          <node pkg="demo_pkg" exec="camera" if="$(arg use_camera)"/>
          <node pkg="demo_pkg" exec="no_camera" unless="$(arg use_camera)"/>
          <group>
            <push-ros-namespace namespace="$(arg robot)"/>
            <let name="rate" value="99"/>
            <node pkg="demo_pkg" exec="arm" name="arm" namespace="left" respawn="true" respawn_delay="1.5"/>
            <node pkg="demo_pkg" exec="global" namespace="/abs"/>
            <include file="sub/child.launch.xml">
              <arg name="child_name" value="child_$(arg rate)"/>
            </include>
          </group>
          <group if="false">
            <node pkg="demo_pkg" exec="never"/>
          </group>
          <node pkg="demo_pkg" exec="after_group" name="after">
            <param name="rate" value="$(arg rate)"/>
          </node>
        </launch>
        """,
    )


def test_parse_with_defaults(example_launch: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LAUNCHER_TEST_HOME", raising=False)
    nodes = parse_launch_file(example_launch, {})
    here = example_launch.parent

    assert [node.executable for node in nodes] == ["driver", "camera", "arm", "global", "child", "after_group"]
    assert nodes[0] == NodeSpec(
        pkg="demo_pkg",
        executable="driver",
        name="panda_driver",
        namespace="",
        parameter_files=[here / "params.yaml"],
        parameters={"rate": "10", "home": "/default/home", "debug": "true"},
        remaps=[("joint_states", "/panda/joint_states")],
        env={"MODE": "sim"},
        respawn=False,
        respawn_delay=0.0,
        args=["--fast", "two words"],
        output="screen",
    )
    arm = nodes[2]
    assert (arm.name, arm.namespace, arm.respawn, arm.respawn_delay) == ("arm", "/panda/left", True, 1.5)
    assert nodes[3].namespace == "/abs"  # an absolute namespace ignores the pushed one
    child = nodes[4]
    # The include sees the group's <let>, the parent's args and its own defaults.
    assert (child.name, child.namespace) == ("child_99", "/panda")
    assert child.parameters == {"mode": "fast", "robot": "panda", "dir": str(here / "sub")}
    assert nodes[5].parameters == {"rate": "10"}  # the <let> inside the group does not leak out


def test_parse_with_overrides(example_launch: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LAUNCHER_TEST_HOME", "/home/tester")
    overrides = {"robot": "fr3", "use_camera": "False", "rate": "20", "mode": "slow"}
    nodes = parse_launch_file(example_launch, overrides)

    assert [node.executable for node in nodes] == ["driver", "no_camera", "arm", "global", "child", "after_group"]
    assert nodes[0].name == "fr3_driver"
    assert nodes[0].parameters == {"rate": "20", "home": "/home/tester"}
    assert nodes[0].remaps == [("joint_states", "/fr3/joint_states")]
    assert nodes[2].namespace == "/fr3/left"
    # Command-line overrides reach included files too, as in ros2 launch.
    assert nodes[4].parameters["mode"] == "slow"
    assert nodes[5].parameters == {"rate": "20"}


def test_build_command(example_launch: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("LAUNCHER_TEST_HOME", raising=False)
    driver, camera, arm, *_ = parse_launch_file(example_launch, {})

    assert build_command(driver, fake_resolver) == [
        "/opt/demo_pkg/lib/driver",
        "--fast",
        "two words",
        "--ros-args",
        "-r", "__node:=panda_driver",
        "--params-file", str(example_launch.parent / "params.yaml"),
        "-p", "rate:=10",
        "-p", "home:=/default/home",
        "-p", "debug:=true",
        "-r", "joint_states:=/panda/joint_states",
    ]  # fmt: skip
    assert build_command(camera, fake_resolver) == ["/opt/demo_pkg/lib/camera"]
    assert build_command(arm, fake_resolver) == [
        "/opt/demo_pkg/lib/arm", "--ros-args", "-r", "__node:=arm", "-r", "__ns:=/panda/left",
    ]  # fmt: skip


def test_find_pkg_share_of_ros_vla(tmp_path: Path):
    launch = write(
        tmp_path / "share.launch.xml",
        """\
        <launch>
          <node pkg="demo_pkg" exec="x">
            <param name="share" value="$(find-pkg-share ros_vla)"/>
          </node>
        </launch>
        """,
    )
    assert parse_launch_file(launch)[0].parameters == {"share": str(package_share())}


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ('<arg name="ip" description="IP of the arm"/>', ["<arg>", "'ip'", "IP of the arm", "ip:=VALUE"]),
        ('<nodee pkg="a" exec="b"/>', ["unknown tag <nodee>"]),
        ('<node pkg="a" exec="b"><parameter name="x"/></node>', ["<node>", "unknown tag <parameter>"]),
        ('<node pkg="a" exec="$(foo bar)"/>', ["<node>", "unknown substitution $(foo bar)"]),
        ('<node pkg="a" exec="$(arg nope)"/>', ["<node>", "unknown launch argument 'nope'"]),
        ('<node pkg="a" exec="$(env LAUNCHER_TEST_UNSET)"/>', ["LAUNCHER_TEST_UNSET", "no default"]),
        ('<node pkg="a" exec="b" namepace="x"/>', ["<node>", "unknown attribute(s) namepace"]),
        ('<node pkg="a" exec="b" if="maybe"/>', ["<node>", "expected true/false", "maybe"]),
        ('<node pkg="a"/>', ["<node>", "missing required attribute 'exec'"]),
        ('<node pkg="a" exec="$(arg x"/>', ["unterminated substitution"]),
        ('<include file="missing.launch.xml"/>', ["<include>", "missing.launch.xml", "does not exist"]),
        ('<node pkg="a" exec="b"><param from="no.yaml"/></node>', ["<param>", "no.yaml", "does not exist"]),
        ('<let name="p" value="$(find-pkg-share no_such_pkg_xyz)"/>', ["<let>", "no_such_pkg_xyz"]),
    ],
)
def test_clear_errors(tmp_path: Path, body: str, fragments: list[str]):
    launch = write(tmp_path / "bad.launch.xml", f"<launch>\n{body}\n</launch>\n")
    with pytest.raises(LaunchError) as caught:
        parse_launch_file(launch)
    message = str(caught.value)
    assert str(launch) in message
    for fragment in fragments:
        assert fragment in message


def test_required_argument_given_on_the_command_line(tmp_path: Path):
    launch = write(
        tmp_path / "req.launch.xml",
        '<launch><arg name="robot_ip"/><node pkg="a" exec="b" args="$(arg robot_ip)"/></launch>',
    )
    assert parse_launch_file(launch, {"robot_ip": "10.0.0.2"})[0].args == ["10.0.0.2"]


def test_include_cycle_is_an_error(tmp_path: Path):
    launch = write(tmp_path / "loop.launch.xml", '<launch><include file="$(dirname)/loop.launch.xml"/></launch>')
    with pytest.raises(LaunchError, match="includes itself"):
        parse_launch_file(launch)


# ------------------------------------------------------------------ executables


def test_unknown_package_and_executable():
    with pytest.raises(LaunchError, match="no_such_pkg_xyz") as caught:
        resolve_executable("no_such_pkg_xyz", "some_exec")
    assert "some_exec" in str(caught.value)
    with pytest.raises(LaunchError, match="package 'ros_vla' has no executable 'no_such_node'"):
        resolve_executable("ros_vla", "no_such_node")


def test_ros_vla_entry_point_runs_with_node_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write(tmp_path / "fake_node_module.py", "import sys\ndef main():\n    print(sys.argv)\n    return 0\n")
    entry_point = importlib.metadata.EntryPoint("fake_node", "fake_node_module:main", "console_scripts")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [entry_point])

    command = build_command(NodeSpec(pkg="ros_vla", executable="fake_node", name="n1"))
    assert command[:2] == [sys.executable, "-c"]
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=10, check=True)
    assert result.stdout.strip() == str(["fake_node", "--ros-args", "-r", "__node:=n1"])


# -------------------------------------------------------------------------- CLI


def test_launch_main_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    entry_point = importlib.metadata.EntryPoint("fake_node", "fake_node_module:main", "console_scripts")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [entry_point])
    monkeypatch.setattr(launcher, "package_share", lambda: tmp_path)
    write(
        tmp_path / "launch" / "demo.launch.xml",
        """\
        <launch>
          <arg name="rate" default="1"/>
          <node pkg="ros_vla" exec="fake_node" name="fake"><param name="rate" value="$(arg rate)"/>
            <env name="MODE" value="two words"/></node>
        </launch>
        """,
    )

    assert launch_main(["demo.launch.xml", "rate:=5", "--print"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("[fake] MODE='two words' ")
    assert "__node:=fake -p rate:=5" in printed

    assert launch_main([str(tmp_path / "launch" / "demo.launch.xml"), "rate=5", "--print"]) == 1
    assert "name:=value" in capsys.readouterr().err
    assert launch_main(["missing.launch.xml", "--print"]) == 1
    assert "missing.launch.xml" in capsys.readouterr().err


# ------------------------------------------------------------------------ running

SCRIPTS = {
    "talker": """\
        import os, sys, time
        try:
            print(f"hello from {os.getpid()}")
            print("argv", *sys.argv[1:])
            print("mode", os.environ.get("MODE", "unset"))
            print("to stderr", file=sys.stderr)
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("interrupted")
        """,
    "crasher": """\
        import sys
        print("crashing")
        sys.exit(3)
        """,
    "quick": """\
        import os
        print(f"started {os.getpid()}")
        """,
    "stubborn": """\
        import os, signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"ready {os.getpid()}")
        while True:
            time.sleep(0.05)
        """,
    "parent": """\
        import subprocess, sys, time
        ignore_sigint = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN)"
        grandchild = subprocess.Popen(
            [sys.executable, "-c", ignore_sigint + "; print('grandchild up'); time.sleep(60)"])
        try:
            print(f"grandchild {grandchild.pid}")
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            pass
        """,
}


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    directory = tmp_path / "scripts"
    for name, code in SCRIPTS.items():
        write(directory / f"{name}.py", code)
    return directory


def script_resolver(directory: Path):
    def resolve(package: str, executable: str) -> list[str]:
        return [sys.executable, str(directory / f"{executable}.py")]

    return resolve


class Lines:
    """A thread-safe output sink that tests can wait on."""

    def __init__(self):
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def matching(self, pattern: str) -> list[re.Match]:
        with self._changed:
            return [match for line in self.lines if (match := re.search(pattern, line))]

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 10.0) -> list[re.Match]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.matching(pattern)) >= count, timeout)
        matches = self.matching(pattern)
        assert len(matches) >= count, f"waited for {count} x {pattern!r}; got:\n" + "\n".join(self.lines)
        return matches


def is_alive(pid: int) -> bool:
    """True if ``pid`` is a running process (zombies awaiting an uninterested reaper count as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def node(executable: str, **fields) -> NodeSpec:
    return NodeSpec(pkg="test", executable=executable, name=fields.pop("name", executable), **fields)


def test_output_is_prefixed_and_a_crash_does_not_stop_others(tmp_path: Path, scripts: Path):
    launch = write(
        tmp_path / "run.launch.xml",
        """\
        <launch>
          <node pkg="test" exec="talker" name="chatty" args="a b">
            <param name="x" value="1"/><env name="MODE" value="sim"/>
          </node>
          <node pkg="test" exec="crasher"/>
        </launch>
        """,
    )
    lines = Lines()
    runner = LaunchRunner(parse_launch_file(launch), resolver=script_resolver(scripts), emit=lines)
    with runner:
        pid = int(lines.wait_for(r"^\[chatty\] hello from (\d+)$")[0][1])
        lines.wait_for(r"^\[chatty\] argv a b --ros-args -r __node:=chatty -p x:=1$")
        lines.wait_for(r"^\[chatty\] mode sim$")
        lines.wait_for(r"^\[chatty\] to stderr$")
        lines.wait_for(r"^\[crasher\] crashing$")
        lines.wait_for(r"^\[ERROR\] \[crasher\]: process has died \[pid \d+, exit code 3")
        assert runner.processes["chatty"].poll() is None
        assert runner.processes["crasher"].returncode == 3
    # Exited on SIGINT within the grace period: escalation would have made it -SIGTERM.
    assert runner.processes["chatty"].returncode == 0
    assert lines.matching(r"^\[chatty\] interrupted$")
    assert not is_alive(pid)


def test_respawn(scripts: Path):
    lines = Lines()
    flaky = node("quick", respawn=True, respawn_delay=0.05)
    runner = LaunchRunner([flaky], resolver=script_resolver(scripts), emit=lines)
    with runner:
        pids = [int(match[1]) for match in lines.wait_for(r"^\[quick\] started (\d+)$", count=3)]
    assert len(set(pids)) == len(pids)
    assert len(lines.matching(r"respawning in 0.05 s")) >= 2
    count = len(lines.matching(r"^\[quick\] started"))
    time.sleep(0.3)
    assert len(lines.matching(r"^\[quick\] started")) == count  # no respawn after shutdown
    assert not any(is_alive(pid) for pid in pids)


def test_shutdown_escalates_to_sigkill(scripts: Path):
    lines = Lines()
    runner = LaunchRunner(
        [node("stubborn"), node("talker")],
        resolver=script_resolver(scripts),
        grace_period=2.0,  # the talker's time to handle SIGINT on a loaded machine
        kill_timeout=0.5,
        emit=lines,
    )
    runner.start()
    pid = int(lines.wait_for(r"^\[stubborn\] ready (\d+)$")[0][1])
    lines.wait_for(r"^\[talker\] hello")
    started = time.monotonic()
    runner.shutdown()
    elapsed = time.monotonic() - started
    assert elapsed >= 2.5  # ignored SIGINT and SIGTERM for both grace periods, then got SIGKILL
    assert runner.processes["stubborn"].returncode == -signal.SIGKILL
    assert runner.processes["talker"].returncode == 0  # handled SIGINT
    assert not is_alive(pid)


def test_shutdown_kills_what_a_node_left_in_its_process_group(scripts: Path):
    lines = Lines()
    runner = LaunchRunner([node("parent")], resolver=script_resolver(scripts), grace_period=2.0, emit=lines)
    with runner:
        grandchild = int(lines.wait_for(r"^\[parent\] grandchild (\d+)$")[0][1])
        lines.wait_for(r"^\[parent\] grandchild up$")
    assert wait_until(lambda: not is_alive(grandchild), timeout=2.0)


def test_run_returns_when_all_nodes_have_exited(scripts: Path):
    clean = LaunchRunner([node("quick")], resolver=script_resolver(scripts), emit=Lines())
    assert clean.run() == 0
    failing = LaunchRunner([node("quick"), node("crasher")], resolver=script_resolver(scripts), emit=Lines())
    assert failing.run() == 1


def test_run_returns_after_programmatic_shutdown(scripts: Path):
    lines = Lines()
    runner = LaunchRunner([node("talker")], resolver=script_resolver(scripts), emit=lines)
    stopper = threading.Thread(target=lambda: (lines.wait_for(r"hello"), runner.shutdown()))
    stopper.start()
    assert runner.run() == 0
    stopper.join()
    assert runner.processes["talker"].returncode == 0


@pytest.mark.parametrize("launcher_signal", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_children_do_not_outlive_the_launcher(tmp_path: Path, scripts: Path, launcher_signal: signal.Signals):
    launch = write(tmp_path / "talk.launch.xml", '<launch><node pkg="test" exec="talker"/></launch>')
    program = textwrap.dedent(
        f"""\
        import sys
        from ros_vla.launcher import LaunchRunner, parse_launch_file
        scripts = {str(scripts)!r}
        runner = LaunchRunner(parse_launch_file({str(launch)!r}),
                              resolver=lambda pkg, exe: [sys.executable, f"{{scripts}}/{{exe}}.py"])
        sys.exit(runner.run())
        """
    )
    package_root = str(Path(ros_vla.__file__).resolve().parent.parent)
    environment = {**os.environ, "PYTHONPATH": package_root, "PYTHONUNBUFFERED": "1"}
    launcher_process = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    try:
        lines = Lines()
        reader = threading.Thread(target=lambda: [lines(line.rstrip("\n")) for line in launcher_process.stdout])
        reader.start()
        pid = int(lines.wait_for(r"^\[talker\] hello from (\d+)$")[0][1])
        launcher_process.send_signal(launcher_signal)
        returncode = launcher_process.wait(timeout=10)
        reader.join(timeout=5)
        if launcher_signal == signal.SIGKILL:
            assert returncode == -signal.SIGKILL
        else:
            assert returncode == 0
            assert lines.matching(r"^\[talker\] interrupted$")  # it was given the chance to stop cleanly
        assert wait_until(lambda: not is_alive(pid), timeout=3.0)
    finally:
        launcher_process.kill()
        launcher_process.wait()
