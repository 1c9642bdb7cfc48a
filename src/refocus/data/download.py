"""Download BBBC006 z-planes from the Broad: resumable, verified, extracted atomically.

Each plane is one zip (``BBBC006_v1_images_z_XX.zip``, both channels, ~400 MB). Downloads
resume with HTTP Range after an interruption; a finished zip is checked against the
server's size and, once known, against the sha256 kept in ``.downloads/manifest.json``;
extraction goes to a temporary folder renamed into place, so a plane folder either is
complete or does not exist.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from rich.progress import Progress

from refocus.data.bbbc006 import (
    BROAD_URL,
    PLANE_RE,
    check_channel,
    check_z,
    plane_folder_name,
)
from refocus.errors import RefocusError
from refocus.fetch import CHUNK, download_part, progress_bar, sha256_of

COMPLETE_MARKER = ".complete.json"
#: What ``refocus download bbbc006`` fetches unless told: the training and test planes
#: around best focus, nuclei only.
DEFAULT_Z = (1, 5, 10, 16, 32)
DEFAULT_CHANNELS = ("w1",)
#: What to do offline (after "cannot reach the server (...); are you offline?").
OFFLINE_HINT = ("Download BBBC006 on a connected machine with `refocus download bbbc006` "
                "and copy the folder here.")


class _Manifest:
    """sha256 and size of every zip fully downloaded once, to verify later copies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, object]] = (
            json.loads(path.read_text()) if path.is_file() else {}
        )

    def record(self, name: str, size: int, sha256: str) -> None:
        self.entries[name] = {"size": size, "sha256": sha256}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.entries, indent=2, sort_keys=True))
        tmp.replace(self.path)


def fetch_zip(url: str, target: Path, progress: Progress, manifest: _Manifest) -> Path:
    """Download ``url`` to ``target`` (resuming a ``.part`` file left by an earlier try)
    and check it against the manifest's sha256 once one is recorded."""
    if target.is_file() and target.name in manifest.entries:
        return target
    part = target.with_name(target.name + ".part")
    size = download_part(url, part, progress, OFFLINE_HINT, label=target.name)
    digest = sha256_of(part)
    known = manifest.entries.get(target.name)
    if known and known["sha256"] != digest:
        part.unlink()
        raise RefocusError(url, "checksum differs from the manifest; the damaged file was removed")
    part.replace(target)
    manifest.record(target.name, size, digest)
    return target


def extract_plane(zip_path: Path, dest: Path, z: int, channels: Sequence[str]) -> Path:
    """Extract the requested channels of one plane into ``dest/BBBC006_v1_images_z_XX``."""
    final = dest / plane_folder_name(z)
    tmp = dest / f".{final.name}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            names = []
            for info in archive.infolist():
                name = Path(info.filename).name
                m = PLANE_RE.match(name)
                if info.is_dir() or m is None or f"w{m['channel']}" not in channels:
                    continue
                with archive.open(info) as src, (tmp / name).open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                names.append(name)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        zip_path.unlink(missing_ok=True)
        raise RefocusError(zip_path, f"not a valid zip ({exc}); removed, run again") from exc
    if not names:
        shutil.rmtree(tmp)
        raise RefocusError(zip_path, f"holds no BBBC006 images of channel(s) {', '.join(channels)}")
    (tmp / COMPLETE_MARKER).write_text(
        json.dumps({"channels": sorted(channels), "files": len(names)})
    )
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def plane_complete(dest: Path, z: int, channels: Sequence[str]) -> bool:
    marker = dest / plane_folder_name(z) / COMPLETE_MARKER
    if not marker.is_file():
        return False
    return set(channels) <= set(json.loads(marker.read_text())["channels"])


def download_bbbc006(
    dest: str | Path,
    z_values: Iterable[int] = DEFAULT_Z,
    channels: Sequence[str] = DEFAULT_CHANNELS,
    base_url: str = BROAD_URL,
    keep_zips: bool = False,
) -> list[Path]:
    """Download and extract the given planes; planes already complete are skipped."""
    dest = Path(dest)
    for channel in channels:
        check_channel(None, channel)
    z_values = sorted(set(z_values))
    for z in z_values:
        check_z(None, z)
    cache = dest / ".downloads"
    cache.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(cache / "manifest.json")
    folders = []
    with progress_bar(transient=False) as progress:
        for z in z_values:
            if plane_complete(dest, z, channels):
                folders.append(dest / plane_folder_name(z))
                continue
            url = base_url.format(z=z)
            zip_path = fetch_zip(url, cache / f"{plane_folder_name(z)}.zip", progress, manifest)
            folders.append(extract_plane(zip_path, dest, z, channels))
            if not keep_zips:
                zip_path.unlink()
    return folders
