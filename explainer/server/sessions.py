"""What a long-running app keeps per learner, bounded: sessions, their heavy work, and cached files.

A web framework keeps every session's state (here about 330 KB of widget settings, plus a recorded walk of up to
a few MB) and every file it served, and frees them late or never: an hour after a tab closes, or when its
session cap of 10,000 is reached. For a class of 50 on one link, or a public page that runs for weeks, that is
unbounded. ``Housekeeper`` sweeps on a schedule:

- a closed session (its page's heartbeat ended: the tab was closed) is forgotten after ``closed_grace_s``;
- a session with no event for ``idle_s`` is forgotten (a page left open keeps its settings on screen, and a
  recorded walk expires sooner anyway, see ``RESULT_TTL_S``);
- the cached files the app wrote (pictures, GIFs, uploads) are deleted oldest first while they hold more than
  ``cache_bytes``, never one younger than ``min_file_age_s`` (it may still be on its way to a browser). The files
  are those the framework recorded, and, where the app has a cache folder of its own (``folder``), every file in
  it: a picture sent as a session's own copy of a widget is recorded nowhere else.

``SessionWork`` lets one session run one walk at a time: a new walk in the same session supersedes the running
one, which stops at its next step (so nothing stays locked if a walk is abandoned without ever finishing).

The sweep reads the session store (``holder``) and the sets of cached file paths duck-typed (``session_data``,
``time_last_used``, ``lock``, ``delete_state``); ``keep_bounded`` hands it Gradio's (``gradio_internals``).
"""
from __future__ import annotations

import datetime
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import gradio as gr

from .gradio_internals import cached_file_sets, files_kept, session_store
from .memory import return_freed_memory

SESSION_CAPACITY = 300  # sessions kept at most (the oldest used is dropped beyond): about 100 MB of settings
CLOSED_GRACE_S = 60.0  # a closed tab's session is kept this long (a reload within it finds its state)
IDLE_S = 2 * 3600.0  # a session with no event for this long is forgotten
RESULT_TTL_S = 1800.0  # a recorded walk or computed result is kept this long after it was made
CACHE_ENV = "DDPM_EXPLAINER_CACHE_MB"  # an operator's bound on the cached files, in MiB
CACHE_BYTES = int(float(os.environ.get(CACHE_ENV) or 256) * 2 ** 20)  # kept at most (plus those under MIN_FILE_AGE_S)
MIN_FILE_AGE_S = 120.0
SWEEP_EVERY_S = 30.0


@dataclass
class SweepReport:
    """What one sweep freed."""

    closed: int = 0  # sessions forgotten after their tab closed
    idle: int = 0  # sessions forgotten after ``idle_s`` without an event
    files: int = 0  # cached files deleted
    bytes: int = 0  # their size
    kept_bytes: int = 0  # the cached files' size after the sweep
    sessions: int = 0  # sessions kept
    memory_returned: bool = False  # the C heap's free pages were handed back to the system


