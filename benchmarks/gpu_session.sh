#!/usr/bin/env bash
# The GPU half of issue 5 in ONE device call (at most 9 minutes: each step has its own timeout, and every log
# is written as it goes, so a cut-off run still brings back what it measured). Estimated on an H100: CUDA tests
# under a minute, the no-compile check about 2 minutes, the torch.compile check 3-4 (five or six compiles of the
# network: batch 1 and batch > 1, labels and none, once per compiled variant).
#
#   here, once:   bash benchmarks/gpu_session.sh --fetch     # diffusers' wheel into .whl/ (gitignored);
#                                                            # the GPU image has torch but no diffusers
#   device tool:  run(command="bash benchmarks/gpu_session.sh", carry=[".whl"], timeout_s=580)
#
# Logs go to $OUT (the device tool brings that folder back), else to out/gpu/.
set -u
cd "$(dirname "$0")/.." || exit 1
DIFFUSERS="diffusers==0.42.1"  # pure Python; on Python 3.12 it needs nothing the GPU image lacks
if [ "${1:-}" = "--fetch" ]; then
  exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl "$DIFFUSERS"
fi
out="${OUT:-out/gpu}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  python3 -c "import diffusers; print('diffusers', diffusers.__version__)" 2>&1 | tail -1
  git log -1 --format='commit %H %s' 2>/dev/null
} | tee "$out/machine.txt"
ck=checkpoints/mnist-ddpm
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_fast.py tests/test_walk_graph.py -k cuda 2>&1 \
  | tee "$out/pytest_cuda.txt"
timeout 170 python3 -u benchmarks/gpu_check.py --checkpoint "$ck" --no-compile 2>&1 | tee "$out/gpu_check.txt"
timeout 270 python3 -u benchmarks/gpu_check.py --checkpoint "$ck" --variants compile 2>&1 | tee "$out/gpu_check_compile.txt"
echo "done $(date -u)" | tee -a "$out/machine.txt"
