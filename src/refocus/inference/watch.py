"""Watch mode: refocus each image as the microscope writes it into a folder.

Acquisition software writes a frame in several chunks, so a file that merely *exists* may
still be half written. A frame counts as complete only when its size and modification time
have not changed for ``settle`` seconds *and* it reads as an image (and is still unchanged
after the read). Polling keeps this portable (network shares do not deliver file events).

An output keeps its input's name and format (``a1.png`` -> ``a1.png``, ``a1.tif`` ->
``a1.tif``, as ``refocus predict`` does), so two inputs never share an output. A frame
that fails (unreadable for ``give_up`` seconds, refused, out of memory) is reported once,
as it happens, and skipped; the watcher goes on with the next.

Every finished frame is recorded with its size and modification time in a small ledger in
the output folder, rewritten atomically, so a restart refocuses what arrived while the
watcher was down and skips what is done (in the ledger with the same size and time, or
whose output is already there); a file rewritten under a finished name is refocused
again. Ctrl-C ends the loop between two writes: outputs and the ledger are never left half
written. With ``trust``, each frame's trust map goes beside its output
(``<name>.trust.tif``, :mod:`refocus.inference.trust`) and its score into the ledger and
the frame's line.
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
from refocus.images import IMAGE_SUFFIXES, atomic_output, check_plane, read_image, write_like
from refocus.inference.trust import write_trust_map

LEDGER_NAME = ".refocus-watch.json"
LEDGER_FORMAT = 1

Process = Callable[[np.ndarray], np.ndarray]
#: (frame, its file name) -> refocused, or (refocused, trust map) with trust
_Process = Callable[[np.ndarray, str], Any]
Stamp = tuple[int, int]  # (size, mtime_ns): what says a file is still the same one


@dataclass(frozen=True)
class FrameResult:
    """Timing of one refocused frame; ``latency_s`` is what the person at the scope waits."""

    name: str
    output: Path
    wait_s: float  # first seen -> complete (size stable, readable)
    process_s: float  # read + refocus + write
    latency_s: float  # first seen -> refocused output in place
    trust: float | None = None  # the output's trust score, when asked for


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

    @property
    def stamp(self) -> Stamp:
        return self.size, self.mtime_ns


def output_path(out_dir: Path, name: str) -> Path:
    """Where the refocused copy of input ``name`` goes: the same name (and format), so
    inputs differing only in suffix (``a1.tif``, ``a1.png``) keep one output each."""
    return out_dir / name


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


def check_watch_settings(settle: float, poll: float, give_up: float,
                         idle_timeout: float | None) -> None:
    """Refuse timings that cannot work (a zero poll spins, negative waits mean nothing)
    before the model is loaded, each with one line naming its command-line option."""
    for option, value, positive in (("--settle", settle, False), ("--poll", poll, True),
                                    ("--unreadable-after", give_up, False),
                                    ("--idle-timeout", idle_timeout, True)):
        if value is None or (value > 0 if positive else value >= 0):
            continue
        bound = "more than 0" if positive else "0 or more"
        raise RefocusError(None, f"{option} must be {bound} seconds (got {value})")


def _resolve_process(model: Any, tile: int | None, overlap: int | None,
                     device: str | None, trust: int = 0) -> _Process:
    """``model`` (None: the default pretrained model, a name or file, a Refocuser or a
    callable) as a function of (frame, file name), set up before the first frame so that
    frame's latency is the microscope's, not the model loader's. ``trust`` (a flip
    count) needs a refocus model: the process then returns (refocused, trust map)."""
    from refocus.inference.refocuser import Refocuser

    if model is None or isinstance(model, str | os.PathLike):
        model = Refocuser.pretrained(model, device=device)
    warm_up = np.zeros((64, 64), np.uint16)
    if isinstance(model, Refocuser):
        model.predict(warm_up, tile=tile, overlap=overlap)  # the fast variant, the tile
        return lambda image, name: model.predict(image, tile=tile, overlap=overlap, where=name,
                                                 trust=trust)
    if trust:
        raise RefocusError(None, "--trust needs a refocus model (a model file or name), "
                                 "not a plain function")
    predict = getattr(model, "predict", None)
    if predict is not None:
        predict(warm_up, tile=tile, overlap=overlap)
        return lambda image, _name: predict(image, tile=tile, overlap=overlap)
    if callable(model):
        return lambda image, _name: model(image)
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
    model: str | os.PathLike[str] | Process | Any | None,
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
    on_failure: Callable[[str, str], None] | None = None,
    trust: int = 0,
) -> WatchReport:
    """Refocus every image landing in ``in_dir`` into ``out_dir`` until stopped.

    ``model`` is a model file or pretrained model name (None: the default one), a loaded
    ``Refocuser`` (its ``predict`` is used with ``tile``/``overlap``) or any
    ``process(array) -> array`` callable. The loop ends on Ctrl-C, when ``stop`` is set,
    after ``max_frames`` new frames, or after ``idle_timeout`` seconds with nothing new or
    pending. A frame that fails, or is stable but still unreadable after ``give_up``
    seconds, is reported once in ``failed`` and to ``on_failure(name, problem)`` as it
    happens, and left alone (until it changes, or a restart tries it again).
    ``on_frame`` is called after each frame, e.g. to log latency. ``trust`` (a flip count
    of :data:`~refocus.inference.trust.FLIP_CHOICES`, 0 = none) adds each frame's trust
    map and score (module doc).
    """
    from refocus.inference.refocuser import check_tiling
    from refocus.inference.trust import check_flips

    in_dir, out_dir = Path(in_dir), Path(out_dir)
    check_watch_settings(settle, poll, give_up, idle_timeout)
    check_tiling(tile, overlap)
    trust = check_flips(trust) if trust else 0
    if not in_dir.is_dir():
        raise RefocusError(in_dir, "input folder not found")
    if out_dir.resolve() == in_dir.resolve():
        raise RefocusError(out_dir, "output folder must differ from the watched folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    process = _resolve_process(model, tile, overlap, device, trust)
    stop = stop or threading.Event()
    session = _Session(in_dir, out_dir, process, settle=settle, give_up=give_up,
                       overwrite=overwrite, stop=stop, max_frames=max_frames,
                       on_frame=on_frame, on_failure=on_failure)
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
    the files settled (done, skipped or failed) in this session, by their size and time."""

    def __init__(self, in_dir: Path, out_dir: Path, process: _Process, *, settle: float,
                 give_up: float, overwrite: bool, stop: threading.Event,
                 max_frames: int | None,
                 on_frame: Callable[[FrameResult], None] | None,
                 on_failure: Callable[[str, str], None] | None) -> None:
        self.in_dir, self.out_dir, self.process = in_dir, out_dir, process
        self.settle, self.give_up, self.overwrite = settle, give_up, overwrite
        self.stop, self.max_frames = stop, max_frames
        self.on_frame, self.on_failure = on_frame, on_failure
        self.done = read_ledger(out_dir)
        self.report = WatchReport()
        self.pending: dict[str, _Pending] = {}
        self.settled: dict[str, Stamp] = {}
        self.last_activity = time.monotonic()

    def full(self) -> bool:
        """Whether ``max_frames`` new frames have been refocused."""
        return self.max_frames is not None and len(self.report.frames) >= self.max_frames

    def idle_for(self, timeout: float | None) -> bool:
        """Whether nothing is pending and nothing happened for ``timeout`` seconds."""
        return (timeout is not None and not self.pending
                and time.monotonic() - self.last_activity >= timeout)

    def look(self) -> None:
        """One look at the folder: skip what is done, note new, changed and rewritten files."""
        now = time.monotonic()
        entries = _scan(self.in_dir)
        for gone in self.pending.keys() - {e.name for e in entries}:
            del self.pending[gone]  # deleted or renamed by the writer before it settled
        for entry in entries:
            try:
                st = entry.stat()
            except FileNotFoundError:  # removed since the folder was listed
                continue
            name, stamp = entry.name, (st.st_size, st.st_mtime_ns)
            if self.settled.get(name) == stamp:
                continue
            if self._finished_before(name, stamp):
                self.settled[name] = stamp
                continue
            self.settled.pop(name, None)  # new, or rewritten since it was settled
            seen = self.pending.get(name)
            if seen is None or seen.stamp != stamp:
                first = now if seen is None else seen.first_seen
                self.pending[name] = _Pending(*stamp, first, now)
                self.last_activity = now

    def _finished_before(self, name: str, stamp: Stamp) -> bool:
        """Done by an earlier session (in the ledger with this very size and time) or by
        hand (an output not in the ledger is there); counted as skipped once."""
        entry = self.done.get(name)
        if entry is not None:
            finished = (entry.get("size"), entry.get("mtime_ns")) == stamp
        else:
            finished = not self.overwrite and output_path(self.out_dir, name).exists()
        if finished and name not in self.report.skipped:
            self.report.skipped.append(name)
        return finished

    def refocus_settled(self) -> None:
        """Refocus the files unchanged for ``settle`` seconds, oldest first."""
        for name, seen in sorted(self.pending.items(), key=lambda kv: (kv[1].mtime_ns, kv[0])):
            if self.stop.is_set() or self.full():
                break
            if time.monotonic() - seen.changed_at < self.settle:
                continue
            # an output in the ledger is ours: a rewritten input replaces it
            overwrite = self.overwrite or name in self.done
            result = _try_frame(self.in_dir / name, seen, self.out_dir, self.process,
                                overwrite, self.give_up)
            if result is None:  # not complete yet after all
                continue
            del self.pending[name]
            self.settled[name] = seen.stamp
            self.last_activity = time.monotonic()
            if isinstance(result, str):
                self.report.failed[name] = result
                if self.on_failure is not None:
                    self.on_failure(name, result)
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
        if result.trust is not None:
            self.done[result.name]["trust"] = round(result.trust, 4)
        _write_ledger(self.out_dir, self.done)
        self.report.failed.pop(result.name, None)  # an earlier version failed; this one did not
        self.report.frames.append(result)
        if self.on_frame is not None:
            self.on_frame(result)


