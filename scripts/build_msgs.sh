#!/usr/bin/env bash
# Build the message packages in third_party/msgs (tf2_msgs for /tf; the gripper and
# error-recovery actions of franka_msgs; controller_manager_msgs' SwitchController for the
# safety gate's controller stop) into the venv with the rosidl and ament_cmake wheels. Only
# where ROS 2 does not come from apt: on the robot, all import already and this script does nothing.
set -euo pipefail
venv=${1:?usage: build_msgs.sh VENV}
venv=$(cd "$venv" && pwd)
py="$venv/bin/python"
msgs=$(cd "$(dirname "$0")/../third_party/msgs" && pwd)
# Each package with the interface that tells whether our build of it is current.
declare -A probe=(
  [tf2_msgs]="from tf2_msgs.msg import TFMessage"
  [franka_msgs]="from franka_msgs.action import ErrorRecovery, Grasp"
  [controller_manager_msgs]="from controller_manager_msgs.srv import SwitchController"
)
missing=()
for package in tf2_msgs franka_msgs controller_manager_msgs; do
  "$py" -c "${probe[$package]}" 2>/dev/null || missing+=("$package")
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
  cmake -S "$msgs/$package" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" \
    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$build/cmake.log" 2>&1 \
    || { tail -40 "$build/cmake.log"; exit 1; }
  make -C "$build" -j"$(nproc)" install >"$build/make.log" 2>&1 || { tail -40 "$build/make.log"; exit 1; }
  "$py" -c "${probe[$package]}" || { echo "$package built but does not import (see $build)"; exit 1; }
  rm -rf "$build"
  echo "built $package into $venv"
done
