from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ros_vla"


def data_tree(folder):
    """data_files entries installing every file under `folder` into share/ros_vla/<folder>."""
    entries = {}
    for path in glob(f"{folder}/**/*", recursive=True):
        if "/." in path or path.endswith("__pycache__"):
            continue
        from os.path import dirname, isfile

        if isfile(path):
            entries.setdefault(f"share/{PACKAGE}/{dirname(path)}", []).append(path)
    return sorted(entries.items())


NODES = [
    "sim_bridge_node",
    "sim_camera_node",
    "safety_gate_node",
    "arm_motion_node",
    "base_motion_node",
    "instruction_node",
    "oracle_skill_node",
    "cliport_node",
    "attribute_checker_node",
    "saycan_planner_node",
    "franka_gripper_node",
    "realsense_node",
    "speech_node",
    "rt1_policy_node",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    + data_tree("launch")
    + data_tree("config")
    + data_tree("models")
    + data_tree("calibration"),
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="ros_vla maintainers",
    maintainer_email="maintainers@ros-vla.dev",
    description="Vision-language-action ROS 2 stack: SayCan, CLIPort, RT-1, MIAVLM on a Franka Panda",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [f"{node} = {PACKAGE}.nodes.{node}:main" for node in NODES]
        + ["ros-vla = ros_vla.cli:main"],
    },
)
