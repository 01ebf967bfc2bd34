"""Figures: image grids and strips, and the article's figures regenerated from the real math and model.

Pure helpers (the app reuses ``plot_schedule_curves``): ``forward_strip``, ``forward_chain_frames``,
``plot_schedule_curves``, ``triplet_image``, ``figure_walk``; the picture helpers (grids, GIFs) live in
``display``. ``describe_sampler`` and ``describe_walk`` put a sampler's settings into words: every caption
of a reverse walk (here, in the CLI and in the evaluation report) is built by them from the very arguments
given to the sampler. ``make_figures`` writes the article's figures:

(a) ``forward_10_steps.png``: x_0, x_100, ..., x_1000 of the step-by-step Markov chain (article fig. 2);
(b) ``forward_linear_strip.png`` / ``forward_cosine_strip.png``: the whole 1000-step forward process,
    sampled evenly, closed form with one shared eps (figs. 3 and 5);
(c) ``schedule_curves.png``: mean coefficient sqrt(alpha_bar_t) and variance 1 - alpha_bar_t (fig. 4);
(d) ``reverse_10_steps.png`` and ``reverse_walk.gif``: the model's reverse process from pure noise (fig. 9);
(e) ``full_noise_removal.png``: x0_hat | x_t | eps_hat at chosen steps (fig. 10).
(a)-(c) need no model; their image is the bundled photo ``assets/astronaut.jpg`` unless another is given.
Matplotlib is used through ``matplotlib.figure.Figure`` only (no pyplot, so no global figure state and
no GUI backend); files are rendered by the Agg canvas.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..paths import ASSETS
from .display import grid, save_gif, to_uint8, upscale
from .images import center_square, to_tensor
from ..diffusion.forward import q_chain, q_sample
from ..diffusion.respacing import make_chain
from ..diffusion.samplers import sample
from ..diffusion.schedules import Schedule, make_schedule

DEFAULT_PHOTO = ASSETS / "astronaut.jpg"  # the forward figures' image unless another is given
DEFAULT_PHOTO_CREDIT = "astronaut Eileen Collins, NASA, public domain, via scikit-image (assets/LICENSES.md)"
FALLBACK_DIGIT = ASSETS / "digit_0.png"  # used only where DEFAULT_PHOTO is missing
PHOTO_SIZE = 128  # photos are centre-cropped and resized to this many pixels for the forward figures


# ---------------------------------------------------------------- captions
SAMPLER_SOURCES = {
    "euler": "Euler (Karras et al. 2022, Algorithm 1 without its second stage; deterministic)",
    "euler-a": "Euler ancestral (Karras et al. 2022 with fresh noise each step; k-diffusion's sample_euler_ancestral)",
    "heun": "Heun (Karras et al. 2022, Algorithm 1; two network calls a step but the last)",
    "dpmpp-2m": "DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2; deterministic, second order)"}


def describe_sampler(method: str = "ddpm", variance: str = "beta_tilde", eta: float = 0.0,
                     clip_x0: bool = False) -> str:
    """The reverse step in words, from the arguments ``samplers.sample`` is given.

    DDPM: Ho et al. 2020, Algorithm 2, with sigma_t^2 = beta_t or the posterior variance beta_tilde_t
    (eq. 7); DDIM: Song et al. 2021, eq. 12, with its eta (eq. 16); the others as ``SAMPLER_SOURCES`` cites them.
    """
    if method == "ddpm":
        sigma = "beta_t" if variance == "beta" else "beta_tilde_t (the posterior variance)"
        words = f"DDPM (Ho et al. 2020, Algorithm 2), sigma_t^2 = {sigma}"
    elif method == "ddim":
        words = f"DDIM (Song et al. 2021, eq. 12), eta = {eta:g}" + (" (deterministic)" if eta == 0 else "")
    elif method in SAMPLER_SOURCES:
        words = SAMPLER_SOURCES[method]
    else:
        raise ValueError(f"unknown sampler {method!r}")
    return words + (", x0_hat clipped to [-1, 1]" if clip_x0 else "")


def describe_walk(method: str = "ddpm", variance: str = "beta_tilde", eta: float = 0.0, clip_x0: bool = False, *,
                  chain=None, labels=None, guidance: float = 1.0, seed: int | None = None) -> str:
    """A whole reverse walk in words, from the arguments ``samplers.sample`` is given.

    chain: the ``SamplingChain`` walked (its description names the steps and the schedule). labels: the
    names of the labels asked for (repeats are named once), or None for an unconditional walk, where
    guidance does not apply. seed: the noise seed, if one was given.
    """
    parts = [describe_sampler(method, variance, eta, clip_x0)]
    if chain is not None:
        parts.append(chain.description)
    if labels is None:
        parts.append("unconditional")
    else:
        names = list(dict.fromkeys(str(v) for v in (labels.tolist() if hasattr(labels, "tolist") else labels)))
        parts.append(("label " if len(names) == 1 else "labels ") + ", ".join(names))
        parts.append(f"classifier-free guidance w={guidance:g}")
    if seed is not None:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


# ---------------------------------------------------------------- pure building blocks
def forward_strip(x0: torch.Tensor, schedule: Schedule, ts, eps: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps for every t in ``ts`` (Ho et al. 2020, eq. 4).

    x0, eps: one image [C,H,W] or [1,C,H,W]; the same eps for every frame, so the frames differ only by
    the noise level. Returns [len(ts), C, H, W].
    """
    x0 = x0.reshape(1, *x0.shape[-3:])
    eps = eps.reshape(1, *x0.shape[-3:]).to(x0)
    ts = [int(t) for t in ts]
    n = len(ts)
    return q_sample(x0.expand(n, -1, -1, -1), ts, eps.expand(n, -1, -1, -1), schedule)


