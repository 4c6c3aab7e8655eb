"""The engine's public entry point, :func:`forced_photometry`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Literal

import numpy as np

from dask_phot.engine.choice import choose_extended, chosen_shapes
from dask_phot.engine.fit import SKY_TERMS, solve_models
from dask_phot.engine.prepare import Prepared, blend_flags, prepare_inputs
from dask_phot.engine.result import PhotometryResult
from dask_phot.engine.scene import default_tiling, spatial_order
from dask_phot.models.render import render_sources
from dask_phot.models.shapes import Shapes
from dask_phot.psf import OversampledPSF, PixelPSF, PSFGrid, PSFModel

__all__ = ["forced_photometry"]

log = logging.getLogger(__name__)

def forced_photometry(
    image: np.ndarray,
    psf: PSFModel | np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    shapes: Mapping[str, object] | Shapes | None = None,
    pixel_scale: float | None = None,
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
    mismatch_sigma: float = 3.0,
    model_fraction: float = 0.99,
    max_stamp: int | None = None,
    max_core: int | None = None,
    final_weight: np.ndarray | None = None,
    choose_models: bool = False,
    choice_threshold: float = 9.0,
    return_model: bool = False,
    backend: Literal["dask_phot", "tractor"] = "dask_phot",
) -> PhotometryResult:
    """Measure the flux of every source at known positions in one image.

    Parameters
    ----------
    image : ndarray
        2-D image. NaN pixels are masked.
    psf : PixelPSF, OversampledPSF, PSFGrid or ndarray
        The band's PSF: on the image's pixel grid, normalised to unit sum
        (:class:`~dask_phot.psf.PixelPSF`, or a bare odd-sized array taken to be
        one), or sampled finer than the image
        (:class:`~dask_phot.psf.OversampledPSF`, or a ``PixelPSF`` whose
        ``pixel_scale`` is finer than ``pixel_scale``), which renders each
        source at its exact sub-pixel phase.
    x, y : array_like
        0-based pixel positions: ``x`` the column, ``y`` the row, pixel centres
        at integers (numpy ``image[y, x]``, astropy ``wcs.world_to_pixel``).
        FITS/DS9 1-based coordinates must have 1 subtracted first.
    shapes : mapping of str to array_like, optional
        Sersic shapes of the sources, each an array of the sources' length:
        ``"r_e"`` half-light semi-major axis in pixels of this image (0 or NaN
        for a point source), ``"q"`` axis ratio b/a in (0, 1] (default 1),
        ``"theta"`` major axis in degrees counter-clockwise from the +x (column)
        axis (default 0), ``"n"`` Sersic index 0.5-6 (default 1). Fluxes are the
        profiles' total fluxes. None: every source is a point source.
    pixel_scale : float, optional
        The image's pixel scale in arcsec; needed only to use a finer
        ``PixelPSF`` as an oversampled PSF.
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
    mismatch_sigma : float
        Significance above which MODEL_MISMATCH is set: the residual over a
        source's stamp, projected on a broadening (or narrowing) of its model,
        in units of its noise (see :mod:`dask_phot.engine.mismatch`).
    model_fraction : float
        A galaxy's stamp holds at least this fraction of its light (plus two
        PSF FWHM around it).
    max_stamp : int, optional
        Largest model side in pixels; galaxies cut to it are flagged
        MODEL_TRUNCATED (their fluxes still are the profiles' totals).
    max_core : int, optional
        Largest fitted stamp (default: the PSF's size). Light beyond the fitted
        stamps (a galaxy's outskirts, the PSF's wings out to ``psf.wing_size``)
        is rendered with the fluxes of a first fit and subtracted before a
        second, final fit (scene mode; see :mod:`dask_phot.engine.wings`).
    final_weight : ndarray, optional
        Inverse-variance weights of that second fit, when it should use fewer
        pixels than the first (a pipeline cell's: see
        :meth:`dask_phot.config.BandImages.fit_zones`); default ``weight``.
    choose_models : bool
        For sources without a shape (``r_e`` 0), choose between a point source and
        a round exponential disc by the chi2 improvement, and fit the scene again
        with the chosen models (scene mode; :mod:`dask_phot.engine.choice`). The
        result's ``chosen_r_e`` holds the chosen discs' radii.
    choice_threshold : float
        Least chi2 improvement for a disc to replace a point source.
    return_model : bool
        Also return the model image (sources plus sky).
    backend : {"dask_phot", "tractor"}
        ``"tractor"`` computes the same result with The Tractor
        (:mod:`dask_phot.engine.tractor`), when it is installed.

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
    if choose_models and (mode != "scene" or backend != "dask_phot"):
        raise ValueError("choose_models needs mode='scene' and backend='dask_phot'")
    if backend == "tractor":
        from dask_phot.engine.tractor import tractor_photometry

        return tractor_photometry(
            image, psf, x, y, shapes=shapes, sigma=sigma, weight=weight, sky=sky,
            fit_sky=fit_sky, sky_model=sky_model, fit_positions=fit_positions,
            tile_size=tile_size, margin=margin, blend_radius=blend_radius,
            degenerate_tol=degenerate_tol, high_chi2=high_chi2, mismatch_sigma=mismatch_sigma,
            return_model=return_model)
    _check_options(mode, sky_model, fit_positions, backend)
    psf = as_psf(psf, pixel_scale)
    prep = prepare_inputs(image, psf, x, y, sigma=sigma, weight=weight,
                          sky=sky if (mode == "scene" or sky is not None) else None)
    n = prep.x.shape[0]
    if n == 0:
        return PhotometryResult.empty()
    shp = Shapes.from_mapping(shapes, n)
    nsky = SKY_TERMS[sky_model] if fit_sky else 0
    density = float(np.count_nonzero(prep.fit)) / max(prep.data.size, 1)
    tile_default, margin_default = default_tiling(psf.size, psf.fwhm, density)
    opts = dict(
        nsky=nsky,
        tile_size=int(tile_size or tile_default),
        margin=int(margin if margin is not None else margin_default),
        tol=degenerate_tol,
    )
    render = dict(fraction=model_fraction, max_size=max_stamp,
                  core=int(max_core) if max_core is not None else int(psf.size))
    blend_flags(prep, psf.fwhm if blend_radius is None else blend_radius)
    if fit_positions:
        from dask_phot.engine.positions import refine_positions

        kind = "global" if fit_positions == "global" else "source"
        refine_positions(prep, psf, shp, kind=kind, max_shift=max_shift, snr_min=position_snr,
                         iterations=position_iterations, opts=opts, render=render)
    order = (spatial_order(prep.x, prep.y, prep.data.shape, opts["tile_size"])
             if mode == "scene" else np.arange(n))
    solve = dict(psf=psf, mode=mode, opts=opts, cutout_width=int(cutout_width or psf.size),
                 sky_given=sky is not None, high_chi2=high_chi2, mismatch_sigma=mismatch_sigma,
                 final_weight=_final_weight(final_weight, prep))
    before = (prep.flags.copy(), prep.fit.copy())
    rendered = render_sources(psf, prep.x, prep.y, shp, order=order, **render)
    res = solve_models(prep, rendered, order, return_model=return_model or choose_models,
                       **solve)
    if choose_models:
        res, shp = _choose_and_refit(prep, before, shp, order, res, render, solve,
                                     choice_threshold, return_model)
    res.info["extended"] = int(shp.extended.sum())
    return res


def _choose_and_refit(prep: Prepared, before: tuple[np.ndarray, np.ndarray], shp: Shapes,
                      order: np.ndarray, res: PhotometryResult, render: dict, solve: dict,
                      threshold: float, return_model: bool) -> tuple[PhotometryResult, Shapes]:
    """Choose point or disc for the shapeless sources of a first fit (``res``, with its
    model image) and fit the scene again when any disc was chosen."""
    psf = solve["psf"]
    weight = solve["final_weight"] if solve["final_weight"] is not None else prep.weight
    chosen, sersic, shape_err = choose_extended(
        psf, prep.x, prep.y, shp, res.flux, res.flux_err, res.mismatch,
        prep.data + prep.sky - res.model, weight, threshold=threshold,
        fraction=render["fraction"], max_size=render["max_size"])
    if (chosen > 0).any():
        shp = chosen_shapes(shp, chosen, sersic)
        prep = replace(prep, flags=before[0].copy(), fit=before[1].copy())
        rendered = render_sources(psf, prep.x, prep.y, shp, order=order, **render)
        res = solve_models(prep, rendered, order, return_model=return_model, **solve)
        res.flux_err = np.hypot(res.flux_err, shape_err)
    res.chosen_r_e, res.chosen_n = chosen, np.where(chosen > 0, sersic, np.nan)
    res.model = res.model if return_model else None
    return res, shp


def _final_weight(weight: np.ndarray | None, prep: object) -> np.ndarray | None:
    """The second fit's weights, checked like ``weight`` and masked where the first's are 0."""
    if weight is None:
        return None
    w = np.array(weight, dtype=np.float64)
    if w.shape != prep.weight.shape:  # type: ignore[attr-defined]
        raise ValueError(f"final_weight has shape {w.shape}, image has "
                         f"{prep.weight.shape}")  # type: ignore[attr-defined]
    w[~np.isfinite(w) | (w < 0) | (prep.weight <= 0)] = 0.0  # type: ignore[attr-defined]
    return w


def as_psf(psf: object, pixel_scale: float | None = None) -> PSFModel:
    """The PSF object the engine renders with, from what a user may pass.

    A bare array is a :class:`PixelPSF` on the image grid; a ``PixelPSF`` finer
    than ``pixel_scale`` becomes an :class:`OversampledPSF`.

    Raises
    ------
    TypeError
        Anything that is not a PSF or a 2-D array.
    """
    if isinstance(psf, np.ndarray):
        return PixelPSF(psf, 1.0 if pixel_scale is None else float(pixel_scale),
                        name="psf array")
    if isinstance(psf, PixelPSF) and pixel_scale is not None \
            and psf.pixel_scale < float(pixel_scale) * (1 - 1e-6):
        return OversampledPSF(psf.array, psf.pixel_scale, float(pixel_scale), name=psf.name)
    if isinstance(psf, OversampledPSF) and pixel_scale is not None \
            and abs(psf.pixel_scale - float(pixel_scale)) > 1e-6 * float(pixel_scale):
        raise ValueError(f"{psf.name}: made for {psf.pixel_scale}\"/px images, but "
                         f"pixel_scale={pixel_scale}")
    if not isinstance(psf, PixelPSF | OversampledPSF | PSFGrid) and not (
            hasattr(psf, "stamps") and hasattr(psf, "size") and hasattr(psf, "fwhm")):
        raise TypeError(f"psf must be a PixelPSF, OversampledPSF, PSFGrid or a 2-D array, "
                        f"got {type(psf).__name__}")
    return psf  # type: ignore[return-value]


def _check_options(mode: str, sky_model: str, fit_positions: object, backend: str) -> None:
    """Raise ValueError for option values forced_photometry does not know."""
    if backend not in ("dask_phot", "tractor"):
        raise ValueError(f"backend must be 'dask_phot' or 'tractor', got {backend!r}")
    if mode not in ("scene", "cutout"):
        raise ValueError(f"mode must be 'scene' or 'cutout', got {mode!r}")
    if sky_model not in SKY_TERMS:
        raise ValueError(f"sky_model must be 'constant' or 'plane', got {sky_model!r}")
    if fit_positions not in (False, True, "source", "global"):
        raise ValueError(f"fit_positions must be False, True, 'source' or 'global', "
                         f"got {fit_positions!r}")
