#!/usr/bin/env bash
# Installs omnimocap and everything it needs into ./.venv on a Debian machine with Python 3.11+.
# System libraries first (open3d needs libusb, OpenCV needs libGL/glib, the GUI tests need xvfb),
# then the Python packages. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(libusb-1.0-0 libgl1 libglib2.0-0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4
              libxcb-keysyms1 libxcb-xinerama0 libdbus-1-3 xvfb xauth)
apt_packages+=(libx11-6 libxext6 libxrender1 libxfixes3 libxi6 libxkbcommon0)  # Blender's bpy module
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)  # the Khronos glTF validator (tools/)
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
# Blender as a Python module (bpy 4.5 LTS, ~370 MB download) writes the FBX export and opens every export in
# the tests. It pins NumPy 1.x, so it gets its own environment too; `omnimocap export` finds it there.
if [ ! -x .venv-blender/bin/python ]; then
  "$PYTHON" -m venv .venv-blender
  .venv-blender/bin/python -m pip install -q "bpy==4.5.*" || echo "note: bpy could not be installed; FBX export and the Blender tests will skip"
fi
# aitviewer opens the AMASS export in the tests. Its full dependency set would replace our OpenCV and add a
# second Qt, so it gets an environment of its own that sees .venv's packages (torch, smplx) and adds only
# what aitviewer's loading code imports (about 310 MB installed, most of it USD; ~20 s).
if [ ! -x .venv-aitviewer/bin/python ]; then
  "$PYTHON" -m venv .venv-aitviewer
  .venv/bin/python -c "import site; print(site.getsitepackages()[0])" \
    > "$(.venv-aitviewer/bin/python -c "import site; print(site.getsitepackages()[0])")/omnimocap-venv.pth"
  .venv-aitviewer/bin/python -m pip install -q --no-deps "aitviewer==1.14.2" "moderngl==5.13.0" "moderngl-window==3.1.1" \
    "imgui==2.0.0" "pyglm==2.8.3" "trimesh==5.2.0" "omegaconf==2.4.0" "antlr4-python3-runtime==4.13.2" "roma==1.8.0" \
    "pyglet==2.1.19" "glcontext==3.1.0" "usd-core==26.11" || echo "note: aitviewer could not be installed; its test will skip"
fi
# The Khronos glTF validator (npm gltf-validator), project-local in tools/node_modules, for the glTF tests.
if command -v npm >/dev/null 2>&1; then
  [ -d tools/node_modules/gltf-validator ] || npm install --prefix tools --no-audit --no-fund --silent || echo "note: gltf-validator could not be installed; the validator test will skip"
else
  echo "note: npm is missing; install Node.js for the glTF validator test"
fi
echo "omnimocap is installed in .venv (activate it with: . .venv/bin/activate)"
