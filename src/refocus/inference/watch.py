"""Watch mode: refocus each image as the microscope writes it into a folder.

Acquisition software writes a frame in several chunks, so a file that merely *exists* may
still be half written. A frame counts as complete only when its size and modification time
have not changed for ``settle`` seconds *and* it reads as an image (and is still unchanged
after the read). Polling keeps this portable (network shares do not deliver file events).

Every finished frame is recorded in a small ledger in the output folder, rewritten
atomically, so a restart refocuses what arrived while the watcher was down and skips what
is done (a frame in the ledger, or whose output is already there). Ctrl-C ends the loop
between two writes: outputs and the ledger are never left half written.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refocus.errors import RefocusError
from refocus.images import IMAGE_SUFFIXES, atomic_output, read_plane, write_tiff

LEDGER_NAME = ".refocus-watch.json"
LEDGER_FORMAT = 1

Process = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class FrameResult:
    """Timing of one refocused frame; ``latency_s`` is what the person at the scope waits."""

    name: str
    output: Path
    wait_s: float  # first seen -> complete (size stable, readable)
    process_s: float  # read + refocus + write
    latency_s: float  # first seen -> refocused output in place


@dataclass
class WatchReport:
    """What one ``watch`` session did: refocused frames, skipped ones, failures."""

    frames: list[FrameResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    def latency_percentile(self, q: float) -> float:
        """Latency percentile in seconds over this session's frames (NaN when none)."""
        if not self.frames:
            return float("nan")
        return float(np.percentile([f.latency_s for f in self.frames], q))

    def summary(self) -> str:
        """One line for the end of a session."""
        line = f"{len(self.frames)} refocused, {len(self.skipped)} already done"
        if self.failed:
            line += f", {len(self.failed)} failed"
        if self.frames:
            line += (
                f"; latency p50 {self.latency_percentile(50) * 1000:.0f} ms,"
                f" p95 {self.latency_percentile(95) * 1000:.0f} ms"
            )
        return line


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    first_seen: float
    changed_at: float


def output_path(out_dir: Path, name: str) -> Path:
    """Where the refocused copy of input ``name`` goes (always TIFF, 16-bit data survive)."""
    return out_dir / f"{Path(name).stem}.tif"


