"""Helpers shared by the tests that run ROS 2 nodes as processes."""

import os
import time


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
