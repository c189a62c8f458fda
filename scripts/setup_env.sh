#!/usr/bin/env bash
# Create the venv and install everything ros_vla needs on a fresh Debian machine.
set -euo pipefail
venv=${1:-.venv}
cd "$(dirname "$0")/.."

# Debian packages: libusb for pyrealsense2, cmake/g++ to build messages, Mesa EGL for the
# camera renderer, PortAudio for microphones, espeak-ng and sox to make test speech.
need=()
for pkg in libusb-1.0-0 cmake g++ make libegl1 libegl-mesa0 libgl1-mesa-dri libportaudio2 espeak-ng sox; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  echo "apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
echo "pip install -r requirements.txt (first time: a few minutes, torch is large)"
"$venv/bin/python" -m pip install -q -r requirements.txt
bash scripts/build_msgs.sh "$venv"
"$venv/bin/python" -m pip install -q --no-deps -e .
echo "environment ready in $venv"
