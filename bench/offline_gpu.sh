#!/usr/bin/env bash
# The GPU benchmark (bench/gpu_configs.py) on a CUDA machine that has Python, torch and
# Lightning but no package index (an air-gapped node, a GPU box lent for minutes):
#
#   here:   bash bench/offline_gpu.sh fetch [PYTHON_VERSION]   # default 3.12: wheels -> .whl/
#   there:  bash bench/offline_gpu.sh run [OUT_DIR]            # needs .whl/ and this checkout
#
# `fetch` downloads, at the versions this project's .venv resolved, the packages a training
# job needs beyond torch, Lightning and the scientific stack: Hydra and the MLflow client with
# its sqlite store. `run` installs them under /tmp/site (nothing of the machine's own Python
# changes), runs the benchmark, and copies docs/benchmarks.md and the log to OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
# What a job imports beyond torch, torchmetrics, numpy, pandas, scikit-learn, matplotlib,
# rich, pyyaml, requests and protobuf (Lightning too, at this project's version); BentoML and
# DVC are not needed to train (the run's data.matches_pin is then "unknown").
PACKAGES="lightning lightning-utilities hydra-core omegaconf antlr4-python3-runtime
  mlflow-skinny sqlalchemy alembic mako cryptography cffi pycparser cachetools databricks-sdk
  fastapi starlette uvicorn gitpython gitdb smmap importlib-metadata opentelemetry-api
  opentelemetry-proto opentelemetry-sdk opentelemetry-semantic-conventions pydantic
  pydantic-core annotated-types typing-inspection python-dotenv sqlparse"

fetch() {
  local python_version=${1:-3.12} name pinned installed
  test -x .venv/bin/python || { echo "no .venv: run make install first (it pins the versions)"; exit 1; }
  installed=$(.venv/bin/python -m pip freeze 2>/dev/null)
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  for name in $PACKAGES; do
    pinned=$(grep -i "^${name//-/[-_]}==" <<<"$installed") \
      || { echo "$name is not installed in .venv"; exit 1; }
    if [ "$name" = antlr4-python3-runtime ]; then  # published as a source archive only
      .venv/bin/python -m pip wheel -q --no-deps -w "$WHEELS" "$pinned" 2>&1 | grep -v "is ignored" || true
    else
      .venv/bin/python -m pip download -q --no-deps --only-binary=:all: \
        --python-version "$python_version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" "$pinned" 2>&1 | grep -v "is ignored" || true
    fi
  done
  echo "$(ls "$WHEELS" | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1), in $WHEELS/ for Python $python_version"
}

run() {
  local out=${1:-.} python=${PYTHON:-python3}
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/site:$PWD/src:$PWD" PYTHONUNBUFFERED=1
  "$python" -c "import torch, lightning; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'lightning', lightning.__version__)"
  "$python" -m bench gpu_configs 2>&1 | tee "$out/gpu_configs.log"
  cp docs/benchmarks.md "$out/"
}

case "${1:-}" in
  fetch) fetch "${2:-}" ;;
  run) run "${2:-}" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
