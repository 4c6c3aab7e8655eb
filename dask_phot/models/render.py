"""Unit-flux stamps of point sources and Sersic galaxies, convolved with the band's PSF.

A point source's stamp is the PSF's own (:meth:`PixelPSF.stamps`,
:meth:`OversampledPSF.stamps`). A galaxy's is the point stamp plus the
*extension* ``D = (G - delta) * R``: the difference between the galaxy ``G``
and a point, convolved with the PSF's pixel response ``R``. ``D`` is rendered
exactly from its Fourier transform ``(F_n - 1) R^`` (:mod:`~dask_phot.models.sersic`,
:mod:`~dask_phot.psf.transfer`) on the stamp's frequency grid, folded for an
oversampled PSF, at the source's sub-pixel phase. Splitting the model this way
keeps the PSF's far wings out of the Fourier sum (they live in the point part,
cut cleanly at the stamp's edge), so the periodic Fourier grid wraps almost no
light: ``D`` has no net flux and the extent of the galaxy. Through a PSF
sampled on the image grid (no finer information, no wings beyond its box), the
whole galaxy is rendered from its transform ``F_n R^``: the band-limited
interpolation of the PSF, which the Lanczos shift of point sources approximates.

A galaxy's stamp grows with the radius holding ``fraction`` of its light
(plus two PSF FWHM), rounded up to a size with small prime factors, and is
capped at ``max_size``; capped sources are reported so they can be flagged.
Fluxes are the profiles' *total* fluxes: stamps are not renormalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft

from dask_phot.models.sersic import SersicTable, fourier_table, radius_fraction
from dask_phot.models.shapes import Shapes
from dask_phot.models.stamps import Stamps
from dask_phot.psf import OversampledPSF

__all__ = ["Rendered", "render_sources", "stamp_sizes"]

#: Odd stamp sides with prime factors 3, 5, 7 only (fast FFTs), from 3 to ~2000.
_NICE = np.array(sorted({3**a * 5**b * 7**c for a in range(8) for b in range(5)
                         for c in range(4) if 3 <= 3**a * 5**b * 7**c <= 2187}), dtype=np.int64)


def stamp_sizes(psf: object, shapes: Shapes, *, fraction: float = 0.99,
                max_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stamp side of every source, and whether the galaxy was cut by ``max_size``.

    Point sources get the PSF's size; a galaxy gets at least that, and enough to
    hold ``fraction`` of its (unconvolved) light plus two PSF FWHM around it.
    """
    k_psf = int(psf.size)  # type: ignore[attr-defined]
    n = shapes.r_e.shape[0]
    sides = np.full(n, k_psf, dtype=np.int64)
    ext = shapes.extended
    capped = np.zeros(n, dtype=bool)
    if not ext.any():
        return sides, capped
    reach = shapes.r_e[ext] * radius_fraction(shapes.n[ext], fraction) \
        + 2.0 * float(psf.fwhm)  # type: ignore[attr-defined]
    need = 2 * np.ceil(reach).astype(np.int64) + 1
    nice = _NICE[np.searchsorted(_NICE, np.maximum(need, k_psf))]
    # sizes between the PSF's and the next nice size keep the PSF's (no regrouping)
    k = np.where(need <= k_psf, k_psf, np.maximum(nice, k_psf))
    if max_size is not None:
        capped[ext] = k > max_size
        k = np.minimum(k, max(int(max_size) | 1, k_psf))
    sides[ext] = k
    return sides, capped


@dataclass
class Rendered:
    """What :func:`render_sources` makes.

    Attributes
    ----------
    stamps : Stamps
        The stamps the fit uses, in the requested order.
    sides : ndarray of int
        Side of each source's whole model (input order); larger than its fitted
        stamp for galaxies cut to the core size.
    outer : Stamps
        For the sources in ``outer_index`` (input order): their whole model with
        the fitted core zeroed, the light the fit leaves out.
    outer_index : ndarray of int
        Sources whose model was cut.
    capped : ndarray of bool
        Per source: the model itself was cut to ``max_size``.
    """

    stamps: Stamps
    sides: np.ndarray
    outer: Stamps
    outer_index: np.ndarray
    capped: np.ndarray


