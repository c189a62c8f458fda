"""Where the package's data (launch/, config/, models/, calibration/) lives.

Installed by colcon, data sits in ``<prefix>/share/ros_vla``; in a source checkout
(the venv used by ``make demo``/``make test``) it is the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "ros_vla"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def package_share() -> Path:
    """Directory holding launch/, config/, models/ and calibration/."""
    if (_SOURCE_ROOT / "launch").is_dir() and (_SOURCE_ROOT / "package.xml").is_file():
        return _SOURCE_ROOT
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        share = Path(prefix) / "share" / PACKAGE
        if (share / "launch").is_dir():
            return share
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} share directory: not a source checkout and not in AMENT_PREFIX_PATH"
    )


def config_file(name: str) -> Path:
    return package_share() / "config" / name


def launch_file(name: str) -> Path:
    return package_share() / "launch" / name


def use_project_dds_profile() -> None:
    """Point Fast DDS at config/fastdds.xml (shared-memory segments big enough for camera
    images) unless the user chose a profile. Call before rclpy.init or starting nodes."""
    # Fast DDS 2.x (Humble, Jazzy) reads the older variable name; 3.x warns if it is set.
    older = os.environ.get("ROS_DISTRO", "") in ("humble", "iron", "jazzy")
    variable = "FASTRTPS_DEFAULT_PROFILES_FILE" if older else "FASTDDS_DEFAULT_PROFILES_FILE"
    if not (os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")):
        os.environ[variable] = str(config_file("fastdds.xml"))
