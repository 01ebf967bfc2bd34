"""Latency of the app's handlers (the backend views, without Gradio's own ~5 ms per event), in ms.

    OMP_NUM_THREADS=1 python benchmarks/app_latency.py [--checkpoint PATH] [--repeat 30] [--http] [--switch-to PATH]
    OMP_NUM_THREADS=1 python benchmarks/app_latency.py --url http://127.0.0.1:7860/ [--repeat 30]

Uses $DDPM_EXPLAINER_CHECKPOINT or checkpoints/mnist-ddpm when it loads, else a randomly initialised
U-Net with the default architecture (explainer.model.unet.UNetConfig, num_classes=10): the same cost per call.
Any model works (``--checkpoint checkpoints/emoji-ddpm`` for the colour one): walks are conditioned on the
model's default class and the noise grid starts from its default bundled picture. With ``--http`` the whole
app is also timed over HTTP: a streamed 100-step guided walk (first frame and last), and with ``--switch-to``
switching the model picker between the two models (the first switch loads the second model). ``--url`` times
the same against an app running in its own process, as a browser sees it.
Torch threads are set as app.py sets them (half the cores, at least one). The reverse-walk numbers are
measured on both network paths the app uses: eager ``model.eps`` (until the fast path is ready), and the
fast path built in the background (``explainer.views.model_slot.start_fast_path``: ONNX Runtime on CPU),
including a walk run while that build is still going, and two walks at once (the app runs up to four model
events at a time, ``ui.common.MODEL_SLOTS``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from explainer.views import forward as vf  # noqa: E402
from explainer.views import histogram as vh  # noqa: E402
from explainer.views import noise as vn  # noqa: E402
from explainer.views import reverse as vr  # noqa: E402
from explainer.views import model_slot as views  # noqa: E402
from explainer.views.inputs import default_class, default_example  # noqa: E402
from explainer.model.checkpoint import save_checkpoint  # noqa: E402
from explainer.model.unet import UNet, UNetConfig  # noqa: E402
from explainer.paths import ASSETS  # noqa: E402

PHOTO = str(ASSETS / "astronaut.jpg")  # 256 x 256
DIGIT = str(ASSETS / "digit_3.png")


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f} ms"


def timed(fn, repeat: int) -> tuple[float, float]:
    """(median, min) of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def load(path: str | None):
    """The model on eager model.eps (the fast path is started later, and timed)."""
    slot = views.load_slot(path, fast=False)
    if slot.ok:
        return slot.model, f"checkpoint {slot.path}"
    folder = Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
    torch.manual_seed(0)
    net = UNet(UNetConfig(num_classes=10))
    save_checkpoint(folder, net, {"name": "linear", "num_steps": 1000}, [str(i) for i in range(10)])
    return (views.load_slot(str(folder), fast=False).require(),
            "random U-Net with the default UNetConfig (no checkpoint found)")


def walk_args(model, **kw) -> dict:
    """A guided 100-step DDPM walk of the model's default class (what the reverse tab starts with)."""
    return dict(label=default_class(model), guidance=3.0, sampler="ddpm", steps=100) | kw


def first_frame(model, **kw) -> tuple[float, float]:
    """Seconds to the first yield (x_T shown) and to the first update after a network step."""
    t0 = time.perf_counter()
    gen = vr.reverse_walk(model, **kw)
    next(gen)
    t_start = time.perf_counter() - t0
    while next(gen).step < 1:
        pass
    t_step = time.perf_counter() - t0
    gen.close()
    return t_start, t_step


def whole_walk(model) -> float:
    t0 = time.perf_counter()
    for _ in vr.reverse_walk(model, **walk_args(model)):
        pass
    return time.perf_counter() - t0