def forward_chain_frames(x0: torch.Tensor, schedule: Schedule, num_frames: int = 10,
                         generator: torch.Generator | None = None) -> tuple[list[int], torch.Tensor]:
    """The step-by-step Markov chain x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps_t (Ho et al. 2020, eq. 2),
    fresh noise at each of the T steps, recorded every T / num_frames steps: (ts, frames [num_frames+1,C,H,W])."""
    if not 1 <= num_frames <= schedule.T:
        raise ValueError(f"num_frames must be in 1..{schedule.T}, got {num_frames}")
    x0 = x0.reshape(1, *x0.shape[-3:])
    keep = set(np.round(np.linspace(0, schedule.T, num_frames + 1)).astype(int).tolist())
    ts, frames = [], []
    for t, x in q_chain(x0, schedule, generator=generator):
        if t in keep:
            ts.append(t)
            frames.append(x[0])
    return ts, torch.stack(frames)


def plot_schedule_curves(schedules: dict, t: int | None = None, ax=None, *, highlight: str | None = None,
                         colors: dict | None = None):
    """Mean coefficient sqrt(alpha_bar_t) (solid) and variance 1 - alpha_bar_t (dashed) of q(x_t | x_0) against
    t (Ho et al. 2020, eq. 4), for each schedule in ``{name: Schedule}``. Returns the Figure.

    t: a cursor at one step, with markers where it crosses the (highlighted) curves. highlight: the one
    schedule drawn thicker and marked. colors: {name: colour} (default: matplotlib's tab10 cycle).
    ax: draw into these axes (the caller's figure size and title) instead of a new Figure.
    """
    from matplotlib.figure import Figure

    if not schedules:
        raise ValueError("give at least one schedule")
    if ax is None:
        fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    cycle = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    colors = {name: (colors or {}).get(name, cycle[i % len(cycle)]) for i, name in enumerate(schedules)}
    for name, s in schedules.items():
        steps = np.arange(0, s.T + 1)
        ab = s.alpha_bar_at(steps)
        lw = 1.2 if highlight is not None and name != highlight else 2.2
        ax.plot(steps, np.sqrt(ab), color=colors[name], lw=lw, label=f"{name}: mean coef. √ᾱ_t")
        ax.plot(steps, 1.0 - ab, color=colors[name], lw=lw, ls="--", label=f"{name}: variance 1 − ᾱ_t")
    if t is not None:
        t = int(t)
        ax.axvline(t, color="k", lw=1)
        for name, s in schedules.items():
            if highlight is None or name == highlight:
                ab_t = float(s.alpha_bar_at(t))
                ax.plot([t, t], [np.sqrt(ab_t), 1.0 - ab_t], "o", color=colors[name])
    ax.set_xlabel("t")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, max(s.T for s in schedules.values()))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
    return fig


