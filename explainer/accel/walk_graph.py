"""A whole reverse walk with no Python between steps: one step captured as a CUDA graph and replayed.

``samplers.sample`` issues about twenty small tensor operations from Python per step and yields a
record for each: that is what a UI streaming every step needs. In a long walk on a GPU, though, the
Python and kernel launches between two network calls can cost as much as the network itself.

``GraphedWalk`` writes one step as tensor arithmetic on the table of ``SamplingChain.coefficients(...).affine()``,
indexed by a step counter that lives on the device:

    eps    = eps_theta(x_t, abar_i, y)                          (guidance: one call on the doubled batch)
    x0_hat = sqrt_recip_alpha_bar_i x_t - sqrt_recipm1_alpha_bar_i eps            (Ho et al. 2020, eq. 15)
    x_prev = posterior_mean_coef1_i x0_hat + posterior_mean_coef2_i x_t + sigma_i z_i
    i      = i + 1

eps_theta is a denoiser told the chain's noise level abar_i (samplers.py), which the network maps to its
training step on the device (``respacing.network_timesteps``), inside the graph; guidance follows Ho & Salimans
2022; x0_hat is clamped to [-1, 1] if asked; x_prev is the posterior mean (eq. 7) or DDIM's (Song et al. 2021,
eq. 12) plus the step's noise.

On CUDA this step (network call included) is captured once as a CUDA graph and replayed len(chain)
times, so the host only queues replays and the GPU never waits for Python. The noise is drawn ahead of
the steps that use it (all of it, or a chunk at a time for big batches), in ``samplers.sample``'s order
(x_T, then z of each step that adds noise), so the same generator gives the same picture as
``samplers.run``. On CPU, or with ``graphs=False``, the same step
runs eagerly; that is how the CPU tests check it against ``samplers.run``.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterator

import torch

from ..model.checkpoint import DiffusionModel
from ..diffusion.respacing import SamplingChain, network_timesteps
from .fast import async_to_host
from ..diffusion.samplers import (affine_table, batch_labels, check_sampler_args, combine_guided, draw_normal,
                                  draws_noise, guidance_labels)


class GraphedWalk:
    """A fixed walk (chain, batch size, labels, guidance, sampler) ready to run many times.

    precision / compile: the CUDA network call (see ``fast.CudaGraphEps``; default bf16 weights); on CPU
    the network runs as ``model.eps`` in fp32. eps_call: any capturable denoiser ``(x, alpha_bar, labels) -> eps``
    (samplers.py) instead; it gets the step's level as a one-element float64 tensor on the device.
    graphs: capture the step as a CUDA graph (default: on CUDA). Building captures nothing; the first
    ``run`` warms up and captures (and pays torch.compile's compile time, if asked).
    noise_bytes: memory for drawn noise; a walk needing more is drawn in chunks of as many steps as fit
    (the picture is the same; ``noise_slots`` says how many steps a chunk holds).
    """

    def __init__(self, model: DiffusionModel, chain: SamplingChain, batch: int, *, labels=None, guidance: float = 1.0,
                 method: str = "ddpm", variance: str = "beta_tilde", eta: float = 0.0, clip_x0: bool = False,
                 precision: str = "bf16", compile: bool | str = False, graphs: bool | None = None,
                 eps_call: Callable | None = None, warmup: int = 3, noise_bytes: int = 512 * 2**20):
        check_sampler_args(method, variance, eta, guidance)
        dev = model.device
        self.model, self.chain, self.method, self.eta = model, chain, method, eta
        self.shape = (int(batch), model.channels, model.image_size, model.image_size)
        self.num_steps = len(chain)
        self.guidance, self.clip_x0, self.warmup = float(guidance), bool(clip_x0), warmup
        self.graphs = dev.type == "cuda" if graphs is None else bool(graphs)
        if self.graphs and dev.type != "cuda":
            raise ValueError("CUDA graphs need the model on a CUDA device")
        coefs = affine_table(chain, method, variance, eta).affine()
        if eps_call is None:
            if dev.type == "cuda":
                from .fast import CudaGraphEps  # the bf16 / channels_last / compiled network call
                run_at_steps = CudaGraphEps(model, precision=precision, compile=compile, graphs=False)._run
                eps_call = lambda x, alpha_bar, y: run_at_steps(x, network_timesteps(alpha_bar, model.schedule, x), y)
                self.precision = "fp32" if precision == "fp32" else "bf16"
            else:
                eps_call = model.eps
                self.precision = "fp32"
        else:
            self.precision = "custom"
        self._eps_call = eps_call
        with torch.inference_mode():
            labels = batch_labels(labels, self.shape[0], dev)
            call_labels, self._doubled = guidance_labels(labels, self.guidance, model.null_label)
            self._labels = None if call_labels is None else call_labels.contiguous()
            self._coefs = torch.tensor(coefs, dtype=torch.float32, device=dev)
            self._alpha_bar = torch.as_tensor(chain.alpha_bar, dtype=torch.float64).to(dev)
            self._idx = torch.zeros(1, dtype=torch.long, device=dev)
            self._x = torch.zeros(self.shape, device=dev)
            self._x0 = torch.zeros(self.shape, device=dev)
            per_step = 4 * self.shape[0] * self.shape[1] * self.shape[2] * self.shape[3]
            self.noise_slots = max(1, min(self.num_steps, int(noise_bytes) // per_step))
            self._noise = torch.zeros((self.noise_slots,) + self.shape, device=dev)
            self._slot = torch.zeros(1, dtype=torch.long, device=dev)  # the step's noise slot, advanced in the step
            self._zero_slots = [True] * self.noise_slots  # slots known to hold zeros (DDIM with eta 0 draws none)
        self._graph = None
        self._lock = threading.Lock()

    @property
    def network_batch(self) -> int:
        """Images per network call: twice the batch under classifier-free guidance."""
        return self.shape[0] * (2 if self._doubled else 1)

    # ------------------------------------------------------------------------------------------- the step

    def _step(self) -> None:
        """One reverse step on the static buffers (inference mode; capturable: no host sync, no Python branch on data)."""
        i = self._idx
        sqrt_recip, sqrt_recipm1, coef1, coef2, sigma = self._coefs.index_select(0, i)[0].unbind()
        x = self._x
        alpha_bar = self._alpha_bar.index_select(0, i)
        eps = self._eps_call(torch.cat([x, x]) if self._doubled else x, alpha_bar, self._labels).float()
        if self._doubled:
            eps = combine_guided(eps, self.guidance)
        x0 = torch.addcmul(sqrt_recip * x, sqrt_recipm1, eps, value=-1.0)
        if self.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        z = self._noise.index_select(0, self._slot)[0]
        x_prev = torch.addcmul(torch.addcmul(coef1 * x0, coef2, x), sigma, z)
        self._x0.copy_(x0)
        self._x.copy_(x_prev)
        self._idx.add_(1)
        self._slot.add_(1)

    def _capture(self) -> None:
        """Warm up on a side stream (cuDNN autotune, torch.compile), then capture one step."""
        current = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._idx.zero_()
                self._slot.zero_()
                self._step()
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._step()
        self._graph = graph

    # ------------------------------------------------------------------------------------------- noise

    def _draw_x_T(self, generator: torch.Generator | None, x_T: torch.Tensor | None) -> None:
        dev = self.model.device
        if x_T is None:
            self._x.copy_(draw_normal(self.shape, generator, dev, torch.float32))
        else:
            self._x.copy_(x_T.to(device=dev, dtype=torch.float32).reshape(self.shape))

    def _fill(self, generator: torch.Generator | None, start: int) -> None:
        """z of steps start, start+1, ... into the slots (zeros where a step adds none), in the samplers' order.

        Stream order makes refilling safe: the steps that read the old slots were queued before this.
        """
        dev = self.model.device
        same_device = generator is not None and generator.device == dev
        for slot, i in enumerate(range(start, min(start + self.noise_slots, self.num_steps))):
            if not draws_noise(self.method, self.eta, i, self.num_steps):
                if not self._zero_slots[slot]:
                    self._noise[slot].zero_()
                    self._zero_slots[slot] = True
                continue
            self._zero_slots[slot] = False
            if same_device:  # straight into the slot: one kernel, same values as a fresh tensor
                torch.randn(self.shape, generator=generator, out=self._noise[slot])
            else:
                self._noise[slot].copy_(draw_normal(self.shape, generator, dev, torch.float32))
        self._slot.zero_()

    # ------------------------------------------------------------------------------------------- running

    def _advance(self, generator, seed, x_T) -> Iterator[int]:
        """Capture once, draw this walk's noise, then take the steps; yields each step's index after it is queued.

        Call with the lock held and in inference mode.
        """
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        if self.graphs and self._graph is None:
            self._capture()
        self._draw_x_T(generator, x_T)
        self._idx.zero_()
        for i in range(self.num_steps):
            if i % self.noise_slots == 0:
                self._fill(generator, i)
            if self._graph is not None:
                self._graph.replay()
            else:
                self._step()
            yield i

    def frames(self, *, every: int = 0, generator: torch.Generator | None = None, seed: int | None = None,
               x_T: torch.Tensor | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Run the walk; yield ``(index, x0_hat, x_prev)`` host copies every ``every`` steps and at the last.

        every=0 yields the last step only. On CUDA the copies go to pinned memory without blocking, and a
        frame is yielded once its copy is done, so the GPU runs ahead of the consumer. seed: a CPU
        generator, as in ``samplers.sample`` (slow for long walks on a GPU: every z is drawn on the host
        and copied; pass a CUDA generator there).
        """
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        with self._lock, torch.inference_mode():
            pending: list = []
            for i in self._advance(generator, seed, x_T):
                if i == self.num_steps - 1 or (every and i % every == 0):
                    pending.append(self._snapshot(i))
                while pending and (pending[0][3] is None or pending[0][3].query()):
                    yield pending.pop(0)[:3]
            for i, x0, xp, done in pending:
                if done is not None:
                    done.synchronize()
                yield i, x0, xp

    def _snapshot(self, index: int):
        """Host copies of x0_hat and x_prev now, and an event that says when they are done (None on CPU)."""
        x0, _ = async_to_host(self._x0, record=False)
        xp, done = async_to_host(self._x)
        return index, x0, xp, done

    def run(self, *, generator: torch.Generator | None = None, seed: int | None = None,
            x_T: torch.Tensor | None = None) -> torch.Tensor:
        """The final image x_0 of one walk, on the model's device (no host copy; on CUDA nothing waits)."""
        with self._lock, torch.inference_mode():
            for _ in self._advance(generator, seed, x_T):
                pass
            return self._x.clone()

    def __repr__(self):
        how = "CUDA graph per step" if self.graphs else "eager steps"
        return (f"GraphedWalk({self.num_steps} steps, batch {self.shape[0]}, network batch {self.network_batch}, "
                f"{self.method}, {self.precision}, {how})")
