"""Circular-aperture photometry with a sigma-clipped annulus background, and FWHMs.

:func:`aperture_photometry` sums the image in circles of several radii (``sep``'s
exact-overlap sums), subtracts a local background (the sigma-clipped median of
the pixels in an annulus, :func:`annulus_background`) and reports errors from the
noise map, the Poisson term of the source (with a ``gain``) and the uncertainty
of the background level. :func:`radial_fwhm` measures each source's FWHM from
its azimuthally averaged radial profile.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from astropy.stats import sigma_clipped_stats

from dask_phot._optional import require
from dask_phot.aperture._common import check_radii, column_suffix, positions, prepare

__all__ = ["annulus_background", "aperture_photometry", "radial_fwhm"]

logger = logging.getLogger(__name__)

#: Sources per batch when gathering pixels around positions (bounds memory).
_BATCH = 4096


def _pixels_around(image: np.ndarray, bad: np.ndarray, x: np.ndarray, y: np.ndarray,
                   half: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values, distance)`` of the ``(2 half + 1)^2`` pixels nearest each position;
    values are NaN off the image or on bad pixels."""
    off = np.arange(-half, half + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
    cx, cy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    ix, iy = cx[:, None] + dx[None, :], cy[:, None] + dy[None, :]
    ny, nx = image.shape
    inside = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
    ixc, iyc = np.clip(ix, 0, nx - 1), np.clip(iy, 0, ny - 1)
    values = np.where(inside & ~bad[iyc, ixc], image[iyc, ixc], np.nan)
    dist = np.hypot(ix - x[:, None], iy - y[:, None])
    return values, dist


def annulus_background(
    data: Any, x: Any, y: Any, r_in: float, r_out: float, *, mask: Any = None,
    sigma: float = 3.0, maxiters: int = 5, min_pixels: int = 10,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sigma-clipped median and standard deviation of the pixels in an annulus.

    Pixels whose centres lie at ``r_in <= r < r_out`` from a position are used;
    non-finite and masked pixels are left out.

    Parameters
    ----------
    data : array_like
        2-D image.
    x, y : array_like
        0-based positions (column, row).
    r_in, r_out : float
        Annulus radii, pixels.
    mask : array_like of bool, optional
        True where pixels are bad (e.g. other sources' segments).
    sigma, maxiters : float, int
        Clipping (:func:`astropy.stats.sigma_clipped_stats`).
    min_pixels : int
        Fewer usable pixels give NaN.

    Returns
    -------
    median, std : ndarray
        Per position, image units per pixel (NaN with too few pixels).
    n : ndarray of int
        Usable pixels in each annulus (before clipping).

    Examples
    --------
    >>> img = np.random.default_rng(0).normal(3.0, 1.0, (64, 64))
    >>> med, std, n = annulus_background(img, [32.0], [32.0], 10, 15)
    >>> round(float(med[0]), 1), round(float(std[0]), 1), int(n[0]) > 300
    (3.0, 1.0, True)
    """
    if not 0 <= r_in < r_out:
        raise ValueError(f"annulus radii must satisfy 0 <= r_in < r_out, got {r_in}, {r_out}")
    xa, ya = positions(x, y)
    arr = np.asarray(data, dtype=np.float64)
    bad = ~np.isfinite(arr) if mask is None else ~np.isfinite(arr) | np.asarray(mask, bool)
    med, std = np.full(len(xa), np.nan), np.full(len(xa), np.nan)
    count = np.zeros(len(xa), dtype=np.int64)
    half = math.ceil(r_out) + 1
    for start in range(0, len(xa), _BATCH):
        sl = slice(start, start + _BATCH)
        values, dist = _pixels_around(arr, bad, xa[sl], ya[sl], half)
        values[(dist < r_in) | (dist >= r_out)] = np.nan
        n = np.isfinite(values).sum(axis=1)
        count[sl] = n
        ok = n >= min_pixels
        if ok.any():
            vals = values[ok]
            _, m, s = sigma_clipped_stats(vals, mask=~np.isfinite(vals), axis=1, sigma=sigma,
                                          maxiters=maxiters)
            med[sl][ok], std[sl][ok] = m, s
    return med, std, count


def aperture_photometry(
    data: Any,
    x: Any,
    y: Any,
    *,
    radii: Sequence[float] = (2.0, 4.0, 6.0, 8.0, 10.0),
    annulus: tuple[float, float] | None = (10.0, 15.0),
    background: Any = None,
    rms: Any = None,
    weight: Any = None,
    mask: Any = None,
    annulus_mask: Any = None,
    gain: float | None = None,
    clip_sigma: float = 3.0,
    subpix: int = 0,
) -> pd.DataFrame:
    """Fluxes in circular apertures, with a local annulus background and errors.

    Parameters
    ----------
    data : array_like
        2-D image.
    x, y : array_like
        0-based positions (column, row; pixel centres at integers).
    radii : sequence of float
        Aperture radii, pixels.
    annulus : (float, float) or None
        Inner and outer radius of the local-background annulus; None for no local
        background (use ``background`` alone, as SExtractor's ``BACKPHOTO_TYPE GLOBAL``).
    background : float or array_like, optional
        Background subtracted before anything else (e.g. ``BackgroundMap.back``).
    rms : float or array_like, optional
        Per-pixel 1-sigma noise; default ``1/sqrt(weight)``; neither: no errors (NaN).
    weight : array_like, optional
        Inverse-variance map; 0 marks bad pixels.
    mask : array_like of bool, optional
        Bad pixels: in an aperture they are replaced by the mean of the good ones
        (flag bit 32), in the annulus left out.
    annulus_mask : array_like of bool, optional
        Further pixels left out of the annulus only (e.g. ``segmap > 0``).
    gain : float, optional
        Poisson counts (electrons) per image unit; adds the source's Poisson noise.
    clip_sigma : float
        Sigma clipping of the annulus pixels.
    subpix : int
        Sub-pixel sampling of the aperture edge; 0 computes exact overlaps.

    Returns
    -------
    pandas.DataFrame
        Per position, in input order: ``flux_aper_<r>``, ``flux_err_aper_<r>`` and
        ``flag_aper_<r>`` (sep's bits: 16 truncated by the image edge, 32 masked
        pixels, 64 all masked) for each radius (``<r>`` as in ``2``, ``2p5``), and
        ``bkg_annulus``, ``bkg_annulus_std``, ``n_annulus`` (0 and NaN without an
        annulus). Fluxes are in image units x pixel, background-subtracted.

    Examples
    --------
    >>> img = np.zeros((40, 40)); img[20, 20] = 100.0
    >>> t = aperture_photometry(img + 5.0, [20.0], [20.0], radii=[3], annulus=(8, 12),
    ...                         rms=1.0)
    >>> round(float(t["flux_aper_3"][0]), 6), round(float(t["bkg_annulus"][0]), 6)
    (100.0, 5.0)
    >>> round(float(t["flux_err_aper_3"][0]), 3)  # sqrt(pi 3^2): the annulus is flat
    5.317
    """
    sep = require("sep")
    xa, ya = positions(x, y)
    radii = check_radii(radii)
    prep = prepare(data, background=background, rms=rms, weight=weight, mask=mask)
    out: dict[str, np.ndarray] = {}
    n = len(xa)
    bkg, bstd, nann = np.zeros(n), np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    if annulus is not None:
        ann_bad = prep.bad if annulus_mask is None else prep.bad | np.asarray(annulus_mask, bool)
        raw = np.where(prep.bad, np.nan, prep.data)
        bkg, bstd, nann = annulus_background(raw, xa, ya, annulus[0], annulus[1],
                                             mask=ann_bad, sigma=clip_sigma)
    ones = np.ones_like(prep.data)
    for r in radii:
        s = column_suffix(r)
        flux, err, flag = sep.sum_circle(prep.data, xa, ya, r, err=prep.err, gain=gain,
                                         mask=prep.mask, subpix=subpix)
        area = sep.sum_circle(ones, xa, ya, r, subpix=subpix)[0]  # pixels on the image
        flux = flux - bkg * area
        var_bkg = np.zeros(n)
        if annulus is not None:
            # variance of a median of n pixels: (pi/2) sigma^2 / n
            var_bkg = np.where(nann > 0, area**2 * bstd**2 * (math.pi / 2) / np.maximum(nann, 1),
                               np.nan)
        total = np.sqrt(err**2 + var_bkg) if prep.err is not None else np.full(n, np.nan)
        out[f"flux_aper_{s}"] = np.where(np.isfinite(bkg), flux, np.nan)
        out[f"flux_err_aper_{s}"] = total
        out[f"flag_aper_{s}"] = flag.astype(np.int16)
    out["bkg_annulus"], out["bkg_annulus_std"], out["n_annulus"] = bkg, bstd, nann
    table = pd.DataFrame(out)
    table.attrs["aperture_radii"] = list(radii)
    return table


def radial_fwhm(data: Any, x: Any, y: Any, *, background: Any = None, mask: Any = None,
                r_max: float = 10.0, bin_width: float = 0.5) -> np.ndarray:
    """FWHM from each source's azimuthally averaged radial profile.

    The profile is the mean of the (background-subtracted) pixels in rings of
    ``bin_width`` around the position; the FWHM is twice the radius at which it
    first falls to half its central value, linearly interpolated between rings.
    It is the FWHM of the pixel-sampled image (a point source's equals the
    PRF's, ``dask_phot.psf.PixelPSF.fwhm``, to ~5%).

    Parameters
    ----------
    data : array_like
        2-D image.
    x, y : array_like
        0-based positions.
    background : float or array_like, optional
        Subtracted first.
    mask : array_like of bool, optional
        Bad pixels (left out).
    r_max : float
        Largest radius searched, pixels; NaN when the profile stays above half.
    bin_width : float
        Ring width, pixels.

    Returns
    -------
    ndarray
        FWHM in pixels (NaN where not measurable).

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> from dask_phot.testing import simulate_image
    >>> im = simulate_image((41, 41), [20.0], [20.0], [1e4], gaussian_psf(4.0), seed=0,
    ...                     sigma=0.01)
    >>> round(float(radial_fwhm(im.data, [20.0], [20.0])[0]), 1)
    4.1
    """
    xa, ya = positions(x, y)
    arr = np.asarray(data, dtype=np.float64)
    if background is not None:
        arr = arr - np.asarray(background, dtype=np.float64)
    bad = ~np.isfinite(arr) if mask is None else ~np.isfinite(arr) | np.asarray(mask, bool)
    nbins = math.ceil(r_max / bin_width) + 1
    fwhm = np.full(len(xa), np.nan)
    for start in range(0, len(xa), _BATCH):
        sl = slice(start, start + _BATCH)
        values, dist = _pixels_around(arr, bad, xa[sl], ya[sl], math.ceil(r_max) + 1)
        fwhm[sl] = _half_max_radius(values, dist, bin_width, nbins) * 2.0
    return fwhm


def _half_max_radius(values: np.ndarray, dist: np.ndarray, width: float,
                     nbins: int) -> np.ndarray:
    n = values.shape[0]
    b = np.minimum((dist / width).astype(np.int64), nbins)  # bin nbins collects the rest
    ok = np.isfinite(values)
    idx = (np.arange(n)[:, None] * (nbins + 1) + b)[ok]
    sums = np.bincount(idx, values[ok], n * (nbins + 1)).reshape(n, nbins + 1)[:, :nbins]
    cnt = np.bincount(idx, None, n * (nbins + 1)).reshape(n, nbins + 1)[:, :nbins]
    rsum = np.bincount(idx, dist[ok], n * (nbins + 1)).reshape(n, nbins + 1)[:, :nbins]
    with np.errstate(invalid="ignore", divide="ignore"):
        prof, rad = sums / cnt, rsum / cnt
    out = np.full(n, np.nan)
    for i in range(n):
        good = cnt[i] > 0
        p, r = prof[i][good], rad[i][good]
        if p.size < 2 or not p[0] > 0:
            continue
        below = np.nonzero(p <= 0.5 * p[0])[0]
        if below.size == 0:
            continue
        j = below[0]
        # interpolate the half-maximum crossing between rings j-1 and j
        out[i] = r[j - 1] + (0.5 * p[0] - p[j - 1]) * (r[j] - r[j - 1]) / (p[j] - p[j - 1])
    return out