def read_ledger(out_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Frames finished by earlier sessions, keyed by input file name."""
    path = Path(out_dir) / LEDGER_NAME
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        done = data["done"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RefocusError(
            path, f"unreadable watch ledger ({exc}); move it away to restart"
        ) from exc
    if not isinstance(done, dict):
        raise RefocusError(path, "watch ledger has no 'done' table; move it away to restart")
    return done


def _write_ledger(out_dir: Path, done: dict[str, dict[str, Any]]) -> None:
    with atomic_output(out_dir / LEDGER_NAME, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"format": LEDGER_FORMAT, "done": done}, indent=1))


def _resolve_process(
    model: Any, tile: int | None, overlap: int | None, device: str | None
) -> Process:
    if isinstance(model, str | os.PathLike):
        from refocus.inference.refocuser import Refocuser

        model = Refocuser.from_file(model, device=device)
    predict = getattr(model, "predict", None)
    if predict is not None:
        # one-time setup (choosing the fast variant, the tile) before the first frame,
        # so that frame's latency is the microscope's, not the model loader's
        predict(np.zeros((64, 64), np.uint16), tile=tile, overlap=overlap)
        return lambda image: predict(image, tile=tile, overlap=overlap)
    if callable(model):
        return model
    raise TypeError(f"model must be a path, a Refocuser or a callable, not {type(model).__name__}")


def _scan(in_dir: Path) -> list[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(in_dir))
    except OSError as exc:
        raise RefocusError(in_dir, f"cannot list folder ({exc.strerror})") from exc
    # Hidden names are temporary files of writers (ours included: .name.xxx.part).
    return [
        e
        for e in entries
        if not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_SUFFIXES
        and e.is_file()
    ]


def watch(
    in_dir: str | os.PathLike[str],
    model: str | os.PathLike[str] | Process | Any,
    out_dir: str | os.PathLike[str],
    *,
    settle: float = 0.5,
    poll: float = 0.1,
    give_up: float = 30.0,
    tile: int | None = None,
    overlap: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
    stop: threading.Event | None = None,
    max_frames: int | None = None,
    idle_timeout: float | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> WatchReport:
    """Refocus every image landing in ``in_dir`` into ``out_dir`` until stopped.

    ``model`` is a model file, a loaded ``Refocuser`` (its ``predict`` is used with
    ``tile``/``overlap``) or any ``process(array) -> array`` callable. The loop ends on
    Ctrl-C, when ``stop`` is set, after ``max_frames`` new frames, or after
    ``idle_timeout`` seconds with nothing new or pending. A file that is stable but still
    unreadable after ``give_up`` seconds is reported in ``failed`` and left alone (a
    restart tries it again). ``on_frame`` is called after each frame, e.g. to log latency.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise RefocusError(in_dir, "input folder not found")
    if out_dir.resolve() == in_dir.resolve():
        raise RefocusError(out_dir, "output folder must differ from the watched folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    process = _resolve_process(model, tile, overlap, device)
    stop = stop or threading.Event()
    session = _Session(in_dir, out_dir, process, settle=settle, give_up=give_up,
                       overwrite=overwrite, stop=stop, max_frames=max_frames,
                       on_frame=on_frame)
    try:
        while not stop.is_set():
            session.look()
            session.refocus_settled()
            if session.full() or session.idle_for(idle_timeout):
                break
            stop.wait(poll)
    except KeyboardInterrupt:
        session.report.interrupted = True
    return session.report


class _Session:
    """The state of one :func:`watch` loop: the ledger, files still being written, and
    the names settled (done, skipped or failed) in this session."""

    def __init__(self, in_dir: Path, out_dir: Path, process: Process, *, settle: float,
                 give_up: float, overwrite: bool, stop: threading.Event,
                 max_frames: int | None,
                 on_frame: Callable[[FrameResult], None] | None) -> None:
        self.in_dir, self.out_dir, self.process = in_dir, out_dir, process
        self.settle, self.give_up, self.overwrite = settle, give_up, overwrite
        self.stop, self.max_frames, self.on_frame = stop, max_frames, on_frame
        self.done = read_ledger(out_dir)
        self.report = WatchReport()
        self.pending: dict[str, _Pending] = {}
        self.settled: set[str] = set()
        self.last_activity = time.monotonic()

    def full(self) -> bool:
        """Whether ``max_frames`` new frames have been refocused."""
        return self.max_frames is not None and len(self.report.frames) >= self.max_frames

    def idle_for(self, timeout: float | None) -> bool:
        """Whether nothing is pending and nothing happened for ``timeout`` seconds."""
        return (timeout is not None and not self.pending
                and time.monotonic() - self.last_activity >= timeout)

    def look(self) -> None:
        """One look at the folder: skip what is done, note new and changed files."""
        now = time.monotonic()
        entries = _scan(self.in_dir)
        for gone in self.pending.keys() - {e.name for e in entries}:
            del self.pending[gone]  # deleted or renamed by the writer before it settled
        for entry in entries:
            name = entry.name
            if name in self.settled:
                continue
            if name in self.done or (not self.overwrite
                                     and output_path(self.out_dir, name).exists()):
                self.report.skipped.append(name)
                self.settled.add(name)
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:  # removed since the folder was listed
                continue
            seen = self.pending.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                first = now if seen is None else seen.first_seen
                self.pending[name] = _Pending(st.st_size, st.st_mtime_ns, first, now)
                self.last_activity = now

    def refocus_settled(self) -> None:
        """Refocus the files unchanged for ``settle`` seconds, oldest first."""
        for name, seen in sorted(self.pending.items(), key=lambda kv: (kv[1].mtime_ns, kv[0])):
            if self.stop.is_set() or self.full():
                break
            if seen.size == 0 or time.monotonic() - seen.changed_at < self.settle:
                continue
            result = _try_frame(self.in_dir / name, seen, self.out_dir, self.process,
                                self.overwrite, self.give_up)
            if result is None:  # not complete yet after all
                continue
            del self.pending[name]
            self.settled.add(name)
            self.last_activity = time.monotonic()
            if isinstance(result, str):
                self.report.failed[name] = result
            else:
                self._record(seen, result)

    def _record(self, seen: _Pending, result: FrameResult) -> None:
        """Ledger first (rewritten atomically), then the report and the caller."""
        self.done[result.name] = {
            "output": result.output.name,
            "size": seen.size,
            "mtime_ns": seen.mtime_ns,
            "latency_s": round(result.latency_s, 4),
            "process_s": round(result.process_s, 4),
        }
        _write_ledger(self.out_dir, self.done)
        self.report.frames.append(result)
        if self.on_frame is not None:
            self.on_frame(result)


def _try_frame(
    path: Path,
    seen: _Pending,
    out_dir: Path,
    process: Process,
    overwrite: bool,
    give_up: float,
) -> FrameResult | str | None:
    """Refocus one settled file: None if it turns out incomplete, a message if it fails."""
    start = time.monotonic()
    try:
        image = read_plane(path)
        st = path.stat()
    except (RefocusError, OSError) as exc:
        if start - seen.changed_at >= give_up:
            return str(exc)
        return None
    if (st.st_size, st.st_mtime_ns) != (seen.size, seen.mtime_ns):
        return None  # written to while we read it: wait for it to settle again
    wait_s = start - seen.first_seen
    try:
        out = write_tiff(output_path(out_dir, path.name), process(image), overwrite=overwrite)
    except RefocusError as exc:  # e.g. an image the model refuses, an output in the way
        return str(exc)
    end = time.monotonic()
    return FrameResult(path.name, out, wait_s, end - start, end - seen.first_seen)
