"""Fitting rendered models: the scene (or cutout) solve, the wing pass and the result.

:func:`solve_models` is what :func:`~dask_phot.forced_photometry` runs once its
sources are rendered; :func:`fit_stamps` is the same fit for models made
elsewhere (templates from a sharp image, :mod:`dask_phot.templates`): any
unit-flux image per source, at its place in the image.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import numba
import numpy as np

from dask_phot.engine import _kernels as K
from dask_phot.engine.mismatch import mismatch_and_chi2
from dask_phot.engine.prepare import Prepared, blend_flags, footprint_flags, prepare_inputs
from dask_phot.engine.result import PhotometryResult
from dask_phot.engine.scene import (
    SceneState,
    default_tiling,
    sky_image,
    solve_scene,
    spatial_order,
)
from dask_phot.engine.wings import has_wings, wing_image
from dask_phot.models.render import Rendered
from dask_phot.models.stamps import Stamps
from dask_phot.schema import Flag

__all__ = ["SKY_TERMS", "fit_stamps", "second_fit_sources", "solve_models"]

#: Sky terms fitted per tile for each sky model.
SKY_TERMS = {"constant": 1, "plane": 3}
#: First-fit S/N above which a source's PSF wings are rendered at its own phase, not at
#: its nearest pixel (whose half-pixel shift errs by up to 6e-4 of the peak pixel at the
#: core box's edge of the 0.1" IRAC PSFs: 0.1 sigma of a pixel at S/N ~ 300).
EXACT_WINGS_SNR = 300.0


def solve_models(prep: Prepared, rendered: Rendered, order: np.ndarray, *, psf: object | None,
                 mode: str, opts: dict, cutout_width: int, sky_given: bool, high_chi2: float,
                 mismatch_sigma: float, return_model: bool,
                 final_weight: np.ndarray | None = None, keep_state: bool = False,
                 errors: bool = True) -> PhotometryResult:
    """Fit rendered models (``rendered.stamps[k]`` is source ``order[k]``).

    In scene mode, light the fitted stamps leave out (PSF wings, cut galaxies'
    outskirts; :mod:`dask_phot.engine.wings`) is rendered from a first fit,
    subtracted, and the fit repeated, with ``final_weight`` when given (a
    pipeline cell fits fewer pixels the second time: see
    :meth:`dask_phot.config.BandImages.fit_zones`). Then both fits' tiles free only the
    sources centred in their regions: the first leaves the others out, the final holds
    them at the first fit's fluxes (:func:`_halo_free_fit`). With ``keep_state``, a scene
    fit's :class:`~dask_phot.engine.scene.SceneState` is kept in the result's
    ``info["state"]`` (its pair table: :meth:`~.SceneState.products`). Without
    ``errors`` (scene mode, no wings: an intermediate fit whose fluxes and model are all
    that is used), the tiles' variances, the chi2 and the mismatch are not computed.
    """
    stamps = rendered.stamps
    pos = np.argsort(order)
    nuse, _ = footprint_flags(prep, stamps.x0[pos], stamps.y0[pos], stamps.w[pos],
                              stamps.h[pos])
    prep.flags[prep.fit & rendered.capped] |= int(Flag.MODEL_TRUNCATED)
    extra = None
    if mode == "cutout":
        from dask_phot.engine.cutout_fit import solve_cutouts

        flux, var, status, hasdeg, local_sky = solve_cutouts(
            prep, stamps, width=cutout_width, sky_given=sky_given, tol=opts["tol"])
        info = {"mode": "cutout", "cutout_width": cutout_width, "wings": False}
    else:
        wings = has_wings(psf, rendered)
        # a second fit with the same weights only substitutes new data into the first's
        # factorisations; one with other weights holds each tile's halo at the first
        # fit's fluxes, which need no halo of their own (see _halo_free_fit)
        halo = not wings or final_weight is None
        if not errors and wings:
            raise ValueError("errors=False: the wing pass needs the first fit's errors")
        flux, var, status, hasdeg, local_sky, state = solve_scene(
            prep, stamps, order=order, keep_factors=wings, halo=halo, variances=errors,
            **opts)
        if not halo:  # the first fit's halo light, from its own fluxes (see _halo_free_fit)
            (flux, var, status, hasdeg, local_sky), state = _halo_free_fit(
                prep, stamps, order, opts, flux, state=state)
        if wings:
            first = (flux, var, status, hasdeg, local_sky)
            (flux, var, status, hasdeg, local_sky), state, prep, extra = _second_fit(
                prep, rendered, order, psf, opts, first, state, final_weight)
        tiling = state.tiling
        if opts["nsky"]:
            # (added into the wing image, ours, when there is one)
            extra = sky_image(tiling, tiling.sky, opts["nsky"], prep.data.shape, out=extra)
        info = {"mode": "scene", "tiles": int(tiling.ptr.size - 1),
                "tile_size": tiling.tile_size, "margin": tiling.margin, "wings": wings}
        if keep_state:
            info["state"] = state
    return _assemble(prep, stamps, pos, nuse, flux, var, status, hasdeg, local_sky, extra,
                     info, high_chi2=high_chi2, mismatch_sigma=mismatch_sigma,
                     return_model=return_model, errors=errors)


def _second_fit(prep: Prepared, rendered: Rendered, order: np.ndarray, psf: object | None,
                opts: dict, first: tuple, state: SceneState,
                final_weight: np.ndarray | None) -> tuple:
    """The fit after the light the stamps leave out is subtracted (see
    :func:`solve_models`).

    Returns its ``(flux, var, status, has_degenerate, local_sky)``, its scene state,
    ``prep`` with the weights it used, and the light subtracted (the rest of the model
    it fitted: re-rendering the wings from the second fit's fluxes would spread the
    poorly measured fluxes of sources at a cell's edge, whose pixels the second fit
    mostly leaves out, over their neighbours). With ``final_weight``, sources whose
    stamps have no pixel left in it are not fitted again: they keep ``first``.
    """
    flux, var = first[0], first[1]
    # only fluxes measured at S/N > 2 light the wings: a source whose stamp is nearly
    # all masked (at a cell's edge, say) has no flux to spread
    with np.errstate(invalid="ignore", divide="ignore"):
        sure = np.where(flux > 2.0 * np.sqrt(var), flux, 0.0)
        bright = flux > EXACT_WINGS_SNR * np.sqrt(var)
    light = wing_image(psf, rendered, prep.x, prep.y, sure, prep.data.shape, exact=bright)
    weight = prep.weight if final_weight is None else final_weight
    # (image-sized temporaries cost page faults: the data without the light are made in
    # one array, and the light is added back into it in place)
    data = np.empty(prep.data.shape)
    _usable_minus(prep.data, light, weight, data)
    fit = prep.fit
    if final_weight is not None:
        fit = fit & second_fit_sources(rendered.stamps, np.argsort(order), final_weight)
    second = replace(prep, weight=weight, data=data, fit=fit)
    if final_weight is None:
        # with the same weights, the second fit only substitutes new data into the first's
        # factorisations
        *out, state = solve_scene(second, rendered.stamps, order=order, state=state, **opts)
    else:
        out, state = _halo_free_fit(second, rendered.stamps, order, opts, flux, like=state)
    _usable_plus(data, light, weight)
    kept = prep.fit & ~fit
    if kept.any():
        out = [np.where(kept, a, b) for a, b in zip(first, out, strict=True)]
    return tuple(out), state, replace(second, fit=prep.fit), light


def _halo_free_fit(prep: Prepared, stamps: Stamps, order: np.ndarray, opts: dict,
                   first_flux: np.ndarray, *, state: SceneState | None = None,
                   like: SceneState | None = None) -> tuple[list, SceneState]:
    """A scene fit of ``prep`` whose tiles free only the sources centred in their regions
    (``halo=False``): every source's stamp times its ``first_flux`` (finite ones) is
    subtracted, and each tile fits the change of its free sources' fluxes with its sky,
    its other sources held at their first fluxes.

    A tile's halo (sources centred outside its region, half its members in crowded GALEX
    fields, most with a small part of their light in it) is then measured where it is
    primary, not again as poorly constrained free columns of every tile it touches: the
    solves cost a fraction, and the result is one overlapping block-Jacobi step from the
    first fit towards the joint solution. Returns ``[flux, var, status, has_degenerate,
    local_sky]`` (input order) and the scene state. ``state``, that of the halo-free fit
    that gave ``first_flux`` (same stamps and weights, factors kept), is reused (only the
    data sums change); else ``like`` (the first fit's state) lends its pair sums.
    """
    base = np.where(np.isfinite(first_flux), first_flux, 0.0)
    resid = prep.data.copy()
    K.scatter_into(*stamps.arrays, -base[order], resid)
    _zero_unweighted(resid, prep.weight)
    *out, state = solve_scene(replace(prep, data=resid), stamps, order=order, state=state,
                              like=like, halo=False, **opts)
    out[0] = out[0] + base
    return out, state


@numba.njit(cache=True, nogil=True)
def _zero_unweighted(data: np.ndarray, weight: np.ndarray) -> None:
    """``data = 0`` where ``weight <= 0`` (in place)."""
    for yy in range(data.shape[0]):
        for xx in range(data.shape[1]):
            if not weight[yy, xx] > 0.0:
                data[yy, xx] = 0.0


@numba.njit(cache=True, nogil=True)
def _usable_minus(data: np.ndarray, light: np.ndarray, weight: np.ndarray, out: np.ndarray
                  ) -> None:
    """``out = data - light`` where ``weight > 0``, 0 elsewhere (one pass, no temporaries)."""
    for yy in range(out.shape[0]):
        for xx in range(out.shape[1]):
            out[yy, xx] = data[yy, xx] - light[yy, xx] if weight[yy, xx] > 0.0 else 0.0


@numba.njit(cache=True, nogil=True)
def _usable_plus(data: np.ndarray, light: np.ndarray, weight: np.ndarray) -> None:
    """``data += light`` where ``weight > 0`` (in place)."""
    for yy in range(data.shape[0]):
        for xx in range(data.shape[1]):
            if weight[yy, xx] > 0.0:
                data[yy, xx] += light[yy, xx]


def second_fit_sources(stamps: Stamps, pos: np.ndarray, final_weight: np.ndarray
                       ) -> np.ndarray:
    """Sources (input order; source ``i`` is stamp ``pos[i]``) whose stamps have a pixel
    of positive ``final_weight``: the others add nothing to the final fit."""
    nuse, _, _ = K.footprint_counts(stamps.x0[pos], stamps.y0[pos], stamps.w[pos],
                                    stamps.h[pos], final_weight)
    return nuse > 0


def fit_stamps(
    image: np.ndarray,
    stamps: Stamps,
    x: np.ndarray,
    y: np.ndarray,
    *,
    fwhm: float,
    psf: object | None = None,
    sigma: float | np.ndarray | None = None,
    weight: np.ndarray | None = None,
    sky: float | np.ndarray | None = None,
    fit_sky: bool = False,
    sky_model: Literal["constant", "plane"] = "constant",
    outer: Stamps | None = None,
    outer_index: np.ndarray | None = None,
    tile_size: int | None = None,
    margin: int | None = None,
    degenerate_tol: float = 1e-7,
    high_chi2: float = 5.0,
    mismatch_sigma: float = 3.0,
    return_model: bool = False,
    keep_state: bool = False,
    in_place: bool = False,
    errors: bool = True,
) -> PhotometryResult:
    """Jointly fit given unit-flux models of sources, one stamp each (scene mode).

    Parameters
    ----------
    image : ndarray
        The image.
    stamps : Stamps
        Source ``i``'s model (in input order): a unit-flux image placed at
        ``(stamps.x0[i], stamps.y0[i])``; the fitted amplitude is its flux.
    x, y : ndarray
        The sources' positions (0-based pixels): they set each source's tile,
        the flags (off image, masked centre) and the BLENDED radius ``fwhm``.
    fwhm : float
        The image's PSF FWHM in pixels (tiling and blending).
    psf : OversampledPSF, optional
        The band's PSF, when it has wings beyond the stamps: they are subtracted
        between two fits (stamps of the PSF's ``size`` or larger: the wings beyond
        each stamp's box; see :mod:`dask_phot.engine.wings`).
    outer, outer_index : Stamps and ndarray of int, optional
        Light of sources ``outer_index`` beyond their fitted stamps, subtracted
        with the fluxes of a first fit before the final one.
    sigma, weight, sky, fit_sky, sky_model, tile_size, margin, degenerate_tol,
    high_chi2, mismatch_sigma, return_model
        As for :func:`dask_phot.forced_photometry`.
    keep_state : bool
        Keep the scene's state in ``info["state"]``: its
        :meth:`~dask_phot.engine.scene.SceneState.products` are the stamps' weighted
        products, already summed for the fit.
    in_place : bool
        Use the stamps where they are stored, instead of a copy of them in the order of
        :func:`~dask_phot.engine.scene.spatial_order` (which keeps each tile's stamps
        close in memory): for stamps already stored near their neighbours (sources
        listed in that order). The fluxes are the same to rounding.
    errors : bool
        False: fluxes and the model only, for an intermediate fit (no ``psf`` wings):
        the tiles' marginal variances, the chi2 and the model mismatch are not
        computed (``flux_err``, ``chi2`` and ``mismatch`` are NaN, their flags unset);
        the fluxes are the same.

    Returns
    -------
    PhotometryResult
    """
    if sky_model not in SKY_TERMS:
        raise ValueError(f"sky_model must be 'constant' or 'plane', got {sky_model!r}")
    prep = prepare_inputs(image, None, x, y, sigma=sigma, weight=weight, sky=sky)
    n = prep.x.shape[0]
    if len(stamps) != n:
        raise ValueError(f"{len(stamps)} stamps for {n} sources")
    if n == 0:
        return PhotometryResult.empty()
    side = int(np.median(np.maximum(stamps.w, stamps.h)))
    tile_default, margin_default = default_tiling(side | 1, fwhm)
    opts = dict(nsky=SKY_TERMS[sky_model] if fit_sky else 0,
                tile_size=int(tile_size or tile_default),
                margin=int(margin if margin is not None else margin_default), tol=degenerate_tol)
    blend_flags(prep, fwhm)
    order = (np.arange(n) if in_place
             else spatial_order(prep.x, prep.y, prep.data.shape, opts["tile_size"]))
    none = np.zeros(0, dtype=np.int64)
    idx = none if outer_index is None else np.asarray(outer_index, dtype=np.int64)
    rendered = Rendered(
        stamps=stamps if in_place else _reorder(stamps, order),
        sides=np.maximum(stamps.w, stamps.h),
        outer=outer if outer is not None else Stamps.empty(0, none), outer_index=idx,
        capped=np.zeros(n, dtype=bool))
    return solve_models(prep, rendered, order, psf=psf, mode="scene", opts=opts,
                        cutout_width=side, sky_given=sky is not None, high_chi2=high_chi2,
                        mismatch_sigma=mismatch_sigma, return_model=return_model,
                        keep_state=keep_state, errors=errors)


def _reorder(stamps: Stamps, order: np.ndarray) -> Stamps:
    """The same stamps, stored in ``order`` (stamp ``k`` is source ``order[k]``)."""
    sides_w, sides_h = stamps.w[order], stamps.h[order]
    ptr = np.zeros(order.size + 1, dtype=np.int64)
    np.cumsum(sides_w * sides_h, out=ptr[1:])
    data = np.empty(int(ptr[-1]), dtype=stamps.data.dtype)
    _gather_stamps(stamps.data, stamps.ptr, np.asarray(order, dtype=np.int64), ptr, data)
    return Stamps(data, ptr, sides_w, sides_h, stamps.x0[order], stamps.y0[order])


@numba.njit(cache=True, nogil=True)
def _gather_stamps(data: np.ndarray, ptr: np.ndarray, order: np.ndarray, new_ptr: np.ndarray,
                   out: np.ndarray) -> None:
    """Copy stamp ``order[k]`` (``data[ptr[i]:]``) to ``out[new_ptr[k]:new_ptr[k + 1]]``."""
    for k in range(order.shape[0]):
        src = data[ptr[order[k]]:]
        dst = out[new_ptr[k]:new_ptr[k + 1]]
        for p in range(dst.shape[0]):
            dst[p] = src[p]


def _assemble(
    prep: Prepared, stamps: Stamps, pos: np.ndarray, nuse: np.ndarray, flux: np.ndarray,
    var: np.ndarray, status: np.ndarray, hasdeg: np.ndarray, local_sky: np.ndarray,
    extra: np.ndarray | None, info: dict, *, high_chi2: float, mismatch_sigma: float,
    return_model: bool, errors: bool = True,
) -> PhotometryResult:
    """Flags, errors, chi2, model mismatch and model image (source ``i`` is stamp
    ``pos[i]``; the per-source inputs and outputs are in input order). ``extra`` is
    the rest of the model: fitted sky and the light beyond the stamps. Without
    ``errors`` (no variances in ``var``), the errors, chi2 and mismatch are NaN."""
    flags = prep.flags
    flux, err, ok = settle_fits(prep, flux, var, status, hasdeg, errors=errors)
    sflux = np.empty_like(flux)
    sflux[pos] = flux
    if extra is not None:  # (ours: the stamps are added into it, no new image)
        K.scatter_into(*stamps.arrays, sflux, extra)
        model = extra
    else:
        model = K.scatter_model(*stamps.arrays, sflux, prep.data.shape)
    out_model = model + prep.sky if return_model else None
    if errors:
        resid = np.subtract(prep.data, model, out=model)  # the model image is not needed
        mism, chisum = mismatch_and_chi2(stamps, prep.weight, resid)
        chi2, mism = quality_flags(flags, ok, chisum[pos], nuse, mism[pos],
                                   high_chi2=high_chi2, mismatch_sigma=mismatch_sigma)
    else:
        chi2 = mism = np.full(flux.shape[0], np.nan)
    sky_vals = local_sky + fixed_sky_at(prep)
    known = prep.x > -1e8
    return PhotometryResult(flux, err, chi2, flags.astype(np.int32),
                            np.where(known, prep.x, np.nan), np.where(known, prep.y, np.nan),
                            sky_vals, nuse, out_model, info, mism)


def settle_fits(prep: Prepared, flux: np.ndarray, var: np.ndarray, status: np.ndarray,
                hasdeg: np.ndarray, *, errors: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flag a solve's outcome in ``prep.flags`` (degenerate, failed, negative flux);
    return ``(flux, err, ok)`` with NaN where no flux was measured. Without ``errors``
    (``var`` not computed), ``err`` is NaN and a flux needs no variance to count."""
    flags, fitted = prep.flags, prep.fit
    flags[fitted & (status == K.ST_DEGENERATE)] |= int(Flag.DEGENERATE)
    flags[fitted & (status == K.ST_FAILED)] |= int(Flag.FIT_FAILED)
    flags[fitted & hasdeg] |= int(Flag.HAS_DEGENERATE)
    ok = fitted & (status == K.ST_OK) & np.isfinite(flux)
    if errors:
        ok &= np.isfinite(var) & (var > 0)
    flags[fitted & (status == K.ST_OK) & ~ok] |= int(Flag.FIT_FAILED)
    flux = np.where(ok, flux, np.nan)
    err = (np.where(ok, np.sqrt(np.where(ok, var, 1.0)), np.nan) if errors
           else np.full(flux.shape[0], np.nan))
    flags[ok & (flux < 0)] |= int(Flag.NEGATIVE_FLUX)
    return flux, err, ok


def quality_flags(flags: np.ndarray, ok: np.ndarray, chisum: np.ndarray, nuse: np.ndarray,
                  mismatch: np.ndarray, *, high_chi2: float, mismatch_sigma: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Reduced chi2 and model mismatch of the measured sources (NaN elsewhere), with
    ``HIGH_CHI2`` and ``MODEL_MISMATCH`` set in ``flags`` beyond their thresholds."""
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(ok, chisum / np.maximum(nuse - 1, 1), np.nan)
    flags[ok & (chi2 > high_chi2)] |= int(Flag.HIGH_CHI2)
    mism = np.where(ok, mismatch, np.nan)
    flags[ok & (np.abs(mism) > mismatch_sigma)] |= int(Flag.MODEL_MISMATCH)
    return chi2, mism


def scatter_stamps(stamps: Stamps, amp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Sum of ``amp[i]`` times stamp ``i`` on an image of ``shape`` (clipped at its edges;
    non-finite amplitudes left out)."""
    return K.scatter_model(*stamps.arrays, np.asarray(amp, dtype=np.float64), shape)


def fixed_sky_at(prep: Prepared) -> np.ndarray:
    """The given (not fitted) sky at each source's nearest pixel."""
    ny, nx = prep.sky.shape
    cx = np.clip(np.floor(prep.x + 0.5).astype(np.int64), 0, nx - 1)
    cy = np.clip(np.floor(prep.y + 0.5).astype(np.int64), 0, ny - 1)
    return prep.sky[cy, cx]
