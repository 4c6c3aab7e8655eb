"""Compiled Lanczos rendering of PSF stamps at sub-pixel positions.

:func:`lanczos_stamps` shifts pixelized PSFs by sub-pixel offsets with a
flux-conserving, separable Lanczos interpolation (the interpolant The Tractor
uses), for :meth:`dask_phot.psf.PixelPSF.stamps` and
:meth:`dask_phot.psf.PSFGrid.stamps`. All functions here are numba functions
of arrays.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["lanczos_stamps"]


@numba.njit(cache=True, nogil=True, inline="always")
def _lanczos(t: float, a: int) -> float:
    if t == 0.0:
        return 1.0
    if abs(t) >= a:
        return 0.0
    pt = math.pi * t
    return a * math.sin(pt) * math.sin(pt / a) / (pt * pt)


@numba.njit(cache=True, nogil=True)
def _taps(frac: float, a: int, out: np.ndarray) -> None:
    # out[j] weights the input sample at offset (j - a) for an output shifted by ``frac``
    s = 0.0
    for j in range(2 * a + 1):
        w = _lanczos(float(j - a) + frac, a)
        out[j] = w
        s += w
    for j in range(2 * a + 1):
        out[j] /= s


@numba.njit(cache=True, nogil=True)
def _rotations(a: int) -> tuple[np.ndarray, np.ndarray]:
    """``cos(pi m / a), sin(pi m / a)`` for ``m = -a .. a`` (index ``m + a``), with
    the exact values at multiples of ``pi / 2``."""
    cm = np.empty(2 * a + 1)
    sm = np.empty(2 * a + 1)
    for j in range(2 * a + 1):
        m = j - a
        if m == 0:
            cm[j], sm[j] = 1.0, 0.0
        elif abs(m) == a:
            cm[j], sm[j] = -1.0, 0.0
        elif 2 * abs(m) == a:
            cm[j], sm[j] = 0.0, 1.0 if m > 0 else -1.0
        else:
            cm[j], sm[j] = math.cos(math.pi * m / a), math.sin(math.pi * m / a)
    return cm, sm


@numba.njit(cache=True, nogil=True)
def _taps_rot(frac: float, a: int, cm: np.ndarray, sm: np.ndarray, out: np.ndarray) -> None:
    """:func:`_taps` with three trigonometric calls instead of ``2 (2a + 1)``.

    At ``t = m + frac`` (``m = j - a``), ``sin(pi t) = (-1)^m sin(pi frac)`` and
    ``sin(pi t / a) = sin(th) cos(pi m / a) + cos(th) sin(pi m / a)`` with
    ``th = pi frac / a`` (tables ``cm, sm`` from :func:`_rotations`).
    """
    sf = math.sin(math.pi * frac)
    th = math.pi * frac / a
    st, ct = math.sin(th), math.cos(th)
    s = 0.0
    for j in range(2 * a + 1):
        m = j - a
        t = float(m) + frac
        if t == 0.0:
            w = 1.0
        elif abs(t) >= a:
            w = 0.0
        else:
            pt = math.pi * t
            s1 = sf if m % 2 == 0 else -sf
            s2 = st * cm[j] + ct * sm[j]
            w = a * s1 * s2 / (pt * pt)
        out[j] = w
        s += w
    for j in range(2 * a + 1):
        out[j] /= s


def lanczos_stamps(
    bases: np.ndarray, idx: np.ndarray, dx: np.ndarray, dy: np.ndarray, order: int = 3
) -> np.ndarray:
    """Shift PSF stamps by sub-pixel offsets with separable Lanczos interpolation.

    ``out[i]`` is the PSF ``bases[idx[i]]`` evaluated at ``(c - dx[i], r - dy[i])``
    relative to the stamp centre, ``P(u) = sum_m P[m] L_a(u - m)`` with the
    Lanczos kernel of order ``a = order`` (``2a + 1`` taps), each 1-D kernel
    normalised to sum 1 and the stamp rescaled to the base's sum (flux conserving).
    The output is allocated by numpy, which asks for huge pages (first-touch page
    faults on numba's own allocation of a large output cost more than the
    rendering); the rendering runs without the GIL.
    """
    k = bases.shape[1]
    out = np.empty((np.shape(dx)[0], k, k))
    _lanczos_into(bases, idx, dx, dy, int(order), out)
    return out


@numba.njit(cache=True, nogil=True)
def _lanczos_into(bases: np.ndarray, idx: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                  order: int, out: np.ndarray) -> None:
    """:func:`lanczos_stamps` into ``out``."""
    # Both passes are sums over the taps j = 0 .. 2a of whole k*k planes (long
    # contiguous loops that vectorise): the x pass adds tap-weighted copies of
    # the base shifted along rows (zero filled), the y pass adds tap-weighted
    # row-shifted copies of its result, read from a buffer with ``a`` zero rows
    # above and below. Zero-filled samples add exact zeros, so each pixel gets
    # the same sum, in the same order, as the direct tap loop.
    n = dx.shape[0]
    nb = bases.shape[0]
    k = bases.shape[1]
    kk = k * k
    nt = 2 * order + 1
    flat = out.reshape((n, kk))
    pad = np.zeros((k + 2 * order) * k)
    kx = np.zeros(nt)
    ky = np.zeros(nt)
    cm, sm = _rotations(order)
    # shifted copies of each base (built once per base when bases are shared,
    # per source otherwise) and each base's sum, the flux stamps are rescaled to
    shared = nb < n
    nstack = nb if shared else 1
    shifted = np.zeros((nstack, nt, kk))
    targets = np.zeros(nstack)
    if shared:
        for b in range(nb):
            targets[b] = _shift_stack(bases[b], order, shifted[b])
    for i in range(n):
        b = idx[i]
        if shared:
            stack = shifted[b]
            target = targets[b]
        else:
            stack = shifted[0]
            target = _shift_stack(bases[b], order, stack)
        _taps_rot(dx[i], order, cm, sm, kx)
        _taps_rot(dy[i], order, cm, sm, ky)
        # x pass: value at column c is P(c - dx) = sum_j kx[nt-1-j] * P[c - (j - order)]
        tmp = pad[order * k : order * k + kk]
        tmp[:] = 0.0
        for j in range(nt):
            w = kx[nt - 1 - j]
            sj = stack[j]
            for p in range(kk):
                tmp[p] += w * sj[p]
        # y pass: row r takes ky[nt-1-j] * tmp[r - (j - order)]
        o = flat[i]
        o[:] = 0.0
        for j in range(nt):
            w = ky[nt - 1 - j]
            src = pad[(2 * order - j) * k : (2 * order - j) * k + kk]
            for p in range(kk):
                o[p] += w * src[p]
        total = 0.0
        for p in range(kk):
            total += o[p]
        if total != 0.0:
            scale = target / total
            for p in range(kk):
                o[p] *= scale


@numba.njit(cache=True, nogil=True)
def _shift_stack(base: np.ndarray, order: int, stack: np.ndarray) -> float:
    """Fill ``stack[j]`` with ``base`` shifted by ``j - order`` columns (zero filled,
    flattened); return the base's row-major sum."""
    k = base.shape[0]
    total = 0.0
    for j in range(2 * order + 1):
        s = j - order
        sj = stack[j]
        for r in range(k):
            for c in range(k):
                cc = c - s
                sj[r * k + c] = base[r, cc] if 0 <= cc < k else 0.0
    for r in range(k):
        for c in range(k):
            total += base[r, c]
    return total
