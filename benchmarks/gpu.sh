#!/usr/bin/env bash
# CUDA measurements in one run: WiLoR at full size (official demo path in fp32 against the project's
# batched fp16 path with MANO in float32, precision in mm, load time and memory) and the throughput
# section of the `process` benchmark with the hand network on CUDA (the tiny WiLoR fixture and a
# random-weight detector on 3840 and 5760 px panoramas, frames/s against real time). Writes
# benchmarks/results/gpu.json.
#
#     bash benchmarks/gpu.sh            (from the repository root, with the project's .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch")'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$TMP/gpu.txt" || true

"$PY" benchmarks/bench_wilor.py --device cuda --crops 64 --repeats 3 --out "$TMP/wilor.json"
"$PY" benchmarks/bench_process.py --device cuda --skip-linearity --skip-memory --skip-batch \
    --work "$TMP/process" --out "$TMP/process.json"

"$PY" - "$TMP" "$OUT/gpu.json" <<'PYEOF'
import json, sys
from pathlib import Path
tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
result = {"gpu": (tmp / "gpu.txt").read_text().strip() if (tmp / "gpu.txt").exists() else None,
          "wilor": json.loads((tmp / "wilor.json").read_text())}
if (tmp / "process.json").exists():
    result["process"] = json.loads((tmp / "process.json").read_text())
out.write_text(json.dumps(result, indent=2) + "\n")
print(f"wrote {out}")
PYEOF
