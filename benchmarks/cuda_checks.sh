#!/usr/bin/env bash
# The checks a session with a GPU machine runs there (the device tool; CI never has a GPU):
# capture's and the projector's CUDA tests, then the projector benchmarks on that quiet machine.
# It runs from the repository root with the machine's own python3 (torch with CUDA), the
# missing packages installed from wheels carried in .whl/ (see the device tool's README), and
# writes its logs and result files to $OUT (default: ./cuda-checks-out).
#
#     bash benchmarks/cuda_checks.sh [tests|pool|umap|all]
set -uo pipefail
OUT=${OUT:-$PWD/cuda-checks-out}
mkdir -p "$OUT"
what=${1:-all}
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
# The package imports as sentrycam.<folder> (ENV-NOTES.md): a folder with a link to the checkout.
mkdir -p /tmp/sentrycam-import && ln -sfn "$PWD" /tmp/sentrycam-import/sentrycam
export PYTHONPATH=/tmp/sentrycam-import:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 SENTRYCAM_CACHE_DIR=/tmp/sentrycam-cache
nvidia-smi -L | tee "$OUT/gpu.txt"
status=0
if [[ $what == tests || $what == all ]]; then
  # Without the suite's conftest (it loads the web stack): the fixtures these tests use only.
  timeout 300 python3 -m pytest -q -p no:cacheprovider --noconftest \
    -p tests.capture.conftest -p tests.projector.conftest \
    tests/capture/test_cuda.py tests/projector/test_projector_cuda.py 2>&1 \
    | tee "$OUT/cuda_tests.log" || status=1
fi
if [[ $what == pool || $what == all ]]; then
  # Issue 13's scaling figure on two cores of a quiet machine, then the same on the GPU.
  timeout 240 taskset -c 0,1 python3 benchmarks/projector_pool.py \
    --json "$OUT/projector_pool.json" 2>&1 | tee "$OUT/projector_pool.log" || status=1
fi
if [[ $what == umap || $what == all ]]; then
  timeout 420 python3 benchmarks/projector_vs_umap.py --snapshots 6 --devices cpu cuda \
    --sizes ${UMAP_SIZES:-2000} \
    --json "$OUT/projector_vs_umap.json" 2>&1 | tee "$OUT/projector_vs_umap.log" || status=1
fi
exit $status