def triplet_image(x0_hat: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor, pad: int = 2) -> np.ndarray:
    """x0_hat | x_t | eps_hat side by side as uint8 [H, 3W+2pad, C]; each shown on [-1, 1], clipped."""
    frames = torch.stack([v.reshape(v.shape[-3:]).float().cpu() for v in (x0_hat, x_t, eps)])
    return grid(to_uint8(frames, keep_gray_channel=True), nrow=3, pad=pad, pad_value=255)


def figure_walk(model, labels: torch.Tensor | None, num_images: int, seed: int = 0, guidance: float = 1.0,
                strip_ts=None, triplet_ts=(), gif_every: int = 10, eps_fn=None, *, method: str = "ddpm",
                variance: str = "beta_tilde", eta: float = 0.0, clip_x0: bool = False, label_names=None):
    """Run the model's reverse process over all T steps from pure noise and collect what the figures need.

    eps_fn: the network path (default: eager ``model.eps``; the CLI passes the fastest path that agrees with it).
    method, variance, eta, clip_x0: the sampler (``samplers.sample``; default DDPM with sigma_t^2 = beta_tilde_t).
    label_names: how to name ``labels`` in the description (default: the label numbers).

    Returns a dict: "strip_ts", "strip" [len(strip_ts), B, C, H, W] (x_t at those t; t = 0 is the sample),
    "triplets" {t: (x0_hat, x_t, eps_hat)} (batch tensors), "gif_ts" and "gif" (x_t every ``gif_every`` steps),
    "x0" and "description" (``describe_walk`` of the sampler's arguments).
    """
    eps_fn = model.eps if eps_fn is None else eps_fn
    T = model.schedule.T
    strip_ts = [int(t) for t in (strip_ts if strip_ts is not None else np.round(np.linspace(T, 0, 11)))]
    want_strip, want_trip = set(strip_ts), set(int(t) for t in triplet_ts)
    shape = (num_images, model.channels, model.image_size, model.image_size)
    chain = make_chain(model.schedule)
    sampler = dict(method=method, variance=variance, eta=eta, clip_x0=clip_x0)  # one dict: the call and its words
    named = None if labels is None else (label_names if label_names is not None else labels)
    description = describe_walk(**sampler, chain=chain, labels=named, guidance=guidance, seed=seed)
    got_strip, trips, gif_ts, gif = {}, {}, [], []
    rec = None
    for rec in sample(eps_fn, chain, shape, labels=labels, guidance=guidance, null_label=model.null_label,
                      seed=seed, device=model.device, **sampler):
        if rec.t in want_strip:
            got_strip[rec.t] = rec.x_t.cpu()
        if rec.t in want_trip:
            trips[rec.t] = (rec.x0_hat.cpu(), rec.x_t.cpu(), rec.eps.cpu())
        if (T - rec.t) % gif_every == 0:
            gif_ts.append(rec.t)
            gif.append(rec.x_t.cpu())
    x0 = rec.x_prev.cpu()
    got_strip[0] = x0
    gif_ts.append(0)
    gif.append(x0)
    return {"strip_ts": strip_ts, "strip": torch.stack([got_strip[t] for t in strip_ts]), "triplets": trips,
            "gif_ts": gif_ts, "gif": gif, "x0": x0, "description": description}


# ---------------------------------------------------------------- inputs
def load_figure_image(path=None, size: int = PHOTO_SIZE) -> tuple[torch.Tensor, str]:
    """The image for the forward figures as [1,C,H,W] in [-1, 1], and where it came from.

    ``path``: any image (centre-cropped to a square, resized to ``size``; grayscale stays grayscale).
    Default: the bundled photo ``DEFAULT_PHOTO`` (assets/astronaut.jpg); only where that file is missing,
    the bundled digit ``FALLBACK_DIGIT`` (a held-out MNIST digit, 28x28), and the description says so.
    """
    if path is None:
        if not DEFAULT_PHOTO.is_file():
            x, _ = load_figure_image(FALLBACK_DIGIT, 28)
            return x, (f"{FALLBACK_DIGIT.name} (a held-out MNIST digit, assets/LICENSES.md), 28x28, in place of "
                       f"the bundled photo assets/{DEFAULT_PHOTO.name}, which is missing")
        x, _ = load_figure_image(DEFAULT_PHOTO, size)
        return x, f"{DEFAULT_PHOTO.name} ({DEFAULT_PHOTO_CREDIT}), {size}x{size}"
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            arr = center_square(im.convert("L" if gray else "RGB"), size)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    return to_tensor(arr), f"{path.name}, {size}x{size}"


