"""Compiled kernels of galaxy rendering: Sersic spectra on a stamp's frequency bins,
and the placement of the rendered stamps into the engine's ragged buffers.

:func:`galaxy_spectra` is the inner loop of :func:`dask_phot.models.render.render_sources`:
for every galaxy and every frequency of the PSF's transfer support it evaluates the
tabulated Sersic transform (:func:`dask_phot.models.sersic.fourier_table`), which needs
the logarithm of the frequency's elliptical radius (:func:`fast_ln`: the float's
exponent and a rational series for its mantissa, error below 1e-12, in loops the
compiler vectorises), and folds it onto the stamp's bins with its phase.

The phase of frequency ``u`` (signed index, ``u / k`` cycles per pixel) for a source at
``d`` is ``exp(-2 pi i u d / k)``. With ``u = j + a k`` (``j = u mod k`` its bin, ``a``
its alias), that is the bin's phase ``exp(-2 pi i j d / k)`` times the alias's
``exp(-2 pi i a d)``: frequencies are accumulated per bin with their alias's phase
only (a few values per galaxy), in *runs* of frequencies that share an alias and fill
consecutive bins (:func:`spectra_layout`), and each bin is phased once at the end. The
sums are kept in double precision and stored in the output's precision (single for
the stamps' float32 inverse FFT: rounding below 1e-6 of a stamp's peak and of its
light, far below any image's noise).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from dask_phot.psf.oversampled import phase_stamp, wing_stamp

__all__ = ["SpectraLayout", "fast_ln", "galaxy_spectra", "place_galaxies", "spectra_layout"]

_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)
# Floating-point liberties of the spectra's loops: the order of sums, fused multiply-adds
# and reciprocals (NaN and infinity semantics are kept); their rounding, ~1e-16, is far
# below the single precision the spectra are stored in. ``error_model="numpy"`` (no
# Python ZeroDivisionError checks) lets the divisions vectorise.
_FAST = {"reassoc", "contract", "nsz", "arcp"}
_OPTS = {"cache": True, "nogil": True, "fastmath": _FAST, "error_model": "numpy"}


@intrinsic
def _bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The bits of a float64 as an int64 (a register bitcast, which vectorises)."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(64))
    return types.int64(types.float64), codegen


@intrinsic
def _float(typingctx, x):  # type: ignore[no-untyped-def]
    """The float64 whose bits are the int64 ``x``."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.int64), codegen


@numba.njit(inline="always", **_OPTS)
def fast_ln(v: float) -> float:
    """``ln(v)`` of a positive normal float: ``v = 2^e m`` with ``m`` in ``[1/sqrt 2,
    sqrt 2)``, ``ln m = 2 atanh(z)``, ``z = (m - 1) / (m + 1)`` (``|z| < 0.172``) by its
    series to ``z^13`` (error below 1e-12). Branch-free and table-free, so that loops
    calling it vectorise.

    Examples
    --------
    >>> bool(abs(fast_ln(3.7e-5) - math.log(3.7e-5)) < 1e-12)
    True
    """
    b = _bits(v)
    e = float((b >> 52) - 1023)
    m = _float((b & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > _SQRT2
    m = 0.5 * m if big else m
    e = e + 1.0 if big else e
    z = (m - 1.0) / (m + 1.0)
    z2 = z * z
    s = 1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0 + z2 * (
        1.0 / 9.0 + z2 * (1.0 / 11.0 + z2 / 13.0)))))
    return e * _LN2 + 2.0 * z * s


class SpectraLayout(NamedTuple):
    """A half transfer's frequencies in run order (see the module docstring).

    Attributes
    ----------
    fx, fy : ndarray of float64
        Signed frequency indices.
    rre, rim : ndarray of float64, shape (nbases, npts)
        The transfer's real and imaginary parts.
    runs : ndarray of int64, shape (nruns, 5)
        Per run: first frequency, length, first bin (of the flattened ``k x (k // 2 + 1)``
        half spectrum), index of its x alias in ``ax``, of its y alias in ``ay``.
    ax, ay : ndarray of int64
        The distinct aliases.
    """

    fx: np.ndarray
    fy: np.ndarray
    rre: np.ndarray
    rim: np.ndarray
    runs: np.ndarray
    ax: np.ndarray
    ay: np.ndarray


