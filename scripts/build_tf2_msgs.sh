#!/usr/bin/env bash
# Build tf2_msgs (TFMessage for /tf) into the venv from its .msg file with the rosidl and
# ament_cmake wheels. Only needed where ROS 2 does not come from apt: on the robot,
# `import tf2_msgs` already works and this script does nothing.
set -euo pipefail
venv=${1:?usage: build_tf2_msgs.sh VENV}
venv=$(cd "$venv" && pwd)
py="$venv/bin/python"
if "$py" -c "import tf2_msgs.msg" 2>/dev/null; then
  exit 0
fi
src=$(cd "$(dirname "$0")/../third_party/msgs/tf2_msgs" && pwd)

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

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$py" \
  -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$build/cmake.log" 2>&1 \
  || { tail -40 "$build/cmake.log"; exit 1; }
make -C "$build" -j"$(nproc)" install >"$build/make.log" 2>&1 || { tail -40 "$build/make.log"; exit 1; }
"$py" -c "import tf2_msgs.msg" || {
  echo "tf2_msgs built but does not import (see $build)"; exit 1; }
echo "built tf2_msgs into $venv"
