"""Memory estimates that size the automatic tile: what a network needs per pixel, and what
the device has free, so tiles follow the architecture and the machine rather than a guess.

On a CPU "free" is the least of three budgets: the RAM the system has available, the
process limits (``RLIMIT_AS``/``RLIMIT_DATA``, e.g. ``ulimit -v`` on a cluster node) and
the container's cgroup limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``). A tile
sized from the machine's RAM alone fails inside a container or a batch-system job.
"""

from __future__ import annotations

import re
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from refocus.archs import input_channels

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF = Path("/proc/self")
#: Limits at or above this (bytes) mean "unlimited" (cgroup v1 writes 2**63 rounded to a page).
UNLIMITED = 2**60


class _LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storage alive between the ops it sees, and their peak.

    A storage shared by views counts once; it stops counting when its last tensor dies.
    """

    def __init__(self, start: int = 0) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # data pointer -> [bytes, tensors]
        self.now = self.peak = start

    def _drop(self, pointer: int) -> None:
        entry = self.live[pointer]
        entry[1] -= 1
        if not entry[1]:
            self.now -= entry[0]
            del self.live[pointer]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None
                           ) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                entry = self.live.setdefault(storage.data_ptr(), [storage.nbytes(), 0])
                self.now += 0 if entry[1] else entry[0]
                entry[1] += 1
                weakref.finalize(t, self._drop, storage.data_ptr())
        self.peak = max(self.peak, self.now)
        return out


def peak_bytes_per_pixel(model: nn.Module, device: torch.device, size: int = 128) -> float:
    """Bytes per input pixel that inference holds at its peak (input, output and the
    activations alive at once; float32), measured on a ``size`` x ``size`` probe.

    Summing every layer's output instead would overstate a deep network's need several
    times (7x for the shipped model) and cut a 2048^2 frame into overlapping tiles that
    recompute their overlaps.
    """
    x = torch.zeros(1, input_channels(model), size, size, device=device)
    counter = _LiveBytes(start=x.untyped_storage().nbytes())
    with torch.inference_mode(), counter:
        model(x)
    return counter.peak / (size * size)


def free_memory_bytes(device: torch.device) -> float:
    """Free memory where the activations will live: GPU memory, or on a CPU the least of
    available RAM, the process limits' and the cgroup's headroom (see the module doc)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return float(free)
    import psutil

    budgets = [float(psutil.virtual_memory().available), rlimit_headroom(), cgroup_headroom()]
    return max(min(b for b in budgets if b is not None), 0.0)


def _status_bytes(field: str, status: Path) -> int | None:
    """A ``VmXxx: N kB`` value of ``/proc/<pid>/status`` in bytes (None if missing)."""
    try:
        found = re.search(rf"^{field}:\s+(\d+)\s+kB", status.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) * 1024 if found else None


def rlimit_headroom(status: Path = PROC_SELF / "status") -> float | None:
    """Bytes the process may still map under its soft ``RLIMIT_AS`` and ``RLIMIT_DATA``
    (None without limits, or where ``resource`` does not exist, as on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    room = []
    for limit, used_field in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _hard = resource.getrlimit(limit)
        if soft == resource.RLIM_INFINITY or soft >= UNLIMITED:
            continue
        used = _status_bytes(used_field, status) or 0
        room.append(float(soft - used))
    return min(room) if room else None


def _read_number(path: Path) -> int | None:
    """An integer cgroup file (None when missing, unreadable or "max")."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _inactive_file(stat: Path, name: str) -> int:
    """Page cache the kernel reclaims before it fails an allocation (not really used)."""
    try:
        found = re.search(rf"^{name} (\d+)$", stat.read_text(), re.MULTILINE)
    except OSError:
        return 0
    return int(found.group(1)) if found else 0


def _cgroup_folders(root: Path, proc_cgroup: Path) -> list[tuple[Path, int]]:
    """(folder, version) of this process's memory cgroup and every ancestor, innermost
    first; inside a container the namespace root is the mount itself."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            version, base = 2, root
        elif "memory" in controllers.split(","):
            version, base = 1, root / "memory"
        else:
            continue
        parts = [p for p in path.strip("/").split("/") if p]
        folders = [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
        found += [(f, version) for f in folders if f.is_dir()]
    return found


def cgroup_headroom(root: Path = CGROUP_ROOT,
                    proc_cgroup: Path = PROC_SELF / "cgroup") -> float | None:
    """Bytes left under the tightest memory limit of this process's cgroups (v2 or v1),
    counting reclaimable page cache as free (None where no limit is set)."""
    room = []
    for folder, version in _cgroup_folders(root, proc_cgroup):
        if version == 2:
            limit, usage = _read_number(folder / "memory.max"), _read_number(
                folder / "memory.current")
            cache = _inactive_file(folder / "memory.stat", "inactive_file")
        else:
            limit, usage = _read_number(folder / "memory.limit_in_bytes"), _read_number(
                folder / "memory.usage_in_bytes")
            cache = _inactive_file(folder / "memory.stat", "total_inactive_file")
        if limit is None or limit >= UNLIMITED:
            continue
        room.append(float(limit - max((usage or 0) - cache, 0)))
    return min(room) if room else None
