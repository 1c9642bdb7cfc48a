"""Keep freed tensor memory in the process instead of handing it back to the kernel.

glibc's malloc serves every block over its mmap threshold (32 MB at most) with a fresh
``mmap`` and unmaps it on ``free``. A network on a 2048^2 frame allocates and frees such
blocks for every layer, and each new one is page-faulted and zeroed by the kernel again.
On a 2-core AVX2 EPYC keeping them made the default network's pass over a 2048^2 frame
1.82x faster, the whole ``refocus predict`` of it 1.56x and a training step 2.16x
(``benchmarks/results/speed-v3.md``). The cost is a higher resident size: the freed blocks
stay mapped for the next tile or frame.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

#: mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap and are reused (glibc's ceiling is 32 MB
#: unless set explicitly; this raises it).
MMAP_THRESHOLD = 2**30
#: Free heap above this stays in the process rather than being trimmed back.
TRIM_THRESHOLD = 2**31 - 1
#: A user's own tuning of glibc's malloc, which this never overrides.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
#: One of them at glibc's own default value: malloc behaves as untuned, and refocus, taking
#: it for the user's tuning, leaves it so (the benchmarks' and tests' "allocator off").
GLIBC_UNTOUCHED = {"MALLOC_TOP_PAD_": "131072"}


@functools.cache
def retain_freed_memory() -> bool:
    """Tell glibc's malloc to reuse large freed blocks; True when it now does.

    Idempotent (the answer is remembered). Does nothing (False) on other C libraries
    (macOS, Windows, musl), when the user tuned malloc through its environment variables,
    or when glibc refuses.
    """
    if platform.libc_ver()[0] != "glibc" or any(v in os.environ for v in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