def render_sources(psf: object, x: np.ndarray, y: np.ndarray, shapes: Shapes | None = None,
                   *, order: np.ndarray | None = None, fraction: float = 0.99,
                   max_size: int | None = None, core: int | None = None) -> Rendered:
    """Render every source's unit-flux model.

    Parameters
    ----------
    psf : PixelPSF, OversampledPSF or PSFGrid
        The band's PSF (``stamps``, ``size``, ``fwhm`` and, for galaxies, ``transfer``).
    x, y : ndarray
        0-based pixel positions.
    shapes : Shapes, optional
        Per-source shapes; None renders point sources.
    order : ndarray of int, optional
        Stamp ``k`` is source ``order[k]`` (default: input order).
    fraction, max_size
        See :func:`stamp_sizes`.
    core : int, optional
        Largest fitted stamp: a galaxy whose model is larger is fitted on its
        central ``core x core`` box and the rest returned in ``outer``.

    Returns
    -------
    Rendered
    """
    n = x.shape[0]
    shapes = Shapes.points(n) if shapes is None else shapes
    order = np.arange(n) if order is None else order
    sides, capped = stamp_sizes(psf, shapes, fraction=fraction, max_size=max_size)
    ext = shapes.extended
    fit_sides = sides if core is None else np.minimum(sides, max(int(core), int(psf.size)))
    none = np.zeros(0, dtype=np.int64)
    outer = Stamps.empty(0, none)
    if not ext.any():
        st, x0, y0 = psf.stamps(x[order], y[order])  # type: ignore[attr-defined]
        return Rendered(Stamps.from_square(st, x0, y0), sides, outer, none, capped)
    out = Stamps.empty(n, fit_sides[order])
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    pts = np.flatnonzero(~ext)
    if pts.size:
        st, x0, y0 = psf.stamps(x[pts], y[pts])  # type: ignore[attr-defined]
        out.put(pos[pts], st, x0, y0)
    cut = np.flatnonzero(ext & (fit_sides < sides))
    outer = Stamps.empty(cut.size, sides[cut])
    for k in np.unique(sides[ext]):
        grp = np.flatnonzero(ext & (sides == k))
        st, x0, y0 = _galaxy_stamps(psf, x[grp], y[grp], shapes, grp, int(k))
        kc = int(fit_sides[grp[0]])
        if kc == k:
            out.put(pos[grp], st, x0, y0)
            continue
        o = (k - kc) // 2
        out.put(pos[grp], np.ascontiguousarray(st[:, o:o + kc, o:o + kc]), x0 + o, y0 + o)
        st[:, o:o + kc, o:o + kc] = 0.0
        outer.put(np.searchsorted(cut, grp), st, x0, y0)
    return Rendered(out, sides, outer, cut, capped)


