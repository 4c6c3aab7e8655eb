"""Compiled kernels of the engine on whole images: the model image
(:func:`scatter_model`) and per-source footprint statistics (pixel counts from a
summed-area table; the reference statistics of :func:`footprint_stats`).

All functions here are pure numba functions of arrays. Stamps are ragged
(:class:`dask_phot.models.stamps.Stamps`): stamp ``i`` is the ``h[i] x w[i]``
array ``data[ptr[i]:ptr[i+1]]`` whose first pixel sits at image column ``x0[i]``
and row ``y0[i]``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "fill_sky",
    "footprint_counts",
    "footprint_stats",
    "scatter_into",
    "scatter_model",
]


def scatter_model(
    data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray, x0: np.ndarray,
    y0: np.ndarray, flux: np.ndarray, shape: tuple,
) -> np.ndarray:
    """Sum ``flux[i] * stamp_i`` into an image of ``shape`` (NaN fluxes skipped).

    The image is allocated by numpy (huge pages for large arrays: first-touch page
    faults cost less than on numba's allocation); the sum runs without the GIL.
    """
    out = np.zeros((int(shape[0]), int(shape[1])))
    scatter_into(data, ptr, w, h, x0, y0, flux, out)
    return out


@numba.njit(cache=True, nogil=True)
def scatter_into(
    data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray, x0: np.ndarray,
    y0: np.ndarray, flux: np.ndarray, out: np.ndarray,
) -> None:
    """Add ``flux[i] * stamp_i`` to the image ``out`` (NaN fluxes skipped).

    Rows and columns are clipped to the image before the loops, and the pixels are
    indexed with unsigned integers, so numba adds no negative-index test per pixel.
    """
    u = np.uint64
    ny, nx = out.shape
    for i in range(w.shape[0]):
        f = flux[i]
        if not math.isfinite(f):
            continue
        cs, ce = max(0, -x0[i]), min(w[i], nx - x0[i])
        if cs >= ce:
            continue
        for r in range(max(0, -y0[i]), min(h[i], ny - y0[i])):
            orow = out[u(y0[i] + r)]
            o = ptr[i] + r * w[i] - x0[i]
            for xx in range(x0[i] + cs, x0[i] + ce):
                orow[u(xx)] += f * data[u(o + xx)]


@numba.njit(cache=True, nogil=True)
def footprint_counts(
    x0: np.ndarray, y0: np.ndarray, w: np.ndarray, h: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The counts of :func:`footprint_stats`, ``(n_usable, n_masked, n_outside)``.

    Exact box counts of the footprints from a summed-area table of the usable
    (weight > 0) pixels.
    """
    n = x0.shape[0]
    ny, nx = weight.shape
    sat = np.zeros((ny + 1, nx + 1), dtype=np.int64)
    for yy in range(ny):
        run = 0
        wrow = weight[yy]
        above = sat[yy]
        row = sat[yy + 1]
        for xx in range(nx):
            if wrow[xx] > 0.0:
                run += 1
            row[xx + 1] = above[xx + 1] + run
    nuse = np.zeros(n, dtype=np.int64)
    nmask = np.zeros(n, dtype=np.int64)
    nout = np.zeros(n, dtype=np.int64)
    for i in range(n):
        xs, xe = min(max(x0[i], 0), nx), max(min(x0[i] + w[i], nx), 0)
        ys, ye = min(max(y0[i], 0), ny), max(min(y0[i] + h[i], ny), 0)
        inside = max(xe - xs, 0) * max(ye - ys, 0)
        nout[i] = w[i] * h[i] - inside
        if inside > 0:
            nuse[i] = sat[ye, xe] - sat[ys, xe] - sat[ye, xs] + sat[ys, xs]
        nmask[i] = inside - nuse[i]
    return nuse, nmask, nout


@numba.njit(cache=True, nogil=True)
def footprint_stats(
    x0: np.ndarray, y0: np.ndarray, w: np.ndarray, h: np.ndarray, weight: np.ndarray,
    resid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-source footprint statistics over the image, pixel by pixel (the reference
    for :func:`footprint_counts` and
    :func:`dask_phot.engine.mismatch.mismatch_and_chi2`'s chi-square sums).

    Returns ``(n_usable, n_masked, n_outside, chi2sum)``: usable pixels
    (weight > 0), masked pixels inside the image, stamp pixels outside the
    image, and ``sum(weight * resid**2)`` over usable pixels.
    """
    n = x0.shape[0]
    ny, nx = weight.shape
    nuse = np.zeros(n, dtype=np.int64)
    nmask = np.zeros(n, dtype=np.int64)
    nout = np.zeros(n, dtype=np.int64)
    chi = np.zeros(n)
    for i in range(n):
        for r in range(h[i]):
            yy = y0[i] + r
            for c in range(w[i]):
                xx = x0[i] + c
                if yy < 0 or yy >= ny or xx < 0 or xx >= nx:
                    nout[i] += 1
                    continue
                wv = weight[yy, xx]
                if wv > 0.0:
                    nuse[i] += 1
                    chi[i] += wv * resid[yy, xx] * resid[yy, xx]
                else:
                    nmask[i] += 1
    return nuse, nmask, nout, chi


def fill_sky(cores: np.ndarray, regions: np.ndarray, sky: np.ndarray, nsky: int,
             shape: tuple, out: np.ndarray | None = None) -> np.ndarray:
    """Image of tile skies: ``sky[p, 0]`` (plus the plane ``sky[p, 1:3]`` about the centre
    of region ``p`` when ``nsky > 1``) on the pixels of each tile's core (0 elsewhere);
    added to ``out`` in place when given (no new image)."""
    if out is None:
        out = np.zeros((int(shape[0]), int(shape[1])))
    _fill_sky_into(cores, regions, sky, nsky, out)
    return out


@numba.njit(cache=True, nogil=True)
def _fill_sky_into(cores: np.ndarray, regions: np.ndarray, sky: np.ndarray, nsky: int,
                   out: np.ndarray) -> None:
    """Add :func:`fill_sky`'s values to the image ``out``."""
    for p in range(cores.shape[0]):
        x0, x1, y0, y1 = cores[p, 0], cores[p, 1], cores[p, 2], cores[p, 3]
        if nsky == 1:
            out[y0:y1, x0:x1] += sky[p, 0]
            continue
        rx0, rx1, ry0, ry1 = regions[p, 0], regions[p, 1], regions[p, 2], regions[p, 3]
        xc = 0.5 * (rx0 + rx1 - 1)
        yc = 0.5 * (ry0 + ry1 - 1)
        half = max(0.5 * (rx1 - rx0), 0.5 * (ry1 - ry0), 1.0)
        for yy in range(y0, y1):
            for xx in range(x0, x1):
                out[yy, xx] += sky[p, 0] + (sky[p, 1] * (xx - xc) / half
                                            + sky[p, 2] * (yy - yc) / half)
