"""The forward tab's two strips painted in the page (``static/strips.js``), so they never wait for the server.

The server sends x_0 at the strips' size (``forward.STRIP_SIDE``) and the seed's eps, as the pixels payload
(``client.pixels_payload``), and once the schedules' tables. The page then draws

1. ten frames of the closed form x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps at t = round(linspace(0, T, 10)),
   the same numbers as ``forward.forward_strips``' first strip (within one grey level);
2. the 1000-step Markov chain x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z_t (Ho et al. 2020, eq. 2), every
   100th step, with fresh noise from the page's own seeded generator (xoshiro128** and Marsaglia's polar
   method). A chain needs the right statistics, not the server's draws: its frames have the closed form's
   per-pixel mean sqrt(abar_t) x_0 and variance 1 - abar_t (tested in Chromium).

``forward.forward_strips`` stays the server's version of both, for API users.
"""
from __future__ import annotations

import functools

import numpy as np

from . import client as vc
from . import forward as vf

FRAMES = 10


def strip_pixels(image, seed: int = 0) -> dict:
    """x_0 at the strips' size and the seed's eps for the page (``client.pixels_payload``)."""
    return vc.pixels_payload(image, seed, max_side=vf.STRIP_SIDE)


@functools.lru_cache(maxsize=None)
def strip_props() -> dict:
    """What never changes: both schedules' betas and alpha_bars (float64), the closed form's and the chain's t."""
    tables = {name: {"betas": vc.b64(s.betas, "<f8"), "alpha_bars": vc.b64(s.alpha_bars, "<f8")}
              for name, s in vf.ARTICLE_SCHEDULES.items()}
    closed = np.round(np.linspace(0, vf.T, FRAMES)).astype(int).tolist()
    chain = sorted(set(np.round(np.linspace(0, vf.T, FRAMES + 1)).astype(int).tolist()))
    return {"T": vf.T, "names": list(vf.SCHEDULE_NAMES), "tables": tables, "closed_ts": closed, "chain_ts": chain}


@functools.lru_cache(maxsize=None)
def page_code() -> tuple[str, str]:
    """(the strips' JavaScript, their CSS) for a gr.HTML's ``js_on_load`` and ``css_template``."""
    return ((vc.STATIC / "strips.js").read_text(encoding="utf-8"),
            (vc.STATIC / "strips.css").read_text(encoding="utf-8"))
