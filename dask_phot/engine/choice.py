"""Point source or galaxy? The model of a source without a shape, chosen by its fit.

A prior without a measured shape is fitted as a point source. With
``choose_models`` the fit then asks, for each such source, whether a round
galaxy explains its pixels better, as The Farmer chooses between a point
source and galaxy models: with its neighbours held at their fitted fluxes,
the source's light ``d`` (the residual plus its own point model) is fitted by
each model ``M`` of a grid (exponential discs, n = 1, and de Vaucouleurs
profiles, n = 4, of half-light radii 0.1 to 2 PSF FWHM), ``chi2(M) = <d, d> -
<d, M>^2 / <M, M>`` (inverse-variance weighted, over the largest model's box),
and the best galaxy replaces the point source when it lowers the chi2 by more
than ``threshold`` (9 by default: three sigma for the extra parameter). The
scene is then fitted again with the chosen models, jointly, and each chosen
galaxy's flux error grows (in quadrature) by the spread of the fluxes the
grid's models within 1 of the best chi2 give it: a shape fitted on the band's
own pixels is uncertain, and its flux with it.

Only sources the residual already says are broader than a point (the model
mismatch ``t``, :mod:`dask_phot.engine.mismatch`, above 1) and measured above
``snr_min`` are tried: for a small broadening the chi2 gain is ``~t^2``, so
the others could not pass the threshold. A choice made on noisy data selects the model the
noise favours; fluxes of sources near the threshold carry that choice's
scatter, and the catalog says which model each flux is of.
"""

from __future__ import annotations

import numba
import numpy as np

from dask_phot.models.render import render_sources
from dask_phot.models.shapes import Shapes

__all__ = ["RADII_FWHM", "choose_extended", "chosen_shapes"]

#: Half-light radii tried, in units of the PSF's FWHM.
RADII_FWHM = (0.1, 0.17, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)


