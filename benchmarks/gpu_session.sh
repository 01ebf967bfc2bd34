#!/usr/bin/env bash
# The GPU checks in one go, on a machine with a CUDA GPU: the CUDA unit tests, then benchmarks/gpu_check.py
# without and with torch.compile. Each step has its own timeout (at most 9 minutes in all), and every log
# is written as it goes, so a run cut short still keeps what it measured. The compile check takes the
# longest: it compiles the network five or six times (batch 1 and batch > 1, labels and none, once per
# compiled variant).
#
#   bash benchmarks/gpu_session.sh --fetch     # once, with network access: diffusers' wheel into .whl/
#                                              # (gitignored), for a Python that has torch but no diffusers
#   bash benchmarks/gpu_session.sh             # with a CUDA GPU; installs .whl/ for this run if diffusers is missing
#   bash benchmarks/gpu_session.sh train       # a separate call of about 9 minutes: benchmarks/gpu_train.py trains
#                                              # a bigger emoji and a bigger digit model (3.5 min each, bf16, batch
#                                              # 256), evaluates both on the GPU, and leaves each one's weights,
#                                              # config and eval.json under $OUT (compare before shipping)
#
# Logs go to $OUT when it is set, else to out/gpu/.
set -u
cd "$(dirname "$0")/.." || exit 1
DIFFUSERS="diffusers==0.42.1"  # pure Python; on Python 3.12 it needs no package that torch does not bring
if [ "${1:-}" = "--fetch" ]; then
  exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl "$DIFFUSERS"
fi
out="${OUT:-out/gpu}"
mkdir -p "$out"
if [ "${1:-}" = "train" ]; then
  shift
  exec python3 -u benchmarks/gpu_train.py --out "$out" "$@"
fi
if ls .whl/*.whl >/dev/null 2>&1 && ! python3 -c "import diffusers" 2>/dev/null; then
  site="$(mktemp -d)"  # a throwaway install of the fetched wheel, on PYTHONPATH for this run only
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
    && export PYTHONPATH="$site"
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
