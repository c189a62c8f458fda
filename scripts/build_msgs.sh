#!/usr/bin/env bash
# Build the stack's own interface package (interfaces/ros_vla_interfaces) and the message
# packages in third_party/msgs (tf2_msgs for /tf; the gripper and error-recovery actions of
# franka_msgs; controller_manager_msgs' SwitchController for the safety gate's controller stop)
# into the venv with the rosidl and ament_cmake wheels. Only where ROS 2 does not come from apt:
# on the robot, colcon builds ros_vla_interfaces, the others come with ROS, and this script does nothing.
set -euo pipefail
venv=${1:?usage: build_msgs.sh VENV}
venv=$(cd "$venv" && pwd)
py="$venv/bin/python"
root=$(cd "$(dirname "$0")/.." && pwd)
declare -A source=(
  [ros_vla_interfaces]="$root/interfaces/ros_vla_interfaces"
  [tf2_msgs]="$root/third_party/msgs/tf2_msgs"
  [franka_msgs]="$root/third_party/msgs/franka_msgs"
  [controller_manager_msgs]="$root/third_party/msgs/controller_manager_msgs"
)
# Each package with the interface that tells whether our build of it is current.
declare -A probe=(
  [ros_vla_interfaces]="from ros_vla_interfaces.action import RunTask, ExecuteSkill, PickPlace, GoToStation; \
from ros_vla_interfaces.srv import AffordanceQuery, AttributeQuery; from ros_vla_interfaces.msg import TaskStatus"
  [tf2_msgs]="from tf2_msgs.msg import TFMessage"
  [franka_msgs]="from franka_msgs.action import ErrorRecovery, Grasp"
  [controller_manager_msgs]="from controller_manager_msgs.srv import SwitchController"
)
# Our own definitions change with the code: a venv build of them is current only while the
# hash of their source, stored beside the build, matches.
source_hash() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-64); }
interfaces_hash=$(source_hash "${source[ros_vla_interfaces]}")
hash_file="$venv/share/ros_vla_interfaces/source.sha256"
missing=()
for package in ros_vla_interfaces tf2_msgs franka_msgs controller_manager_msgs; do
  if ! "$py" -c "${probe[$package]}" 2>/dev/null; then
    missing+=("$package")
  elif [ "$package" = ros_vla_interfaces ] && [ -d "$venv/share/ros_vla_interfaces" ] \
       && [ "$(cat "$hash_file" 2>/dev/null)" != "$interfaces_hash" ]; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -gt 0 ] || exit 0

# The rosidl wheels were built in a manylinux container and their CMake config refers to
# that container's Python and numpy include directories: point those paths at ours.
pyver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
tag=cp${pyver/./}-cp${pyver/./}
py_include=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$py" -c 'import numpy; print(numpy.get_include())')
container_site=/opt/python/$tag/lib/python$pyver/site-packages
mkdir -p "/opt/python/$tag/include" "$container_site/numpy/_core"
ln -sfn "$py_include" "/opt/python/$tag/include/python$pyver"
ln -sfn "$np_include" "$container_site/numpy/_core/include"

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
for package in "${missing[@]}"; do
  build=$(mktemp -d)
  cmake -S "${source[$package]}" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" \
    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$build/cmake.log" 2>&1 \
    || { tail -40 "$build/cmake.log"; exit 1; }
  make -C "$build" -j"$(nproc)" install >"$build/make.log" 2>&1 || { tail -40 "$build/make.log"; exit 1; }
  "$py" -c "${probe[$package]}" || { echo "$package built but does not import (see $build)"; exit 1; }
  [ "$package" != ros_vla_interfaces ] || echo "$interfaces_hash" >"$hash_file"
  rm -rf "$build"
  echo "built $package into $venv"
done
