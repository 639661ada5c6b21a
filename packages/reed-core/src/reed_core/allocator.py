"""CPU allocator settings for the command-line tools, the trainer's processes and the benchmarks.

glibc's ``malloc`` serves a block above its mmap threshold (128 KiB at start, raised dynamically to at most
32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` when torch frees it; it also hands memory freed at
the top of its heap back to the kernel above a 128 KiB trim threshold. A torch program on the CPU allocates and
frees tensors of the same large sizes at every layer and step, so each is faulted in page by page again, and the
kernel zeroes every page: system time that on these machines was as large as the compute itself
(``reed-protein eval --splits ts50`` on 2 cores: 20-26 s of system time beside 26-30 s of user time).
``tune_malloc`` keeps that memory in the process instead: the mmap threshold at glibc's maximum (blocks up to
32 MiB come from the heap), the heap grown 512 MiB at a time (address space; pages are resident only once
touched) and not trimmed below 2 GiB of free top. The cost is that memory a command has used stays with it
until it exits. Measured with ``benchmarks/allocator.py``; the README's "CPU allocator" table gives the numbers.
That benchmark also measures torch's transparent huge pages on top (``THP_MEM_ALLOC_ENABLE=1``, for the blocks
above glibc's 32 MiB cap): no faster and up to +64 % peak memory, so they are not switched on here.

``REED_MALLOC=default`` (or ``0``/``off``) in the environment leaves glibc's settings alone, and so does any C
library but glibc on Linux. With an allocator preloaded in glibc's place (jemalloc, tcmalloc) the settings reach
only glibc's own allocator, which then serves nothing: harmless.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
SETTINGS = ((M_MMAP_THRESHOLD, 32 << 20),  # glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
            (M_TOP_PAD, 512 << 20),
            (M_TRIM_THRESHOLD, 2**31 - 1))  # mallopt takes a C int
OFF_VALUES = ("0", "off", "no", "false", "default")
ENV = "REED_MALLOC"

_tuned: bool | None = None


def tune_malloc() -> bool:
    """Apply ``SETTINGS`` to glibc's malloc once per process; True when they are in effect (now or before).
    False, changing nothing, where ``REED_MALLOC`` says ``default`` / ``0`` / ``off``, or the C library is not
    glibc, or glibc refuses a value."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get(ENV, "").strip().lower() in OFF_VALUES or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: mallopt is absent or a no-op
            return False
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _tuned = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    return _tuned
