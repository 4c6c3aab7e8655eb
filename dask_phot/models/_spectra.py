"""Compiled kernels of galaxy rendering: Sersic spectra on a stamp's frequency bins,
and the placement of the rendered stamps into the engine's ragged buffers.

:func:`extension_spectra` is the inner loop of :func:`dask_phot.models.render.render_sources`:
for every galaxy and every frequency of the PSF's transfer support it evaluates the
tabulated Sersic transform (:func:`dask_phot.models.sersic.fourier_table`), which needs
the logarithm of the frequency's elliptical radius. :func:`fast_ln` computes it from the
float's exponent and a 1024-entry table of the mantissa's logarithm with a third-order
correction (error below 1e-12, several times faster than ``math.log`` here); the spectra
are accumulated in single precision, which the stamps' float32 inverse FFT reads (their
rounding, below 1e-6 of a stamp's peak and of its light, is far below any image's noise).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["extension_spectra", "fast_ln", "place_stamps"]

_LN_BITS = 10
_MANT = 1.0 + np.arange(2**_LN_BITS) / 2**_LN_BITS
#: ``ln(1 + i / 1024)`` and ``1 / (1 + i / 1024)``: the mantissa tables of :func:`fast_ln`.
_LN_TABLE = np.log(_MANT)
_INV_TABLE = 1.0 / _MANT
_LN2 = math.log(2.0)
# Floating-point liberties of the spectra's loops: the order of sums, fused multiply-adds
# and reciprocals (NaN and infinity semantics are kept); their rounding, ~1e-16, is far
# below the single precision the spectra are stored in.
_FAST = {"reassoc", "contract", "nsz", "arcp"}


@numba.njit(cache=True, nogil=True, inline="always")
def fast_ln(v: float, fbuf: np.ndarray, ibuf: np.ndarray, lnt: np.ndarray,
            invm: np.ndarray) -> float:
    """``ln(v)`` of a positive normal float (``fbuf`` a 1-element float64 array and
    ``ibuf`` its int64 view: the float's bits; ``lnt, invm`` the mantissa tables).

    Examples
    --------
    >>> fb = np.empty(1)
    >>> v = fast_ln(3.7e-5, fb, fb.view(np.int64), _LN_TABLE, _INV_TABLE)
    >>> bool(abs(v - math.log(3.7e-5)) < 1e-12)
    True
    """
    fbuf[0] = v
    bits = ibuf[0]
    e = (bits >> 52) - 1023
    i = (bits >> (52 - _LN_BITS)) & (2**_LN_BITS - 1)
    ibuf[0] = (bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
    d = (fbuf[0] - (1.0 + i / 2**_LN_BITS)) * invm[i]
    return e * _LN2 + lnt[i] + d * (1.0 - d * (0.5 - d / 3.0))


@numba.njit(cache=True, nogil=True)
def _phases(d: float, k: int, n: int, out: np.ndarray) -> None:
    """``out[u + n // 2] = exp(-2 pi i u d / k)`` for ``u = -n // 2 .. n - n // 2 - 1``."""
    step = complex(math.cos(2.0 * math.pi * d / k), -math.sin(2.0 * math.pi * d / k))
    u0 = -(n // 2)
    ang = -2.0 * math.pi * u0 * d / k
    val = complex(math.cos(ang), math.sin(ang))
    for t in range(n):
        out[t] = val
        val *= step
        if t % 64 == 63:  # re-anchor to keep the recurrence exact to rounding
            ang = -2.0 * math.pi * (u0 + t + 1) * d / k
            val = complex(math.cos(ang), math.sin(ang))


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def extension_spectra(fx: np.ndarray, fy: np.ndarray, ix: np.ndarray, iy: np.ndarray,
                      flat: np.ndarray, rhat: np.ndarray, k: int, n: int, dx: np.ndarray,
                      dy: np.ndarray, r_e: np.ndarray, q: np.ndarray, theta: np.ndarray,
                      nidx: np.ndarray, nw: np.ndarray, bidx: np.ndarray, bw: np.ndarray,
                      table: np.ndarray, lt0: float, dlt: float, point: float, shift: int,
                      out: np.ndarray) -> None:
    """Accumulate ``(F_n(t) - point) R^ exp(-2 pi i nu.(d + shift))`` of each galaxy onto
    its stamp bins (``point`` 1: the extension beyond a point source; 0: the whole model;
    ``shift`` whole pixels move the source from the DFT's origin, ``k // 2`` to the
    stamp's centre).

    The frequencies are ``(fx, fy)`` (signed indices as floats; ``ix, iy`` the same
    offset by ``n // 2``), each folding onto bin ``flat`` of the flattened ``k x (k // 2
    + 1)`` half spectrum ``out[g]``; ``rhat[b]`` is basis ``b``'s transfer there. Per
    galaxy, the transform's radii, their logarithms (:func:`fast_ln`, on whole arrays
    so that the loops vectorise) and the table's values are computed first, then
    accumulated. The table's rows about the galaxy's ``n`` are blended first, over the
    range of ``t`` its frequencies reach.
    """
    npts = fx.shape[0]
    nb = rhat.shape[0]
    nt = table.shape[1]
    hw = k // 2 + 1
    if npts == 0:
        return
    px = np.empty(n, dtype=np.complex128)
    py = np.empty(n, dtype=np.complex128)
    blend = np.empty(npts, dtype=np.complex128)
    t2 = np.empty(npts)
    bits = t2.view(np.int64)
    g1 = np.empty(npts)
    row = np.empty(nt)
    tiny = math.exp(2.0 * lt0)
    inv = 1.0 / dlt
    for g in range(dx.shape[0]):
        _phases(dx[g] + shift, k, n, px)
        _phases(dy[g] + shift, k, n, py)
        c, s = math.cos(theta[g]), math.sin(theta[g])
        r2 = (r_e[g] / k) ** 2
        q2 = q[g] * q[g]
        a = r2 * (c * c + q2 * s * s)
        b = 2.0 * r2 * c * s * (1.0 - q2)
        cc = r2 * (s * s + q2 * c * c)
        lo = math.inf
        hi = tiny
        for p in range(npts):
            x = fx[p]
            y = fy[p]
            v = a * x * x + b * x * y + cc * y * y
            t2[p] = v
            lo = min(lo, v)
            hi = max(hi, v)
        # table columns the galaxy's t can reach (two columns' margin on each side)
        jlo = min(max(int((0.5 * math.log(max(lo, tiny)) - lt0) * inv) - 2, 0), nt - 2)
        jhi = min(max(int((0.5 * math.log(hi) - lt0) * inv) + 3, jlo + 1), nt - 1)
        row0 = table[nidx[g]]
        row1 = table[nidx[g] + 1]
        wn = nw[g]
        for j in range(jlo, jhi + 1):
            row[j - jlo] = row0[j] + wn * (row1[j] - row0[j])
        _profile_values(t2, bits, row[:jhi + 1 - jlo], jlo, nt, tiny, lt0, inv, point, g1)
        spec = out[g].reshape(k * hw)
        if nb == 1:
            _accumulate(spec, g1, rhat[0], px, py, ix, iy, flat)
        else:
            for p in range(npts):
                blend[p] = (bw[g, 0] * rhat[bidx[g, 0], p] + bw[g, 1] * rhat[bidx[g, 1], p]
                            + bw[g, 2] * rhat[bidx[g, 2], p])
            _accumulate(spec, g1, blend, px, py, ix, iy, flat)


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _accumulate(spec: np.ndarray, g1: np.ndarray, r: np.ndarray, px: np.ndarray,
                py: np.ndarray, ix: np.ndarray, iy: np.ndarray, flat: np.ndarray) -> None:
    """``spec[flat[p]] += g1[p] r[p] px[ix[p]] py[iy[p]]`` over the frequencies."""
    for p in range(g1.shape[0]):
        if g1[p] != 0.0:
            spec[flat[p]] += g1[p] * r[p] * px[ix[p]] * py[iy[p]]


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _profile_values(t2: np.ndarray, bits: np.ndarray, row: np.ndarray, jlo: int, nt: int,
                    tiny: float, lt0: float, inv: float, point: float, g1: np.ndarray) -> None:
    """``g1 = F_n(t) - point`` at every ``t2 = t^2`` (overwritten; ``bits`` its int64
    view), ``F_n`` interpolated linearly in ``ln t`` along ``row``, the table's row at
    the galaxy's ``n`` from column ``jlo`` (of ``nt``) on; ``F = 1`` below the table's
    first ``t`` (``t2 <= tiny``), 0 beyond its last."""
    lnt, invm = _LN_TABLE, _INV_TABLE
    for p in range(t2.shape[0]):
        small = t2[p] <= tiny
        if small:
            t2[p] = tiny
        # ln t2 as in fast_ln, through the array's own bits
        bt = bits[p]
        e = (bt >> 52) - 1023
        i = (bt >> (52 - _LN_BITS)) & (2**_LN_BITS - 1)
        bits[p] = (bt & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000
        d = (t2[p] - (1.0 + i / 2**_LN_BITS)) * invm[i]
        fj = (0.5 * (e * _LN2 + lnt[i] + d * (1.0 - d * (0.5 - d / 3.0))) - lt0) * inv
        j = min(max(int(fj), jlo), nt - 2)
        wt = fj - j
        jj = j - jlo
        gv = row[jj] + wt * (row[jj + 1] - row[jj]) - point
        if fj >= nt - 1:
            gv = -point
        if small:
            gv = 1.0 - point
        g1[p] = gv


@numba.njit(cache=True, nogil=True)
def place_stamps(ext: np.ndarray, point: np.ndarray, rows: np.ndarray, kc: int,
                 data: np.ndarray, ptr: np.ndarray, outer_rows: np.ndarray,
                 outer_data: np.ndarray, outer_ptr: np.ndarray) -> None:
    """Write each galaxy's ``k x k`` model, the DFT's ``ext[g]`` (centred: rendered with
    ``shift = k // 2``) plus the centred ``point[g]`` (any odd side up to ``k``), into its
    buffers: the central ``kc x kc`` box into stamp ``rows[g]`` of ``data``, the rest
    (when ``kc < k``) into stamp ``outer_rows[g]`` of ``outer_data`` (whose central box
    stays zero; it may be single precision: the outskirts are subtracted, not fitted)."""
    m, k = ext.shape[0], ext.shape[1]
    kp = point.shape[1]
    op = k // 2 - kp // 2
    o = (k - kc) // 2
    line = np.empty(k)
    for g in range(m):
        core = data[ptr[rows[g]]:ptr[rows[g]] + kc * kc]
        whole = outer_data[outer_ptr[outer_rows[g]]:]  # (not written when kc == k)
        for rr in range(k):
            er = ext[g, rr]
            for cc in range(k):
                line[cc] = er[cc]
            pr = rr - op
            if 0 <= pr < kp:
                prow = point[g, pr]
                for cc in range(kp):
                    line[op + cc] += prow[cc]
            if o <= rr < o + kc:
                dst = core[(rr - o) * kc:(rr - o + 1) * kc]
                for cc in range(kc):
                    dst[cc] = line[o + cc]
                if kc < k:
                    wrow = whole[rr * k:(rr + 1) * k]
                    for cc in range(o):
                        wrow[cc] = line[cc]
                    for cc in range(o + kc, k):
                        wrow[cc] = line[cc]
            else:
                wrow = whole[rr * k:(rr + 1) * k]
                for cc in range(k):
                    wrow[cc] = line[cc]
