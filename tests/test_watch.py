"""At the microscope: watch mode (frames written by another thread at a set rate are each
refocused once) and the acquisition hook."""

from __future__ import annotations

import inspect
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocus.errors import RefocusError
from refocus.images import read_plane
from refocus.inference.acquisition import LATENCY_KEY, MODEL_KEY, make_image_process_fn
from refocus.inference.watch import LEDGER_NAME, output_path, read_ledger, watch

SETTLE = 0.3
POLL = 0.03


@pytest.fixture(scope="module")
def frames(z00_files: list[Path]) -> list[np.ndarray]:
    """Real defocused fields, cropped small so a frame refocuses fast on a CPU."""
    return [read_plane(p)[100:196, 200:328] for p in z00_files[:10]]


@pytest.fixture(scope="module")
def refocuser(tiny_model_path: Path):
    from refocus.inference.refocuser import Refocuser

    return Refocuser.from_file(tiny_model_path, device="cpu")


def tiff_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image)
    return buffer.getvalue()


def write_slowly(path: Path, data: bytes, pause: float) -> None:
    """Write like a camera driver: part of the file, a pause, the rest (under the final name)."""
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
        f.flush()
        time.sleep(pause)
        f.write(data[len(data) // 3 :])


class Counting:
    """A process function that records every frame it is given and what it returned."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.calls: list[np.ndarray] = []
        self.results: list[np.ndarray] = []

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls.append(image.copy())
        self.results.append(self.fn(image))
        return self.results[-1]


def invert(image: np.ndarray) -> np.ndarray:
    return (image.max() - image).astype(image.dtype)


def test_frames_written_at_a_set_rate_are_each_refocused_once(
    tmp_path: Path, frames: list[np.ndarray], refocuser
) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    rate_hz = 8.0
    process = Counting(refocuser.predict)
    names = [f"frame_{i:03d}.tif" for i in range(len(frames))]

    def camera() -> None:
        for name, frame in zip(names, frames, strict=True):
            # each file is incomplete for 0.1 s, longer than a poll, shorter than SETTLE
            write_slowly(in_dir / name, tiff_bytes(frame), pause=0.1)
            time.sleep(1.0 / rate_hz)

    writer = threading.Thread(target=camera)
    seen: list[str] = []
    writer.start()
    report = watch(in_dir, process, out_dir, settle=SETTLE, poll=POLL, idle_timeout=3.0,
                   max_frames=len(frames), on_frame=lambda f: seen.append(f.name))
    writer.join()

    assert len(process.calls) == len(frames)  # exactly once each
    assert sorted(f.name for f in report.frames) == names == sorted(seen)
    assert not report.failed and not report.skipped and not report.interrupted
    for name, frame in zip(names, frames, strict=True):
        # each output holds the model's result for its own frame, read complete
        (call,) = [i for i, c in enumerate(process.calls) if np.array_equal(c, frame)]
        out = read_plane(output_path(out_dir, name))
        assert out.dtype == frame.dtype and out.shape == frame.shape
        np.testing.assert_array_equal(out, process.results[call])
        assert not np.array_equal(out, frame)
    # a frame cannot count as complete before it has been unchanged for SETTLE seconds
    assert all(f.latency_s >= SETTLE and f.wait_s >= SETTLE for f in report.frames)
    assert all(0 < f.process_s < f.latency_s for f in report.frames)
    p50, p95 = report.latency_percentile(50), report.latency_percentile(95)
    assert SETTLE <= p50 <= p95 <= max(f.latency_s for f in report.frames)
    assert f"p50 {p50 * 1000:.0f} ms" in report.summary()
    ledger = read_ledger(out_dir)
    assert sorted(ledger) == names
    assert {n: e["latency_s"] for n, e in ledger.items()} == {
        f.name: round(f.latency_s, 4) for f in report.frames
    }
    assert not [p for p in out_dir.iterdir() if p.name.endswith(".part")]


def test_stable_but_unreadable_file_waits_until_it_reads(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    """A writer stalling longer than SETTLE leaves a truncated TIFF: it must not be read yet."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    data = tiff_bytes(frames[0])
    process = Counting(invert)
    stop = threading.Event()
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault(
        "report", watch(in_dir, process, out_dir, settle=SETTLE, poll=POLL, stop=stop)))
    thread.start()
    write_slowly(in_dir / "stall.tif", data, pause=4 * SETTLE)
    deadline = time.monotonic() + 10
    while not output_path(out_dir, "stall.tif").exists() and time.monotonic() < deadline:
        time.sleep(POLL)
    stop.set()
    thread.join()
    assert len(process.calls) == 1
    np.testing.assert_array_equal(process.calls[0], frames[0])
    np.testing.assert_array_equal(read_plane(output_path(out_dir, "stall.tif")), invert(frames[0]))
    assert [f.name for f in box["report"].frames] == ["stall.tif"]


def test_file_that_never_reads_is_reported_and_the_rest_goes_on(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    (in_dir / "broken.tif").write_bytes(tiff_bytes(frames[0])[:500])
    tifffile.imwrite(in_dir / "good.tif", frames[1])
    process = Counting(invert)
    report = watch(in_dir, process, out_dir, settle=0.05, poll=POLL, give_up=0.3,
                   idle_timeout=0.5)
    assert [f.name for f in report.frames] == ["good.tif"]
    assert list(report.failed) == ["broken.tif"] and "cannot read" in report.failed["broken.tif"]
    assert "1 failed" in report.summary()
    assert not output_path(out_dir, "broken.tif").exists()
    assert "broken.tif" not in read_ledger(out_dir)  # a restart tries it again


def test_restart_catches_up_and_skips_what_is_done(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    for i in range(3):
        tifffile.imwrite(in_dir / f"a{i}.tif", frames[i])
        os.utime(in_dir / f"a{i}.tif", ns=(i * 10**9, i * 10**9))  # oldest first: a0, a1, a2
    first = Counting(invert)
    report = watch(in_dir, first, out_dir, settle=0.05, poll=POLL, max_frames=2)
    assert [f.name for f in report.frames] == ["a0.tif", "a1.tif"]

    # while the watcher is down: two frames arrive, and one output is made by hand
    for i in (3, 4):
        tifffile.imwrite(in_dir / f"a{i}.tif", frames[i])
    tifffile.imwrite(output_path(out_dir, "a4.tif"), frames[0])
    (in_dir / "notes.txt").write_text("not an image")

    second = Counting(invert)
    report = watch(in_dir, second, out_dir, settle=0.05, poll=POLL, idle_timeout=0.4)
    assert sorted(f.name for f in report.frames) == ["a2.tif", "a3.tif"]
    assert sorted(report.skipped) == ["a0.tif", "a1.tif", "a4.tif"]
    assert len(first.calls) + len(second.calls) == 4
    np.testing.assert_array_equal(read_plane(output_path(out_dir, "a4.tif")), frames[0])
    assert sorted(read_ledger(out_dir)) == ["a0.tif", "a1.tif", "a2.tif", "a3.tif"]
    ledger = json.loads((out_dir / LEDGER_NAME).read_text())
    assert ledger["format"] == 1


def test_output_folder_must_differ_and_bad_ledger_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RefocusError, match="must differ"):
        watch(tmp_path, invert, tmp_path, idle_timeout=0.1)
    with pytest.raises(RefocusError, match="input folder not found"):
        watch(tmp_path / "missing", invert, tmp_path / "out", idle_timeout=0.1)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / LEDGER_NAME).write_text("{not json")
    with pytest.raises(RefocusError, match="unreadable watch ledger"):
        watch(tmp_path, invert, out_dir, idle_timeout=0.1)


def test_cli_watch_reports_as_it_goes_and_exits_130_on_ctrl_c(
    tmp_path: Path, frames: list[np.ndarray], tiny_model_path: Path
) -> None:
    """A file that never reads is reported once, while the watcher runs; Ctrl-C prints the
    summary and exits 130 (interrupted), leaving only whole outputs and the ledger."""
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    for i in range(2):
        tifffile.imwrite(in_dir / f"f{i}.tif", frames[i])
    (in_dir / "broken.tif").write_bytes(tiff_bytes(frames[2])[:300])
    cmd = [sys.executable, "-m", "refocus", "watch", str(in_dir), "--model", str(tiny_model_path),
           "--out", str(out_dir), "--settle", "0.1", "--device", "cpu",
           "--unreadable-after", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(iter(proc.stderr.readline, "")))
    reader.start()
    try:
        deadline = time.monotonic() + 240  # a loaded CI machine takes a while to start
        while (len(read_ledger(out_dir) if out_dir.exists() else {}) < 2
               or not any("broken.tif" in line for line in errors)):
            assert proc.poll() is None and time.monotonic() < deadline, errors
            time.sleep(0.1)
        time.sleep(1.0)  # long enough for a repeated report to show up
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        stdout = proc.stdout.read()
    finally:
        proc.kill()
        reader.join()
    assert proc.returncode == 130, errors
    failures = [line for line in errors if "broken.tif" in line]
    assert len(failures) == 1 and failures[0].startswith("failed broken.tif: cannot read image")
    assert "f0.tif -> f0.tif  latency" in stdout and "f1.tif -> f1.tif  latency" in stdout
    assert "stopped: 2 refocused, 0 already done, 1 failed; latency p50" in stdout
    assert "p95" in stdout and "Traceback" not in "".join(errors)
    assert sorted(p.name for p in out_dir.iterdir()) == [LEDGER_NAME, "f0.tif", "f1.tif"]


def test_one_failing_frame_is_reported_and_the_watcher_goes_on(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    import torch

    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    for i in range(3):
        tifffile.imwrite(in_dir / f"a{i}.tif", frames[i])
        os.utime(in_dir / f"a{i}.tif", ns=(i * 10**9, i * 10**9))  # a0 first

    def out_of_memory_on_a0(image: np.ndarray) -> np.ndarray:
        if np.array_equal(image, frames[0]):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
        return invert(image)

    heard: list[tuple[str, str]] = []
    report = watch(in_dir, out_of_memory_on_a0, out_dir, settle=0.05, poll=POLL,
                   idle_timeout=0.5, on_failure=lambda *failure: heard.append(failure))
    assert [f.name for f in report.frames] == ["a1.tif", "a2.tif"]
    assert heard == [("a0.tif", "failed (OutOfMemoryError: CUDA out of memory. Tried to "
                                "allocate 2.00 GiB)")]
    assert report.failed == dict(heard) and "1 failed" in report.summary()
    assert sorted(read_ledger(out_dir)) == ["a1.tif", "a2.tif"]  # a restart tries a0 again
    assert sorted(p.name for p in out_dir.iterdir()) == [LEDGER_NAME, "a1.tif", "a2.tif"]


def test_inputs_differing_only_in_suffix_each_get_their_output(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    import imageio.v3 as iio

    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    tifffile.imwrite(in_dir / "a1.tif", frames[0])
    os.utime(in_dir / "a1.tif", ns=(10**9, 10**9))
    iio.imwrite(in_dir / "a1.png", frames[1])
    report = watch(in_dir, invert, out_dir, settle=0.05, poll=POLL, idle_timeout=0.5)
    assert [f.name for f in report.frames] == ["a1.tif", "a1.png"] and not report.skipped
    assert sorted(read_ledger(out_dir)) == ["a1.png", "a1.tif"]
    np.testing.assert_array_equal(tifffile.imread(out_dir / "a1.tif"), invert(frames[0]))
    np.testing.assert_array_equal(iio.imread(out_dir / "a1.png"), invert(frames[1]))
    assert output_path(out_dir, "a1.png") == out_dir / "a1.png"


def test_a_file_rewritten_under_a_finished_name_is_refocused_again(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    for i in range(2):
        tifffile.imwrite(in_dir / f"a{i}.tif", frames[i])
    watch(in_dir, invert, out_dir, settle=0.05, poll=POLL, idle_timeout=0.3)
    # while the watcher is down, a0 is acquired again (same name, new pixels)
    tifffile.imwrite(in_dir / "a0.tif", frames[2][:64])
    report = watch(in_dir, invert, out_dir, settle=0.05, poll=POLL, idle_timeout=0.3)
    assert [f.name for f in report.frames] == ["a0.tif"] and report.skipped == ["a1.tif"]
    np.testing.assert_array_equal(read_plane(out_dir / "a0.tif"), invert(frames[2][:64]))
    size = (in_dir / "a0.tif").stat().st_size
    assert read_ledger(out_dir)["a0.tif"]["size"] == size

    # and while it runs: the rewritten frame replaces its earlier result
    stop = threading.Event()
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("report", watch(
        in_dir, invert, out_dir, settle=0.05, poll=POLL, stop=stop)))
    thread.start()
    time.sleep(0.3)
    tifffile.imwrite(in_dir / "a1.tif", frames[3])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not np.array_equal(
            read_plane(out_dir / "a1.tif"), invert(frames[3])):
        time.sleep(POLL)
    stop.set()
    thread.join()
    assert [f.name for f in box["report"].frames] == ["a1.tif"]
    np.testing.assert_array_equal(read_plane(out_dir / "a1.tif"), invert(frames[3]))


def test_unreadable_and_empty_files_are_reported_once_as_it_happens(
    tmp_path: Path, frames: list[np.ndarray]
) -> None:
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    (in_dir / "broken.tif").write_bytes(tiff_bytes(frames[0])[:500])
    (in_dir / "empty.tif").write_bytes(b"")
    heard: list[tuple[str, str, float]] = []
    stop = threading.Event()
    box = {}
    start = time.monotonic()
    thread = threading.Thread(target=lambda: box.setdefault("report", watch(
        in_dir, invert, out_dir, settle=0.05, poll=POLL, give_up=0.4, stop=stop,
        on_failure=lambda name, problem: heard.append((name, problem, time.monotonic())))))
    thread.start()
    deadline = time.monotonic() + 10
    while len(heard) < 2 and time.monotonic() < deadline:
        time.sleep(POLL)
    time.sleep(0.5)  # a second report would come within this
    assert "report" not in box  # heard while the watcher still runs
    problems = {name: problem for name, problem, _ in heard}
    assert len(heard) == 2 and problems["empty.tif"] == "empty file (0 bytes)"
    assert problems["broken.tif"].startswith("cannot read image")
    assert all(at - start >= 0.4 for *_, at in heard)
    tifffile.imwrite(in_dir / "broken.tif", frames[1])  # written again, whole this time
    deadline = time.monotonic() + 10
    while not (out_dir / "broken.tif").exists() and time.monotonic() < deadline:
        time.sleep(POLL)
    stop.set()
    thread.join()
    report = box["report"]
    assert [f.name for f in report.frames] == ["broken.tif"] and list(report.failed) == [
        "empty.tif"]
    np.testing.assert_array_equal(read_plane(out_dir / "broken.tif"), invert(frames[1]))


def test_acquisition_hook_refocuses_each_frame_and_files_metadata(
    frames: list[np.ndarray], refocuser
) -> None:
    """The pycro-manager image processor contract, without pycro-manager: two positional
    parameters (it counts them), (image, metadata) or a list of such pairs back."""
    frame = frames[0]
    metadata = {"Axes": {"time": 3, "channel": "DAPI"}, "Channel": "DAPI", "Exposure-ms": 20.0}
    before = json.dumps(metadata, sort_keys=True)

    process = make_image_process_fn(refocuser, model_name="tiny")
    assert list(inspect.signature(process).parameters) == ["image", "metadata"]
    image, meta = process(frame, metadata)
    assert image.dtype == frame.dtype and image.shape == frame.shape
    np.testing.assert_array_equal(image, refocuser.predict(frame))
    assert meta[MODEL_KEY] == "tiny" and meta[LATENCY_KEY] > 0
    assert meta["Axes"] == metadata["Axes"] and meta["Exposure-ms"] == 20.0
    assert json.dumps(metadata, sort_keys=True) == before  # the caller's dict is untouched

    both = make_image_process_fn(refocuser, keep_original=True)(frame, metadata)
    (raw, raw_meta), (refocused, new_meta) = both
    assert raw is frame and raw_meta is metadata
    np.testing.assert_array_equal(refocused, image)
    assert new_meta["Axes"] == {"time": 3, "channel": "DAPI-refocused"}
    assert new_meta["Channel"] == "DAPI-refocused"
    assert json.dumps(metadata, sort_keys=True) == before