def _galaxy_stamps(psf: object, x: np.ndarray, y: np.ndarray, shapes: Shapes,
                   rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Galaxies sharing stamp side ``k``: for an oversampled PSF, its exact point stamp
    plus the Fourier-rendered extension; for a PSF on the image grid (whose continuous
    form is its band-limited interpolation), the whole model from its transform."""
    m = x.shape[0]
    cx = np.floor(x + 0.5)
    cy = np.floor(y + 0.5)
    fine = isinstance(psf, OversampledPSF)
    # the PSF's light out to the galaxy's stamp edge (an oversampled PSF's wings are known)
    point = psf.stamps(x, y, size=k)[0] if fine else np.zeros((m, 1, 1))
    tr = psf.transfer(k).half()  # type: ignore[attr-defined]
    bidx, bw = _basis_weights(psf, x, y)
    table = fourier_table()
    nidx, nw = _n_weights(table, shapes.n[rows])
    spec = np.zeros((m, k, k // 2 + 1), dtype=np.complex128)
    _extension_spectra(tr.ux, tr.uy, tr.jx, tr.jy, tr.rhat, k, tr.n, x - cx, y - cy,
                       shapes.r_e[rows], shapes.q[rows], np.deg2rad(shapes.theta[rows]),
                       nidx, nw, bidx, bw, table.values, table.lt0, table.dlt,
                       1.0 if fine else 0.0, spec)
    ext = scipy.fft.irfft2(spec, s=(k, k), axes=(1, 2), overwrite_x=True)
    st = _centre_and_add(ext, point)
    return st, cx.astype(np.int64) - k // 2, cy.astype(np.int64) - k // 2


@numba.njit(cache=True)
def _centre_and_add(ext: np.ndarray, point: np.ndarray) -> np.ndarray:
    """Roll the DFT's offsets (0 first) to the stamp centre and add the point stamps."""
    m, k = ext.shape[0], ext.shape[1]
    kp = point.shape[1]
    h = k // 2
    o = h - kp // 2
    out = np.empty((m, k, k))
    for g in range(m):
        for r in range(k):
            rr = (r - h) % k
            for c in range(k):
                out[g, r, c] = ext[g, rr, (c - h) % k]
        for r in range(kp):
            for c in range(kp):
                out[g, r + o, c + o] += point[g, r, c]
    return out


def _basis_weights(psf: object, x: np.ndarray, y: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of the transfer rows to blend at each position."""
    if hasattr(psf, "weights"):
        idx, w = psf.weights(x, y)  # type: ignore[attr-defined]
        return np.ascontiguousarray(idx, dtype=np.int64), np.ascontiguousarray(w)
    idx = np.zeros((x.shape[0], 3), dtype=np.int64)
    w = np.zeros((x.shape[0], 3))
    w[:, 0] = 1.0
    return idx, w


def _n_weights(table: SersicTable, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = (n - table.n0) / table.dn
    i = np.clip(np.floor(f).astype(np.int64), 0, table.values.shape[0] - 2)
    return i, np.clip(f - i, 0.0, 1.0)


@numba.njit(cache=True)
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


@numba.njit(cache=True)
def _extension_spectra(ux: np.ndarray, uy: np.ndarray, jx: np.ndarray, jy: np.ndarray,
                       rhat: np.ndarray, k: int, n: int, dx: np.ndarray, dy: np.ndarray,
                       r_e: np.ndarray, q: np.ndarray, theta: np.ndarray, nidx: np.ndarray,
                       nw: np.ndarray, bidx: np.ndarray, bw: np.ndarray, table: np.ndarray,
                       lt0: float, dlt: float, point: float, out: np.ndarray) -> None:
    """Accumulate ``(F_n(t) - point) R^ exp(-2 pi i nu.d)`` of each galaxy onto its stamp
    bins (``point`` 1: the extension beyond a point source; 0: the whole model)."""
    npts = ux.shape[0]
    nt = table.shape[1]
    nb = rhat.shape[0]
    px = np.empty(n, dtype=np.complex128)
    py = np.empty(n, dtype=np.complex128)
    off = n // 2
    tiny = math.exp(2.0 * lt0)
    for g in range(dx.shape[0]):
        _phases(dx[g], k, n, px)
        _phases(dy[g], k, n, py)
        c, s = math.cos(theta[g]), math.sin(theta[g])
        r2 = (r_e[g] / k) ** 2
        q2 = q[g] * q[g]
        a = r2 * (c * c + q2 * s * s)
        b = r2 * c * s * (1.0 - q2)
        cc = r2 * (s * s + q2 * c * c)
        row0 = table[nidx[g]]
        row1 = table[nidx[g] + 1]
        wn = nw[g]
        spec = out[g]
        for p in range(npts):
            fx = float(ux[p])
            fy = float(uy[p])
            t2 = a * fx * fx + 2.0 * b * fx * fy + cc * fy * fy
            if t2 <= tiny:
                if point == 1.0:
                    continue
                g1 = 1.0 - point
            else:
                fj = (0.5 * math.log(t2) - lt0) / dlt
                j = int(fj)
                if j >= nt - 1:
                    g1 = -point
                else:
                    wt = fj - j
                    f0 = row0[j] + wt * (row0[j + 1] - row0[j])
                    f1 = row1[j] + wt * (row1[j + 1] - row1[j])
                    g1 = f0 + wn * (f1 - f0) - point
            if nb == 1:
                r = rhat[0, p]
            else:
                r = (bw[g, 0] * rhat[bidx[g, 0], p] + bw[g, 1] * rhat[bidx[g, 1], p]
                     + bw[g, 2] * rhat[bidx[g, 2], p])
            spec[jy[p], jx[p]] += g1 * r * px[ux[p] + off] * py[uy[p] + off]
