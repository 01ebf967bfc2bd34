"""Two threads on one computation (explainer.accel.share): every task runs once, in either thread, errors reach the
owner, and the exact denoiser's posterior mean is the same whoever computes its chunks."""
from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from explainer.accel.share import TaskShare
from explainer.diffusion.exact import ExactDenoiser, flush_denormals, posterior_mean
from explainer.diffusion.respacing import make_chain
from explainer.diffusion.samplers import run
from explainer.diffusion.schedules import make_schedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TIMEOUT = 30  # seconds: a handshake that has not happened by then is a hang


def owner_and_helper(share: TaskShare, tasks):
    """Run ``tasks`` through ``share`` in a second thread while this one helps; returns the owner's future."""
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(share.run, tasks)
        share.help_until(job)
        job.result(timeout=TIMEOUT)
    return job


def test_every_task_runs_once_and_the_helper_takes_some():
    share = TaskShare()
    started = threading.Event()
    ran = []

    def first():  # the owner claims this one first and holds it until the helper has run another task
        started.set()
        assert helped.wait(TIMEOUT)
        ran.append(0)
    helped = threading.Event()

    def other(i):
        ran.append(i)
        if threading.current_thread() is threading.main_thread():
            helped.set()
    tasks = [first] + [lambda i=i: other(i) for i in range(1, 40)]
    owner_and_helper(share, tasks)
    assert sorted(ran) == list(range(40))  # each task once
    assert 1 <= share.helped < 40


def test_a_task_error_reaches_the_owner_after_the_rest_ran():
    share = TaskShare()
    ran = []

    def fail():
        raise ValueError("chunk 3 failed")
    tasks = [lambda i=i: ran.append(i) for i in range(3)] + [fail] + [lambda i=i: ran.append(i) for i in range(4, 9)]
    with pytest.raises(ValueError, match="chunk 3 failed"):
        owner_and_helper(share, tasks)
    assert sorted(ran) == [0, 1, 2, 4, 5, 6, 7, 8]
    share.run([lambda: ran.append(9), lambda: ran.append(10)])  # the share is usable again
    assert ran[-2:] == [9, 10]


def test_the_helper_returns_when_the_owner_is_done_without_sharing():
    share = TaskShare()
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(lambda: 42)  # publishes no tasks at all
        share.help_until(job)
        assert job.result() == 42 and share.helped == 0
        failed = pool.submit(lambda: 1 / 0)
        share.help_until(failed)  # returns; the error stays the owner's
        with pytest.raises(ZeroDivisionError):
            failed.result()


@pytest.mark.parametrize("alpha_bar", [0.02, 0.7, 0.9995])  # float32 logits at the first two, float64 at the last
@pytest.mark.parametrize("inference", [False, True])
def test_the_posterior_mean_is_the_same_whoever_computes_the_chunks(alpha_bar, inference):
    rng = np.random.default_rng(0)
    data = torch.as_tensor(rng.normal(size=(3000, 2)))
    x = torch.as_tensor(rng.normal(size=(700, 2)) * 1.3)
    alone = posterior_mean(x, alpha_bar, data)
    share = TaskShare()

    def owner():  # as the samplers call it: under inference mode (thread-local) in the owner's thread
        with torch.inference_mode(inference):
            return posterior_mean(x, alpha_bar, data, None, share)
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(owner)
        share.help_until(job)  # this thread is not in inference mode: it writes under the owner's mode
        shared = job.result()
    torch.testing.assert_close(shared, alone, rtol=0, atol=0)
    assert shared.is_inference() == inference


def test_a_shared_exact_walk_equals_the_walk_alone():
    """The exact denoiser in one walk, its chunks computed by two threads: the same particles."""
    sched = make_schedule("linear", 1000)
    data = np.random.default_rng(1).normal(size=(2000, 2))
    den = ExactDenoiser(data, sched)
    chain = make_chain(sched, 20)
    alone = run(den, chain, (300, 2), seed=4)
    share = TaskShare()
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(run, functools.partial(den, share=share), chain, (300, 2), seed=4)
        share.help_until(job)
        torch.testing.assert_close(job.result(), alone, rtol=0, atol=0)


def test_flush_denormals_is_scoped_and_changes_nothing_visible():
    tiny = torch.tensor([1e-40], dtype=torch.float32)  # subnormal in float32
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU has no flush-to-zero mode")
    assert float(tiny * 1.0) > 0
    with flush_denormals():
        assert float(tiny * 1.0) == 0.0
    assert float(tiny * 1.0) > 0  # off again after the block
    # a sharp posterior, where most weights are subnormal: the mean matches float64 brute force
    rng = np.random.default_rng(3)
    data = rng.normal(size=(500, 2))
    x = rng.normal(size=(40, 2))
    ab = 0.97
    d2 = ((x[:, None] - np.sqrt(ab) * data[None]) ** 2).sum(-1)
    logw = -d2 / (2 * (1 - ab))
    w = np.exp(logw - logw.max(1, keepdims=True))
    want = (w @ data) / w.sum(1, keepdims=True)
    got = posterior_mean(torch.as_tensor(x), ab, torch.as_tensor(data)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
