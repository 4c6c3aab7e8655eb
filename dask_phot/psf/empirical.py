"""Effective PSFs measured from a mosaic's own stars: :func:`build_epsf`.

A mosaic's PSF depends on how it was made (the stack of position angles of
IRAC, resampling, seeing), so a preset file is only an approximation of it.
:func:`build_epsf` measures the effective PSF (ePSF: the PSF convolved with the
detector pixel, sampled on a grid ``oversampling`` times finer than the mosaic's
pixels) from the mosaic's stars:

1. candidates come from a reference catalog (Gaia, or priors flagged as stars)
   or from all priors; a first forced fit with a rough Gaussian measures every
   source, then :func:`~dask_phot.psf.stars.select_stars` keeps the bright,
   isolated, unsaturated, compact ones and records why the others were dropped;
2. each star's neighbours are fitted with the current ePSF and subtracted, and
   pixels they dominate are masked; each star's sky comes from a ring around its
   box, corrected for the ePSF wings that fall on it;
3. stars are fitted (flux, position) and stacked by least squares on the
   oversampled grid (:mod:`dask_phot.psf._epsf_stack`), alternately, the neighbours
   refitted with each new ePSF; the oversampling is at most what the stars
   constrain (:func:`stars_oversampling`);
4. the stacked core is joined to a wing model and normalised to total flux
   (:mod:`dask_phot.psf.wings`), and registered so that the stars' catalog
   positions are its origin (or centred on its centroid);
5. with enough stars, the same is done in each cell of a grid over the mosaic.

The result is an :class:`~dask_phot.psf.epsf_result.EmpiricalPSF`. Bad input
(too few stars, only saturated stars, sky positions without a WCS) raises
:class:`EmpiricalPSFError`, whose ``reason`` lets a pipeline fall back to a preset.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd
from scipy.special import erf

from dask_phot.psf._epsf_render import coefficients, node_values
from dask_phot.psf._epsf_stack import cut_stars
from dask_phot.psf.epsf_build import BuildState, iterate_epsf, phase_normalised, star_residuals
from dask_phot.psf.epsf_error import epsf_flux_error
from dask_phot.psf.epsf_result import EmpiricalPSF
from dask_phot.psf.pixel import PixelPSF, PSFError
from dask_phot.psf.stars import StarSelection, select_stars
from dask_phot.psf.wings import WingModel

__all__ = ["EPSFOptions", "EmpiricalPSFError", "build_epsf", "stars_oversampling"]

log = logging.getLogger(__name__)


class EmpiricalPSFError(PSFError):
    """An ePSF that cannot be built from this mosaic (one line says why).

    Attributes
    ----------
    reason : str
        ``"too_few_stars"``, ``"saturated"``, ``"no_wcs"``, ``"no_candidates"`` or
        ``"wings"`` (the stars' ePSF and the wing model do not join).
    found, needed : int
        Usable stars found and the minimum asked for.
    rejected : dict
        Rejected candidates by reason.
    """

    def __init__(self, message: str, *, reason: str, found: int = 0, needed: int = 0,
                 rejected: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.found = int(found)
        self.needed = int(needed)
        self.rejected = dict(rejected or {})


@dataclass(frozen=True, kw_only=True)
class EPSFOptions:
    """Options of :func:`build_epsf` (unknown names are errors).

    Parameters
    ----------
    oversampling : int
        ePSF nodes per mosaic pixel, at most: lowered to what the stars constrain
        (:func:`stars_oversampling`: ``floor(sqrt(n_stars / 12))``, at least 2).
    size : int, optional
        Odd side of the ePSF (the engine's stamps), mosaic pixels; default: what a
        PSF wing model covers, ``2 round(1.6 R) + 1`` with Moffat wings (``R`` the
        core box's half side), the core box without wings.
    core_size : int, optional
        Odd side of the box around each star where the ePSF is measured; default
        ``2 ceil(4 FWHM) + 1``.
    sky_width : int
        Width of the ring around each star's box where its sky is measured, pixels.
    snr_min : float
        Smallest S/N of a star (first forced fit).
    max_contamination : float
        Largest neighbour light in a star's core, as a fraction of its flux.
    compact_nsigma : float
        Candidates less concentrated than the median by this many robust sigmas are extended.
    max_stars : int
        At most this many stars per ePSF (the highest S/N).
    min_stars : int
        Fewer usable stars than this is an error.
    saturation : float, optional
        Pixel value (image units, sky included) from which a star is saturated.
    wings : WingModel or str or PixelPSF
        ``"moffat"``, ``"none"``, a PSF (optical when finer than the mosaic, a PRF at
        the mosaic's scale) or a :class:`~dask_phot.psf.wings.WingModel`.
    wing_radii : (float, float), optional
        Annulus (pixels) where wings and core are matched; default
        ``(max(2 FWHM, R / 2), R - 1)`` with ``R`` the box's half side.
    center : {"catalog", "centroid"}
        Register the ePSF to the stars' catalog positions, or centre its centroid.
    grid : {"auto", "none"} or (int, int)
        ``"auto"``: the finest of 4x4, 3x3, 2x2 grids whose every cell has
        ``min_stars_per_cell`` stars, else one global ePSF; ``(ny, nx)`` forces a grid.
    min_stars_per_cell : int
        Stars needed in every cell of an automatic grid.
    iterations : int
        Fit/stack iterations of the global ePSF (cells take half as many).
    smoothing : float
        Curvature penalty of the stack, relative to the data weight of a node.
    error_floor : float
        Fractional model error added to each star pixel's noise (limits the bright stars' weight).
    clip : float
        Star pixels further than ``clip`` sigma from the previous ePSF (noise and error
        floor) are left out of the stack (cosmic rays); 0 (the default): none, since
        clipping against an ePSF that is still wrong (a grid cell starting from the
        global ePSF) keeps it wrong.
    fit_radius : float, optional
        Radius of a star's fit, pixels; default ``max(2, 1.5 FWHM)``.
    max_shift : float
        Stars that move further than this from their catalog position are dropped, pixels.
    error_samples : int
        Bootstrap replicas of the stars that measure the ePSF's fractional flux error
        (:mod:`~dask_phot.psf.epsf_error`); 0 skips it (error 0).
    """

    oversampling: int = 4
    size: int | None = None
    core_size: int | None = None
    sky_width: int = 4
    snr_min: float = 50.0
    max_contamination: float = 0.1
    compact_nsigma: float = 4.0
    max_stars: int = 300
    min_stars: int = 10
    saturation: float | None = None
    wings: object = "moffat"
    wing_radii: tuple[float, float] | None = None
    center: str = "catalog"
    grid: object = "auto"
    min_stars_per_cell: int = 50
    iterations: int = 6
    smoothing: float = 1e-4
    error_floor: float = 0.02
    clip: float = 0.0
    fit_radius: float | None = None
    max_shift: float = 1.0
    error_samples: int = 16

    def __post_init__(self) -> None:
        if not (isinstance(self.oversampling, int) and 1 <= self.oversampling <= 16):
            raise PSFError("epsf: oversampling must be an integer 1..16, "
                           f"got {self.oversampling!r}")
        for key in ("size", "core_size"):
            v = getattr(self, key)
            if v is not None and (int(v) % 2 == 0 or int(v) < 5):
                raise PSFError(f"epsf: {key} must be odd and >= 5, got {v!r}")
        if self.center not in ("catalog", "centroid"):
            raise PSFError(f"epsf: center must be 'catalog' or 'centroid', got {self.center!r}")
        g = self.grid
        if not (g in ("auto", "none", None) or (isinstance(g, tuple | list) and len(g) == 2
                                                and all(int(v) >= 1 for v in g))):
            raise PSFError(f"epsf: grid must be 'auto', 'none' or (ny, nx), got {g!r}")
        for key in ("snr_min", "max_contamination", "compact_nsigma", "smoothing",
                    "error_floor", "max_shift", "clip"):
            value = getattr(self, key)
            if not (value >= 0 and math.isfinite(value)):
                raise PSFError(f"epsf: {key} must be >= 0, got {value!r}")
        if not (isinstance(self.error_samples, int) and self.error_samples >= 0):
            raise PSFError(f"epsf: error_samples must be an integer >= 0, "
                           f"got {self.error_samples!r}")
        for key in ("min_stars", "max_stars", "min_stars_per_cell", "iterations"):
            if int(getattr(self, key)) < 1:
                raise PSFError(f"epsf: {key} must be >= 1, got {getattr(self, key)!r}")
        object.__setattr__(self, "wings", _wing_model(self.wings))

    @classmethod
    def from_mapping(cls, values: dict[str, object]) -> EPSFOptions:
        """Options from a mapping; unknown keys raise :class:`PSFError` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PSFError(f"epsf: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def _wing_model(value: object) -> WingModel:
    if isinstance(value, WingModel):
        return value
    if isinstance(value, PixelPSF):
        return WingModel.from_psf(value)
    if value in ("moffat", "none"):
        return WingModel(str(value))
    raise PSFError(f"epsf: wings must be 'moffat', 'none', a PixelPSF or a WingModel, "
                   f"got {value!r}")


# ---------------------------------------------------------------------- inputs
def _weight_map(image: np.ndarray, weight: np.ndarray | None,
                sigma: float | np.ndarray | None) -> np.ndarray:
    from dask_phot.engine.prepare import robust_sigma

    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != image.shape:
            raise PSFError(f"epsf: weight has shape {w.shape}, image {image.shape}")
        w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    else:
        if sigma is None:
            sigma = robust_sigma(image[np.isfinite(image)] - np.nanmedian(image))
        s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), image.shape)
        w = np.where(np.isfinite(s) & (s > 0), 1.0 / np.square(np.where(s > 0, s, 1.0)), 0.0)
    return np.where(np.isfinite(image), w, 0.0)


def _positions(table: pd.DataFrame, wcs: object, what: str, name: str
               ) -> tuple[np.ndarray, np.ndarray]:
    cols = set(table.columns)
    if {"x", "y"} <= cols:
        return table["x"].to_numpy(float), table["y"].to_numpy(float)
    if not {"ra", "dec"} <= cols:
        raise PSFError(f"{name}: {what} need columns ra, dec (or x, y), got {sorted(cols)}")
    if wcs is None or not getattr(wcs, "has_celestial", False):
        raise EmpiricalPSFError(
            f"{name}: the mosaic has no celestial WCS, so the {what}' ra/dec cannot be placed "
            "on it; give the mosaic's WCS (or x, y columns)", reason="no_wcs")
    x, y = wcs.celestial.wcs_world2pix(table["ra"].to_numpy(float),
                                       table["dec"].to_numpy(float), 0)
    return np.asarray(x, float), np.asarray(y, float)


def _star_flags(priors: pd.DataFrame, star_column: str | None) -> np.ndarray | None:
    col = star_column
    if col is None:
        col = next((c for c in ("is_star", "star", "point_source") if c in priors.columns), None)
    if col is None:
        return None
    if col not in priors.columns:
        raise PSFError(f"epsf: star_column {col!r} is not a column of the priors")
    return priors[col].to_numpy().astype(bool)


def _sizes(opts: EPSFOptions, fwhm: float, scale: float) -> tuple[int, int]:
    """Half side of the core box and odd side of the final ePSF, pixels."""
    half = (opts.core_size or 2 * math.ceil(4 * fwhm) + 1) // 2
    if opts.size is not None:
        size = int(opts.size)
    elif opts.wings.kind == "psf":
        side = opts.wings.array.shape[0] * opts.wings.array_scale / scale
        size = max(2 * half + 1, 2 * int(side // 2) + 1)
    elif opts.wings.kind == "moffat":
        size = 2 * round(1.6 * half) + 1
    else:
        size = 2 * half + 1
    if size < 2 * half + 1:
        raise PSFError(f"epsf: size {size} is smaller than the core box {2 * half + 1}")
    return half, size


def _pixel_scale(wcs: object, pixel_scale: float | None, name: str) -> float:
    if pixel_scale is not None:
        if not (pixel_scale > 0 and math.isfinite(pixel_scale)):
            raise PSFError(f"{name}: pixel_scale must be > 0, got {pixel_scale!r}")
        return float(pixel_scale)
    if wcs is not None and getattr(wcs, "has_celestial", False):
        from astropy.wcs.utils import proj_plane_pixel_scales

        return float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs.celestial))) * 3600.0)
    return 1.0


