"""Bounded per-session state: the housekeeper on Gradio's own session store, one walk per session, and a clean exit.

The housekeeper is driven on Gradio's real ``StateHolder`` (not a fake), so a change in what it keeps per session
shows here; the app is driven over HTTP (gradio_client, a heartbeat stream) and ``python app.py`` is stopped with
SIGTERM and SIGINT as an operator would.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")
from gradio.state_holder import StateHolder  # noqa: E402
from gradio_client import Client  # noqa: E402

from conftest import free_port  # noqa: E402
from explainer.paths import ROOT  # noqa: E402
from explainer.views import model_slot as views  # noqa: E402
from explainer.server import launch as serving  # noqa: E402
from explainer.server import sessions as vsess  # noqa: E402
from explainer.ui import CSS, build_app  # noqa: E402
from explainer.ui.common import MODEL_SLOTS  # noqa: E402


@pytest.fixture(scope="module")
def demo(tiny_ckpt):
    return build_app(views.load_slot(str(tiny_ckpt)))


def holder_with_sessions(demo, n: int, walk_state: bool = True) -> StateHolder:
    holder = StateHolder()
    holder.set_blocks(demo)
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    for i in range(n):
        session = holder[f"s{i}"]
        if walk_state:
            session[states[0]._id] = ["a recorded walk"]
    return holder


def keeper_for(holder, files=(), **kw) -> vsess.Housekeeper:
    return vsess.Housekeeper(holder=lambda: holder, file_sets=lambda: files, **kw)


# ---------------------------------------------------------------- the housekeeper, on Gradio's session store


def test_closed_sessions_are_forgotten_after_the_grace(demo):
    holder = holder_with_sessions(demo, 5)
    keeper = keeper_for(holder, closed_grace_s=0.2)
    keeper.closed("s1")
    keeper.closed("s3")
    assert keeper.sweep().closed == 0  # within the grace: a reload would find its state
    time.sleep(0.25)
    report = keeper.sweep()
    assert report.closed == 2 and report.sessions == 3
    assert set(holder.session_data) == {"s0", "s2", "s4"} and set(holder.time_last_used) == {"s0", "s2", "s4"}
    assert keeper.sweep().closed == 0  # each once


def test_idle_sessions_are_forgotten(demo):
    holder = holder_with_sessions(demo, 4)
    holder["s2"]  # used just now
    old = holder.time_last_used["s0"] - __import__("datetime").timedelta(hours=3)
    for s in ("s0", "s1", "s3"):
        holder.time_last_used[s] = old
    report = keeper_for(holder, idle_s=3600).sweep()
    assert report.idle == 3 and list(holder.session_data) == ["s2"]


def test_forgetting_frees_the_sessions_memory(demo):
    """What Gradio keeps per session (a copy of every widget's settings) is released, not just the State values."""
    import gc
    import tracemalloc

    holder = StateHolder()
    holder.set_blocks(demo)
    keeper = keeper_for(holder)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(20):
            holder[f"s{i}"]
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
        for i in range(20):
            keeper.forget(f"s{i}")
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown > 20 * 50_000  # (each session holds tens of KB: the reason to bound them)
    assert left < 0.1 * grown, f"{left} of {grown} bytes still held after forgetting every session"


def test_cached_files_trimmed_oldest_first_to_the_bound(tmp_path):
    files = []
    now = time.time()
    for i in range(6):
        p = tmp_path / f"f{i}.png"
        p.write_bytes(b"x" * 1000)
        os.utime(p, (now - 1000 + i, now - 1000 + i))  # f0 oldest
        files.append(str(p))
    young = tmp_path / "young.png"
    young.write_bytes(b"y" * 5000)  # just written: may still be on its way to a browser
    kept = str(tmp_path / "f0.png")
    paths = set(files) | {str(young), str(tmp_path / "gone.png")}
    keeper = vsess.Housekeeper(holder=lambda: None, file_sets=lambda: [paths], keep=lambda: {kept},
                               cache_bytes=7000, min_file_age_s=60)
    deleted, freed, total = keeper.trim_files()
    assert (deleted, freed, total) == (3, 3000, 7000)
    left = sorted(Path(p).name for p in paths)
    assert left == ["f0.png", "f4.png", "f5.png", "young.png"]  # f1-f3 went; the kept and the young stay
    assert all(Path(p).exists() for p in paths)
    keeper.cache_bytes = 0
    assert keeper.trim_files()[0] == 2 and sorted(Path(p).name for p in paths) == ["f0.png", "young.png"]


def test_the_apps_own_cache_folder_is_trimmed_whole(tmp_path):
    """Files in the app's cache folder that the framework recorded nowhere (a session's own copy of a widget wrote
    them) count and go too, with their emptied folders."""
    now = time.time()
    recorded = set()
    for i in range(4):
        d = tmp_path / f"hash{i}"
        d.mkdir()
        p = d / "image.png"
        p.write_bytes(b"z" * 1000)
        os.utime(p, (now - 600 + i, now - 600 + i))
        if i % 2:
            recorded.add(str(p))
    keeper = vsess.Housekeeper(holder=lambda: None, file_sets=lambda: [recorded], cache_bytes=1500,
                               min_file_age_s=60, folder=tmp_path)
    assert keeper.trim_files() == (3, 3000, 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hash3"]  # the newest stays; emptied folders went
    assert recorded == {str(tmp_path / "hash3" / "image.png")}


def test_a_failing_part_of_a_sweep_does_not_stop_the_other(tmp_path):
    old = tmp_path / "old.png"
    old.write_bytes(b"o" * 100)
    os.utime(old, (time.time() - 600,) * 2)

    class Broken:
        session_data = {}

        @property
        def time_last_used(self):
            raise RuntimeError("dictionary changed size during iteration")

    keeper = vsess.Housekeeper(holder=lambda: Broken(), file_sets=lambda: [{str(old)}], cache_bytes=0)
    report = keeper.sweep()
    assert report.files == 1 and not old.exists()
    assert keeper.errors == 1 and "changed size" in keeper.last_error


def test_session_work_one_walk_per_session():
    work = vsess.SessionWork()
    a = work.begin("s")
    assert work.current("s", a)
    b = work.begin("s")  # a second walk in the same session supersedes the first
    assert not work.current("s", a) and work.current("s", b)
    other = work.begin("t")
    assert work.current("t", other) and work.current("s", b)
    work.end("s", a)  # the superseded walk's end leaves the new one alone
    assert work.current("s", b)
    work.end("s", b)
    work.end("t", other)
    assert len(work) == 0
    assert work.current(None, work.begin(None))  # a direct call without a session hash: never superseded


def test_newest_walk_passes_updates_until_superseded():
    work = vsess.SessionWork()
    first = work.newest("s", iter(range(100)))
    assert [next(first), next(first)] == [0, 1]
    second = work.newest("s", iter("abc"))
    assert next(second) == "a"  # the second walk begins: the first ends at its next update
    assert list(first) == []
    assert list(second) == ["b", "c"] and len(work) == 0  # (a finished walk leaves nothing behind)


def test_sweeping_thread_runs_and_stops_with_its_owner(demo):
    holder = holder_with_sessions(demo, 2)
    keeper = keeper_for(holder, closed_grace_s=0).start(every_s=0.05)
    keeper.closed("s0")
    deadline = time.time() + 5
    while "s0" in holder.session_data and time.time() < deadline:
        time.sleep(0.02)
    assert list(holder.session_data) == ["s1"]
    thread = keeper._thread
    del keeper
    import gc
    gc.collect()
    thread.join(2)
    assert not thread.is_alive()


# ---------------------------------------------------------------- through the running app


@pytest.fixture(scope="module")
def served(demo):
    _, url, _ = serving.launch(demo, css=CSS, server_name="127.0.0.1", server_port=free_port(),
                               prevent_thread_lock=True, quiet=True)
    yield demo, url
    demo.close()


def test_a_new_walk_in_the_same_session_stops_the_running_one(served):
    _, url = served
    client = Client(url, verbose=False)
    first = client.submit("1", 3.0, "DDPM", 1000, "training", 0, "two step counts", 1000, api_name="/reverse_walk")
    deadline = time.time() + 60
    while len(first.outputs()) < 2 and time.time() < deadline:
        time.sleep(0.05)
    second = client.submit("2", 1.0, "DDIM", 10, "training", 0, "off", 20, api_name="/reverse_walk")
    last = second.result(timeout=120)
    assert last[2].startswith("Done")
    first.result(timeout=60)  # it ended, superseded, without running its 2,000 steps
    statuses = [o[2] for o in first.outputs()]
    assert not any(s.startswith("Done") for s in statuses), statuses[-1]
    other = Client(url, verbose=False)  # another session's walk is not affected by this one's
    assert other.predict("3", 1.0, "DDIM", 10, "training", 0, "off", 20, api_name="/reverse_walk")[2].startswith("Done")


def test_walks_queue_in_the_model_slots_and_report_their_place(served):
    """Walks fill the model slots; one more session's walk waits in the queue, and its client is told its place
    (the page shows it on the walk's pictures: Gradio's "queue: 1/1"); Stop frees a slot for it."""
    from gradio_client.utils import Status

    _, url = served
    long = ("1", 3.0, "DDPM", 1000, "training", 0, "two step counts", 1000)
    busy = [Client(url, verbose=False).submit(*long, api_name="/reverse_walk") for _ in range(MODEL_SLOTS)]
    deadline = time.time() + 60
    while any(len(j.outputs()) < 2 for j in busy) and time.time() < deadline:
        time.sleep(0.05)
    waiting = Client(url, verbose=False).submit("2", 1.0, "DDIM", 10, "training", 0, "off", 20,
                                                api_name="/reverse_walk")
    ranks = []
    deadline = time.time() + 20
    while time.time() < deadline and not ranks:
        st = waiting.status()
        if st.code == Status.IN_QUEUE and st.rank is not None:
            ranks.append((st.rank, st.queue_size))
        time.sleep(0.05)
    assert ranks and ranks[0][0] == 0, ranks  # first in line (rank 0) behind the running walks
    for j in busy:
        j.cancel()  # Stop: the queued walk gets a slot at once
    assert waiting.result(timeout=60)[2].startswith("Done")


def test_closing_the_page_lets_the_housekeeper_forget_the_session(served):
    """The page's heartbeat ends (tab closed) -> the unload event -> the session is forgotten after the grace."""
    demo, url = served
    unload = [d.fn for d in demo.fns.values() if any(t[1] == "unload" for t in d.targets)]
    assert len(unload) == 1
    keeper = unload[0].__self__  # (the unload event's handler is the housekeeper's session_closed)
    keeper.closed_grace_s = 0.0
    client = Client(url, verbose=False)
    client.predict(3, api_name="/tour_step")
    session = client.session_hash
    assert session in demo.state_holder.session_data
    stream = urllib.request.urlopen(f"{url}gradio_api/heartbeat/{session}", timeout=30)
    stream.read(5)
    stream.close()  # the tab closes
    deadline = time.time() + 30
    while session in demo.state_holder.session_data and time.time() < deadline:
        time.sleep(0.1)
        keeper.sweep()
    assert session not in demo.state_holder.session_data


def test_session_capacity_is_bounded():
    """Gradio keeps 10,000 sessions by default; the app keeps SESSION_CAPACITY (the oldest used go first)."""
    import inspect

    assert vsess.SESSION_CAPACITY <= 1000
    assert "state_session_capacity=sessions.SESSION_CAPACITY" in inspect.getsource(serving.launch)


# ---------------------------------------------------------------- stopping `python app.py`


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_python_app_exits_cleanly_on_a_signal(tiny_ckpt, tmp_path, sig):
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), TMPDIR=str(tmp_path), OMP_NUM_THREADS="1",
               **{views.CHECKPOINT_ENV: str(tiny_ckpt)})
    env.pop("GRADIO_TEMP_DIR", None)  # the app makes a cache folder of its own
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(url, timeout=2).read(10)
                break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("the app never answered")
        heartbeat = threading.Thread(target=lambda: _read_quietly(f"{url}gradio_api/heartbeat/abc"), daemon=True)
        heartbeat.start()  # an open page: its connection must not hold the exit up
        Client(url, verbose=False).predict(1, api_name="/tour_step")
        made = [p.name for p in tmp_path.iterdir()]
        assert any(n.startswith("ddpm-explainer-gifs-") for n in made)
        assert any(n.startswith("ddpm-explainer-gradio-") for n in made)  # Gradio's files: in the app's own folder
        proc.send_signal(sig)
        rc = proc.wait(timeout=20)  # (benchmarks/shutdown.py times it: well under 2 s)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read().decode()
    assert rc == 0, out[-2000:]
    assert "Stopping the server" in out
    left = [p.name for p in tmp_path.iterdir()
            if p.name.startswith(("ddpm-explainer-gifs-", "ddpm-explainer-pixels-", "ddpm-explainer-gradio-"))]
    assert not left, f"temporary folders left behind: {left}"


def _read_quietly(url: str) -> None:
    try:
        urllib.request.urlopen(url, timeout=60).read()
    except OSError:
        pass
