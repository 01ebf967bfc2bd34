"""The 2D lab's speed and quality: repaint time, walk time, live training time, and every model against fresh data.

    python benchmarks/lab_speed.py                 # everything (a few minutes on 2 CPU cores)
    python benchmarks/lab_speed.py --quick         # fewer repetitions, two presets
    python benchmarks/lab_speed.py --speed-only    # the timings only (about a minute)

Prints (one torch thread per event, as the app runs on 2 cores, unless --threads):
- repaint: server time of the forward view, the field view and the scrubber at 2,000 particles when t moves
  (median over distinct t, so no cached density is reused);
- walk: a 100-step DDPM walk of 2,000 particles, the network and the exact denoiser side by side with every
  streamed picture (views.lab.walk; median of 5 walks), each denoiser's 100 sampler steps alone in one thread, the
  walk's time as a share of their sum (what the second core and the shared exact steps gain), and how much two
  threads of such work gain over one on the machine it runs on;
- live training: the live recipe on a drawing (a spiral drawn with PIL), wall and CPU seconds;
- quality: each shipped preset network, the live-trained drawing, and the exact denoiser, 2,000 particles after
  100 DDPM steps against fresh data: sliced Wasserstein (and energy distance) as a multiple of the data-vs-data
  floor, averaged over --seeds seeds (target: <= 2x), and the share of particles on a training point.
The load average is printed first: other processes on the machine slow every timing.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.diffusion.respacing import make_chain  # noqa: E402
from explainer.diffusion.samplers import run  # noqa: E402
from explainer.model import toy  # noqa: E402
from explainer.quality.points import evaluate  # noqa: E402
from explainer.views import lab as vl  # noqa: E402


def median_ms(fn, args_list) -> float:
    times = []
    for args in args_list:
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def second_core_gain(reps: int = 5) -> float:
    """Two threads' throughput over one thread's on the walk's kind of work (float32 matrix products and exps of its
    sizes): 2.0 for two free cores, less where the two share a core's vector units or the host is busy."""
    a, w, logits = torch.randn(2000, 128), torch.randn(128, 128), torch.randn(65, 2000)

    def work():
        for _ in range(40):
            torch.mm(a, w)
            torch.exp(logits)
    gains = []
    for _ in range(reps):
        t0 = time.perf_counter()
        work()
        work()
        one = time.perf_counter() - t0
        helper = threading.Thread(target=work)
        t0 = time.perf_counter()
        helper.start()
        work()
        helper.join()
        gains.append(one / (time.perf_counter() - t0))
    return float(np.median(gains))