# ---------------------------------------------------------------------- first look
def _estimate_fwhm(image: np.ndarray, x: np.ndarray, y: np.ndarray, order: np.ndarray) -> float:
    """Median FWHM (pixels) of the brightest candidates, from their area above half peak."""
    ny, nx = image.shape
    vals = []
    for i in order[:60]:
        cx, cy = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        if cx < 8 or cy < 8 or cx >= nx - 8 or cy >= ny - 8:
            continue
        box = image[cy - 7:cy + 8, cx - 7:cx + 8]
        if not np.all(np.isfinite(box)):
            continue
        ring = np.concatenate([box[0], box[-1], box[1:-1, 0], box[1:-1, -1]])
        b = box - np.median(ring)
        peak = b[6:9, 6:9].max()
        if peak <= 0:
            continue
        vals.append(2.0 * math.sqrt(np.count_nonzero(b >= 0.5 * peak) / math.pi))
    return float(np.median(vals)) if vals else 3.0


def _gaussian_nodes(fwhm: float, n: int, oversampling: int) -> np.ndarray:
    """Pixel-integrated circular Gaussian (unit flux) at the nodes."""
    s = fwhm / 2.3548200450309493 * math.sqrt(2.0)
    u = (np.arange(n) - (n - 1) / 2.0) / oversampling
    p = 0.5 * (erf((u + 0.5) / s) - erf((u - 0.5) / s))
    return np.outer(p, p) * 1.0


