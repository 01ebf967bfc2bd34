"""Two threads on one computation: the owner publishes a list of independent tasks, an idle thread helps.

The 2D lab's side-by-side walk runs the network in one thread and the exact denoiser in another. The network's
steps are cheaper, so its thread used to wait for the exact denoiser at every step with a core idle. With a
``TaskShare`` the exact denoiser's chunks of rows (``exact.posterior_mean``) become tasks, and the waiting thread
runs some of them instead (``help_until``). Each task runs exactly once, in either thread; the tasks of one
``run`` write disjoint outputs, so the result does not depend on who ran what. Torch releases the GIL inside its
kernels, so the two threads compute at the same time.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Sequence


class TaskShare:
    """One owner thread runs task lists (``run``); other threads help with the current list (``help_until``)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._tasks: Sequence[Callable[[], None]] | None = None
        self._next = 0  # the first task nobody has claimed
        self._left = 0  # tasks not finished yet
        self._error: BaseException | None = None
        self.helped = 0  # tasks run by helpers (for tests and benchmarks)

    def run(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run every task once, in this thread or a helper's; return when all are done (re-raising a task's error)."""
        if len(tasks) < 2:
            for task in tasks:
                task()
            return
        with self._cond:
            if self._tasks is not None:
                raise RuntimeError("a TaskShare runs one task list at a time")
            self._tasks, self._next, self._left, self._error = tasks, 0, len(tasks), None
            self._cond.notify_all()
        self._work(helper=False)
        with self._cond:
            while self._left:
                self._cond.wait()
            self._tasks = None
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _claim(self) -> Callable[[], None] | None:
        with self._cond:
            if self._tasks is None or self._next >= len(self._tasks):
                return None
            self._next += 1
            return self._tasks[self._next - 1]

    def _work(self, helper: bool) -> None:
        while (task := self._claim()) is not None:
            error = None
            try:
                task()
            except BaseException as e:  # noqa: BLE001 - handed to the owner, which re-raises it
                error = e
            with self._cond:
                self._error = self._error or error
                self._left -= 1
                self.helped += helper
                if not self._left:
                    self._cond.notify_all()

    def help_until(self, future: Future) -> None:
        """Run tasks of the owner's current lists until ``future`` (the owner's whole job) is done."""
        future.add_done_callback(lambda _: self._wake())
        while True:
            with self._cond:
                while not future.done() and (self._tasks is None or self._next >= len(self._tasks)):
                    self._cond.wait()
                if future.done():
                    return
            self._work(helper=True)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
