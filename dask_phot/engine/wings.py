"""The light a fit leaves out: PSF wings and the outskirts of large galaxies.

The fit uses compact stamps (the PSF's core box, ``psf.size``), because the
cost of a joint fit grows with the fourth power of the stamp side. A PSF with
extended wings (IRAC's hold ~7% of the light beyond a 21-pixel box) would then
leave that light unmodelled: it lands in the neighbours' stamps and in the
fitted sky. :func:`wing_image` renders it instead, from fluxes of a first fit:
each source's wings (its PSF out to ``psf.wing_size``, minus the box its own
stamp covers, placed at its nearest pixel: the wings are smooth on the scale of a
pixel; a bright source's at its own phase, since that half-pixel shift errs by up
to 6e-4 of the peak pixel at the box's edge, 5 sigma at S/N 20,000) and the
outskirts of galaxies whose models were cut to the core.
The engine subtracts that image and fits again, so every pixel of every
stamp is modelled. The first fit's errors enter the wings only at a few per
cent of their size: one iteration is enough.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from dask_phot.engine import _kernels as K
from dask_phot.models.render import Rendered, render_sources
from dask_phot.models.shapes import Shapes
from dask_phot.models.stamps import Stamps
from dask_phot.psf import OversampledPSF

__all__ = ["has_wings", "model_image", "wing_image"]


def has_wings(psf: object | None, rendered: Rendered) -> bool:
    """Whether a fit with these stamps leaves light out (``psf`` None: no PSF wings)."""
    wings = psf is not None and int(getattr(psf, "wing_size", 0) or 0) > int(psf.size)
    return wings or rendered.outer_index.size > 0  # type: ignore[attr-defined]


def wing_image(psf: object | None, rendered: Rendered, x: np.ndarray, y: np.ndarray,
               flux: np.ndarray, shape: tuple[int, int], exact: np.ndarray | None = None
               ) -> np.ndarray:
    """Image of the light each source's fitted stamp leaves out (see the module docstring).

    ``x, y, flux`` are in input order; NaN fluxes add nothing. ``exact`` marks the
    sources whose wings are rendered at their own phase (an oversampled PSF's) rather
    than at the nearest pixel.
    """
    out = np.zeros(shape)
    f = np.where(np.isfinite(flux), flux, 0.0)
    if rendered.outer_index.size:  # (no hole: every stamp pixel added)
        hole = (rendered.outer_hole if rendered.outer_hole is not None
                else np.zeros(rendered.outer_index.size, dtype=np.int64))
        _scatter_holed(*rendered.outer.arrays, hole, f[rendered.outer_index], out)
    if psf is None:
        return out
    wing = int(getattr(psf, "wing_size", 0) or 0)
    if wing <= int(psf.size):  # type: ignore[attr-defined]
        return out
    inner = rendered.sides
    core = int(psf.size)  # type: ignore[attr-defined]
    # point sources and galaxies within the core: the core's wing kernel; larger galaxies
    # (few): the wings beyond their own stamps
    phased = np.zeros(f.shape, dtype=bool) if exact is None or not isinstance(
        psf, OversampledPSF) else np.asarray(exact, dtype=bool)
    for k in np.unique(inner[(inner >= core) & (inner < wing)]):
        sel = (inner == k) & (f != 0)
        near = sel & ~phased
        if near.any():
            cx = np.floor(x[near] + 0.5).astype(np.int64)
            cy = np.floor(y[near] + 0.5).astype(np.int64)
            # row by row down the image: the rows a kernel adds to stay in cache
            rows = np.argsort(cy, kind="stable")
            kern = psf.wing_kernel(int(k))  # type: ignore[attr-defined]
            sides = np.full(rows.size, kern.shape[0], dtype=np.int64)
            _scatter_holed(kern.ravel(), np.zeros(rows.size + 1, dtype=np.int64), sides, sides,
                           cx[rows] - kern.shape[0] // 2, cy[rows] - kern.shape[0] // 2,
                           np.full(rows.size, int(k), dtype=np.int64), f[near][rows], out)
        if (sel & phased).any():
            _add_phased_wings(psf, x[sel & phased], y[sel & phased], f[sel & phased],
                              int(k), out)
    return out


def _add_phased_wings(psf: OversampledPSF, x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                      inner: int, out: np.ndarray) -> None:
    """Add to ``out`` the wings beyond a central ``inner`` box of sources at their own
    phases."""
    st, x0, y0 = psf.stamps(x, y, size=psf.wing_size)
    o = (psf.wing_size - inner) // 2
    st[:, o:o + inner, o:o + inner] = 0.0
    _scatter_holed(*Stamps.from_square(st, x0, y0).arrays,
                   np.full(x.shape[0], inner, dtype=np.int64), flux, out)


@numba.njit(cache=True, nogil=True)
def _scatter_holed(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
                   x0: np.ndarray, y0: np.ndarray, hole: np.ndarray, flux: np.ndarray,
                   out: np.ndarray) -> None:
    """Add ``flux[i] * stamp_i`` to the image ``out`` (clipped at its edges; zero and
    non-finite fluxes add nothing), skipping each stamp's central ``hole[i]`` box,
    which is zero (the wings and outskirts around a fitted stamp): the same sums as
    :func:`dask_phot.engine._image.scatter_into`, without adding the zeros. Stamps may
    share their pixels (``ptr`` all 0: one kernel at many places)."""
    ny, nx = out.shape
    for i in range(w.shape[0]):
        f = flux[i]
        if f == 0.0 or not math.isfinite(f):
            continue
        wi = w[i]
        cs, ce = max(0, -x0[i]), min(wi, nx - x0[i])
        if cs >= ce:
            continue
        hx0 = (wi - hole[i]) // 2
        hx1 = hx0 + hole[i]
        hy0 = (h[i] - hole[i]) // 2
        hy1 = hy0 + hole[i]
        for r in range(max(0, -y0[i]), min(h[i], ny - y0[i])):
            orow = out[y0[i] + r]
            srow = data[ptr[i] + r * wi:ptr[i] + (r + 1) * wi]
            if hy0 <= r < hy1:  # left and right of the hole
                _add_row(orow, srow, f, x0[i], cs, min(ce, hx0))
                _add_row(orow, srow, f, x0[i], max(cs, hx1), ce)
            else:
                _add_row(orow, srow, f, x0[i], cs, ce)


@numba.njit(cache=True, nogil=True, inline="always")
def _add_row(orow: np.ndarray, srow: np.ndarray, f: float, x0: int, c0: int, c1: int
             ) -> None:
    """``orow[x0 + c] += f * srow[c]`` for ``c0 <= c < c1``."""
    if c1 <= c0:
        return
    dst = orow[x0 + c0:x0 + c1]
    src = srow[c0:c1]
    for c in range(c1 - c0):
        dst[c] += f * src[c]


def model_image(shape: tuple[int, int], psf: object, x: np.ndarray, y: np.ndarray,
                flux: np.ndarray, shapes: Shapes | None = None) -> np.ndarray:
    """Image of sources of given fluxes, each through its whole model: points and galaxies
    out to their stamps' edges, and the PSF's wings (NaN fluxes add nothing).

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> img = model_image((21, 21), gaussian_psf(2.0, size=11), np.array([10.0]),
    ...                   np.array([10.0]), np.array([5.0]))
    >>> round(float(img.sum()), 6)
    5.0
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    f = np.where(np.isfinite(flux) & np.isfinite(x) & np.isfinite(y), flux, np.nan)
    rendered = render_sources(psf, np.nan_to_num(x, nan=-1e9), np.nan_to_num(y, nan=-1e9),
                              shapes)
    out = K.scatter_model(*rendered.stamps.arrays, f, shape)
    return out + wing_image(psf, rendered, x, y, f, shape)
