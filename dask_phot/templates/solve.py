"""The joint fit of template stamps, with the band PSF's wings subtracted.

:func:`fit_models` is :func:`dask_phot.engine.fit.fit_stamps` with the band's
PSF passed on to the engine's wing pass (:mod:`dask_phot.engine.wings`): a
template stamp holds the source's light out to its edge, and the PSF's far
wings beyond it (IRAC's hold ~5% of the light beyond a 21-pixel box) are
rendered from a first fit's fluxes and subtracted before the final fit, as
for point sources. ``fit_stamps`` itself passes no PSF (and, at e3b9631, its
``has_wings(None)`` call fails); this wrapper goes once it takes one.
"""

from __future__ import annotations

import numpy as np

from dask_phot.engine.fit import SKY_TERMS, _reorder, solve_models
from dask_phot.engine.prepare import blend_flags, prepare_inputs
from dask_phot.engine.result import PhotometryResult
from dask_phot.engine.scene import default_tiling, spatial_order
from dask_phot.models.render import Rendered
from dask_phot.models.stamps import Stamps

__all__ = ["fit_models"]


def fit_models(image: np.ndarray, stamps: Stamps, x: np.ndarray, y: np.ndarray, *,
               psf: object, capped: np.ndarray, sigma: float | np.ndarray | None = None,
               weight: np.ndarray | None = None, fit_sky: bool = True,
               sky_model: str = "constant", high_chi2: float = 5.0,
               mismatch_sigma: float = 5.0, return_model: bool = False
               ) -> PhotometryResult:
    """Jointly fit unit-flux stamps (input order) with the sky and the PSF's wings.

    Parameters
    ----------
    image : ndarray
        The blurred image.
    stamps : Stamps
        Source ``i``'s unit-flux model.
    x, y : ndarray
        Reference positions (tiles, flags, blending).
    psf : PSF
        The band's PSF: its FWHM sets tiles and blending, its wings beyond each
        stamp are subtracted between two fits.
    capped : ndarray of bool
        Models that were cut (flagged MODEL_TRUNCATED).
    sigma, weight, fit_sky, sky_model, high_chi2, mismatch_sigma, return_model
        As for :func:`dask_phot.forced_photometry`.

    Returns
    -------
    PhotometryResult
    """
    if sky_model not in SKY_TERMS:
        raise ValueError(f"sky_model must be 'constant' or 'plane', got {sky_model!r}")
    prep = prepare_inputs(image, None, x, y, sigma=sigma, weight=weight, sky=None)
    n = prep.x.shape[0]
    if n == 0:
        return PhotometryResult.empty()
    fwhm = float(psf.fwhm)  # type: ignore[attr-defined]
    sides = np.maximum(stamps.w, stamps.h)
    tile, margin = default_tiling(int(np.median(sides)) | 1, fwhm)
    opts = dict(nsky=SKY_TERMS[sky_model] if fit_sky else 0, tile_size=int(tile),
                margin=int(margin), tol=1e-7)
    blend_flags(prep, fwhm)
    order = spatial_order(prep.x, prep.y, prep.data.shape, opts["tile_size"])
    none = np.zeros(0, dtype=np.int64)
    rendered = Rendered(stamps=_reorder(stamps, order), sides=sides,
                        outer=Stamps.empty(0, none), outer_index=none,
                        capped=np.asarray(capped, dtype=bool))
    return solve_models(prep, rendered, order, psf=psf, mode="scene", opts=opts,
                        cutout_width=int(np.median(sides)), sky_given=False,
                        high_chi2=high_chi2, mismatch_sigma=mismatch_sigma,
                        return_model=return_model)
