"""Memory estimates that size the automatic tile: what a network needs per pixel, and what
the device has free, so tiles follow the architecture and the machine rather than a guess.

On a CPU "free" is the least of three budgets: the RAM the system has available, the
process limits (``RLIMIT_AS``/``RLIMIT_DATA``, e.g. ``ulimit -v`` on a cluster node) and
the container's cgroup limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``). A tile
sized from the machine's RAM alone fails inside a container or a batch-system job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from refocus.archs import input_channels

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF = Path("/proc/self")
#: Limits at or above this (bytes) mean "unlimited" (cgroup v1 writes 2**63 rounded to a page).
UNLIMITED = 2**60


def activation_bytes_per_pixel(model: nn.Module, device: torch.device, size: int = 64) -> float:
    """Bytes of activations per input pixel: the sum over every layer's output (float32).

    An upper bound on what inference keeps alive at once, measured with forward hooks on
    a small ``size`` x ``size`` probe.
    """
    total = [0]

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, input_channels(model), size, size, device=device))
    finally:
        for h in handles:
            h.remove()
    return 4.0 * total[0] / (size * size)


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
