"""The sharp PSF's wings beyond each segment, given back from the PSF itself.

A detection threshold cuts every source at an isophote, and the sharp PSF
holds a good share of a compact source's light beyond it (an HST-like PSF:
~9% beyond 0.2", ~3% beyond 0.5"). A template made of the segment's pixels
alone lacks that light: it is more compact than the source in the blurred
image, its flux comes out low, and the light it leaves is fitted by its
neighbours and the sky (on a crowded 2'x2' pair: bias -3%, pull std 1.75).
Growing the segments into the unlabelled pixels around them (:mod:`.share`)
gives the light back, but with the noise of every pixel added and at ~3x the
cost of the whole fit.

Here the missing light is taken to be the sharp PSF's: with ``f`` the share of
the sharp PSF (centred on the segment's centroid) that falls on the segment's
pixels, the source's light is ``L' = L / f``, and its template is

    ``T = L' P + (S - L' H_seg) * K``,

where ``S`` is the segment's light, ``H_seg`` the sharp PSF on the segment's
pixels, ``K`` the matching kernel and ``P`` the band's PSF (``H * K = P``).
``S - L' H_seg`` has no net light and the segment's extent (so little wraps
around the FFT lattice), and a point source's template is exactly ``L' P``,
with its wings, whatever its segment's size. For a resolved source only its
light beyond the segment that is not the PSF's (a faint disc) stays missing.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["psf_at", "segment_psf_fraction"]

#: Smallest PSF share a segment is given (a segment of a few pixels off its own
#: centroid): the light is never scaled up by more than 1 / this.
MIN_FRACTION = 0.3


@numba.njit(cache=True, inline="always")
def psf_at(psf: np.ndarray, dx: float, dy: float) -> float:
    """The sharp PSF (odd square, centred, unit sum) at offset ``(dx, dy)`` sharp pixels
    from its centre, interpolated bilinearly; 0 off the array."""
    c = (psf.shape[0] - 1) * 0.5
    fx, fy = c + dx, c + dy
    ix, iy = math.floor(fx), math.floor(fy)
    n = psf.shape[0]
    if ix < -1 or iy < -1 or ix >= n or iy >= n:
        return 0.0
    wx, wy = fx - ix, fy - iy
    v = 0.0
    if iy >= 0:
        if ix >= 0:
            v += psf[iy, ix] * (1 - wx) * (1 - wy)
        if ix + 1 < n:
            v += psf[iy, ix + 1] * wx * (1 - wy)
    if iy + 1 < n:
        if ix >= 0:
            v += psf[iy + 1, ix] * (1 - wx) * wy
        if ix + 1 < n:
            v += psf[iy + 1, ix + 1] * wx * wy
    return v


@numba.njit(cache=True)
def _fractions(seg: np.ndarray, label: np.ndarray, x0: np.ndarray, x1: np.ndarray,
               y0: np.ndarray, y1: np.ndarray, cx: np.ndarray, cy: np.ndarray,
               psf: np.ndarray) -> np.ndarray:
    out = np.zeros(label.shape[0])
    for i in range(label.shape[0]):
        f = 0.0
        for r in range(y0[i], y1[i] + 1):
            for c in range(x0[i], x1[i] + 1):
                if seg[r, c] == label[i]:
                    f += psf_at(psf, c - cx[i], r - cy[i])
        out[i] = f
    return out


def segment_psf_fraction(segmap: np.ndarray, label: np.ndarray, xmin: np.ndarray,
                         xmax: np.ndarray, ymin: np.ndarray, ymax: np.ndarray,
                         x: np.ndarray, y: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Share ``f`` of the sharp PSF ``psf`` (sharp grid, unit sum), centred on each
    segment's centroid ``(x, y)``, on the segment's pixels (bounding boxes inclusive);
    at least :data:`MIN_FRACTION`.

    Examples
    --------
    >>> psf = np.zeros((5, 5)); psf[2, 2] = 0.6; psf[2, 1] = psf[2, 3] = 0.2
    >>> seg = np.zeros((1, 9), dtype=np.int32); seg[0, 3:6] = 1
    >>> one = np.array([1]); z = np.array([0])
    >>> segment_psf_fraction(seg, one, one * 3, one * 5, z, z, np.array([4.0]), z * 1.0,
    ...                      psf).round(3).tolist()
    [1.0]
    >>> segment_psf_fraction(seg, one, one * 3, one * 5, z, z, np.array([5.0]), z * 1.0,
    ...                      psf).round(3).tolist()
    [0.8]
    """
    f = _fractions(np.ascontiguousarray(segmap), np.asarray(label, dtype=np.int64),
                   np.asarray(xmin, dtype=np.int64), np.asarray(xmax, dtype=np.int64),
                   np.asarray(ymin, dtype=np.int64), np.asarray(ymax, dtype=np.int64),
                   np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                   np.ascontiguousarray(psf, dtype=np.float64))
    return np.maximum(f, MIN_FRACTION)