# ---------------------------------------------------------------- rendering
def _display_factor(h: int, target: int = 96) -> int:
    return max(1, target // h)


def _font(size: int = 13):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError):
        return ImageFont.load_default()


def image_table(rows: list[list[np.ndarray]], col_titles=None, row_titles=None, pad: int = 4,
                font_size: int = 13) -> np.ndarray:
    """uint8 [H,W,C] images in a table on white, with optional column titles above and row titles on the left.

    Returns an RGB uint8 array. Titles are drawn with Pillow's built-in font (no matplotlib, fast).
    """
    from PIL import ImageDraw

    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = lambda s: int(np.ceil(probe.textlength(str(s), font=font)))
    h, w = rows[0][0].shape[:2]
    nr, nc = len(rows), len(rows[0])
    cell_w = max([w] + [text_w(t) + 4 for t in (col_titles or [])])
    left = max([0] + [text_w(t) + 2 * pad for t in (row_titles or [])])
    top = font_size + 2 * pad if col_titles else pad
    canvas = Image.new("RGB", (left + nc * (cell_w + pad) + pad, top + nr * (h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r in range(nr):
        y = top + r * (h + pad)
        if row_titles:
            draw.text((left - pad - text_w(row_titles[r]), y + (h - font_size) // 2), str(row_titles[r]),
                      fill="black", font=font)
        for c in range(nc):
            img = np.asarray(rows[r][c], dtype=np.uint8)
            img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
            x = left + pad + c * (cell_w + pad) + (cell_w - w) // 2
            canvas.paste(Image.fromarray(img), (x, y))
    for c, title in enumerate(col_titles or []):
        draw.text((left + pad + c * (cell_w + pad) + (cell_w - text_w(title)) // 2, pad), str(title),
                  fill="black", font=font)
    return np.asarray(canvas)


def _save(img, path: Path) -> Path:
    """Save a matplotlib Figure (Agg canvas) or a uint8 image array as a PNG."""
    if isinstance(img, np.ndarray):
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(path)
    else:
        img.savefig(path)
    return path


# ---------------------------------------------------------------- the article's figures
def make_figures(model, out_dir, image=None, seed: int = 0, eps_fn=None, *, method: str = "ddpm",
                 variance: str = "beta_tilde", eta: float = 0.0, clip_x0: bool = False) -> list[Path]:
    """Write the article's figures into ``out_dir``; returns the paths written (plus ``captions.json``).

    model: a loaded DiffusionModel, or None for the model-free figures (a)-(c) only.
    image: path of the image for the forward figures (default: the bundled photo assets/astronaut.jpg).
    eps_fn: the network path for the model's figures (default: eager ``model.eps``).
    method, variance, eta, clip_x0: the sampler of the reverse walk (default DDPM with sigma_t^2 = beta_tilde_t,
    no clipping); the captions name them.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x0, source = load_figure_image(image)
    linear, cosine = make_schedule("linear", 1000), make_schedule("cosine", 1000)
    factor = _display_factor(x0.shape[-2])
    gen = torch.Generator().manual_seed(int(seed))
    captions, paths = {}, []

    def add(path: Path, caption: str):
        paths.append(path)
        captions[path.name] = caption

    # (a) the Markov chain, recorded every 100 steps
    ts, frames = forward_chain_frames(x0, linear, 10, generator=gen)
    imgs = [upscale(f, factor) for f in to_uint8(frames, keep_gray_channel=True)]
    add(_save(image_table([imgs], [f"t={t}" for t in ts]), out / "forward_10_steps.png"),
        f"Forward process of the linear schedule (T=1000), run step by step with fresh noise at every step "
        f"(x_t = sqrt(alpha_t) x_(t-1) + sqrt(beta_t) eps), shown every 100 steps. Image: {source}.")

    # (b) the whole forward process, closed form, one shared eps, 16 evenly spaced frames
    eps = torch.randn(x0.shape, generator=gen)
    ts16 = np.round(np.linspace(0, 1000, 16)).astype(int)
    for name, sched in (("linear", linear), ("cosine", cosine)):
        imgs = [upscale(f, factor) for f in to_uint8(forward_strip(x0, sched, ts16, eps), keep_gray_channel=True)]
        add(_save(image_table([imgs], [f"t={t}" for t in ts16]), out / f"forward_{name}_strip.png"),
            f"The whole 1000-step forward process with the {name} schedule, 16 evenly spaced steps, "
            f"x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps with the same eps in both strips. "
            f"{sched.steps_near_pure_noise()} of 1000 steps have alpha_bar_t < 0.01. Image: {source}.")

    # (c) mean coefficient and variance
    add(_save(plot_schedule_curves({"linear": linear, "cosine": cosine}), out / "schedule_curves.png"),
        "q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I): the mean coefficient (solid) and the "
        "variance (dashed) for the linear and cosine schedules, T=1000.")

    if model is not None:
        paths += _model_figures(model, out, seed, captions, eps_fn, method=method, variance=variance, eta=eta,
                                clip_x0=clip_x0)
    cap = out / "captions.json"
    cap.write_text(json.dumps(captions, indent=2) + "\n")
    return paths + [cap]


def _model_figures(model, out: Path, seed: int, captions: dict, eps_fn=None, **sampler) -> list[Path]:
    T = model.schedule.T
    n = min(model.num_classes, 10) if model.num_classes else 4
    labels = torch.arange(n) if model.num_classes else None
    w = model.recommended_guidance if model.num_classes else 1.0
    trip_ts = sorted({int(round(T * f)) for f in (1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05)} | {1}, reverse=True)
    names = model.class_names or []
    walk = figure_walk(model, labels, n, seed=seed, guidance=w, triplet_ts=trip_ts, gif_every=max(1, T // 100),
                       eps_fn=eps_fn, label_names=names[:n] if labels is not None else None, **sampler)
    factor = _display_factor(model.image_size)
    what = walk["description"]
    written = []

    # (d) ten reverse steps, one row per sample
    frames = walk["strip"]  # [F, B, C, H, W]
    rows = [[upscale(to_uint8(frames[f, b], keep_gray_channel=True), factor) for f in range(len(frames))]
            for b in range(n)]
    p = _save(image_table(rows, [f"t={t}" for t in walk["strip_ts"]],
                           [names[i] for i in range(n)] if labels is not None else None),
              out / "reverse_10_steps.png")
    written.append(p)
    captions[p.name] = f"Reverse process from pure noise x_T to a sample x_0, shown every {T // 10} steps: {what}."

    # (d) the whole walk as an animation
    gif_factor = _display_factor(model.image_size, 64)  # smaller than the PNGs: ~100 frames of noise add up
    gif_frames = [upscale(grid(to_uint8(x, keep_gray_channel=True), nrow=5, pad=2), gif_factor) for x in walk["gif"]]
    p = save_gif(gif_frames, out / "reverse_walk.gif")
    written.append(p)
    captions[p.name] = (f"The whole reverse walk, x_t every {max(1, T // 100)} steps ({len(gif_frames)} frames): {what}.")

    # (e) full noise removal at chosen steps, first sample
    rows = [[upscale(to_uint8(v[0], keep_gray_channel=True), factor) for v in walk["triplets"][t]] for t in trip_ts]
    p = _save(image_table(rows, ["x0_hat (all noise removed)", "x_t", "eps_hat (predicted noise)"],
                           [f"t={t}" for t in trip_ts]), out / "full_noise_removal.png")
    written.append(p)
    captions[p.name] = ("Full noise removal: at each step t the network's predicted noise eps_hat is removed at once, "
                        "x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps_hat) / sqrt(alpha_bar_t) (shown clipped to [-1, 1]); "
                        f"x0_hat is not fed back, the walk continues with the sampler's own step. First sample of: {what}.")
    return written
