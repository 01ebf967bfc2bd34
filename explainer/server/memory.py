"""The C heap's settings for a server that runs for weeks (glibc ``mallopt`` and ``malloc_trim``).

The server fixes the thresholds when it starts (``fix_mmap_threshold``) and every housekeeping sweep hands the
free pages back (``return_freed_memory``), so its RSS follows its live data.
"""
from __future__ import annotations

import ctypes
import functools

MMAP_THRESHOLD = 2 * 2 ** 20  # blocks at least this large get their own pages (see ``fix_mmap_threshold``)
TRIM_THRESHOLD = 32 * 2 ** 20  # free memory a heap keeps at its top before giving it back (every sweep trims it)


@functools.cache
def _libc():
    """glibc's C library (ctypes), or None elsewhere (musl, macOS, Windows): then the two calls below do nothing."""
    try:
        lib = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None


def return_freed_memory() -> bool:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``). True where it ran.

    A server that makes and drops many mid-sized arrays (pictures, noise, recorded walks) in many threads keeps
    the freed memory in per-thread heaps: its RSS grows long after its live data stopped growing. Called by
    every sweep.
    """
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD, trim: int = TRIM_THRESHOLD) -> bool:
    """Give every C allocation of at least ``nbytes`` its own pages, returned to the system when freed, and let a
    heap keep up to ``trim`` bytes free at its top (glibc ``mallopt``, M_MMAP_THRESHOLD and M_TRIM_THRESHOLD).

    By default glibc raises the mmap threshold up to 32 MB after such a block is freed, and later blocks of that
    size (pictures, noise, recorded frames) then stay in the heap. Fixing it turns glibc's adaptive thresholds off,
    so both are set: a low one (256 kB) gave every network activation and exact-denoiser chunk (0.5 to 1 MB) fresh
    pages, zeroed by the kernel on every call, and slowed the lab's served walk by 45 %; below 2 MB, blocks are
    reused from the heap, and ``return_freed_memory`` (every sweep) hands back what is left free. True where set.
    """
    lib = _libc()
    # M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1 (malloc.h)
    return lib is not None and lib.mallopt(-3, int(nbytes)) == 1 and lib.mallopt(-1, int(trim)) == 1
