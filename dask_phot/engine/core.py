"""The engine's public entry point, :func:`forced_photometry`."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from dask_phot.engine import _kernels as K
from dask_phot.engine.prepare import Prepared, blend_flags, footprint_flags, prepare_inputs
from dask_phot.engine.result import PhotometryResult
from dask_phot.engine.scene import default_tiling, sky_image, solve_scene, spatial_order
from dask_phot.psf import PSFModel
from dask_phot.schema import Flag

__all__ = ["forced_photometry"]

log = logging.getLogger(__name__)

_SKY_TERMS = {"constant": 1, "plane": 3}


def forced_photometry(
    image: np.ndarray,
    psf: PSFModel,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float | np.ndarray | None = None,
    weight: np.ndarray | None = None,
    sky: float | np.ndarray | None = None,
    fit_sky: bool = False,
    sky_model: Literal["constant", "plane"] = "constant",
    fit_positions: bool | Literal["source", "global"] = False,
    max_shift: float = 0.5,
    position_snr: float = 5.0,
    position_iterations: int = 4,
    mode: Literal["scene", "cutout"] = "scene",
    cutout_width: int | None = None,
    tile_size: int | None = None,
    margin: int | None = None,
    blend_radius: float | None = None,
    degenerate_tol: float = 1e-7,
    high_chi2: float = 5.0,
    return_model: bool = False,
) -> PhotometryResult:
    """Measure the flux of every source at known positions in one image.

    Parameters
    ----------
    image : ndarray
        2-D image. NaN pixels are masked.
    psf : PixelPSF or PSFGrid
        The band's PSF on the image's pixel grid, normalised to unit sum.
    x, y : array_like
        0-based pixel positions: ``x`` the column, ``y`` the row, pixel centres
        at integers (numpy ``image[y, x]``, astropy ``wcs.world_to_pixel``).
        FITS/DS9 1-based coordinates must have 1 subtracted first.
    sigma : float or ndarray, optional
        Per-pixel noise (scalar or map). Give ``sigma`` or ``weight``; with
        neither, a constant noise is estimated from the image (MAD).
    weight : ndarray, optional
        Inverse-variance map; NaN, zero and negative values mask the pixel.
    sky : float or ndarray, optional
        Fixed sky subtracted before fitting. In scene mode ``None`` means the
        image is already background-subtracted (unless ``fit_sky``); in cutout
        mode ``None`` means the sigma-clipped mean of each cutout (the notebook).
    fit_sky : bool
        Fit the sky jointly with the fluxes (scene mode): a ``sky_model`` per tile.
    sky_model : {"constant", "plane"}
        Sky terms fitted per tile when ``fit_sky``.
    fit_positions : bool or {"source", "global"}
        Refine positions: ``"source"`` (or True) per source above
        ``position_snr``, ``"global"`` one shift shared by all sources; each
        bounded by ``max_shift`` pixels from the input positions.
    max_shift : float
        Bound on the position refinement, in pixels.
    position_snr : float
        Minimum S/N for a source's position to be refined.
    position_iterations : int
        Alternations of flux and position updates.
    mode : {"scene", "cutout"}
        ``"scene"`` fits all sources jointly (fast, correct default);
        ``"cutout"`` reproduces the notebook's per-target cutout fit.
    cutout_width : int, optional
        Cutout side in pixels for ``mode="cutout"`` (default: the PSF size).
    tile_size, margin : int, optional
        Scene tiling in pixels (see :mod:`dask_phot.engine.scene`).
    blend_radius : float, optional
        Radius for the BLENDED flag, pixels (default: the PSF FWHM).
    degenerate_tol : float
        Pivot threshold below which a source is indistinguishable from
        earlier ones (DEGENERATE).
    high_chi2 : float
        Reduced chi2 above which HIGH_CHI2 is set.
    return_model : bool
        Also return the model image (sources plus sky).

    Returns
    -------
    PhotometryResult
        Arrays in input order; see :mod:`dask_phot.schema` for the flags.

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> psf = gaussian_psf(3.0, size=15)
    >>> stamps, x0, y0 = psf.stamps(np.array([20.0]), np.array([12.0]))
    >>> img = np.zeros((30, 40)); img[y0[0]:y0[0] + 15, x0[0]:x0[0] + 15] = 50 * stamps[0]
    >>> res = forced_photometry(img, psf, [20.0], [12.0], sigma=1.0)
    >>> round(float(res.flux[0]), 6), round(float(res.flux_err[0]), 3)
    (50.0, 4.631)
    """
    _check_options(mode, sky_model, fit_positions)
    prep = prepare_inputs(image, psf, x, y, sigma=sigma, weight=weight,
                          sky=sky if (mode == "scene" or sky is not None) else None)
    n = prep.x.shape[0]
    if n == 0:
        return PhotometryResult.empty()
    nsky = _SKY_TERMS[sky_model] if fit_sky else 0
    tile_default, margin_default = default_tiling(psf.size, psf.fwhm)
    opts = dict(
        nsky=nsky,
        tile_size=int(tile_size or tile_default),
        margin=int(margin if margin is not None else margin_default),
        tol=degenerate_tol,
    )
    blend_flags(prep, psf.fwhm if blend_radius is None else blend_radius)
    if fit_positions:
        from dask_phot.engine.positions import refine_positions

        kind = "global" if fit_positions == "global" else "source"
        refine_positions(prep, psf, kind=kind, max_shift=max_shift, snr_min=position_snr,
                         iterations=position_iterations, opts=opts)
    order = (spatial_order(prep.x, prep.y, prep.data.shape, opts["tile_size"])
             if mode == "scene" else None)
    stamps, x0, y0, sx0, sy0 = _render(psf, prep, order)
    nuse, _ = footprint_flags(prep, stamps, x0, y0)
    if mode == "cutout":
        from dask_phot.engine.cutout_fit import solve_cutouts

        width = int(cutout_width or psf.size)
        flux, var, status, hasdeg, local_sky = solve_cutouts(
            prep, stamps, x0, y0, width=width, sky_given=sky is not None, tol=degenerate_tol)
        sky_img = None
        info = {"mode": "cutout", "cutout_width": width}
    else:
        flux, var, status, hasdeg, local_sky, tiling = solve_scene(
            prep, stamps, sx0, sy0, order=order, **opts)
        sky_img = sky_image(tiling, tiling.sky, nsky, prep.data.shape) if nsky else None
        info = {"mode": "scene", "tiles": int(tiling.ptr.size - 1),
                "tile_size": tiling.tile_size, "margin": tiling.margin}
    return _assemble(prep, stamps, x0, y0, nuse, flux, var, status, hasdeg, local_sky,
                     sky_img, info, high_chi2=high_chi2, return_model=return_model,
                     order=order)


def _check_options(mode: str, sky_model: str, fit_positions: object) -> None:
    """Raise ValueError for option values forced_photometry does not know."""
    if mode not in ("scene", "cutout"):
        raise ValueError(f"mode must be 'scene' or 'cutout', got {mode!r}")
    if sky_model not in _SKY_TERMS:
        raise ValueError(f"sky_model must be 'constant' or 'plane', got {sky_model!r}")
    if fit_positions not in (False, True, "source", "global"):
        raise ValueError(f"fit_positions must be False, True, 'source' or 'global', "
                         f"got {fit_positions!r}")


def _render(psf: PSFModel, prep: Prepared, order: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stamps in ``order`` (scene mode groups them by tile; None = input order).

    Returns ``stamps, x0, y0, sx0, sy0``: ``x0, y0`` in input order, ``sx0, sy0``
    in the stamps' order.
    """
    if order is None:
        stamps, x0, y0 = psf.stamps(prep.x, prep.y)
        return stamps, x0, y0, x0, y0
    stamps, sx0, sy0 = psf.stamps(prep.x[order], prep.y[order])
    x0, y0 = np.empty_like(sx0), np.empty_like(sy0)
    x0[order], y0[order] = sx0, sy0
    return stamps, x0, y0, sx0, sy0