def _try_frame(
    path: Path,
    seen: _Pending,
    out_dir: Path,
    process: _Process,
    overwrite: bool,
    give_up: float,
) -> FrameResult | str | None:
    """Refocus one settled file: None if it turns out incomplete, a message if it fails.

    Any failure of the refocusing itself (a refused image, out of memory, a bug) costs
    this frame only: the watcher must keep serving the microscope.
    """
    start = time.monotonic()
    try:
        if seen.size == 0:
            raise RefocusError(path, "empty file (0 bytes)")
        image = read_image(path)
        plane = check_plane(path, image.data)
        st = path.stat()
    except (RefocusError, OSError) as exc:
        if start - seen.changed_at >= give_up:
            return _problem(path, exc)
        return None
    if (st.st_size, st.st_mtime_ns) != seen.stamp:
        return None  # written to while we read it: wait for it to settle again
    wait_s = start - seen.first_seen
    score = None
    try:
        result = process(plane, path.name)
        trust_map = result[1] if isinstance(result, tuple) else None
        refocused = np.asarray(result[0] if trust_map is not None else result)
        out = write_like(image, refocused.reshape(image.data.shape),
                         output_path(out_dir, path.name), overwrite=overwrite)
        if trust_map is not None:
            score = write_trust_map(out, trust_map.reshape(image.data.shape), image.axes, True)
    except Exception as exc:  # one frame's failure, reported by the caller
        return _problem(path, exc)
    end = time.monotonic()
    return FrameResult(path.name, out, wait_s, end - start, end - seen.first_seen, score)


def _problem(path: Path, exc: Exception) -> str:
    """One line for a failed frame (the frame's own name is said by the caller)."""
    if isinstance(exc, RefocusError):
        return exc.problem if exc.where in (None, str(path)) else str(exc)
    if isinstance(exc, OSError):
        return f"cannot read ({exc.strerror or exc})"
    first = (str(exc).splitlines() or [""])[0]
    return f"failed ({type(exc).__name__}: {first})"
