#!/usr/bin/env bash
# `make gpu-check`: set up a GPU environment, then run bench/gpu_check.py (docs/gpu-check.md).
#
# On a machine whose python3 already holds a CUDA build of torch (a GPU image such as the device
# machine's), the venv is made over that interpreter's site-packages and only what it lacks is added:
# from the wheelhouse .whl/ when present (made here by `make gpu-wheels`; the device reaches no package
# registry), otherwise from the registry with the project's `gpu` extra (faiss-gpu-cu12).
# Without a GPU it says so, runs the CPU-side steps in the project's own .venv, and exits 2.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/gpu-check}
VENV=${GPU_VENV:-.venv-gpu}
BASE=${GPU_PYTHON:-python3}
mkdir -p "$OUT"
say() { echo "[gpu-check] $*"; }

requirements() {  # the project's runtime dependencies from pyproject.toml, torch left to the base
  "$1" - "$2" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = [d for d in project["dependencies"] if not d.startswith(("torch", "torchvision"))]
extra = project["optional-dependencies"][sys.argv[1]] if sys.argv[1] != "none" else []
print("\n".join(deps + extra + ["pytest", "httpx"]))
PY
}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/[gpu-check] gpu: /'
  if "$BASE" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
    say "using $BASE's CUDA torch ($("$BASE" -c 'import torch; print(torch.__version__)'))"
    "$BASE" -m venv --system-site-packages "$VENV"
  else
    say "no CUDA torch in $BASE: installing torch into $VENV"
    "$BASE" -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
  fi
  PY=$VENV/bin/python
  if [ -d .whl ]; then
    # The wheelhouse carries faiss-cpu: faiss-gpu-cu12 needs CUDA 12's runtime and cuBLAS (~600 MB),
    # which do not fit the device's 64 MiB carry, and serving recalls on the CPU anyway.
    say "installing from the wheelhouse .whl/ (offline)"
    mapfile -t reqs < <(requirements "$PY" cpu)
    "$PY" -m pip install -q --no-index --find-links .whl "${reqs[@]}"
    "$PY" -m pip install -q --no-index --find-links .whl locust 2>/dev/null || say "Locust not in the wheelhouse"
  else
    mapfile -t reqs < <(requirements "$PY" gpu)
    "$PY" -m pip install -q "${reqs[@]}" 'locust>=2.24,<3'
  fi
else
  say "NO GPU FOUND: nvidia-smi sees no device. Running the CPU-side steps only; exit status 2."
  make -s install >/dev/null
  PY=.venv/bin/python
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" -m bench.gpu_check --out "$OUT" "$@"
