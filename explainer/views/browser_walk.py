"""What the page needs to run a reverse walk itself (``static/walk.js``, ONNX Runtime Web): one small payload.

A walk's steps in the chain's affine form (``StepCoefficients.affine``, the numbers the CUDA-graph walk uses):

    eps    = eps_theta(x_t, model_t, y)                  (guidance: one call on the doubled batch [x; x], [y; null])
    x0_hat = sqrt_recip_alpha_bar x_t - sqrt_recipm1_alpha_bar eps        (Ho et al. 2020, eq. 15), clipped if asked
    x_prev = posterior_mean_coef1 x0_hat + posterior_mean_coef2 x_t + sigma z

``walk_payload`` sends per step the five coefficients (float64), the step the network is called at
(``respacing.network_timesteps``, the one map; sent as numbers, fed as the dtype the ONNX file declares) and
whether the step draws z; plus the labels of the network call, the guidance and the seed.

**Noise: the seed, not the numbers.** The page draws x_T and every z with a JavaScript copy of torch's CPU
generator (``static/walk.js``: mt19937, 24-bit uniforms, Box-Muller in blocks of 16, torch.randn's float32 path),
which reproduces ``torch.randn`` within one float32 ulp (tested in Chromium). Why not send the noise: a 1000-step
colour walk's z is 12 MB, the seed is a number; the server draws nothing; and the server's walk with the same
seed draws the same numbers (``reverse._start_walks``: one generator seeded with it draws x_T, then each step's
z, the samplers' order), so the browser's pictures equal the server's with the samplers left as they are.

Only samplers whose every step is in this affine form run in the page (``AFFINE_METHODS``); others, the
side-by-side modes and a model without an affine form (zero terminal SNR) run on the server: the payload then
says ``run: "server"`` and why. The page needs the model's ONNX file: ``model_file`` exports it once
(``accel.fast.export_onnx``, cached by the weights' hash) and copies it into ``WEB_MODELS_DIR``, which the app
serves with a long cache lifetime (the name carries the hash, so a file never changes under its name).
"""
from __future__ import annotations

import functools
import itertools
import os
import shutil
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..accel.fast import FastPathError, export_onnx
from ..diffusion.respacing import AFFINE_COLUMNS, network_timesteps
from ..diffusion.samplers import draws_noise, guidance_labels
from ..model.checkpoint import DiffusionModel
from .cache import LRU
from .client import STATIC, b64, from_b64
from .inputs import class_labels
from .reverse import ReverseRequest

AFFINE_METHODS = ("ddpm", "ddim")  # samplers whose every step is in the affine form (``respacing.METHODS``)
WHERE = ("in your browser", "on the server")  # the learner's choice of where a walk is computed
WEB_MODELS_DIR = Path(tempfile.gettempdir()) / "ddpm-explainer-web-models"  # served: the models' ONNX files
_lock = threading.Lock()
_tickets = itertools.count(1)
_tables = LRU(64)  # (model, settings that shape the chain) -> step_table


def model_file(model: DiffusionModel, folder: Path | None = None) -> Path:
    """The model's ONNX file for the page (exported once per weights, then copied into ``folder``)."""
    folder = Path(folder) if folder is not None else WEB_MODELS_DIR
    key = ("web_onnx", str(folder))
    built = model.fast_paths if isinstance(model, DiffusionModel) else {}  # (kept on the model, gone with it)
    with _lock:
        hit = built.get(key)
        if hit is not None and hit.exists():
            return hit
        source = export_onnx(model)
        path = folder / source.name
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)  # (atomic: a reader never sees half a file)
        built[key] = path
        return path


@functools.lru_cache(maxsize=16)
def onnx_inputs(path: Path) -> dict:
    """{input name: dtype} as the ONNX file declares them ("float32", "int64"), for a page whose runtime cannot
    say (the page reads ``session.inputMetadata`` first)."""
    import onnx

    names = {1: "float32", 6: "int32", 7: "int64", 11: "float64"}
    graph = onnx.load(str(path), load_external_data=False).graph
    return {i.name: names.get(i.type.tensor_type.elem_type, "float32") for i in graph.input}