def _first_fit(image: np.ndarray, weight: np.ndarray, x: np.ndarray, y: np.ndarray,
               fwhm: float) -> tuple[np.ndarray, np.ndarray]:
    """Flux and S/N of every source with a Gaussian PSF and a fitted sky."""
    from dask_phot.engine import forced_photometry
    from dask_phot.psf.analytic import gaussian_psf

    psf = gaussian_psf(fwhm)
    res = forced_photometry(np.where(weight > 0, image, np.nan), psf, x, y, weight=weight,
                            fit_sky=True)
    flux = np.where(np.isfinite(res.flux), res.flux, 0.0)
    snr = np.where(np.isfinite(res.snr), res.snr, 0.0)
    return flux, snr


def _concentration(image: np.ndarray, weight: np.ndarray, x: np.ndarray, y: np.ndarray,
                   fwhm: float) -> np.ndarray:
    """Light in the central 3x3 pixels over the light within 2 FWHM (sky from the box edge)."""
    half = max(3, math.ceil(2 * fwhm) + 1)
    boxes = cut_stars(image, weight, x, y, half)
    d = boxes.data
    edge = np.concatenate([d[:, 0], d[:, -1], d[:, 1:-1, 0], d[:, 1:-1, -1]], axis=1)
    d = d - np.median(edge, axis=1)[:, None, None]
    g = np.arange(-half, half + 1)
    disc = (g[:, None] ** 2 + g[None, :] ** 2) <= (2 * fwhm) ** 2
    core = d[:, half - 1:half + 2, half - 1:half + 2].sum(axis=(1, 2))
    tot = (d * disc).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tot > 0, core / tot, np.nan)