def choose_extended(
    psf: object, x: np.ndarray, y: np.ndarray, shapes: Shapes, flux: np.ndarray,
    flux_err: np.ndarray, mismatch: np.ndarray, resid: np.ndarray, weight: np.ndarray, *,
    threshold: float = 9.0, snr_min: float = 3.0, fraction: float = 0.99,
    max_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The round galaxy chosen for each source: radius, Sersic index, shape error.

    Parameters
    ----------
    psf : PixelPSF, OversampledPSF or PSFGrid
        The band's PSF.
    x, y : ndarray
        Source positions (0-based pixels).
    shapes : Shapes
        The sources' given shapes; only point sources (``r_e`` 0) are candidates.
    flux, flux_err, mismatch : ndarray
        A first fit's fluxes, errors and model mismatch (input order).
    resid : ndarray
        That fit's residual image (data minus every model, sky included).
    weight : ndarray
        The fit's inverse-variance weights.
    threshold : float
        Least chi2 improvement for a disc to replace the point source.
    snr_min : float
        Least S/N of the first fit for a source to be tried.
    fraction, max_size
        Stamp rules of :func:`~dask_phot.models.render.stamp_sizes`.

    Returns
    -------
    r_e, n, shape_err : ndarray
        ``r_e`` (pixels) of the chosen galaxy (0 where the point source stays,
        NaN where no choice was tried: a given shape, an unmeasured or faint
        source), its Sersic index (1 or 4), and the flux uncertainty its shape
        adds: half the range of the fluxes of the grid's models within 1 of the
        best chi2 (0 for point sources).
    """
    n = x.shape[0]
    out = np.full(n, np.nan)
    sersic = np.ones(n)
    shape_err = np.zeros(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        tried = (~shapes.extended & np.isfinite(flux) & np.isfinite(mismatch)
                 & (flux > snr_min * flux_err))
    out[tried] = 0.0
    idx = np.flatnonzero(tried & (mismatch > 1.0))
    if idx.size == 0:
        return out, sersic, shape_err
    radii = np.asarray(RADII_FWHM) * float(psf.fwhm)  # type: ignore[attr-defined]
    grid_r = np.concatenate([[0.0], radii, radii])
    grid_n = np.concatenate([[1.0], np.full(radii.size, 1.0), np.full(radii.size, 4.0)])
    k = grid_r.size
    grid = Shapes(np.tile(grid_r, idx.size), np.ones(k * idx.size), np.zeros(k * idx.size),
                  np.tile(grid_n, idx.size))
    stamps = render_sources(psf, np.repeat(x[idx], k), np.repeat(y[idx], k), grid,
                            fraction=fraction, max_size=max_size).stamps
    gain, best, spread = _chi2_gains(*stamps.arrays, k, flux[idx], resid, weight)
    disc = gain > threshold
    out[idx] = np.where(disc, grid_r[best], 0.0)
    sersic[idx] = np.where(disc, grid_n[best], 1.0)
    shape_err[idx] = np.where(disc, spread, 0.0)
    return out, sersic, shape_err


@numba.njit(cache=True, nogil=True)
def _chi2_gains(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray,
                x0: np.ndarray, y0: np.ndarray, k: int, flux: np.ndarray,
                resid: np.ndarray, weight: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each candidate (``k`` stamps: its point model, then the galaxies), the chi2
    gain of the best galaxy over the point model, that galaxy's index (1..k-1) and half
    the range of the fluxes of the galaxies within 1 of the best chi2."""
    m = flux.shape[0]
    ny, nx = weight.shape
    gain = np.zeros(m)
    spread = np.zeros(m)
    best = np.zeros(m, dtype=np.int64)
    for c in range(m):
        s0 = c * k
        bx0, by0 = x0[s0], y0[s0]
        bx1, by1 = bx0 + w[s0], by0 + h[s0]
        for j in range(1, k):
            s = s0 + j
            bx0, by0 = min(bx0, x0[s]), min(by0, y0[s])
            bx1, by1 = max(bx1, x0[s] + w[s]), max(by1, y0[s] + h[s])
        sdd = 0.0
        sdm = np.zeros(k)
        smm = np.zeros(k)
        for yy in range(max(by0, 0), min(by1, ny)):
            for xx in range(max(bx0, 0), min(bx1, nx)):
                wv = weight[yy, xx]
                if wv <= 0.0:
                    continue
                d = resid[yy, xx] + flux[c] * _value(data, ptr, w, h, x0, y0, s0, xx, yy)
                sdd += wv * d * d
                for j in range(k):
                    mv = _value(data, ptr, w, h, x0, y0, s0 + j, xx, yy)
                    sdm[j] += wv * d * mv
                    smm[j] += wv * mv * mv
        chi = np.full(k, np.inf)
        for j in range(k):
            if smm[j] > 0.0 and sdm[j] > 0.0:
                chi[j] = sdd - sdm[j] * sdm[j] / smm[j]
        j_best = 1 + np.argmin(chi[1:])
        if np.isfinite(chi[0]) and np.isfinite(chi[j_best]):
            gain[c] = chi[0] - chi[j_best]
            lo, hi = np.inf, -np.inf
            for j in range(1, k):
                if chi[j] <= chi[j_best] + 1.0:
                    f = sdm[j] / smm[j]
                    lo, hi = min(lo, f), max(hi, f)
            spread[c] = 0.5 * (hi - lo)
        best[c] = j_best
    return gain, best, spread


@numba.njit(cache=True, nogil=True, inline="always")
def _value(data: np.ndarray, ptr: np.ndarray, w: np.ndarray, h: np.ndarray, x0: np.ndarray,
           y0: np.ndarray, s: int, xx: int, yy: int) -> float:
    c, r = xx - x0[s], yy - y0[s]
    if c < 0 or r < 0 or c >= w[s] or r >= h[s]:
        return 0.0
    return data[ptr[s] + r * w[s] + c]


def chosen_shapes(shapes: Shapes, r_e: np.ndarray, n: np.ndarray) -> Shapes:
    """``shapes`` with the chosen round galaxies in place of point sources."""
    disc = np.isfinite(r_e) & (r_e > 0)
    return Shapes(np.where(disc, r_e, shapes.r_e), np.where(disc, 1.0, shapes.q),
                  np.where(disc, 0.0, shapes.theta), np.where(disc, n, shapes.n))
