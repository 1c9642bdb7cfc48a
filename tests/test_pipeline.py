"""A batch overlaps reading, computing and writing (issue 16), and loses nothing by it:
same pixels, outcomes in order, each stage's failure that file's alone, Ctrl-C finishes
the write in flight."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from test_predict import near_identity_net

from refocus.images import read_plane
from refocus.inference.files import plan_jobs, run_jobs
from refocus.inference.pipeline import overlapped
from refocus.inference.refocuser import Refocuser


def test_the_next_item_is_read_while_this_one_is_computed() -> None:
    next_read = threading.Event()
    log: list[tuple[str, int]] = []

    def load(i: int) -> int:
        log.append(("load", i))
        if i == 1:
            next_read.set()
        return i

    def compute(i: int, value: int) -> int:
        if i == 0:  # without overlap, item 1 is read only after this returns: times out
            assert next_read.wait(timeout=10), "item 1 was not read during item 0's compute"
        return value * 10

    results: list[tuple[int, object]] = []
    overlapped([0, 1, 2], load, compute, lambda i, v: v + 1,
               lambda i, result, seconds: results.append((i, result)))
    assert results == [(0, 1), (1, 11), (2, 21)]


def test_a_failure_in_any_stage_is_that_items_alone_and_order_is_kept() -> None:
    def load(i: int) -> int:
        if i == 1:
            raise OSError("unreadable")
        return i

    def compute(i: int, value: int) -> int:
        if i == 2:
            raise ValueError("bad pixels")
        return value

    def store(i: int, value: int) -> int:
        if i == 3:
            raise RuntimeError("disk full")
        return value

    results: list[tuple[int, object]] = []
    overlapped(list(range(5)), load, compute, store,
               lambda i, result, seconds: results.append((i, result)))
    assert [i for i, _ in results] == [0, 1, 2, 3, 4]
    assert [type(r).__name__ for _, r in results] == ["int", "OSError", "ValueError",
                                                       "RuntimeError", "int"]


def test_ctrl_c_while_computing_lets_the_write_in_flight_finish() -> None:
    stored: list[int] = []
    writing = threading.Event()

    def store(i: int, value: int) -> int:
        writing.set()
        threading.Event().wait(0.3)  # a slow write
        stored.append(i)
        return value

    def compute(i: int, value: int) -> int:
        if i == 1:
            writing.wait(timeout=10)
            raise KeyboardInterrupt
        return value

    reported: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        overlapped([0, 1, 2], lambda i: i, compute, store,
                   lambda i, result, seconds: reported.append(i))
    assert stored == [0]  # item 0's write completed; nothing after the interrupt
    assert reported == [0]  # and it is counted in the summary


def test_overlapped_batch_writes_the_same_pixels(z00_files: list[Path], tmp_path: Path) -> None:
    refocuser = Refocuser(near_identity_net(), device="cpu", mode="eager")
    sources = list(z00_files[:3])
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 not a tiff")
    sources.insert(1, broken)
    outcomes = {}
    for flag in (False, True):
        jobs = plan_jobs(sources, tmp_path / str(flag))
        outcomes[flag] = run_jobs(refocuser, jobs, tile=256, overlap_files=flag)
    for old, new in zip(outcomes[False], outcomes[True], strict=True):
        assert (old.job.src, old.ok, old.error) == (new.job.src, new.ok, new.error)
        if old.ok:
            np.testing.assert_array_equal(read_plane(old.job.dst), read_plane(new.job.dst))
    assert [o.ok for o in outcomes[True]] == [True, False, True, True]
    assert "broken.tif" in (outcomes[True][1].error or "")
