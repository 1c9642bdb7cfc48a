"""Resumable, verified HTTP downloads: BBBC006 planes and pretrained refocus models.

A download goes to ``NAME.part`` and resumes with HTTP Range after an interruption; it
takes its final name only once complete and, when a sha256 is known, verified (a damaged
file is removed, never used). Offline, it stops with one sentence saying what to do.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from refocus.errors import RefocusError

CHUNK = 1 << 20


def progress_bar(**kwargs: Any) -> Progress:
    """The download bar every download shows (name, bar, bytes, speed, time left)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), TimeRemainingColumn(), **kwargs)


def open_url(url: str, offline_hint: str, start: int = 0, timeout: float = 30.0) -> Any:
    """The server's response from byte ``start`` on; None if the file is already whole."""
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # range past the end: the file is already whole
            return None
        raise RefocusError(url, f"server answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RefocusError(
            url, f"cannot reach the server ({reason}); are you offline? {offline_hint}"
        ) from exc


def total_size(response: Any, start: int) -> int | None:
    """The whole file's size from a (possibly partial) response's headers."""
    content_range = response.headers.get("Content-Range")
    if content_range and "/" in content_range:
        total = content_range.rsplit("/", 1)[1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    if length is None:
        return None
    return int(length) + (start if response.status == 206 else 0)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_part(url: str, part: Path, progress: Progress, offline_hint: str,
                  label: str | None = None) -> int:
    """Fill ``part`` with ``url``'s bytes, resuming what an earlier try left; returns its
    size after checking it against the size the server announced."""
    start = part.stat().st_size if part.is_file() else 0
    response = open_url(url, offline_hint, start)
    if response is None:
        return start
    if start and response.status != 206:  # server ignored Range: start over
        start = 0
    total = total_size(response, start)
    task = progress.add_task(label or part.name.removesuffix(".part"), total=total,
                             completed=start)
    with response, part.open("ab" if start else "wb") as out:
        for block in iter(lambda: response.read(CHUNK), b""):
            out.write(block)
            progress.advance(task, len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise RefocusError(part, f"incomplete download: {size} of {total} bytes "
                                 "(run again to resume)")
    return size


def fetch_verified(url: str, target: Path, sha256: str, offline_hint: str) -> Path:
    """``target``, downloaded once from ``url`` and checked against ``sha256`` on every use
    (a cached copy that no longer matches is removed and fetched again)."""
    if target.is_file():
        if sha256_of(target) == sha256:
            return target
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    with progress_bar(transient=True) as bar:
        download_part(url, part, bar, offline_hint, label=target.name)
    if sha256_of(part) != sha256:
        part.unlink()
        raise RefocusError(url, "checksum differs from the registered one; the damaged "
                                "download was removed (run again)")
    part.replace(target)
    return target
