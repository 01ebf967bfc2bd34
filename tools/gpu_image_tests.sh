#!/usr/bin/env bash
# The backend's tests under the GPU machine's software, run on this CPU (no GPU needed): Python 3.12,
# torch 2.11.0 (PyPI's CUDA build, which runs on a CPU), and the versions the GPU image holds
# (/work/.library/device/KINDS.md, 'pip list'): numpy 2.5.2, safetensors 0.8.0, onnxruntime 1.30.0,
# onnx 1.23.1, huggingface_hub 1.33.0; plus diffusers 0.42.1 (carried there as a wheel); no gradio.
# It catches an API newer than torch 2.11 and a hidden gradio import in the backend before a GPU session.
#
#   bash tools/gpu_image_tests.sh [pytest args]      # first run: a venv of about 5 GB (torch's CUDA libraries)
#
# The app's modules (test_app_client, test_browser) need gradio and are left out; CUDA-only tests skip.
set -eu
cd "$(dirname "$0")/.."
venv="${VENV:-/tmp/venv-gpu-image}"
if [ ! -x "$venv/bin/python" ]; then
  py="${PYTHON312:-}"
  if [ -z "$py" ]; then  # python3.12 on PATH, else pyenv's
    for c in python3.12 "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12; do
      if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then py="$c"; break; fi
    done
  fi
  [ -n "$py" ] || { echo "no Python 3.12 found (set PYTHON312)" >&2; exit 1; }
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.11.0 numpy==2.5.2 safetensors==0.8.0 onnxruntime==1.30.0 onnx==1.23.1 \
    onnxscript==0.7.2 huggingface_hub==1.33.0 pillow matplotlib pandas tqdm pytest filelock regex requests
  "$venv/bin/pip" install -q --no-deps diffusers==0.42.1
fi
"$venv/bin/python" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"
if "$venv/bin/python" -c "import gradio" 2>/dev/null; then
  echo "gradio is installed in $venv: the GPU image has none" >&2; exit 1
fi
OMP_NUM_THREADS=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  --ignore=tests/test_app_client.py --ignore=tests/test_browser.py "$@"
