"""Helpers shared by the tests that run ROS 2 nodes as processes."""

import os
import subprocess
import sys
import time

from ros_vla.launcher import die_with_parent_hook


def isolated_domain(offset: int) -> int:
    """Set and return a ROS_DOMAIN_ID for this test module's nodes (101..231, above common
    defaults). Each module passes its own offset so modules never share a domain, and the
    process id keeps parallel test runs apart."""
    domain = 101 + (os.getpid() + offset) % 131
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    return domain


def wait_until(condition, timeout_s: float = 10.0, poll_s: float = 0.05):
    """Poll `condition` until it returns something truthy (returned) or the time is up (None)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    return None


def start_node_process(module: str, *ros_args: str, **popen_options) -> subprocess.Popen:
    """`python -m module --ros-args ...` as a child that gets SIGKILL if the test process
    dies, so a crashed test run never leaves nodes running (and loading the CPU) behind."""
    command = [sys.executable, "-m", module] + (["--ros-args", *ros_args] if ros_args else [])
    return subprocess.Popen(command, preexec_fn=die_with_parent_hook(), **popen_options)