def reverse_numbers(model, label: str, repeat: int, grid):
    """First frames, a whole walk, two walks at once and the noise grid, on the path eps_fn_for gives now."""
    print(f"[{label}] network: {views.network_path(model)}")
    first_frame(model, **walk_args(model))  # warm-up
    runs = [first_frame(model, **walk_args(model)) for _ in range(max(3, repeat // 5))]
    print(f"[{label}] reverse_walk: first frame (x_T)           median {ms(statistics.median(r[0] for r in runs))}")
    print(f"[{label}] reverse_walk: first denoised step         median {ms(statistics.median(r[1] for r in runs))}"
          "   (guided: one batched call of 2)")
    grid()
    med, lo = timed(grid, max(3, repeat // 5))
    print(f"[{label}] noise_removal 50 timesteps + grid        median {ms(med)}   min {ms(lo)}   (one batched call of 50)")
    alone = statistics.median(whole_walk(model) for _ in range(3))
    print(f"[{label}] reverse_walk 100 DDPM steps (guided), whole walk  median {ms(alone)}")
    times = [0.0, 0.0]

    def one(i):
        times[i] = whole_walk(model)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"[{label}] two such walks at once: {ms(times[0])} and {ms(times[1])} "
          f"(both done after {ms(time.perf_counter() - t0)}; {max(times) / alone:.2f}x one walk alone)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--http", action="store_true", help="also time forward_noise through a launched Gradio server")
    ap.add_argument("--walkers", type=int, default=0,
                    help="with --http: also time forward_noise while this many clients run reverse walks nonstop")
    ap.add_argument("--switch-to", default=None,
                    help="with --http: a second checkpoint; times switching the app's model picker between the two")
    ap.add_argument("--url", default=None,
                    help="time only the walks and model switches of an app already running in its own process "
                         "(`python app.py`), e.g. http://127.0.0.1:7860/; its first two models are used")
    args = ap.parse_args()
    if args.url:
        from explainer.paths import CHECKPOINTS
        url = args.url if args.url.endswith("/") else args.url + "/"
        names = _endpoints(url)[1]
        http_app_numbers(url, args.repeat, {n: views.config_class_names(CHECKPOINTS / n) for n in names})
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    model, what = load(args.checkpoint)
    print(f"model: {what}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {model.device}")

    t0 = time.perf_counter()
    vf.forward_noise(PHOTO, 500, "linear", 0)
    print(f"forward_noise 256 px, first call (load + noise) {ms(time.perf_counter() - t0)}")
    ts = iter(range(10 ** 9))
    med, lo = timed(lambda: vf.forward_noise(PHOTO, 1 + next(ts) % 1000, "linear", 0), args.repeat * 3)
    print(f"forward_noise 256 px (slider move)       median {ms(med)}   min {ms(lo)}")
    med, lo = timed(lambda: vf.compare_schedules(PHOTO, 1 + next(ts) % 1000, 0), args.repeat * 3)
    print(f"compare_schedules 256 px (slider move)   median {ms(med)}   min {ms(lo)}")
    med, lo = timed(lambda: vf.schedule_curves_image(1 + next(ts) % 1000, "cosine"), args.repeat * 3)
    print(f"forward curves picture (slider move)      median {ms(med)}   min {ms(lo)}")
    med, lo = timed(lambda: vf.compare_curves_image(1 + next(ts) % 1000), args.repeat * 3)
    print(f"compare curves picture (slider move)      median {ms(med)}   min {ms(lo)}")
    med, lo = timed(lambda: vh.pixel_histogram_view(PHOTO, 1 + next(ts) % 1000, "linear", 0), args.repeat * 3)
    print(f"pixel histogram of x_t, 256 px (slider)   median {ms(med)}   min {ms(lo)}")
    med, lo = timed(lambda: vf.schedule_curves(300, "cosine").savefig(os.devnull, format="png"), 5)
    print(f"(for comparison: a matplotlib re-render  median {ms(med)}   min {ms(lo)})")

    def grid():
        vn.noise_grid(vn.noise_removal(model, "real digit", default_example(model), "unconditional", 1.0, 50, 0))

    os.environ["DDPM_EXPLAINER_CACHE"] = tempfile.mkdtemp(prefix="bench-onnx-")  # a cold export, timed below
    reverse_numbers(model, "eager", args.repeat, grid)
    state = views.start_fast_path(model)
    t_start, t_step = first_frame(model, **walk_args(model))
    t0 = time.perf_counter()
    sum(1 for _ in vr.reverse_walk(model, **walk_args(model)))
    during = time.perf_counter() - t0
    state.wait()
    print(f"fast path built in the background in {state.seconds:.2f} s (cold ONNX export): "
          f"{views.network_path(model)}{'; ' + state.error if state.error else ''}")
    print(f"  meanwhile (on eager): first denoised step {ms(t_step)}; whole 100-step walk {ms(during)}")
    warm = views.load_slot(str(model.path), fast=False).require() if model.path else None
    if warm is not None:
        views.start_fast_path(warm).wait()
        print(f"  a second start (ONNX file cached on disk): fast path ready after {views.fast_path(warm).seconds:.2f} s")
    if state.ready:
        reverse_numbers(model, "fast", args.repeat, grid)
    if args.http:
        http_round_trip(model, args.repeat, args.walkers, args.switch_to)


def _event(url: str, api_name: str, data: list) -> str:
    """One event over Gradio's REST API: POST the inputs, then read the SSE stream to its end."""
    import json
    import urllib.request

    req = urllib.request.Request(url + f"gradio_api/call/{api_name}", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    eid = json.loads(urllib.request.urlopen(req).read())["event_id"]
    out = urllib.request.urlopen(url + f"gradio_api/call/{api_name}/{eid}").read().decode()
    assert "event: complete" in out, out[-300:]
    return out


def _queue_event(url: str, fn_index: int, data: list, session: str, done_text: str | None = None):
    """One event as the browser sends it (the queue, within one session).

    Returns the seconds to its first output, to the first output holding ``done_text`` (default: the end), and to its end.
    """
    import json
    import urllib.request

    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
    t0 = time.perf_counter()
    urllib.request.urlopen(urllib.request.Request(url + "gradio_api/queue/join", data=json.dumps(body).encode(),
                                                  headers={"Content-Type": "application/json"})).read()
    first = done = None
    with urllib.request.urlopen(url + f"gradio_api/queue/data?session_hash={session}") as stream:
        for line in stream:
            if not line.startswith(b"data:"):
                continue
            msg = json.loads(line[5:])
            if msg.get("msg") == "process_generating":
                first = first if first is not None else time.perf_counter() - t0
                if done is None and done_text is not None and done_text in line.decode():
                    done = time.perf_counter() - t0
            if msg.get("msg") == "process_completed":
                assert msg.get("success"), msg
                end = time.perf_counter() - t0
                return (first if first is not None else end), (done if done is not None else end), end
    raise AssertionError("the event stream ended without a result")


def _walk_line(runs) -> str:
    """Medians (and minimums) of first frame, last frame and the GIF of streamed walks."""
    parts = [f"{what} {ms(statistics.median(r[k] for r in runs))} ({ms(min(r[k] for r in runs)).strip()} min)"
             for k, what in enumerate(("first frame", "last frame", "with its GIF"))]
    return "medians: " + ", ".join(parts)


def _endpoints(url: str) -> tuple[dict, list]:
    """{api_name: (fn_index, number of inputs)} of a running app, and the model picker's choices."""
    import json
    import urllib.request

    cfg = json.loads(urllib.request.urlopen(url + "config").read())
    fns = {d["api_name"]: (d["id"], len(d["inputs"])) for d in cfg["dependencies"] if d.get("api_name")}
    picker = next(c for c in cfg["components"] if c.get("props", {}).get("elem_id") == "model-picker")
    return fns, [value for _, value in picker["props"]["choices"]]


def _class_for(name: str, classes: list[str]) -> str:
    """What the reverse tab starts with for a model of these classes (views.inputs.default_class)."""
    return "3" if "3" in classes else (classes[0] if classes else "unconditional")


def http_app_numbers(url: str, repeat: int, classes: dict, wait_fast=None):
    """Streamed 100-step guided walks through a running app (as the browser runs them) and model switches.

    classes: {model name: its class names}; the first is the app's default model. wait_fast(name): called
    after the first switch to a model, to wait for its background fast path (in-process apps only).
    """
    import uuid

    fns, names = _endpoints(url)
    (walk, n_walk), (pick, _) = fns["reverse_walk"], fns["select_model"]
    session = uuid.uuid4().hex

    def walks(name):
        data = [_class_for(name, classes[name]), 3.0, "ddpm", 100, "training", 0, "off", 20]
        data += [None] * (n_walk - len(data))  # the session's model (gr.State)
        _queue_event(url, walk, data, session, "Done")  # warm-up
        return [_queue_event(url, walk, data, session, "Done") for _ in range(max(3, repeat // 5))]

    print(f"reverse_walk 100 guided DDPM steps through the app (queue + SSE), {names[0]}, {_walk_line(walks(names[0]))}")
    if len(names) < 2:
        return
    first = _queue_event(url, pick, [names[1]], session)[2]
    print(f"select_model: first switch to {names[1]} (loads it) {ms(first)}")
    if wait_fast is not None:
        wait_fast(names[1])
    else:
        time.sleep(5)  # a separate app process: give its background fast-path build time to finish
    back = [_queue_event(url, pick, [names[k % 2]], session)[2] for k in range(max(4, repeat // 3))]
    print(f"select_model: switching between two loaded models  median {ms(statistics.median(back))}   "
          f"min {ms(min(back))}   max {ms(max(back))}")
    _queue_event(url, pick, [names[1]], session)
    print(f"  after switching to {names[1]}: {_walk_line(walks(names[1]))}")


def http_round_trip(model, repeat: int, walkers: int = 0, switch_to: str | None = None):
    """The whole event through the Gradio server (queue, handler, encoding, SSE), over raw HTTP.

    walkers > 0: the same forward_noise timing again while that many clients each run 100-step guided
    reverse walks back to back (more users than the app's two model slots: the rest wait in the queue).
    switch_to: a second checkpoint for the model picker (switch timings).
    """
    import json
    import urllib.request

    import app

    registry = views.ModelRegistry.of(views.ModelSlot(model, model.path or "benchmark"))  # the model timed above
    if switch_to:
        registry.add(Path(switch_to).name, switch_to)
    demo = app.build_app(registry)
    _, url, _ = app.launch(demo, server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    photo = {"path": PHOTO, "meta": {"_type": "gradio.FileData"}}
    upload = json.loads(urllib.request.urlopen(urllib.request.Request(
        url + "gradio_api/upload", data=_multipart(PHOTO), headers={"Content-Type": "multipart/form-data; boundary=B"})
    ).read())[0]
    photo["path"] = upload

    def call(t):
        _event(url, "forward_noise", [photo, t, "linear", 0])

    call(1)
    ts = iter(range(10 ** 9))
    med, lo = timed(lambda: call(1 + next(ts) % 1000), repeat)
    print(f"forward_noise 256 px through Gradio (raw HTTP, 2 requests)  median {ms(med)}   min {ms(lo)}")
    def wait_fast(name):
        state = views.fast_path(registry.require(name))
        if state is not None:
            state.wait()

    http_app_numbers(url, repeat, {n: registry.class_names(n) for n in registry.names}, wait_fast)
    if walkers > 0:
        stop, walks, errors = threading.Event(), [], []

        def walker(seed):
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    _event(url, "reverse_walk", ["3", 3.0, "ddpm", 100, "training", seed, "off", 20])
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))
                    return
                walks.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=walker, args=(i,), daemon=True) for i in range(walkers)]
        for th in threads:
            th.start()
        time.sleep(2.0)  # let the walkers fill both model slots and the queue
        t_load = time.perf_counter()
        med_l, lo_l = timed(lambda: call(1 + next(ts) % 1000), repeat)
        stop.set()
        for th in threads:
            th.join(timeout=120)
        span = time.perf_counter() - t_load
        print(f"  the same while {walkers} clients run reverse walks nonstop        median {ms(med_l)}   min {ms(lo_l)}"
              f"   ({med_l / med:.2f}x idle)")
        if walks:
            print(f"  reverse walks meanwhile: {len(walks)} done, median {statistics.median(walks):.2f} s each from request "
                  f"to last frame (queue wait included), {len(walks) / span:.2f} walks/s")
        if errors:
            print(f"  walk errors: {errors[:3]}")
    demo.close()


def _multipart(path: str) -> bytes:
    data = Path(path).read_bytes()
    head = (f'--B\r\nContent-Disposition: form-data; name="files"; filename="{Path(path).name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + b"\r\n--B--\r\n"


if __name__ == "__main__":
    main()