class Housekeeper:
    """Sweeps a session store and the app's cached files on a schedule (a daemon thread), within set bounds.

    holder: a callable returning the session store (None until the server runs); file_sets: a callable returning
    sets of cached file paths (the framework's own record of the files it wrote); keep: paths never deleted;
    folder: the app's own cache folder, whose every file counts (None: only the recorded files).
    """

    def __init__(self, holder: Callable[[], object | None], file_sets: Callable[[], Iterable[set]],
                 keep: Callable[[], set] = set, closed_grace_s: float = CLOSED_GRACE_S, idle_s: float = IDLE_S,
                 cache_bytes: int = CACHE_BYTES, min_file_age_s: float = MIN_FILE_AGE_S,
                 work: "SessionWork | None" = None, folder: str | os.PathLike | None = None):
        self.holder, self.file_sets, self.keep = holder, file_sets, keep
        self.closed_grace_s, self.idle_s = float(closed_grace_s), float(idle_s)
        self.cache_bytes, self.min_file_age_s = int(cache_bytes), float(min_file_age_s)
        self._closed: dict[str, float] = {}  # session -> when its tab closed (time.monotonic)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.errors = 0  # sweeps (or parts of one) that failed
        self.last_error = ""
        self.work = work if work is not None else SessionWork()
        self.folder = Path(folder) if folder is not None else None

    # ---------------------------------------------------------------- events

    def closed(self, session: str | None) -> None:
        """The session's page was closed (its heartbeat ended)."""
        if session:
            with self._lock:
                self._closed[session] = time.monotonic()

    def session_closed(self, request: gr.Request) -> None:
        """The unload event's handler: ``closed`` for the request's session."""
        self.closed(session_of(request))

    def forget(self, session: str) -> bool:
        """Drop a session's state now (its State values' delete callbacks run). True if it was there."""
        holder = self.holder()
        with self._lock:
            self._closed.pop(session, None)
        self.work.forget(session)
        if holder is None or session not in holder.session_data:
            return False
        holder.delete_state(session)
        with holder.lock:
            holder.session_data.pop(session, None)
            holder.time_last_used.pop(session, None)
        return True

    # ---------------------------------------------------------------- sweeping

    def sweep(self) -> SweepReport:
        """One sweep: trim the cached files to ``cache_bytes``, then forget closed and idle sessions.

        The two parts fail alone (``errors`` counts it, ``last_error`` says what): one never stops the other.
        """
        report = SweepReport()
        try:
            report.files, report.bytes, report.kept_bytes = self.trim_files()
        except Exception as e:  # noqa: BLE001
            self._failed(e)
        try:
            self._forget_sessions(report)
        except Exception as e:  # noqa: BLE001
            self._failed(e)
        report.memory_returned = return_freed_memory()
        return report

    def _failed(self, e: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(e).__name__}: {e}"

    def _forget_sessions(self, report: SweepReport) -> None:
        holder = self.holder()
        now = time.monotonic()
        with self._lock:
            due = [s for s, t in self._closed.items() if now - t >= self.closed_grace_s]
        for s in due:
            report.closed += self.forget(s)
        if holder is not None:
            wall = datetime.datetime.now()  # (the store's own clock for time_last_used)
            last_used = _snapshot(holder.time_last_used)  # (the server's threads change it meanwhile)
            for s in [s for s, t in last_used.items() if (wall - t).total_seconds() >= self.idle_s]:
                report.idle += self.forget(s)
            report.sessions = len(holder.session_data)

    def trim_files(self) -> tuple[int, int, int]:
        """Delete the oldest cached files while they hold more than ``cache_bytes`` -> (files, bytes, bytes kept)."""
        keep = set(self.keep())
        files, seen = [], set()
        sets = list(self.file_sets())
        for paths in sets:
            for p in _snapshot(paths):
                if p in keep or p in seen:
                    continue
                seen.add(p)
                try:
                    st = os.lstat(p)
                except OSError:
                    paths.discard(p)  # gone already
                    continue
                files.append((st.st_mtime, st.st_size, p, paths))
        if self.folder is not None and self.folder.is_dir():
            untracked: set = set()  # (a set to discard from, like the recorded ones)
            for root, _, names in os.walk(self.folder):
                for name in names:
                    p = os.path.join(root, name)
                    if p in keep or p in seen:
                        continue
                    try:
                        st = os.lstat(p)
                    except OSError:
                        continue
                    seen.add(p)
                    files.append((st.st_mtime, st.st_size, p, untracked))
        total = sum(f[1] for f in files)
        deleted = freed = 0
        newest_allowed = time.time() - self.min_file_age_s
        for mtime, size, p, paths in sorted(files, key=lambda f: f[0]):
            if total <= self.cache_bytes or mtime > newest_allowed:
                break
            try:
                Path(p).unlink()
            except FileNotFoundError:
                pass
            except OSError:
                continue
            paths.discard(p)
            total -= size
            freed += size
            deleted += 1
            if self.folder is not None:  # the framework writes one folder per file: remove it when empty
                try:
                    Path(p).parent.rmdir()
                except OSError:
                    pass
        return deleted, freed, total

    def start(self, every_s: float = SWEEP_EVERY_S) -> "Housekeeper":
        """Sweep every ``every_s`` seconds in a daemon thread (until this object is garbage)."""
        if self._thread is not None:
            return self
        ref = weakref.ref(self)

        def loop():
            while True:
                time.sleep(every_s)
                me = ref()
                if me is None:
                    return
                try:
                    me.sweep()
                except Exception:  # noqa: BLE001 (a sweep must never end the thread; the next one tries again)
                    pass
                del me

        self._thread = threading.Thread(target=loop, name="ddpm-explainer-housekeeper", daemon=True)
        self._thread.start()
        return self


def _snapshot(collection, tries: int = 20):
    """A copy of a dict or set that other threads may change meanwhile (a copy fails if one does; try again)."""
    for _ in range(tries):
        try:
            return collection.copy()
        except RuntimeError:  # changed size during the copy
            time.sleep(0.001)
    return collection.copy()


class SessionWork:
    """One walk at a time per session: ``begin`` supersedes the session's running walk, which sees
    ``current`` turn False at its next step and stops."""

    def __init__(self):
        self._running: dict[str, int] = {}
        self._next = 0
        self._lock = threading.Lock()

    def begin(self, session: str | None) -> int:
        """Start a walk for ``session``; returns its token (any walk of the session started before stops)."""
        with self._lock:
            self._next += 1
            if session:
                self._running[session] = self._next
            return self._next

    def current(self, session: str | None, token: int) -> bool:
        """Whether the walk with ``token`` is still the session's newest."""
        if not session:
            return True
        with self._lock:
            return self._running.get(session) == token

    def newest(self, session: str | None, updates):
        """Pass on ``updates`` (a walk's) while they are the session's newest walk; a walk started later in the
        session ends this one at its next update."""
        token = self.begin(session)
        try:
            for u in updates:
                if not self.current(session, token):
                    return
                yield u
        finally:
            self.end(session, token)

    def end(self, session: str | None, token: int) -> None:
        with self._lock:
            if session and self._running.get(session) == token:
                del self._running[session]

    def forget(self, session: str) -> None:
        with self._lock:
            self._running.pop(session, None)

    def __len__(self) -> int:
        return len(self._running)


def session_of(request: gr.Request | None) -> str | None:
    """The session a call belongs to (None for a call that names none)."""
    return request.session_hash if request is not None else None


def keep_bounded(demo: gr.Blocks, work: SessionWork, folder: str | os.PathLike | None = None) -> Housekeeper:
    """A started housekeeper for ``demo``: it forgets closed and idle sessions (``work`` too) and trims the cached
    files (all of ``folder``'s, the app's own cache folder, where given). Call it inside the Blocks."""
    ref = weakref.ref(demo)
    keeper = Housekeeper(holder=lambda: session_store(ref()), file_sets=lambda: cached_file_sets(ref()),
                         keep=lambda: files_kept(ref()), work=work, folder=folder)
    demo.unload(keeper.session_closed)  # (the event holds the keeper as long as the app lives)
    return keeper.start()
