#!/usr/bin/env bash
# A compatibility check for older torch: runs the backend tests under Python 3.12, torch 2.11.0 (PyPI's
# CUDA build, which also runs on a CPU; no GPU needed) and these package versions: numpy 2.5.2,
# safetensors 0.8.0, onnxruntime 1.30.0, onnx 1.23.1, huggingface_hub 1.33.0, diffusers 0.42.1; without
# gradio. It catches an API newer than torch 2.11 and a gradio import hidden in the backend.
#
#   bash tools/gpu_image_tests.sh [pytest args]      # first run: a venv of about 5 GB (torch's CUDA libraries)
#
# The venv is kept in $VENV (default: ~/.cache/ddpm-explainer/venv-torch2.11) and reused. The app's test
# modules (test_app_client, test_browser*) need gradio and are left out; the other app tests skip without it, and
# CUDA-only tests skip without a GPU.
set -eu
cd "$(dirname "$0")/.."
venv="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ddpm-explainer/venv-torch2.11}"
if [ ! -x "$venv/bin/python" ]; then
  py="${PYTHON312:-}"
  if [ -z "$py" ]; then  # python3.12 on PATH, else pyenv's
    for c in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
      if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then py="$c"; break; fi
    done
  fi
  [ -n "$py" ] || { echo "no Python 3.12 found (set PYTHON312)" >&2; exit 1; }
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.11.0 numpy==2.5.2 safetensors==0.8.0 onnxruntime==1.30.0 onnx==1.23.1 \
    onnxscript==0.7.2 huggingface_hub==1.33.0 pillow matplotlib pandas tqdm pytest filelock regex requests
  "$venv/bin/pip" install -q --no-deps diffusers==0.42.1
fi
"$venv/bin/python" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"
if "$venv/bin/python" -c "import gradio" 2>/dev/null; then
  echo "gradio is installed in $venv: this check needs a venv without it" >&2; exit 1
fi
OMP_NUM_THREADS=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  --ignore=tests/test_app_client.py --ignore-glob="tests/test_browser*.py" "$@"
