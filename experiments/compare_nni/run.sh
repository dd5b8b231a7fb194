#!/usr/bin/env bash
# NNI 3.0 vs autocompress on the same models and the same uniform 50% L1 channel pruning (not part of make test).
# Usage: experiments/compare_nni/run.sh [VENV]   (default experiments/compare_nni/.venv; created when missing)
# The NNI venv runs the whole comparison in one process and imports autocompress from this repository through
# PYTHONPATH, so it also gets autocompress's dependencies. torch is installed first, pinned, so nothing pulls
# a CUDA build. Latency is measured under the shared benchmark lock.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${1:-$ROOT/experiments/compare_nni/.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install torch==2.13.0
  "$VENV/bin/pip" install torch==2.13.0 nni "torch-pruning>=1.6,<1.7" "optuna>=5,<6" "ray[tune]>=2.50,<3" \
    "sqlalchemy>=2,<3" alembic pandas pyarrow pydantic pyyaml typer rich matplotlib scikit-learn safetensors
fi
cd "$ROOT"
PYTHONPATH="$ROOT" flock /tmp/autocompress-bench.lock "$VENV/bin/python" -m experiments.compare_nni.compare