def spiral_drawing(size: int = 400) -> np.ndarray:
    """A drawing as the sketchpad sends it: a black spiral on a transparent canvas."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    a = np.linspace(0.5, 4 * np.pi, 400)
    r = size * 0.035 * a
    pts = [(size / 2 + x, size / 2 + y) for x, y in zip(r * np.cos(a), r * np.sin(a))]
    ImageDraw.Draw(img).line(pts, fill=(0, 0, 0, 255), width=6)
    return np.asarray(img)


def line(name: str, e: dict) -> str:
    return (f"  {name:28s} SW {e['sliced_wasserstein']:.4f} = {e['sliced_wasserstein_ratio']:.2f}x floor "
            f"({e['sliced_wasserstein_floor']:.4f}); energy {e['energy_distance_ratio']:.2f}x; "
            f"on a training point {100 * e['on_training_point']:.1f} % "
            f"(fresh data {100 * e['fresh_on_training_point']:.1f} %); the training points themselves "
            f"{e['training_points_ratio']:.2f}x")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=8, help="walks averaged per quality number")
    p.add_argument("--speed-only", action="store_true", help="the timings, not the distances")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"torch {torch.__version__}, {args.threads} torch thread(s), {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other processes slow every timing)")
    reps = 8 if args.quick else 20
    repaint(reps)
    walk_time(args.quick)
    sketch, last = live_training()
    if not args.speed_only:
        quality(args, sketch, last)


def repaint(reps: int) -> None:
    """Server time of the forward view, the field view and the scrubber when t moves (distinct t: no cache hits)."""
    ts = [int(t) for t in np.linspace(7, 993, reps)]
    vl.forward_view("two moons", 5)  # load data, paths
    vl.field_view("two moons", 5)
    fwd = median_ms(vl.forward_view, [("two moons", t) for t in ts])
    field = median_ms(vl.field_view, [("two moons", t + 1) for t in ts])
    walk = None
    for u in vl.walk("two moons", "DDPM", 100, 0.0, "training", 2000, "unconditional", 1.0, 0):
        walk = u
    scrub = median_ms(vl.walk_frame, [(walk.walk, k) for k in np.linspace(1, walk.walk.done - 1, reps).astype(int)])
    print(f"repaint at 2000 particles (median, server time): forward view {fwd:.1f} ms, field view {field:.1f} ms, "
          f"scrubber {scrub:.1f} ms")


def walk_time(quick: bool) -> None:
    """The 100-step walk as streamed, each denoiser's steps alone, and what the second core gains."""
    streamed, times, cpus = [], [], []
    for seed in range(1 if quick else 5):
        t0, c0 = time.perf_counter(), time.process_time()
        frames = 0
        for u in vl.walk("two moons", "DDPM", 100, 0.0, "training", 2000, "unconditional", 1.0, seed):
            frames += u.picture is not None and not u.finished
            if u.step == u.total and not u.finished:  # the end picture: the stream is complete
                streamed.append(time.perf_counter() - t0)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    print(f"100-step DDPM walk, 2000 particles, network and exact side by side, {frames} pictures streamed: "
          f"{np.median(streamed):.2f} s to the end picture, {np.median(times):.2f} s with the distances "
          f"({np.median(cpus):.2f} s CPU in all threads)")
    data = vl.lab_data("two moons")
    net, _ = vl.network_for(data, None)
    chain = make_chain(vl.training_schedule(), 100)
    alone = {}
    for name, fn in (("network", net), ("exact denoiser", vl.exact_for(data))):
        if fn is None:
            continue
        times = []
        for seed in range(1 if quick else 3):
            t0 = time.perf_counter()
            run(fn, chain, (2000, 2), seed=seed)
            times.append(time.perf_counter() - t0)
        alone[name] = float(np.median(times))
        print(f"  {name} alone, 100 sampler steps of 2000 particles, one thread: {alone[name]:.2f} s")
    if len(alone) == 2:
        both = sum(alone.values())
        print(f"  the walk to its end picture / (network alone + exact alone, {both:.2f} s) = "
              f"{np.median(streamed) / both:.2f} (1.00: no gain from the second core; 0.5: a perfect split); "
              f"two threads of matrix products and exps do {second_core_gain():.2f}x the work of one here")


def live_training():
    """The live recipe on a drawing after the server's warm-up; returns the drawing and the last training update."""
    sketch = {"composite": spiral_drawing(), "layers": [], "background": None}
    t0 = time.perf_counter()
    vl.warm_up()  # as python app.py does in the background at start
    warm = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    last = None
    for last in vl.train(vl.DRAWN, vl.LIVE_TRAIN.train_steps, 0, sketch):
        pass
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = last.model.info["training"]["steps_done"]
    print(f"live training on a drawing ({vl.NUM_POINTS} points, {steps} steps of batch "
          f"{vl.LIVE_TRAIN.batch_size}): {wall:.1f} s wall ({cpu:.1f} s CPU), after the server's warm-up at start "
          f"({warm:.1f} s, once per process)")
    return sketch, last


def quality(args, sketch, last) -> None:
    """Every model's particles against fresh data, as a multiple of the data-vs-data floor."""
    presets = toy.PRESETS[:2] if args.quick else toy.PRESETS
    seeds = 2 if args.quick else args.seeds
    print(f"100 DDPM steps, 2000 particles, against fresh data (mean of {seeds} walks):")
    for name in presets:
        model = vl.shipped_model(name)
        if model is None:
            print(f"  {name}: no shipped network (checkpoints/lab/{toy.slug(name)} missing)")
            continue
        print(line(f"{name} (shipped)", evaluate(model, vl.lab_data(name), seeds=seeds)))
    drawn = vl.lab_data(vl.DRAWN, sketch)
    print(line("spiral drawing (live)", evaluate(last.model, drawn, seeds=seeds)))
    if not args.quick:  # the live recipe on a preset, beside its shipped network
        for name in ("two moons", "8 Gaussians"):
            live = None
            for live in vl.train(name, vl.LIVE_TRAIN.train_steps, 0):
                pass
            t = live.model.info["training"]
            print(line(f"{name} (live, {t['steps_done']} steps, {t['seconds']:.0f} s)",
                       evaluate(live.model, vl.lab_data(name), seeds=seeds)))
    for name in presets[:1] + ("8 Gaussians",) if not args.quick else presets[:1]:
        print(line(f"{name} (exact denoiser)", evaluate(vl.exact_for(vl.lab_data(name)), vl.lab_data(name),
                                                         seeds=max(2, seeds // 2))))
    print(line("spiral drawing (exact)", evaluate(vl.exact_for(drawn), drawn, seeds=max(2, seeds // 2))))


if __name__ == "__main__":
    main()
