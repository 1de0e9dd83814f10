"""Keep a worker's resident memory bounded when several libvips jobs run in threads.

Two glibc malloc defaults, not the images, dominated peak RSS in bench/memory.py:

* Arenas. glibc gives each thread that allocates concurrently its own malloc arena (up to 8
  per core), and every arena keeps its high-water mark. With WORKER_CONCURRENCY job threads
  plus libvips' own threads, capping arenas at 2 (what MALLOC_ARENA_MAX=2 does) cut the peak
  by about a quarter at no measurable throughput cost.
* The mmap threshold. glibc serves a block of 128 KiB or more with its own mmap, returned to
  the kernel on free, but it raises that threshold to the size of each such block freed (up
  to 32 MiB). After the first large job, a worker's pixel strips, codec buffers and whole-
  image buffers (WebP and optimised-JPEG encodes, multi-variant copies) all come from the
  arenas, where blocks freed by one job are too fragmented for the next one's: the mixed
  workload at WORKER_CONCURRENCY=4 peaked ~70 MiB higher, and ended ~130 MiB higher, than
  with the threshold fixed at 128 KiB. Fixing it costs page faults for those blocks on every
  job: within the noise of a fit-512 job (docs/operations.md, "Worker memory") once the
  input is no longer copied on every load (worker.imaging.load).

An explicit MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ in the environment wins over each.
"""

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
DEFAULT_ARENAS = 2
DEFAULT_MMAP_THRESHOLD = 128 * 1024
"""glibc's own initial threshold; setting it explicitly is what stops glibc raising it."""


def configure_malloc(arenas: int = DEFAULT_ARENAS, mmap_threshold: int = DEFAULT_MMAP_THRESHOLD) -> dict[str, bool]:
    """Cap glibc's arenas and fix its mmap threshold (call before worker threads start).

    Returns which of the two were set: False where the environment already sets it, or
    where the C library is not glibc."""
    libc = _glibc()
    return {
        "arena_max": _mallopt(libc, "MALLOC_ARENA_MAX", M_ARENA_MAX, arenas),
        "mmap_threshold": _mallopt(libc, "MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, mmap_threshold),
    }


def _glibc() -> ctypes.CDLL | None:
    """The C library, or None when it cannot be loaded (then nothing is set)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _mallopt(libc: ctypes.CDLL | None, variable: str, parameter: int, value: int) -> bool:
    """mallopt(parameter, value), unless ``variable`` is in the environment (the operator's
    choice wins) or this is not glibc (no mallopt, or it refuses)."""
    if libc is None or os.environ.get(variable):
        return False
    try:
        return bool(libc.mallopt(parameter, value))
    except AttributeError:
        return False
