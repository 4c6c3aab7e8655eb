"""Whole rows of wide mosaics, fetched once per process and shared by the cells that need them.

A cell's pixel box spans a fraction of a wide mosaic's rows (an IRAC mosaic of COSMOS is
~8,500 pixels wide, a cell's box ~900): reading the box row by row takes one request per
row, reading whole rows brings the rest of each row for nothing. When the cells of a
run come in rows of the sky (:func:`dask_phot.pipeline.run_catalog` orders them so),
the next cell of a worker needs mostly the rows the last one read: :class:`RowCache`
keeps them (least recently used first out, up to a byte budget), so that each row is
fetched about once per worker, in few large requests.

The cache is process-wide state of the I/O layer (like fsspec's filesystem instances),
never of a kernel: what a read returns does not depend on it, only what it fetches.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from dask_phot.images import _io

__all__ = ["RowCache", "read_rows", "row_cache"]



class RowCache:
    """Rows of files by ``(file, row)``, least recently used dropped beyond ``capacity``
    bytes. ``file`` is any key naming one version of a file (:func:`read_rows` uses its
    URL and version, so that an object replaced at the same URL is not served stale).

    Parameters
    ----------
    capacity : int
        Bytes kept at most.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._rows: OrderedDict[tuple[Hashable, int], bytes | memoryview] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size

    def get(self, file: Hashable, row: int) -> bytes | memoryview | None:
        """A cached row (marked as just used), or None."""
        with self._lock:
            data = self._rows.get((file, row))
            if data is not None:
                self._rows.move_to_end((file, row))
            return data

    def put(self, file: Hashable, row: int, data: bytes | memoryview) -> None:
        """Keep a row (a view of a larger request's bytes keeps those alive while it is
        held), dropping the least recently used beyond the capacity."""
        with self._lock:
            old = self._rows.pop((file, row), None)
            if old is not None:
                self._size -= len(old)
            self._rows[(file, row)] = data
            self._size += len(data)
            self._trim()

    def resize(self, capacity: int) -> None:
        """Change the capacity (dropping rows beyond it)."""
        with self._lock:
            self.capacity = int(capacity)
            self._trim()

    def _trim(self) -> None:
        while self._size > self.capacity and self._rows:
            _, dropped = self._rows.popitem(last=False)
            self._size -= len(dropped)


_CACHE: list[RowCache] = []
_CACHE_LOCK = threading.Lock()


def row_cache(capacity: int) -> RowCache:
    """This process's row cache, with ``capacity`` bytes (resized if it had another)."""
    with _CACHE_LOCK:
        if not _CACHE:
            _CACHE.append(RowCache(capacity))
        cache = _CACHE[0]
        if cache.capacity != capacity:
            cache.resize(capacity)
        return cache


def _runs(rows: list[int]) -> list[tuple[int, int]]:
    """Half-open runs of consecutive row numbers."""
    runs: list[tuple[int, int]] = []
    for r in rows:
        if runs and runs[-1][1] == r:
            runs[-1] = (runs[-1][0], r + 1)
        else:
            runs.append((r, r + 1))
    return runs


def read_rows(
    files: list[tuple[str, int, np.dtype, str]],
    nx: int,
    box: tuple[int, int, int, int],
    cache: RowCache,
    storage_options: Mapping[str, Any] | None,
) -> tuple[list[np.ndarray], int, int]:
    """The raw pixels of a box of several images of one shape, through whole cached rows.

    Parameters
    ----------
    files : list of (url, data offset, dtype, version)
        The images (a mosaic and its noise map); rows are cached under the URL and
        the version (:attr:`~dask_phot.images.index.Mosaic.version`).
    nx : int
        Row length, pixels.
    box : (x0, x1, y0, y1)
        In-bounds half-open box.
    cache : RowCache
        Where rows are kept.
    storage_options : dict, optional
        fsspec options.

    Returns
    -------
    arrays, bytes fetched, requests made
        One ``(y1 - y0, x1 - x0)`` array per file, in the files' dtypes.
    """
    x0, x1, y0, y1 = box
    fetch: list[tuple[str, list[int], list[int]]] = []
    plans: list[list[tuple[int, int]]] = []
    held: list[dict[int, bytes | memoryview]] = []
    for url, offset, dtype, version in files:
        row_bytes = nx * dtype.itemsize
        have = {r: cache.get((url, version), r) for r in range(y0, y1)}
        held.append({r: d for r, d in have.items() if d is not None})
        missing = [r for r, d in have.items() if d is None]
        per = max(1, _io.MAX_REQUEST // row_bytes)
        pieces = [(a, min(a + per, b)) for a, b in _runs(missing) for a in range(a, b, per)]
        plans.append(pieces)
        fetch.append((url, [offset + a * row_bytes for a, _ in pieces],
                      [offset + b * row_bytes for _, b in pieces]))
    todo = [f for f in fetch if f[1]]
    parts = iter(_io.fetch_files_ranges(todo, storage_options) if todo else [])
    nbytes = n_requests = 0
    out = []
    for (url, _, dtype, version), (_, starts, _), pieces, rows in zip(files, fetch, plans,
                                                                       held, strict=True):
        row_bytes = nx * dtype.itemsize
        if starts:
            for (a, b), blob in zip(pieces, next(parts), strict=True):
                nbytes += len(blob)
                n_requests += 1
                view = memoryview(blob)  # rows share the request's bytes, copied never
                for r in range(a, b):
                    rows[r] = view[(r - a) * row_bytes:(r - a + 1) * row_bytes]
                    cache.put((url, version), r, rows[r])
        out.append(np.stack([np.frombuffer(rows[r], dtype=dtype)[x0:x1]
                             for r in range(y0, y1)]))
    return out, nbytes, n_requests
