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

import weakref
from dataclasses import dataclass

import numpy as np
import scipy.fft

from dask_phot.models._spectra import SpectraLayout, galaxy_spectra, place_galaxies, spectra_layout
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
    # indices repeat (catalogues quantise them): one gammaincinv per distinct n
    n_values, n_index = np.unique(shapes.n[ext], return_inverse=True)
    reach = shapes.r_e[ext] * radius_fraction(n_values, fraction)[n_index.ravel()] \
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
        the fitted core zeroed, the light the fit leaves out (single precision).
    outer_index : ndarray of int
        Sources whose model was cut.
    capped : ndarray of bool
        Per source: the model itself was cut to ``max_size``.
    outer_hole : ndarray of int, optional
        Per stamp of ``outer``: the side of its central box, which is zero (the fitted
        core); None when not known (outskirts made elsewhere).
    """

    stamps: Stamps
    sides: np.ndarray
    outer: Stamps
    outer_index: np.ndarray
    capped: np.ndarray
    outer_hole: np.ndarray | None = None


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
    if pts.size and isinstance(psf, OversampledPSF):  # (straight into the buffer)
        rows = pos[pts]
        out.x0[rows], out.y0[rows] = psf.stamps_into(x[pts], y[pts], out.data, out.ptr[rows])
    elif pts.size:
        st, x0, y0 = psf.stamps(x[pts], y[pts])  # type: ignore[attr-defined]
        out.put(pos[pts], st, x0, y0)
    cut = np.flatnonzero(ext & (fit_sides < sides))
    # the outskirts beyond the fitted cores are only subtracted (with a first fit's
    # fluxes, themselves uncertain far beyond single-precision rounding): float32
    outer = Stamps.empty(cut.size, sides[cut], dtype=np.float32)
    for k in np.unique(sides[ext]):
        grp = _by_phase(x, y, np.flatnonzero(ext & (sides == k)))
        # in chunks of ~1M pixels: the work arrays stay in cache, and their memory is
        # reused from chunk to chunk instead of faulted in afresh
        step = max(1, _CHUNK_PIXELS // int(k * k))
        for c in range(0, grp.size, step):
            _render_group(psf, x, y, shapes, grp[c:c + step], int(k),
                          int(fit_sides[grp[0]]), pos, cut, out, outer)
    return Rendered(out, sides, outer, cut, capped, fit_sides[cut])


#: Pixels of the galaxy stamps rendered at a time.
_CHUNK_PIXELS = 1 << 20


def _by_phase(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sources ``idx`` ordered by their sub-pixel phase (1/64-pixel cells, rows first):
    galaxies rendered one after the other then read the same stamps of an oversampled
    PSF's phase table (megabytes, read from memory otherwise). The order does not change
    any galaxy's model."""
    fx = np.floor((x[idx] - np.floor(x[idx] + 0.5) + 0.5) * 64.0)
    fy = np.floor((y[idx] - np.floor(y[idx] + 0.5) + 0.5) * 64.0)
    cell = np.clip(np.nan_to_num(fy * 65.0 + fx), 0, 65 * 65).astype(np.int16)
    return idx[np.argsort(cell, kind="stable")]  # (a radix sort for 16-bit keys)


def _render_group(psf: object, x: np.ndarray, y: np.ndarray, shapes: Shapes,
                  grp: np.ndarray, k: int, kc: int, pos: np.ndarray, cut: np.ndarray,
                  out: Stamps, outer: Stamps) -> None:
    """Render galaxies ``grp`` (input order), whose models are ``k x k`` and fitted
    stamps ``kc x kc``, into their stamps of ``out`` (rows ``pos[grp]``) and, when
    ``kc < k``, their outskirts into ``outer`` (rows: their places in ``cut``). For an
    oversampled PSF the model is its exact point stamp (rendered only out to where the
    PSF has light) plus the extension; for a PSF on the image grid (whose continuous
    form is its band-limited interpolation), the whole model comes from its transform."""
    spec, x0, y0 = _galaxy_spectra(psf, x[grp], y[grp], shapes, grp, k)
    o = (k - kc) // 2
    rows = pos[grp]
    orows = np.searchsorted(cut, grp) if kc < k else np.zeros(grp.size, dtype=np.int64)
    ext_img = scipy.fft.irfft2(spec, s=(k, k), axes=(1, 2), overwrite_x=True)
    if isinstance(psf, OversampledPSF):
        grid, prf, pcx, pcy, s = psf.point_tables()
        kp = min(k, psf.light_side)
    else:
        grid, prf, pcx, pcy, s, kp = np.zeros((2, 2, 1, 1)), np.zeros((1, 1)), 0.0, 0.0, 1, 0
    xg, yg = x[grp], y[grp]
    place_galaxies(ext_img, grid, prf, pcx, pcy, s, kp, xg - np.floor(xg + 0.5),
                   yg - np.floor(yg + 0.5), rows, kc, out.data, out.ptr, orows, outer.data,
                   outer.ptr if kc < k else out.ptr)
    out.x0[rows], out.y0[rows] = x0 + o, y0 + o
    if kc < k:
        outer.x0[orows], outer.y0[orows] = x0, y0


def _galaxy_spectra(psf: object, x: np.ndarray, y: np.ndarray, shapes: Shapes,
                    rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Galaxies sharing stamp side ``k``: the half spectra (single precision) of their
    Fourier-rendered part (the extension beyond a point for an oversampled PSF, the
    whole model otherwise) and the stamps' corners."""
    m = x.shape[0]
    cx = np.floor(x + 0.5)
    cy = np.floor(y + 0.5)
    fine = isinstance(psf, OversampledPSF)
    lay = _layout(psf.transfer(k).half())  # type: ignore[attr-defined]
    bidx, bw = _basis_weights(psf, x, y)
    table = fourier_table()
    nidx, nw = _n_weights(table, shapes.n[rows])
    spec = np.empty((m, k, k // 2 + 1), dtype=np.complex64)  # (every bin is written)
    galaxy_spectra(*lay, k, x - cx, y - cy, shapes.r_e[rows], shapes.q[rows],
                   np.deg2rad(shapes.theta[rows]), nidx, nw, bidx, bw, table.values,
                   table.lt0, table.dlt, 1.0 if fine else 0.0, k // 2, spec)
    return spec, cx.astype(np.int64) - k // 2, cy.astype(np.int64) - k // 2


#: Spectra layouts of the half transfers in use, by ``id``; an entry goes with its
#: transfer (which the PSFs cache).
_LAYOUTS: dict[int, tuple[weakref.ref, SpectraLayout]] = {}


def _layout(tr: object) -> SpectraLayout:
    """The :class:`SpectraLayout` of a half transfer (computed once per transfer)."""
    key = id(tr)
    hit = _LAYOUTS.get(key)
    if hit is None or hit[0]() is not tr:
        lay = spectra_layout(tr.ux, tr.uy, tr.rhat, tr.k)  # type: ignore[attr-defined]
        _LAYOUTS[key] = (weakref.ref(tr, lambda _, key=key: _LAYOUTS.pop(key, None)), lay)
        return lay
    return hit[1]


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