def spectra_layout(ux: np.ndarray, uy: np.ndarray, rhat: np.ndarray, k: int
                   ) -> SpectraLayout:
    """Order a half transfer's frequencies ``(ux, uy)`` (transfer ``rhat``, one row per
    basis) by alias, then bin, and cut them into runs of consecutive bins."""
    hw = k // 2 + 1
    jx, jy = np.mod(ux, k), np.mod(uy, k)
    ax, ia = np.unique((ux - jx) // k, return_inverse=True)
    ay, iy = np.unique((uy - jy) // k, return_inverse=True)
    ia, iy = ia.ravel(), iy.ravel()
    flat = jy * hw + jx
    srt = np.lexsort((flat, ia, iy))
    flat, ia, iy = flat[srt], ia[srt], iy[srt]
    new = np.ones(flat.size, dtype=bool)
    new[1:] = (np.diff(flat) != 1) | (np.diff(ia) != 0) | (np.diff(iy) != 0)
    p0 = np.flatnonzero(new)
    runs = np.column_stack([p0, np.diff(np.append(p0, flat.size)), flat[p0], ia[p0], iy[p0]])
    rh = np.asarray(rhat)[:, srt]
    return SpectraLayout(ux[srt].astype(np.float64), uy[srt].astype(np.float64),
                         np.ascontiguousarray(rh.real), np.ascontiguousarray(rh.imag),
                         runs.astype(np.int64), ax.astype(np.int64), ay.astype(np.int64))


@numba.njit(cache=True, nogil=True)
def _phases(d: float, k: int, n: int, out: np.ndarray) -> None:
    """``out[j] = exp(-2 pi i j d / k)`` for ``j = 0 .. n - 1``."""
    step = complex(math.cos(2.0 * math.pi * d / k), -math.sin(2.0 * math.pi * d / k))
    val = complex(1.0, 0.0)
    for t in range(n):
        out[t] = val
        val *= step
        if t % 64 == 63:  # re-anchor to keep the recurrence exact to rounding
            ang = -2.0 * math.pi * (t + 1) * d / k
            val = complex(math.cos(ang), math.sin(ang))


@numba.njit(**_OPTS)
def galaxy_spectra(lay_fx: np.ndarray, lay_fy: np.ndarray, rre: np.ndarray, rim: np.ndarray,
                   runs: np.ndarray, ax: np.ndarray, ay: np.ndarray, k: int, dx: np.ndarray,
                   dy: np.ndarray, r_e: np.ndarray, q: np.ndarray, theta: np.ndarray,
                   nidx: np.ndarray, nw: np.ndarray, bidx: np.ndarray, bw: np.ndarray,
                   table: np.ndarray, lt0: float, dlt: float, point: float, shift: int,
                   out: np.ndarray) -> None:
    """Half spectra ``out[g]`` (``k x (k // 2 + 1)``, complex, every bin written) of
    ``(F_n(t) - point) R^ exp(-2 pi i nu.(d + shift))`` summed over the frequencies
    (``point`` 1: the extension beyond a point source; 0: the whole model; ``shift``
    whole pixels move the source from the DFT's origin, ``k // 2`` to the stamp's
    centre). The frequencies are a :class:`SpectraLayout`'s (``lay_fx`` ... ``ay``);
    ``rre, rim`` rows are blended with weights ``bw`` at rows ``bidx`` (PSF grids).

    Per galaxy: the transform's ``t^2`` at every frequency, the table's rows about the
    galaxy's ``n`` blended over the range of ``t`` reached, ``F_n`` (:func:`_profile`),
    the runs' sums in double precision, then each bin's phase.
    """
    npts = lay_fx.shape[0]
    nt = table.shape[1]
    hw = k // 2 + 1
    nbins = k * hw
    m = dx.shape[0]
    if m == 0:
        return
    flat = out.reshape(m, nbins)
    pxb = np.empty(hw, dtype=np.complex128)
    pyb = np.empty(k, dtype=np.complex128)
    pxr, pxi = np.empty(hw), np.empty(hw)
    axc = np.empty(ax.shape[0], dtype=np.complex128)
    ayc = np.empty(ay.shape[0], dtype=np.complex128)
    t2 = np.empty(npts)
    g1 = np.empty(npts)
    jj = np.empty(npts, dtype=np.int32)
    wt = np.empty(npts)
    br, bi = np.empty(npts), np.empty(npts)
    row = np.empty(nt + 4)
    sre, sim = np.empty(nbins), np.empty(nbins)
    tiny = math.exp(2.0 * lt0)
    inv = 1.0 / dlt
    for g in range(m):
        _phases(dx[g] + shift, k, hw, pxb)
        _phases(dy[g] + shift, k, k, pyb)
        for j in range(hw):
            pxr[j] = pxb[j].real
            pxi[j] = pxb[j].imag
        _alias_phases(ax, dx[g], axc)  # (a times the integer shift is a whole turn)
        _alias_phases(ay, dy[g], ayc)
        lo, hi = _radii(lay_fx, lay_fy, r_e[g] / k, q[g], theta[g], tiny, t2)
        # table columns the galaxy's t can reach (two columns' margin on each side; the
        # t below the table, F = 1, do not count)
        jlo = min(max(int((0.5 * math.log(lo) - lt0) * inv) - 2, 0), nt - 2)
        jhi = min(max(int((0.5 * math.log(hi) - lt0) * inv) + 3, jlo + 1), nt - 1)
        row0 = table[nidx[g]]
        row1 = table[nidx[g] + 1]
        wn = nw[g]
        for j in range(jlo, jhi + 1):
            row[j - jlo] = row0[j] + wn * (row1[j] - row0[j])
        nr = jhi + 1 - jlo
        row[nr:nr + 4] = (1.0, 1.0, 0.0, 0.0)  # F below and beyond the table
        _profile(t2, row[:nr + 4], jlo, nt, tiny, lt0, inv, point, jj, wt, g1)
        _weights(g1, rre, rim, bidx[g], bw[g], br, bi)
        sre[:] = 0.0
        sim[:] = 0.0
        for r in range(runs.shape[0]):
            p0, ln, f0 = runs[r, 0], runs[r, 1], runs[r, 2]
            ph = axc[runs[r, 3]] * ayc[runs[r, 4]]
            _run(br, bi, p0, ln, ph.real, ph.imag, sre, sim, f0)
        _phase_bins(sre, sim, pxr, pxi, pyb, flat[g])


@numba.njit(inline="always", **_OPTS)
def _alias_phases(a: np.ndarray, d: float, out: np.ndarray) -> None:
    """``out[j] = exp(-2 pi i a[j] d)``."""
    for j in range(a.shape[0]):
        out[j] = complex(math.cos(2.0 * math.pi * a[j] * d), -math.sin(2.0 * math.pi * a[j] * d))


@numba.njit(inline="always", **_OPTS)
def _radii(fx: np.ndarray, fy: np.ndarray, r: float, q: float, theta: float, tiny: float,
           t2: np.ndarray) -> tuple[float, float]:
    """``t2`` = the squared transform radius ``t^2`` of a profile of half-light radius
    ``r`` (in stamp widths), axis ratio ``q`` and angle ``theta`` at every frequency
    ``(fx, fy)``; returns the smallest ``t^2`` above ``tiny`` (``tiny`` if none) and the
    largest (at least ``tiny``)."""
    c, s = math.cos(theta), math.sin(theta)
    r2 = r * r
    q2 = q * q
    a = r2 * (c * c + q2 * s * s)
    b = 2.0 * r2 * c * s * (1.0 - q2)
    cc = r2 * (s * s + q2 * c * c)
    lo = math.inf
    hi = tiny
    for p in range(fx.shape[0]):
        x = fx[p]
        y = fy[p]
        v = a * x * x + b * x * y + cc * y * y
        t2[p] = v
        lo = min(lo, v if v > tiny else math.inf)
        hi = max(hi, v)
    return (tiny if lo == math.inf else lo), hi


@numba.njit(inline="always", **_OPTS)
def _phase_bins(sre: np.ndarray, sim: np.ndarray, pxr: np.ndarray, pxi: np.ndarray,
                pyb: np.ndarray, out: np.ndarray) -> None:
    """``out[jy, jx] = (sre + i sim)[jy, jx] px[jx] py[jy]`` (flattened ``k x hw``)."""
    hw = pxr.shape[0]
    u = np.uint64
    for jy in range(pyb.shape[0]):
        yr, yi = pyb[jy].real, pyb[jy].imag
        for jx in range(hw):
            f = u(jy * hw + jx)
            ar = pxr[jx] * yr - pxi[jx] * yi
            ai = pxr[jx] * yi + pxi[jx] * yr
            out[f] = complex(sre[f] * ar - sim[f] * ai, sre[f] * ai + sim[f] * ar)


@numba.njit(inline="always", **_OPTS)
def _run(br: np.ndarray, bi: np.ndarray, p0: int, ln: int, cr: float, ci: float,
         sre: np.ndarray, sim: np.ndarray, f0: int) -> None:
    """``s[f0 + j] += b[p0 + j] c`` (complex, split into parts) over one run of ``ln``."""
    u = np.uint64
    for j in range(ln):
        p = u(p0 + j)
        f = u(f0 + j)
        sre[f] += br[p] * cr - bi[p] * ci
        sim[f] += br[p] * ci + bi[p] * cr


@numba.njit(**_OPTS)
def _weights(g1: np.ndarray, rre: np.ndarray, rim: np.ndarray, bidx: np.ndarray,
             bw: np.ndarray, br: np.ndarray, bi: np.ndarray) -> None:
    """``b = g1 R^``, ``R^`` the transfer (blended from three bases when there are more
    than one)."""
    if rre.shape[0] == 1:
        r0, i0 = rre[0], rim[0]
        for p in range(g1.shape[0]):
            br[p] = g1[p] * r0[p]
            bi[p] = g1[p] * i0[p]
        return
    w0, w1, w2 = bw[0], bw[1], bw[2]
    ra, rb, rc = rre[bidx[0]], rre[bidx[1]], rre[bidx[2]]
    ia, ib, ic = rim[bidx[0]], rim[bidx[1]], rim[bidx[2]]
    for p in range(g1.shape[0]):
        br[p] = g1[p] * (w0 * ra[p] + w1 * rb[p] + w2 * rc[p])
        bi[p] = g1[p] * (w0 * ia[p] + w1 * ib[p] + w2 * ic[p])


@numba.njit(**_OPTS)
def _profile(t2: np.ndarray, row: np.ndarray, jlo: int, nt: int, tiny: float, lt0: float,
             inv: float, point: float, jj: np.ndarray, wt: np.ndarray, g1: np.ndarray) -> None:
    """``g1 = F_n(t) - point`` at every ``t2 = t^2``, ``F_n`` interpolated linearly in
    ``ln t`` along ``row``, the table's row at the galaxy's ``n`` from column ``jlo`` (of
    ``nt``) on, followed by ``1, 1, 0, 0``: ``F = 1`` below the table's first ``t``
    (``t2 <= tiny``), 0 beyond its last. Two loops: the logarithms and columns
    (vectorised), then the table look-ups (``jj, wt``: scratch)."""
    n = t2.shape[0]
    lo = float(jlo)
    hi = float(nt - 2)
    below = np.int32(row.shape[0] - 4)
    for p in range(n):
        v = t2[p]
        fj = (0.5 * fast_ln(max(v, tiny)) - lt0) * inv
        j = np.int32(min(max(fj, lo), hi))
        w = fj - j
        j = j - np.int32(jlo)
        j = below + np.int32(2) if fj >= nt - 1 else j
        j = below if v <= tiny else j
        jj[p] = j
        wt[p] = 0.0 if (fj >= nt - 1 or v <= tiny) else w
    for p in range(n):
        j = np.uint64(jj[p])
        r0 = row[j]
        g1[p] = r0 + wt[p] * (row[j + np.uint64(1)] - r0) - point


@numba.njit(cache=True, nogil=True)
def place_galaxies(ext: np.ndarray, grid: np.ndarray, prf: np.ndarray, pcx: float,
                   pcy: float, s: int, kp: int, dx: np.ndarray, dy: np.ndarray,
                   rows: np.ndarray, kc: int, data: np.ndarray, ptr: np.ndarray,
                   outer_rows: np.ndarray, outer_data: np.ndarray, outer_ptr: np.ndarray
                   ) -> None:
    """Write each galaxy's ``k x k`` model into its buffers: the central ``kc x kc`` box
    into stamp ``rows[g]`` of ``data``, the rest (when ``kc < k``) into stamp
    ``outer_rows[g]`` of ``outer_data`` (whose central box stays zero; it may be single
    precision: the outskirts are subtracted, not fitted). The model is the DFT's
    ``ext[g]`` (centred: rendered with ``shift = k // 2``) plus, for an oversampled PSF
    (``kp > 0``), its centred point stamp of side ``kp`` at phase ``(dx[g], dy[g])``,
    made as :meth:`OversampledPSF.stamps` makes it (:func:`_point_stamp`) in a buffer
    reused from galaxy to galaxy: no point stamps are stored."""
    m, k = ext.shape[0], ext.shape[1]
    op = k // 2 - kp // 2  # the point box in the stamp
    o = (k - kc) // 2
    line = np.empty(k)
    point = np.zeros((max(kp, 1), max(kp, 1)))
    core = np.empty((grid.shape[2], grid.shape[3]))
    ixs = np.empty(kp, dtype=np.int64)
    wxs = np.empty(kp)
    for g in range(m):
        core_g = data[ptr[rows[g]]:ptr[rows[g]] + kc * kc]
        if kp == k and grid.shape[2] == k and kc == k:  # (the common case: one pass)
            phase_stamp(grid, dx[g], dy[g], ext[g].reshape(k * k), core_g)
            continue
        if kp > 0:
            _point_stamp(grid, prf, pcx, pcy, s, dx[g], dy[g], core, ixs, wxs, point)
        whole = outer_data[outer_ptr[outer_rows[g]]:]  # (not written when kc == k)
        for rr in range(k):
            er = ext[g, rr]
            for cc in range(k):
                line[cc] = er[cc]
            pr = rr - op
            if 0 <= pr < kp:
                prow = point[pr]
                for cc in range(kp):
                    line[op + cc] += prow[cc]
            _write_row(line, rr, o, kc, k, core_g, whole)


@numba.njit(cache=True, nogil=True)
def _point_stamp(grid: np.ndarray, prf: np.ndarray, pcx: float, pcy: float, s: int,
                 dx: float, dy: float, core: np.ndarray, ixs: np.ndarray, wxs: np.ndarray,
                 out: np.ndarray) -> None:
    """One point stamp (``out``, ``kp x kp``) as :meth:`OversampledPSF.stamps` makes it
    (same arithmetic): the core interpolated in phase (:func:`phase_stamp`), the wings
    sampled from the pixel response ``prf`` (:func:`wing_stamp`)."""
    kc = core.shape[0]
    phase_stamp(grid, dx, dy, np.zeros(0, dtype=np.float32), core.reshape(kc * kc))
    if out.shape[0] == kc:
        out[:, :] = core
        return
    out[:, :] = 0.0
    wing_stamp(prf, pcx, pcy, s, core, dx, dy, ixs, wxs, out)


@numba.njit(cache=True, nogil=True, inline="always")
def _write_row(line: np.ndarray, rr: int, o: int, kc: int, k: int, core: np.ndarray,
               whole: np.ndarray) -> None:
    """Row ``rr`` of a ``k x k`` model: its part in the central ``kc x kc`` box into
    ``core``, the rest (when ``kc < k``) into ``whole``."""
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
