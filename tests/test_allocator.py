"""Freed tensor memory stays in the process (glibc): the next frame's layers reuse it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from refocus import allocator

GLIBC = platform.libc_ver()[0] == "glibc"
# Resident growth (MB) after a 256 MB array is filled and freed again.
PROBE = """
import sys
import numpy as np
from refocus.allocator import retain_freed_memory
def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
kept = retain_freed_memory()
before = resident_mb()
block = np.ones(2**25)  # 256 MB, far above glibc's own mmap threshold
del block
print(kept, resident_mb() - before)
"""


def run_probe(**env: str) -> tuple[bool, float]:
    clean = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not GLIBC, reason="only glibc's malloc returns large blocks at free")
def test_a_freed_large_block_stays_resident_unless_the_user_tuned_malloc() -> None:
    kept, grown = run_probe()
    assert kept and grown > 200  # the 256 MB are still mapped, ready for the next tile
    kept, grown = run_probe(**allocator.GLIBC_UNTOUCHED)  # glibc's default, set by the user
    assert not kept and grown < 50  # glibc unmapped the block at free, as it always did


def test_retain_is_idempotent_and_reports_the_same_answer() -> None:
    first = allocator.retain_freed_memory()
    assert allocator.retain_freed_memory() is first
    assert first == (GLIBC and not any(v in os.environ for v in allocator.USER_SETTINGS))
