"""Ragged stamps: one rectangular unit-flux image per source, in one flat buffer.

The engine's kernels read stamp ``i`` as the ``h[i] x w[i]`` array
``data[ptr[i]:ptr[i+1]].reshape(h[i], w[i])``, whose first pixel sits at image
column ``x0[i]`` and row ``y0[i]``. Point sources share the PSF's stamp size;
galaxies and templates get the size their light needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

__all__ = ["Stamps"]


@dataclass
class Stamps:
    """Stamps of ``n`` sources (see the module docstring).

    Examples
    --------
    >>> st = Stamps.from_square(np.ones((2, 3, 3)), np.array([0, 5]), np.array([1, 2]))
    >>> len(st), st.stamp(1).shape, int(st.max_side)
    (2, (3, 3), 3)
    """

    data: np.ndarray
    ptr: np.ndarray
    w: np.ndarray
    h: np.ndarray
    x0: np.ndarray
    y0: np.ndarray

    def __len__(self) -> int:
        return int(self.w.shape[0])

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(data, ptr, w, h, x0, y0)``, the form the compiled kernels take."""
        return self.data, self.ptr, self.w, self.h, self.x0, self.y0

    def reordered(self, pos: np.ndarray) -> tuple[np.ndarray, ...]:
        """Kernel arrays with ``w, h, x0, y0, ptr`` indexed by ``pos`` (source ``i`` is
        stamp ``pos[i]``): the same buffer seen in another order."""
        return (self.data, self.ptr[pos], self.w[pos], self.h[pos], self.x0[pos],
                self.y0[pos])

    @property
    def max_side(self) -> int:
        """The largest stamp side (0 when empty)."""
        if len(self) == 0:
            return 0
        return int(max(self.w.max(), self.h.max()))

    def stamp(self, i: int) -> np.ndarray:
        """Stamp ``i`` as a 2-D view."""
        return self.data[self.ptr[i]:self.ptr[i + 1]].reshape(int(self.h[i]), int(self.w[i]))

    @classmethod
    def from_square(cls, stamps: np.ndarray, x0: np.ndarray, y0: np.ndarray) -> Stamps:
        """Stamps from a ``(n, k, k)`` array (no copy when it is contiguous)."""
        n, k = stamps.shape[0], stamps.shape[1]
        side = np.full(n, k, dtype=np.int64)
        return cls(np.ascontiguousarray(stamps, dtype=np.float64).reshape(-1),
                   np.arange(n + 1, dtype=np.int64) * k * k, side, side.copy(),
                   np.asarray(x0, dtype=np.int64), np.asarray(y0, dtype=np.int64))

    @classmethod
    def empty(cls, n: int, sides: np.ndarray, dtype: type = np.float64) -> Stamps:
        """Zeroed square stamps of the given sides (corners to be set by the caller)."""
        sides = np.asarray(sides, dtype=np.int64)
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(sides * sides, out=ptr[1:])
        return cls(np.zeros(int(ptr[-1]), dtype=dtype), ptr, sides, sides.copy(),
                   np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))

    def put(self, rows: np.ndarray, stamps: np.ndarray, x0: np.ndarray, y0: np.ndarray
            ) -> None:
        """Store square ``stamps (m, k, k)`` as stamps ``rows`` (all of side ``k``)."""
        if rows.size == 0:
            return
        k = stamps.shape[1]
        rows = self.place(rows, k, x0, y0)
        _copy_rows(np.ascontiguousarray(stamps, dtype=np.float64).reshape(rows.size, k * k),
                   rows, self.ptr, self.data)

    def place(self, rows: np.ndarray, k: int, x0: np.ndarray, y0: np.ndarray) -> np.ndarray:
        """Set the corners of stamps ``rows`` (all of side ``k``) for pixels about to be
        written into their slots (:meth:`put`); returns ``rows`` as int64."""
        if not (np.all(self.w[rows] == k) and np.all(self.h[rows] == k)):
            raise ValueError("stamp sides differ from the slots they are put in")
        self.x0[rows] = x0
        self.y0[rows] = y0
        return rows.astype(np.int64)

    def to_square(self) -> np.ndarray:
        """All stamps as one ``(n, k, k)`` array (they must share one square size)."""
        if len(self) and not (np.all(self.w == self.w[0]) and np.all(self.h == self.w[0])):
            raise ValueError("stamps have different sizes")
        k = int(self.w[0]) if len(self) else 0
        return self.data.reshape(len(self), k, k)


@numba.njit(cache=True, nogil=True)
def _copy_rows(src: np.ndarray, rows: np.ndarray, ptr: np.ndarray, data: np.ndarray) -> None:
    """``data[ptr[rows[g]]:...] = src[g]`` for every ``g``."""
    kk = src.shape[1]
    for g in range(rows.shape[0]):
        dst = data[ptr[rows[g]]:ptr[rows[g]] + kk]
        row = src[g]
        for p in range(kk):
            dst[p] = row[p]
