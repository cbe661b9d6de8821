#!/usr/bin/env bash
# Installs omnimocap and everything it needs into ./.venv on a Debian machine with Python 3.11+.
# System libraries first (open3d needs libusb, OpenCV needs libGL/glib, the GUI tests need xvfb),
# then the Python packages. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(libusb-1.0-0 libgl1 libglib2.0-0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
              libxcb-keysyms1 libxcb-xinerama0 libdbus-1-3 xvfb xauth)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.omnimocap-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[gui,viz,test,ray]"
  touch "$stamp"
fi
# The Azure Kinect SDK's own playback (libk4a inside the pyk4a-bundle wheel) is used by the tests to
# cross-check our recordings. pyk4a-bundle is built against NumPy 1.x, so it gets its own environment.
if [ ! -x .venv-k4a/bin/python ]; then
  "$PYTHON" -m venv .venv-k4a
  .venv-k4a/bin/python -m pip install -q "pyk4a-bundle==1.5.0" "numpy<2" || echo "note: pyk4a-bundle could not be installed; the SDK cross-check tests will skip"
fi
echo "omnimocap is installed in .venv (activate it with: . .venv/bin/activate)"