def _assemble(
    prep: Prepared, stamps: np.ndarray, x0: np.ndarray, y0: np.ndarray, nuse: np.ndarray,
    flux: np.ndarray, var: np.ndarray, status: np.ndarray, hasdeg: np.ndarray,
    local_sky: np.ndarray, sky_img: np.ndarray | None, info: dict, *,
    high_chi2: float, return_model: bool, order: np.ndarray | None = None,
) -> PhotometryResult:
    """Flags, errors, chi2 and model; ``x0, y0`` in input order, ``stamps`` in
    ``order`` when given (``stamps[k]`` is the stamp of source ``order[k]``)."""
    flags = prep.flags
    fitted = prep.fit
    flags[fitted & (status == K.ST_DEGENERATE)] |= int(Flag.DEGENERATE)
    flags[fitted & (status == K.ST_FAILED)] |= int(Flag.FIT_FAILED)
    flags[fitted & hasdeg] |= int(Flag.HAS_DEGENERATE)
    ok = fitted & (status == K.ST_OK) & np.isfinite(flux) & np.isfinite(var) & (var > 0)
    flags[fitted & (status == K.ST_OK) & ~ok] |= int(Flag.FIT_FAILED)
    flux = np.where(ok, flux, np.nan)
    err = np.where(ok, np.sqrt(np.where(ok, var, 1.0)), np.nan)
    flags[ok & (flux < 0)] |= int(Flag.NEGATIVE_FLUX)
    if order is None:
        model = K.scatter_model(stamps, x0, y0, flux, prep.data.shape)
    else:
        model = K.scatter_model(stamps, x0[order], y0[order], flux[order], prep.data.shape)
    if sky_img is not None:
        model += sky_img
    resid = prep.data - model
    chisum = K.footprint_chi2(x0, y0, stamps.shape[1], prep.weight, resid)
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(ok, chisum / np.maximum(nuse - 1, 1), np.nan)
    flags[ok & (chi2 > high_chi2)] |= int(Flag.HIGH_CHI2)
    out_model = model + prep.sky if return_model else None
    sky_vals = local_sky + _fixed_sky_at(prep)
    known = prep.x > -1e8
    return PhotometryResult(flux, err, chi2, flags.astype(np.int32),
                            np.where(known, prep.x, np.nan), np.where(known, prep.y, np.nan),
                            sky_vals, nuse, out_model, info)


def _fixed_sky_at(prep: Prepared) -> np.ndarray:
    ny, nx = prep.sky.shape
    cx = np.clip(np.floor(prep.x + 0.5).astype(np.int64), 0, nx - 1)
    cy = np.clip(np.floor(prep.y + 0.5).astype(np.int64), 0, ny - 1)
    return prep.sky[cy, cx]