@dataclass(eq=False)
class _Inputs:
    image: np.ndarray
    weight: np.ndarray
    cand: pd.DataFrame   # x, y, flux, snr, concentration, src (index into `everyone`)
    everyone: pd.DataFrame  # x, y, flux of all sources (stars and priors)
    fwhm: float


def _gather(image, weight, wcs, stars, priors, star_column, opts, name) -> _Inputs:
    if stars is None and priors is None:
        raise EmpiricalPSFError(f"{name}: no star candidates: give a reference catalog "
                                "(stars=) or priors", reason="no_candidates")
    tables = []
    if priors is not None:
        px, py = _positions(priors, wcs, "priors", name)
        flags = _star_flags(priors, star_column) if stars is None else None
        tables.append(pd.DataFrame({"x": px, "y": py,
                                    "cand": stars is None if flags is None else flags}))
    if stars is not None:
        sx, sy = _positions(stars, wcs, "stars", name)
        st = pd.DataFrame({"x": sx, "y": sy, "cand": True})
        if tables:  # a star that is also a prior is the same source
            from scipy.spatial import cKDTree

            d, j = cKDTree(tables[0][["x", "y"]].to_numpy()).query(st[["x", "y"]].to_numpy())
            tables[0] = tables[0].drop(index=np.unique(j[d < 0.5]))
        tables.append(st)
    src = pd.concat(tables, ignore_index=True)
    ny, nx = image.shape
    on = src["x"].between(-0.5, nx - 0.5) & src["y"].between(-0.5, ny - 0.5)
    src = src[on.to_numpy()].reset_index(drop=True)
    if not src["cand"].any():
        raise EmpiricalPSFError(f"{name}: none of the star candidates lies on the mosaic",
                                reason="no_candidates")
    x, y = src["x"].to_numpy(), src["y"].to_numpy()
    peak = np.full(x.size, -np.inf)
    ix = np.clip(np.floor(x + 0.5).astype(int), 0, nx - 1)
    iy = np.clip(np.floor(y + 0.5).astype(int), 0, ny - 1)
    peak = np.where(np.isfinite(image[iy, ix]), image[iy, ix], -np.inf)
    cidx = np.flatnonzero(src["cand"].to_numpy())
    fwhm = _estimate_fwhm(image, x, y, cidx[np.argsort(-peak[cidx])])
    flux, snr = _first_fit(image, weight, x, y, fwhm)
    conc = np.full(x.size, np.nan)
    bright = cidx[snr[cidx] >= opts.snr_min]
    if bright.size:
        conc[bright] = _concentration(image, weight, x[bright], y[bright], fwhm)
    cand = pd.DataFrame({"x": x[cidx], "y": y[cidx], "flux": flux[cidx], "snr": snr[cidx],
                         "concentration": conc[cidx], "src": cidx})
    return _Inputs(image, weight, cand, pd.DataFrame({"x": x, "y": y, "flux": flux}), fwhm)


