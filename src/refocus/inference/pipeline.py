"""Overlap reading, computing and writing over a batch, so neither core waits on a file.

Refocusing one field is mostly the network, which uses every core; but around it come
single-threaded steps (decoding a compressed TIFF, percentiles, the intensity rule,
encoding and writing the output) during which a core idles. :func:`overlapped` reads item
``i + 1`` in one thread and writes item ``i - 1`` in another while item ``i`` is computed
in the caller's thread. At most one item is read ahead and one waits to be written, so
memory stays at about three images. Each stage's failure is that item's failure, handed
to ``done`` in order with the seconds its stages took; a ``KeyboardInterrupt`` stops the
batch after the read and write in flight have finished (outputs are written atomically).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

Item = TypeVar("Item")
#: A stage's result or the exception it raised, and its seconds.
Timed = tuple[Any, float]


def _timed(stage: Callable[..., Any], *args: Any) -> Timed:
    start = time.perf_counter()
    try:
        result: Any = stage(*args)
    except Exception as exc:  # noqa: BLE001 (the item's failure, reported through done)
        result = exc
    return result, time.perf_counter() - start


def overlapped(
    items: Sequence[Item],
    load: Callable[[Item], Any],
    compute: Callable[[Item, Any], Any],
    store: Callable[[Item, Any], Any],
    done: Callable[[Item, Any, float], None],
) -> None:
    """``store(item, compute(item, load(item)))`` for every item, stages overlapped (module
    doc); ``done(item, result or exception, seconds)`` in item order, in this thread."""
    if not items:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="refocus-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="refocus-write") as writer:
        loading = reader.submit(_timed, load, items[0])
        writing: tuple[Item, Future[Timed], float] | None = None
        try:
            for i, item in enumerate(items):
                value, seconds = loading.result()
                if i + 1 < len(items):
                    loading = reader.submit(_timed, load, items[i + 1])
                if not isinstance(value, Exception):
                    value, more = _timed(compute, item, value)
                    seconds += more
                if writing is not None:
                    _finish(writing, done)
                    writing = None
                if isinstance(value, Exception):
                    done(item, value, seconds)
                else:
                    writing = (item, writer.submit(_timed, store, item, value), seconds)
        finally:  # also on Ctrl-C: the output being written is finished and reported
            if writing is not None:
                _finish(writing, done)


def _finish(writing: tuple[Item, Future[Timed], float],
            done: Callable[[Item, Any, float], None]) -> None:
    item, future, seconds = writing
    result, more = future.result()
    done(item, result, seconds + more)
