"""Template fitting: :func:`fit_templates`, the entry point, and :func:`run_templates`.

Steps (see the package docstring): validate the inputs; measure every
segment on the sharp image (:mod:`.segments`) and share the unlabelled pixels
around them (:mod:`.share`); map the sources onto the
blurred image through both WCSs (:mod:`.geometry`); choose each source's
model (its template, or a point source when it is unresolved on the sharp
image or its segment holds no positive light; sources absent from the sharp
image come as ``extra`` and are points or Sersic galaxies); build the
matching kernel and the templates (:mod:`.kernel`, :mod:`.build`); fit them
jointly with the sky (:func:`dask_phot.engine.fit.fit_stamps`); measure the registration from the
residuals, rebuild and refit (:mod:`.register`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from dask_phot.engine.fit import fit_stamps
from dask_phot.engine.result import PhotometryResult
from dask_phot.engine.scene import default_tiling, spatial_order
from dask_phot.models.shapes import wcs_jacobian
from dask_phot.models.stamps import Stamps
from dask_phot.schema import Flag
from dask_phot.templates.build import TemplateStamps, segment_extent, stamp_sides
from dask_phot.templates.geometry import (
    check_overlap,
    check_psf_scale,
    map_sources,
    pixel_scale,
)
from dask_phot.templates.inputs import Inputs, load_inputs
from dask_phot.templates.kernel import TemplateKernel, sharp_psf_array
from dask_phot.templates.models import Models, assemble_models
from dask_phot.templates.noise import (
    confusion,
    hires_rms,
    segment_cells,
    stamp_products,
    template_variance,
)
from dask_phot.templates.register import ShiftMap, measure_shifts
from dask_phot.templates.segments import (
    background_mesh,
    grow_segments,
    measure_segments,
    psf_concentration,
)
from dask_phot.templates.share import BLOCK, share_outskirts
from dask_phot.templates.wings import segment_psf_fraction

__all__ = ["TemplateOptions", "TemplateResult", "fit_templates", "run_templates",
           "template_stamps"]


#: Box side (arcsec) of the sharp image's background map (``hires_background="local"``).
_MESH = 4.0


@dataclass(frozen=True)
class TemplateOptions:
    """Options of :func:`fit_templates` (see there).

    The defaults are the cheapest setting measured to meet the accuracy targets
    on a crowded COSMOS-density 2'x2' pair (``benchmarks/bench_templates.py``):
    segments grown 1.2" with shared outskirts, the sharp image taken as
    background subtracted, one registration iteration with the shifts fitted
    jointly with the fluxes (:func:`~.register.decorrelate`): bias -0.2%, pull
    std 1.13 at S/N 5-100, a 0.3" offset recovered as 0.290" (pull std 1.15).
    Cheaper settings fail there: default segments (``grow=0``) 1.75 (1.61 with
    ``psf_wings``), bias -3.1% (-2.1%); ``grow=0.6`` 1.29; hard grown
    boundaries 1.34; and the local
    sharp background (``hires_background="local"``), a median of unlabelled
    pixels that holds the sources' outskirts, takes 3.9% off grown templates
    (pull std 2.2).
    """

    fit_sky: bool = True
    sky_model: str = "constant"
    register: bool = True
    register_iterations: int = 1
    register_snr: float = 10.0
    region_size: float = 60.0
    max_shift: float = 1.0
    oversample: int | None = None
    unresolved: float = 0.9
    grow: float = 1.2
    outskirts: str = "shared"
    psf_wings: bool = True
    hires_background: str = "none"
    max_size: int = 255
    window: tuple[float, float] = (0.7, 1.0)
    regularization: float = 1e-5
    high_chi2: float = 5.0
    hires_sigma: float | None = None

    def __post_init__(self) -> None:
        if self.hires_sigma is not None and not self.hires_sigma >= 0:
            raise ValueError(f"hires_sigma: must be >= 0 (the sharp image's units), got "
                             f"{self.hires_sigma!r}")
        if self.sky_model not in ("constant", "plane"):
            raise ValueError(f"sky_model: must be 'constant' or 'plane', got {self.sky_model!r}")
        if not (isinstance(self.register_iterations, int) and self.register_iterations >= 1):
            raise ValueError(f"register_iterations: must be an integer >= 1, got "
                             f"{self.register_iterations!r}")
        if self.outskirts not in ("shared", "grown"):
            raise ValueError(f"outskirts: must be 'shared' or 'grown', got {self.outskirts!r}")
        if self.hires_background not in ("local", "none"):
            raise ValueError(f"hires_background: must be 'local' or 'none', got "
                             f"{self.hires_background!r}")
        if not self.grow >= 0:
            raise ValueError(f"grow: must be >= 0 (arcsec), got {self.grow!r}")
        for name in ("region_size", "max_shift"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0 (arcsec), got {getattr(self, name)!r}")
        if self.oversample is not None and not (isinstance(self.oversample, int)
                                                and 1 <= self.oversample <= 16):
            raise ValueError(f"oversample: must be an integer 1..16, got {self.oversample!r}")


@dataclass
class TemplateResult:
    """What :func:`run_templates` returns.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per source (see :func:`fit_templates`).
    model : ndarray or None
        Model image (sources, wings and sky) of the final fit.
    shifts : ShiftMap or None
        Registration shifts per region (blurred pixels), when measured.
    kernel : TemplateKernel
        The matching kernel on its lattice.
    info : dict
        Run facts (lattice oversampling, iterations, global shift).
    """

    table: pd.DataFrame
    model: np.ndarray | None
    shifts: ShiftMap | None
    kernel: TemplateKernel
    info: dict = field(default_factory=dict)


def fit_templates(image: np.ndarray | str | os.PathLike[str], wcs: WCS, psf: object,
                  hires: np.ndarray | str | os.PathLike[str], hires_wcs: WCS,
                  hires_psf: object, segmap: np.ndarray | str | os.PathLike[str], *,
                  sigma: float | np.ndarray | None = None, weight: np.ndarray | None = None,
                  fit_sky: bool = True, extra: pd.DataFrame | None = None,
                  shifts: ShiftMap | None = None, **options: object) -> pd.DataFrame:
    """Fluxes in a blurred image from templates made from a sharp image.

    Parameters
    ----------
    image : ndarray or path
        The blurred image (FITS path: its primary HDU).
    wcs : astropy.wcs.WCS or astropy.io.fits.Header
        The blurred image's WCS (its celestial axes are used).
    psf : PixelPSF, OversampledPSF or ndarray
        The blurred band's PSF at the image's pixel scale (checked against ``wcs``);
        a bare array is a PixelPSF at that scale.
    hires : ndarray or path
        The sharp image, background subtracted.
    hires_wcs : astropy.wcs.WCS or astropy.io.fits.Header
        Its WCS.
    hires_psf : PixelPSF, OversampledPSF or ndarray
        The sharp image's PSF, at any pixel scale (a bare array: the sharp
        image's); resampled onto the sharp image's grid.
    segmap : ndarray or path
        Segmentation map of the sharp image (``dask_phot.detect``): each pixel
        holds the label of the source that owns it, 0 for none.
    sigma, weight : float or ndarray, optional
        Noise of the blurred image (1-sigma, or inverse variance); default
        its robust RMS.
    fit_sky : bool
        Fit a sky level per tile with the sources.
    extra : pandas.DataFrame, optional
        Sources absent from the sharp image: ``ra``, ``dec`` (degrees), ``id``
        (must not be a segment label), and optionally Sersic shapes ``r_e``
        (arcsec), ``q``, ``pa`` (degrees east of north), ``n``; points without.
    shifts : ShiftMap, optional
        Registration measured before (``run_templates(...).shifts``), applied
        instead of measured.
    **options
        :class:`TemplateOptions`: ``register`` (measure and correct the
        registration, default True), ``register_iterations`` (1: fit, measure,
        rebuild and refit once),
        ``register_snr`` (sources at this S/N or more carry the registration, 10),
        ``region_size`` (arcsec, 60), ``max_shift`` (arcsec, 1.0),
        ``oversample`` (lattice points per blurred pixel; default from the PSF's
        FWHM), ``grow`` (arcsec, default 1.2: the unlabelled pixels within this of
        a segment's box join templates, so they hold the faint outskirts and the
        sharp PSF's wings a detection threshold leaves out), ``outskirts``
        ("shared", the default: those pixels are shared between neighbours in
        proportion to smooth models of them, :mod:`.share`; "grown": segments
        grown by ``grow`` into unlabelled pixels, meeting half way), ``psf_wings``
        (True: with unshared segments, ``grow=0`` or "grown", the sharp PSF's
        light beyond each segment is given back from the PSF, :mod:`.wings`),
        ``hires_background`` ("none", the default: the sharp image is taken as
        background subtracted; "local": a background map, the median of
        unlabelled pixels in 4" boxes, is interpolated at each segment and
        subtracted from its pixels), ``unresolved`` (a
        segment whose concentration reaches this fraction of an unresolved
        source's is a point source; 0.9; > 1 keeps every template),
        ``max_size`` (largest stamp, pixels), ``window`` and ``regularization``
        (matching kernel), ``sky_model``, ``high_chi2``.

    Returns
    -------
    pandas.DataFrame
        One row per segment label (and per ``extra`` source): ``id``, ``flux``
        (total flux, units of ``image``), ``flux_err``, ``chi2`` (reduced, over
        the stamp), ``flags`` (:class:`dask_phot.Flag`), ``model`` ("template",
        "point" or "sersic"), ``x``, ``y`` (reference position on ``image``,
        registration included), ``ra``, ``dec``, ``shift_x``, ``shift_y``
        (registration, image pixels) and ``shift_east``, ``shift_north``
        (arcsec), ``sky``, ``n_pixels``, ``hires_flux`` (segment sum).

    Raises
    ------
    ValueError
        A segmentation map of another shape than its image, WCSs that do not
        overlap, bad options; the message names the argument or file.
    dask_phot.psf.PSFError
        A PSF of the wrong pixel scale.
    """
    return run_templates(image, wcs, psf, hires, hires_wcs, hires_psf, segmap, sigma=sigma,
                         weight=weight, fit_sky=fit_sky, extra=extra, shifts=shifts,
                         return_model=False, **options).table


def run_templates(image: np.ndarray | str | os.PathLike[str], wcs: WCS, psf: object,
                  hires: np.ndarray | str | os.PathLike[str], hires_wcs: WCS,
                  hires_psf: object, segmap: np.ndarray | str | os.PathLike[str], *,
                  sigma: float | np.ndarray | None = None, weight: np.ndarray | None = None,
                  fit_sky: bool = True, extra: pd.DataFrame | None = None,
                  shifts: ShiftMap | None = None, return_model: bool = True,
                  **options: object) -> TemplateResult:
    """:func:`fit_templates` with the model image, the shift map and the kernel.

    ``shifts`` (a :class:`~.register.ShiftMap` from an earlier run on the same
    pair of mosaics) is applied as given instead of being measured: the
    registration is a property of the two mosaics, so it can be measured once
    and each later fit be a single pass.
    """
    opts = TemplateOptions(fit_sky=fit_sky, **options)  # type: ignore[arg-type]
    inp = load_inputs(image, wcs, psf, hires, hires_wcs, hires_psf, segmap, sigma=sigma,
                      weight=weight)
    scale = pixel_scale(inp.wcs, "wcs")
    kernel, models, m = _prepare(inp, opts, extra, scale)
    models = _in_fit_order(models, inp, opts)
    region = max(8, round(opts.region_size / scale))
    iterations = opts.register_iterations if opts.register and models.x.size else 0
    if shifts is not None:
        iterations = 0
    shift_map = shifts if shifts is not None else ShiftMap.zero(inp.image.shape, region)
    cache: dict | None = {} if iterations else None  # (the deposits, built once)
    built = None
    for it in range(iterations + 1):
        dx, dy = shift_map.at(models.x, models.y)
        # (the last build's stamps are done with once its shifts are measured: reused)
        built = models.build(inp, kernel, dx, dy, max_size=opts.max_size, cache=cache,
                             reuse=built)
        res = _fit(inp, models, built, dx, dy, opts, wings=it == iterations)
        products = _products(inp, built, res)
        if it < iterations:
            shift_map = shift_map + _shift_step(inp, built, res, opts, region, scale,
                                                products)
    table = _table(models, res, dx, dy, built.capped, inp,
                   _template_variance(inp, models, res, built, dx, dy, opts, products))
    info = {"oversample": m, "iterations": iterations, "region": shift_map.region,
            "shift_x": float(np.median(dx)) if dx.size else 0.0,
            "shift_y": float(np.median(dy)) if dy.size else 0.0}
    return TemplateResult(table, res.model if return_model else None,
                          shift_map if iterations or shifts is not None else None, kernel,
                          info)


def template_stamps(image: np.ndarray, wcs: WCS, psf: object, hires: np.ndarray,
                    hires_wcs: WCS, hires_psf: object, segmap: np.ndarray, *,
                    extra: pd.DataFrame | None = None, **options: object
                    ) -> tuple[np.ndarray, np.ndarray, Stamps]:
    """The unit-flux models :func:`fit_templates` would fit, without fitting them
    (no registration): to draw a catalogue's fluxes as an image.

    Returns
    -------
    ids, kinds : ndarray
        Segment labels (and ``extra`` ids) and their models ("template", "point",
        "sersic") of the sources on ``image``.
    stamps : Stamps
        Their unit-flux models on ``image``'s pixels, same order.
    """
    opts = TemplateOptions(**options)  # type: ignore[arg-type]
    inp = load_inputs(image, wcs, psf, hires, hires_wcs, hires_psf, segmap, sigma=1.0,
                      weight=None)
    kernel, models, _ = _prepare(inp, opts, extra, pixel_scale(inp.wcs, "wcs"))
    zero = np.zeros(models.x.shape[0])
    built = models.build(inp, kernel, zero, zero, max_size=opts.max_size)
    return models.ids, models.kinds, built.stamps


def _prepare(inp: Inputs, opts: TemplateOptions, extra: pd.DataFrame | None, scale: float
             ) -> tuple[TemplateKernel, Models, int]:
    """Checks, segments, the sources' maps and models, and the matching kernel."""
    hscale = pixel_scale(inp.hires_wcs, "hires_wcs")
    check_psf_scale(inp.psf, scale, "psf", inp.image_name)
    check_overlap(inp.hires_wcs, inp.hires.shape, inp.wcs, inp.image.shape,
                  hires_name=inp.hires_name, name=inp.image_name)
    sharp = sharp_psf_array(inp.hires_psf, hscale)
    _check_widths(sharp, hscale, inp.psf, scale)
    reach = round(opts.grow / hscale)
    if reach > 0 and opts.outskirts == "grown":
        inp.segmap = grow_segments(inp.segmap, reach)
    shared = reach > 0 and opts.outskirts == "shared"
    seg = measure_segments(inp.hires, inp.segmap, max_label=inp.max_label,
                           block=BLOCK if shared else 0)
    sx, sy, jac = map_sources(inp.hires_wcs, inp.wcs, seg.x, seg.y)
    m = opts.oversample or _default_oversample(inp.psf, scale, hscale)
    kernel = TemplateKernel.build(inp.psf, sharp, np.median(jac, axis=0) if len(seg)
                                  else np.eye(2) * hscale / scale, m, window=opts.window,
                                  regularization=opts.regularization)
    segd = {k: getattr(seg, k) for k in ("id", "x", "y", "xmin", "xmax", "ymin", "ymax")}
    segd["bkg"] = np.zeros(len(seg))
    if opts.hires_background == "local":
        segd["bkg"] = background_mesh(inp.hires, inp.segmap, seg,
                                      box=max(round(_MESH / hscale), 8))
    npix = (seg.npix - seg.nbad).astype(np.float64)
    flux = seg.flux.copy()
    if shared:
        shares = share_outskirts(inp.hires, inp.segmap, seg, reach)
        inp.share = shares
        segd["wptr"] = shares.params["wptr"]
        for key, box in (("xmin", "sx0"), ("xmax", "sx1"), ("ymin", "sy0"), ("ymax", "sy1")):
            segd["seg_" + key] = segd[key]
            segd[key] = shares.params[box]
        flux += shares.light
        npix += shares.wsum
    flux -= segd["bkg"] * npix
    light = flux
    if opts.psf_wings and inp.share is None:
        inp.wings = sharp
        light = flux / segment_psf_fraction(inp.segmap, seg.id, seg.xmin, seg.xmax, seg.ymin,
                                            seg.ymax, seg.x, seg.y, sharp)
        segd["lp"] = light
    with np.errstate(divide="ignore", invalid="ignore"):
        conc = (seg.peak3 - 9.0 * segd["bkg"]) / flux / psf_concentration(
            sharp, np.round(npix).astype(np.int64))
    point = ~(flux > 0) | (conc >= opts.unresolved)
    models = assemble_models(seg, segd, sx, sy, jac, segment_extent(segd, jac), point, light,
                             extra, inp)
    return kernel, models, m


def _in_fit_order(models: Models, inp: Inputs, opts: TemplateOptions) -> Models:
    """The models listed in the order in which the engine would copy their stamps
    (:func:`~dask_phot.engine.scene.spatial_order` on the tiles
    :func:`~dask_phot.engine.fit.fit_stamps` takes by default): built in that order,
    the fits use them in place (``in_place``). Without Sersic sources only."""
    n = models.x.shape[0]
    if models.gal.size or n == 0:
        return models
    ps = int(inp.psf.size)  # type: ignore[attr-defined]
    sides = np.full(n, ps, dtype=np.int64)
    sides[models.tpl] = stamp_sides(models.extent, ps, opts.max_size)[0]
    tile, _ = _tiling(sides, inp)
    return models.reordered(spatial_order(models.x, models.y, inp.image.shape, tile))


def _tiling(sides: np.ndarray, inp: Inputs) -> tuple[int, int]:
    """The fits' tile size and margin: the engine's defaults for the median stamp side,
    with tiles grown for the density of sources as :func:`dask_phot.forced_photometry`
    grows them (:func:`~dask_phot.engine.scene.default_tiling`). On the 5'x5' pair
    the two fits take ~25% less CPU (0.26 -> 0.19 s); fluxes move by 0.04 sigma
    (median, 0.3 at the 99th percentile) and the pulls against the truth are the same."""
    density = sides.shape[0] / max(inp.image.size, 1)
    return default_tiling(int(np.median(sides)) | 1,
                          float(inp.psf.fwhm), density)  # type: ignore[attr-defined]


def _fit(inp: Inputs, models: Models, built: TemplateStamps, dx: np.ndarray,
         dy: np.ndarray, opts: TemplateOptions, wings: bool = True) -> PhotometryResult:
    """The joint fit (the engine's :func:`~dask_phot.engine.fit.fit_stamps`), with the
    band PSF's wings beyond each stamp subtracted between two fits when ``wings`` (the
    registration's intermediate fits leave them: their residuals only carry the
    shifts, and a symmetric halo adds nothing to a gradient's cross-correlation; nor
    their errors, chi2 and mismatch: ``errors=False``). Tiles as :func:`_tiling`. The
    scene's state is kept in ``info["state"]`` (:func:`_products`)."""
    tile, margin = _tiling(np.maximum(built.stamps.w, built.stamps.h), inp)
    return fit_stamps(inp.image, built.stamps, models.x + dx, models.y + dy,
                      fwhm=float(inp.psf.fwhm),  # type: ignore[attr-defined]
                      psf=inp.psf if wings else None,
                      sigma=inp.sigma, weight=inp.weight, fit_sky=opts.fit_sky,
                      sky_model=opts.sky_model, high_chi2=opts.high_chi2,
                      mismatch_sigma=5.0, return_model=True, keep_state=True,
                      in_place=not models.gal.size, errors=wings,
                      tile_size=tile, margin=margin)


def _weights(inp: Inputs) -> np.ndarray:
    """The blurred image's inverse-variance weights, as the engine takes them."""
    from dask_phot.engine.prepare import prepare_inputs

    return prepare_inputs(inp.image, None, np.zeros(0), np.zeros(0), sigma=inp.sigma,
                          weight=inp.weight, sky=None).weight


def _products(inp: Inputs, built: TemplateStamps, res: PhotometryResult
              ) -> tuple[np.ndarray, ...]:
    """The fitted stamps' weighted products (as :func:`.noise.stamp_products` gives
    them), which the fit summed for its normal matrices: taken from its state (dropped
    from ``res.info``), or summed here when it kept none (tiles built without a pair
    table)."""
    state = res.info.pop("state", None)
    products = state.products() if state is not None else None
    return products if products is not None else stamp_products(built.stamps,
                                                                _weights(inp))


def _shift_step(inp: Inputs, built: TemplateStamps, res: PhotometryResult,
                opts: TemplateOptions, region: int, scale: float,
                products: tuple[np.ndarray, ...]) -> ShiftMap:
    """One registration step from a fit's residual (:mod:`.register`), with the fitted
    stamps' products (:func:`_products`).

    The model's gradient is the Fourier derivative of the image of the sources with
    S/N >= ``register_snr`` (:func:`~.register.model_gradients`); the
    fainter ones add noise, not signal, to the cross-correlation.
    """
    shape = inp.image.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        # the intermediate fit has no errors (``errors=False``): each source's S/N alone,
        # its flux over 1 / sqrt(sum w s^2) (its own stamp's weighted power)
        snr = res.flux * np.sqrt(products[3])
    rows = np.flatnonzero(np.isfinite(snr) & (snr >= opts.register_snr))
    if rows.size == 0 or res.model is None:
        return ShiftMap.zero(shape, region)
    flux = np.zeros(res.flux.shape[0])
    flux[rows] = res.flux[rows]
    return measure_shifts(inp.image - res.model, _weights(inp), built.stamps, flux,
                          region=region, max_shift=opts.max_shift / scale, max_error=0.1,
                          products=products)


def _default_oversample(psf: object, scale: float, hscale: float) -> int:
    """Lattice points per blurred pixel: ~4 per FWHM, at least 2, at most the ratio of
    pixel scales (no finer than the sharp image)."""
    fwhm = float(psf.fwhm)  # type: ignore[attr-defined]
    m = max(2, math.ceil(4.0 / max(fwhm, 1e-3)))
    return int(min(m, max(2, math.floor(scale / hscale))))


def _check_widths(sharp: np.ndarray, hscale: float, psf: object, scale: float) -> None:
    """A sharp PSF broader than the band's means a wrong pixel scale somewhere."""
    from dask_phot.psf import PixelPSF, PSFError

    fw_sharp = PixelPSF.fwhm_of(sharp) * hscale
    fw_band = float(psf.fwhm) * scale  # type: ignore[attr-defined]
    if not fw_sharp < fw_band:
        raise PSFError(f"hires_psf: FWHM {fw_sharp:.3g}\" is not sharper than psf's "
                       f"{fw_band:.3g}\"; is the pixel scale of either PSF wrong?")


def _template_variance(inp: Inputs, models: Models, res: PhotometryResult,
                       built: TemplateStamps, dx: np.ndarray, dy: np.ndarray,
                       opts: TemplateOptions, products: tuple[np.ndarray, ...] | None = None
                       ) -> np.ndarray:
    """Variance of each fitted flux from the sharp image's noise in the templates it
    is blended with (:mod:`.noise`; ``products``: the stamps' products, if taken)."""
    if not models.tpl.size:
        return np.zeros(models.x.shape[0])
    sig = opts.hires_sigma if opts.hires_sigma is not None else hires_rms(inp.hires,
                                                                          inp.segmap)
    t = models.tpl
    cells = segment_cells(inp.hires, inp.segmap, models.seg, models.jac,
                          (models.x + dx)[t], (models.y + dy)[t], inp.share,
                          _confusion(inp, sig) if inp.share is not None else 0.0)
    return template_variance(built.stamps, _weights(inp), inp.psf, res.flux, t,
                             models.hires_flux[t], cells, sig, products=products)


def _confusion(inp: Inputs, sigma: float) -> float:
    """:func:`.noise.confusion` on blocks of a blurred pixel, over the pixel variance."""
    if not sigma > 0:
        return 0.0
    block = round(pixel_scale(inp.wcs, "wcs") / pixel_scale(inp.hires_wcs, "hires_wcs"))
    return confusion(inp.hires, inp.segmap, block, sigma) / sigma ** 2


def _table(models: Models, res: PhotometryResult, dx: np.ndarray, dy: np.ndarray,
           capped: np.ndarray, inp: Inputs, template_var: np.ndarray) -> pd.DataFrame:
    """The output table: fitted sources, then sources off the image."""
    flags = res.flags.astype(np.int64)
    flags[capped | models.edge] |= int(Flag.MODEL_TRUNCATED)
    x, y = models.x + dx, models.y + dy
    jac = wcs_jacobian(inp.wcs, x, y) if x.size else np.zeros((0, 2, 2))
    east = jac[:, 0, 0] * dx + jac[:, 0, 1] * dy
    north = jac[:, 1, 0] * dx + jac[:, 1, 1] * dy
    fitted = pd.DataFrame({
        "id": models.ids, "flux": res.flux,
        "flux_err": np.sqrt(res.flux_err ** 2 + template_var),
        "template_err": np.sqrt(template_var), "chi2": res.chi2,
        "flags": flags, "model": models.kinds, "x": x, "y": y, "ra": models.ra,
        "dec": models.dec, "shift_x": dx, "shift_y": dy, "shift_east": east,
        "shift_north": north, "mismatch": res.mismatch, "sky": res.sky, "n_pixels": res.n_pixels,
        "hires_flux": models.hires_flux})
    off = models.off
    if len(off):
        fitted = pd.concat([fitted, off], ignore_index=True)
    return fitted.sort_values("id", kind="stable").reset_index(drop=True)