def stars_oversampling(oversampling: int, n_stars: int) -> int:
    """The oversampling ``n_stars`` stars constrain: ``floor(sqrt(n_stars / 12))``, at least 2.

    Each star samples each pixel at one sub-pixel phase, so the ``O**2`` phases of an
    ePSF oversampled ``O`` times need about a dozen stars each; with fewer, the stack
    follows the noise and the stars' neighbours. On a simulated IRAC field at COSMOS
    density (50 stars, 0.6" pixels, FWHM 3.3 px; ``benchmarks/bench_epsf_flux.py``) the
    median flux ratio at S/N > 50 was 1.001 at ``O = 2``, 0.986 at ``O = 3`` and 0.98 at
    ``O = 4``; 12 stars at ``O = 4`` gave an ePSF 2.7 times too narrow.

    Examples
    --------
    >>> [stars_oversampling(4, n) for n in (10, 50, 120, 300)]
    [2, 2, 3, 4]
    """
    return min(int(oversampling), max(2, math.isqrt(max(int(n_stars), 0) // 12)))


def _too_few(sel: StarSelection, needed: int, name: str) -> EmpiricalPSFError:
    rej = sel.rejected()
    found = sel.n_kept
    sat = rej.get("saturated", 0)
    others = sum(v for k, v in rej.items() if k not in ("saturated", "faint"))
    if sat and found == 0 and sat >= others:
        return EmpiricalPSFError(
            f"{name}: every bright star candidate is saturated ({sel.summary()}); give a "
            "reference catalog with fainter stars or a higher saturation level",
            reason="saturated", found=found, needed=needed, rejected=rej)
    return EmpiricalPSFError(
        f"{name}: {found} usable star(s), {needed} needed to build an ePSF ({sel.summary()}); "
        "give a reference catalog, lower snr_min/min_stars, or use a preset PSF",
        reason="too_few_stars", found=found, needed=needed, rejected=rej)


# ---------------------------------------------------------------------- public
def build_epsf(image: np.ndarray, *, wcs: object = None, weight: np.ndarray | None = None,
               sigma: float | np.ndarray | None = None, stars: pd.DataFrame | None = None,
               priors: pd.DataFrame | None = None, star_column: str | None = None,
               pixel_scale: float | None = None, options: EPSFOptions | None = None,
               name: str = "mosaic") -> EmpiricalPSF:
    """Measure the effective PSF of a mosaic from its stars.

    Parameters
    ----------
    image : ndarray
        The mosaic (sky included or not); NaN pixels are masked.
    wcs : astropy.wcs.WCS, optional
        The mosaic's WCS; needed when ``stars`` or ``priors`` give ``ra, dec``.
    weight, sigma : ndarray or float, optional
        Inverse variance, or noise, per pixel; default a robust constant noise.
    stars : pandas.DataFrame, optional
        Reference catalog of stars (``ra, dec`` or ``x, y``): the candidates.
    priors : pandas.DataFrame, optional
        Every known source (``ra, dec`` or ``x, y``): the neighbours to subtract, and
        the candidates when ``stars`` is not given (those flagged by ``star_column``,
        or by a column ``is_star``/``star``/``point_source``, else all).
    star_column : str, optional
        Boolean column of ``priors`` that flags stars.
    pixel_scale : float, optional
        Mosaic arcsec per pixel; default from the WCS (1 without one).
    options : EPSFOptions, optional
        Build options.
    name : str
        The mosaic's name, used in messages.

    Returns
    -------
    EmpiricalPSF

    Raises
    ------
    EmpiricalPSFError
        Too few usable stars, only saturated ones, or sky positions without a WCS.
    """
    opts = options or EPSFOptions()
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise PSFError(f"{name}: the mosaic must be a 2-D image, got shape {img.shape}")
    w = _weight_map(img, weight, sigma)
    scale = _pixel_scale(wcs, pixel_scale, name)
    inp = _gather(img, w, wcs, stars, priors, star_column, opts, name)
    half, size = _sizes(opts, inp.fwhm, scale)
    box_half = half + opts.sky_width
    sel = select_stars(img, w, inp.cand, neighbours=inp.everyone, fwhm=inp.fwhm,
                       box_half=box_half, saturation=opts.saturation, snr_min=opts.snr_min,
                       max_contamination=opts.max_contamination,
                       compact_nsigma=opts.compact_nsigma, max_stars=opts.max_stars)
    if sel.n_kept < opts.min_stars:
        raise _too_few(sel, opts.min_stars, name)
    o = stars_oversampling(opts.oversampling, sel.n_kept)
    if o != opts.oversampling:
        opts = replace(opts, oversampling=o)
    log.info("%s: ePSF from %d stars (%s), oversampling %d", name, sel.n_kept, sel.summary(), o)
    n = 2 * (o * (size // 2) + 2) + 1
    if opts.wings.kind == "psf":
        start = coefficients(opts.wings.nodes(n, o, scale))
    else:
        start = coefficients(_gaussian_nodes(inp.fwhm, n, o))
    state = BuildState.start(inp.image, inp.weight, inp.cand, inp.everyone, sel, opts,
                             half=half, box_half=box_half, fwhm=inp.fwhm, coef=start,
                             pixel_scale=scale)
    try:
        # the neighbours are refitted with each new ePSF: subtracted with an ePSF
        # that is still wrong, they bias it (1% in flux at COSMOS density)
        state = iterate_epsf(state, opts, opts.iterations, name,
                             neighbour_passes=tuple(range(opts.iterations)))
    except EmpiricalPSFError:
        raise
    except PSFError as exc:  # the stars do not make a PSF whose wings join the model's
        raise EmpiricalPSFError(f"{name}: {exc} ({sel.n_kept} stars)", reason="wings",
                                found=sel.n_kept, needed=opts.min_stars,
                                rejected=sel.rejected()) from exc
    if state.selection.n_kept < opts.min_stars:
        raise _too_few(state.selection, opts.min_stars, name)
    result = _result(state, opts, size, name)
    result.flux_error = epsf_flux_error(state, opts)
    _grid(result, state, opts, name)
    return result



def _result(state: BuildState, opts: EPSFOptions, size: int, name: str) -> EmpiricalPSF:
    values = phase_normalised(node_values(state.coef), opts.oversampling)
    fit = state.fit
    used = state.used
    stars = pd.DataFrame({"x": fit.x[used], "y": fit.y[used], "x_cat": state.x_cat[used],
                          "y_cat": state.y_cat[used], "flux": fit.flux[used],
                          "sky": fit.sky[used], "chi2": fit.chi2[used],
                          "cell": np.zeros(int(used.sum()), np.int64)})
    return EmpiricalPSF(values, opts.oversampling, state.pixel_scale, size, state.selection,
                        stars, state.match, center=opts.center, offset=state.offset,
                        residuals=star_residuals(state), name=name, iterations=state.iteration,
                        grid_note="one global ePSF")


def _grid_shape(opts: EPSFOptions, counts_for) -> tuple[tuple[int, int] | None, str]:
    if opts.grid in ("none", None):
        return None, "one global ePSF (grid not asked for)"
    if opts.grid != "auto":
        ny, nx = (int(v) for v in opts.grid)
        return (ny, nx), f"{ny}x{nx} grid as asked"
    notes = []
    for k in (4, 3, 2):
        counts = counts_for((k, k))
        if counts.min() >= opts.min_stars_per_cell:
            return (k, k), (f"{k}x{k} grid: every cell has >= {opts.min_stars_per_cell} stars "
                            f"(fewest {int(counts.min())})")
        notes.append(f"{k}x{k} fewest {int(counts.min())}")
    return None, (f"one global ePSF: no grid has {opts.min_stars_per_cell} stars in every "
                  f"cell ({', '.join(notes)})")


def _grid(result: EmpiricalPSF, state: BuildState, opts: EPSFOptions, name: str) -> None:
    ny_img, nx_img = state.image.shape
    used = np.flatnonzero(state.used)
    xs, ys = state.fit.x[used], state.fit.y[used]

    def cells_of(shape: tuple[int, int]) -> np.ndarray:
        gy, gx = shape
        cx = np.clip((xs / nx_img * gx).astype(int), 0, gx - 1)
        cy = np.clip((ys / ny_img * gy).astype(int), 0, gy - 1)
        return cy * gx + cx

    def counts_for(shape: tuple[int, int]) -> np.ndarray:
        return np.bincount(cells_of(shape), minlength=shape[0] * shape[1])

    shape, note = _grid_shape(opts, counts_for)
    result.grid_note = note
    if shape is None:
        return
    cell = cells_of(shape)
    gy, gx = shape
    arrays, cxs, cys, counts, errors = [], [], [], [], []
    for k in range(gy * gx):
        members = used[cell == k]
        if members.size < max(3, opts.min_stars // 2):
            raise EmpiricalPSFError(f"{name}: grid cell {k} of {gy}x{gx} has {members.size} "
                                    "stars; use a coarser grid or grid='auto'",
                                    reason="too_few_stars", found=int(members.size),
                                    needed=max(3, opts.min_stars // 2))
        sub = state.restricted(members)
        sub = iterate_epsf(sub, opts, max(2, opts.iterations // 2), f"{name} cell {k}",
                           neighbour_passes=())
        arrays.append(phase_normalised(node_values(sub.coef), opts.oversampling))
        cxs.append((k % gx + 0.5) * nx_img / gx - 0.5)
        cys.append((k // gx + 0.5) * ny_img / gy - 0.5)
        counts.append(int(sub.used.sum()))
        errors.append(epsf_flux_error(sub, opts))
    result.stars["cell"] = cell
    result.cell_flux_error = np.array(errors)
    result.mode = "grid"
    result.cells = np.stack(arrays)
    result.cell_x, result.cell_y = np.array(cxs), np.array(cys)
    result.cell_stars = np.array(counts)
    result.grid_shape = shape