def server_reason(model: DiffusionModel, req: ReverseRequest) -> str | None:
    """Why this walk must run on the server, in words; None where the page can run it."""
    if req.compare != "off":
        return "side-by-side walks run on the server"
    if req.method not in AFFINE_METHODS:
        return f"the {req.sampler} sampler's steps are not in the affine form the page runs"
    if model.kind == "diffusers":
        return "this checkpoint's network has no ONNX file for the page"
    return None


def step_table(model: DiffusionModel, req: ReverseRequest) -> dict:
    """The walk's steps: coefficients [n, 5] (AFFINE_COLUMNS, float64 base64), network steps, t, noise draws;
    computed once per model and settings (``_tables``)."""
    key = (model.schedule.alpha_bars.tobytes(), replace(req, label="", guidance=0.0, seed=0, clip_x0=False))
    return _tables.get(key, lambda: _step_table(model, req))


def _step_table(model: DiffusionModel, req: ReverseRequest) -> dict:
    chain = req.chain(model.schedule)
    coefs = chain.coefficients(req.method).affine()  # (as reverse.py's sample: default variance and eta)
    one = torch.zeros(1)
    model_t = [float(network_timesteps(float(ab), model.schedule, one)[0]) for ab in chain.alpha_bar]
    n = len(chain)
    return {"steps": n, "columns": list(AFFINE_COLUMNS), "coefs": b64(coefs, "<f8"), "model_t": model_t,
            "t": [int(t) for t in chain.timesteps] + [0],
            "draws": [bool(draws_noise(req.method, 0.0, i, n)) for i in range(n)]}


def network_call(model: DiffusionModel, req: ReverseRequest) -> dict:
    """The labels of each step's one network call (null where unconditional) and whether guidance doubles it."""
    labels, doubled = guidance_labels(class_labels(model, req.label, 1), req.guidance, model.null_label)
    fill = model.null_label if model.null_label is not None else 0
    ids = [fill] if labels is None else [int(v) for v in labels.tolist()]
    return {"labels": ids, "doubled": doubled, "guidance": float(req.guidance), "clip": bool(req.clip_x0),
            "conditional": bool(model.num_classes)}


def walk_payload(model: DiffusionModel, *settings, where: str = WHERE[0], folder: Path | None = None,
                 **named) -> dict:
    """The payload of one walk for the page (module docstring), or ``{"run": "server", "reason": ...}``.

    ``settings`` / ``named``: the reverse walk's own arguments after the model (``ReverseRequest.checked`` checks
    them: a ValueError names a bad one); ``where``: the learner's choice. ``ticket`` grows with every payload, so
    pressing Sample twice with the same settings runs twice.
    """
    req = ReverseRequest.checked(model, *settings, **named)
    ticket = next(_tickets)
    reason = "you chose the server" if where == WHERE[1] else server_reason(model, req)
    if reason is None:
        try:
            path = model_file(model, folder)
        except FastPathError as e:
            reason = f"the network could not be exported for the page ({e})"
    if reason is not None:
        return {"run": "server", "reason": reason, "ticket": ticket}
    try:
        table = step_table(model, req)
    except ValueError as e:  # (zero terminal SNR: no x0_hat from eps at the first step)
        return {"run": "server", "reason": str(e), "ticket": ticket}
    return {"run": "browser", "ticket": ticket, "seed": req.seed, "name": req.name(model),
            "conditioning": req.conditioning(model), "method": req.method,
            "shape": [model.channels, model.image_size, model.image_size],
            "model": {"file": {"path": str(path), "meta": {"_type": "gradio.FileData"}}, "inputs": onnx_inputs(path)},
            **table, **network_call(model, req)}


def page_code() -> tuple[str, str]:
    """(the walk view's JavaScript, its CSS) for a gr.HTML's ``js_on_load`` and ``css_template``."""
    return (STATIC / "walk.js").read_text(encoding="utf-8"), (STATIC / "walk.css").read_text(encoding="utf-8")


def decode_coefs(payload: dict) -> np.ndarray:
    """The payload's coefficients as the page reads them: float64 [steps, 5]."""
    return from_b64(payload["coefs"], "<f8").reshape(payload["steps"], len(AFFINE_COLUMNS))
