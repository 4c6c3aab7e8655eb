"""The Tractor as an optional backend of the engine (:func:`tractor_photometry`).

`The Tractor <https://github.com/dstndstn/tractor>`_ (Lang, Hogg & Mykytyn) is
the forced-photometry code of the COSMOS notebook that dask-phot replaces. This
backend takes the inputs of :func:`dask_phot.forced_photometry` and returns the
same :class:`~dask_phot.engine.PhotometryResult`, computed by the Tractor: its
``PixelizedPSF`` (Lanczos-3 shifts), ``PointSource`` and, for sources with a
shape, its ``ExpGalaxy`` (Sersic n = 1), ``DevGalaxy`` (n = 4) and
``SersicGalaxy`` models with frozen shapes, fitted for their fluxes only
(positions frozen) by its linear forced-photometry optimiser, with one constant
sky (``ConstantSky``) when ``fit_sky``. Flux errors are the marginal ones
(:mod:`dask_phot.engine._tractor_normal`), built from the Tractor's unit-flux
model patches, so ``flux_err`` means what it means in the default engine.

The Tractor is not on PyPI (the PyPI package named ``tractor`` is an unrelated
async library: never install it); it is built from source. Where it is absent,
or where ``import tractor`` finds that other package, calling the backend
raises :class:`TractorUnavailableError` saying how to install it.

Shapes are given on the image's pixel grid (``r_e`` half-light semi-major axis
in pixels, ``q = b/a``, ``theta`` degrees counter-clockwise from +x, Sersic
``n``) and handed to the Tractor through a simple WCS built here: north up, east
left (``CD = diag(-s, s)``, ``s`` the PSF's pixel scale), so the Tractor's
``EllipseE`` radius is in arcseconds (:func:`tractor_ellipse`).
"""

from __future__ import annotations

import importlib
import logging
import math
from types import ModuleType

import numpy as np

from dask_phot.engine import _kernels as K
from dask_phot.engine._tractor_normal import (
    Normal,
    box_sums,
    marginal_variances,
    newton_step,
    normal_matrix,
)
from dask_phot.engine.fit import fixed_sky_at, quality_flags, settle_fits
from dask_phot.engine.mismatch import mismatch_significance
from dask_phot.engine.prepare import Prepared, blend_flags, prepare_inputs
from dask_phot.engine.result import PhotometryResult
from dask_phot.engine.scene import default_tiling
from dask_phot.models.stamps import Stamps
from dask_phot.psf import PixelPSF, PSFModel
from dask_phot.schema import Flag

__all__ = [
    "INSTALL_HINT",
    "TractorUnavailableError",
    "import_tractor",
    "tractor_available",
    "tractor_ellipse",
    "tractor_photometry",
]

log = logging.getLogger(__name__)

#: How to get the astrophysical Tractor (appended to every "unavailable" message).
INSTALL_HINT = (
    "build it from source: github.com/dstndstn/tractor (tag dr11.1), "
    "`python setup.py build_ext --inplace` (needs swig and numpy) then install it into "
    "this environment, with astrometry.net's pure-Python astrometry/util "
    "(__init__, miscutils, ttime) importable; never `pip install tractor`: "
    "the PyPI package of that name is an unrelated async library"
)

#: Shape keys the backend reads; all four are required when ``shapes`` is given.
SHAPE_KEYS = ("r_e", "q", "theta", "n")

_LANCZOS_ORDER = 3  # the Tractor's PixelizedPSF shifts with Lanczos-3 whatever its Lorder


class TractorUnavailableError(ImportError):
    """The astrophysical Tractor cannot be imported (the message says how to install it)."""


def import_tractor() -> ModuleType:
    """Import the astrophysical Tractor, or say clearly why it cannot be used.

    Returns
    -------
    module
        The ``tractor`` package, checked to have ``Tractor`` and ``PixelizedPSF``.

    Raises
    ------
    TractorUnavailableError
        It is not installed, ``import tractor`` finds an unrelated package (PyPI's
        ``tractor``), or it is installed but cannot be imported (missing
        astrometry.net modules, a failed build).
    """
    try:
        mod = importlib.import_module("tractor")
    except ModuleNotFoundError as exc:
        if exc.name not in ("tractor", None):
            raise TractorUnavailableError(
                f"the Tractor is installed but cannot be imported (no module named "
                f"{exc.name!r}); {INSTALL_HINT}") from exc
        raise TractorUnavailableError(
            f"the tractor backend needs the astrophysical Tractor, which is not installed; "
            f"{INSTALL_HINT}") from exc
    except ImportError as exc:
        raise TractorUnavailableError(
            f"the Tractor is installed but cannot be imported ({exc}); {INSTALL_HINT}") from exc
    if all(hasattr(mod, name) for name in ("Tractor", "PixelizedPSF")):
        return mod
    where = getattr(mod, "__file__", None)
    if where is None:  # a directory without __init__.py, e.g. a source checkout
        raise TractorUnavailableError(
            f"`import tractor` found the directory {list(getattr(mod, '__path__', []))}, "
            f"not an installed Tractor (a source checkout in the working directory?); "
            f"run from elsewhere or {INSTALL_HINT}")
    raise TractorUnavailableError(
        f"`import tractor` found {where}, which is not the astrophysical Tractor (it "
        f"has no Tractor or PixelizedPSF class; PyPI's `tractor` is an unrelated async "
        f"library): `pip uninstall tractor`, then {INSTALL_HINT}")


def tractor_available() -> bool:
    """True when :func:`import_tractor` finds the astrophysical Tractor."""
    try:
        import_tractor()
    except TractorUnavailableError:
        return False
    return True


def tractor_ellipse(
    r_e: np.ndarray, q: np.ndarray, theta: np.ndarray, pixel_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Tractor's ``EllipseE`` parameters ``(re, e1, e2)`` of pixel-space shapes.

    For the WCS this backend builds (north up, east left, ``pixel_scale``
    arcsec/pixel): ``re = r_e * pixel_scale`` (arcsec), ``e = (1 - q) / (1 + q)``,
    ``e1 = -e cos(2 theta)``, ``e2 = -e sin(2 theta)``. The Tractor then renders
    an ellipse whose ``r_e`` contour has semi-major axis ``r_e`` pixels along
    ``theta`` (degrees counter-clockwise from +x) and axis ratio ``q``.

    Examples
    --------
    >>> re, e1, e2 = tractor_ellipse(np.array([2.0]), np.array([0.5]), np.array([0.0]), 0.6)
    >>> round(float(re[0]), 6), round(float(e1[0]), 6), abs(round(float(e2[0]), 6))
    (1.2, -0.333333, 0.0)
    """
    r_e, q, theta = (np.asarray(v, dtype=np.float64) for v in (r_e, q, theta))
    e = (1.0 - q) / (1.0 + q)
    two = np.deg2rad(2.0 * theta)
    return r_e * float(pixel_scale), -e * np.cos(two), -e * np.sin(two)


def tractor_photometry(
    image: np.ndarray,
    psf: PSFModel,
    x: np.ndarray,
    y: np.ndarray,
    *,
    shapes: dict[str, np.ndarray] | None = None,
    sigma: float | np.ndarray | None = None,
    weight: np.ndarray | None = None,
    sky: float | np.ndarray | None = None,
    fit_sky: bool = False,
    sky_model: str = "constant",
    fit_positions: bool = False,
    tile_size: int | None = None,
    margin: int | None = None,
    blend_radius: float | None = None,
    degenerate_tol: float = 1e-7,
    high_chi2: float = 5.0,
    mismatch_sigma: float = 3.0,
    return_model: bool = False,
    max_block: int = 1500,
    refine_tol: float = 1e-3,
) -> PhotometryResult:
    """Forced photometry computed by The Tractor (inputs and output of
    :func:`dask_phot.forced_photometry`).

    Parameters
    ----------
    image, psf, x, y, sigma, weight, sky
        As in :func:`dask_phot.forced_photometry`; ``psf`` must be one
        :class:`~dask_phot.psf.PixelPSF` (the Tractor's ``PixelizedPSF`` does not
        vary over the image). The Tractor always shifts it with Lanczos-3,
        whatever its ``interp_order`` (compare with the default engine at
        ``interp_order=3``).
    shapes : dict of array_like, optional
        ``{"r_e", "q", "theta", "n"}``, each of the sources' length: half-light
        semi-major axis in pixels of this image (0 or NaN: a point source),
        axis ratio b/a in (0, 1], major-axis angle in degrees counter-clockwise
        from +x, Sersic index (1: ``ExpGalaxy``, 4: ``DevGalaxy``, otherwise
        ``SersicGalaxy``, within the Tractor's range). Fluxes are total fluxes.
    fit_sky : bool
        Fit one constant sky over the image jointly with the fluxes.
    sky_model : {"constant"}
        The only sky the Tractor's linear forced photometry fits.
    fit_positions : bool
        Must be False: positions are frozen.
    tile_size, margin : int, optional
        Tiling (pixels) of the error computation for blended groups larger
        than ``max_block`` sources (default as in the scene engine).
    blend_radius, degenerate_tol, high_chi2, mismatch_sigma, return_model
        As in :func:`dask_phot.forced_photometry` (the model mismatch is measured
        on the Tractor's unit-flux patches).
    max_block : int
        Largest blended group whose normal matrix is inverted exactly.
    refine_tol : float
        The Tractor's optimiser is run again from its solution while the step
        to the exact least-squares solution exceeds this many sigma for any
        flux (or the sky); at most 4 runs.

    Returns
    -------
    PhotometryResult
        ``info`` holds ``backend="tractor"``, the Tractor's version, the fitted
        sky (``sky``, and ``sky_var`` its marginal variance), the number of
        blended groups, the optimiser runs, and ``lsq_distance``: the largest
        distance, in sigma, of the Tractor's fluxes (and sky) from the exact
        least-squares solution of the same model.

    Raises
    ------
    TractorUnavailableError
        The astrophysical Tractor cannot be imported.
    ValueError
        Bad inputs (shapes, options the Tractor backend does not have).

    Notes
    -----
    Where the results differ from the default engine's by model definition:

    * PSF stamps: the Tractor does not rescale a shifted PSF stamp to unit sum
      (the light shifted past the stamp's edge is lost); the engine does. With
      a PSF whose light reaches its stamp's edge the Tractor's fluxes are
      higher by that fraction: up to 2.6e-3 for the 17-pixel IRAC ch1 PRF at
      half-pixel offsets (2.5e-4 for a 25-pixel Moffat). In a stamp that holds
      the shifted light (``np.pad`` the PSF by 4 pixels) the models coincide.
    * Sky: one constant over the whole image; the scene engine fits one per tile.
    * Galaxies: the Tractor's ``ExpGalaxy`` and ``DevGalaxy`` are SDSS-like
      profiles cut off near 4 and 8 ``r_e``, and its ``SersicGalaxy`` mixtures
      follow Sersic profiles cut off near 5-8 ``r_e``: against untruncated
      Sersic profiles of the same ``r_e`` (GalSim) their fluxes are lower by
      1.4% (n = 1), 4.3% (n = 2.5), 6.0% (n = 4); n = 0.5 agrees to 0.1%.
    * The Tractor's LSQR stops at a relative tolerance: ``info["lsq_distance"]``
      says how far (in sigma) its fluxes are from the exact least-squares
      solution, a few thousandths of a sigma but up to ~0.1 for a mostly
      masked source blended with a neighbour.

    Examples
    --------
    Where the Tractor is installed (the engine's doctest, with the Tractor's
    Lanczos-3 shifts):

    >>> from dask_phot.psf import gaussian_psf
    >>> psf = gaussian_psf(3.0, size=15)
    >>> stamps, x0, y0 = psf.stamps(np.array([20.0]), np.array([12.0]))
    >>> img = np.zeros((30, 40)); img[y0[0]:y0[0] + 15, x0[0]:x0[0] + 15] = 50 * stamps[0]
    >>> res = tractor_photometry(img, psf, [20.0], [12.0], sigma=1.0)  # doctest: +SKIP
    >>> round(float(res.flux[0]), 4), round(float(res.flux_err[0]), 3)  # doctest: +SKIP
    (50.0, 4.631)
    """
    _check_options(psf, sky_model, fit_positions)
    prep = prepare_inputs(image, psf, x, y, sigma=sigma, weight=weight, sky=sky)
    n = prep.x.shape[0]
    shp = _check_shapes(shapes, n)
    trm = import_tractor()
    if n == 0:
        return PhotometryResult.empty()
    if getattr(psf, "interp_order", _LANCZOS_ORDER) != _LANCZOS_ORDER:
        log.debug("tractor backend: the Tractor shifts the PSF with Lanczos-%d, not %d",
                  _LANCZOS_ORDER, psf.interp_order)
    blend_flags(prep, psf.fwhm if blend_radius is None else blend_radius)
    tim = _tractor_image(trm, prep, psf)
    sources, boxes, patches = _tractor_sources(trm, tim, prep, shp, psf)
    nuse, foot = _footprint_flags(prep, boxes, patches)
    fitted = np.flatnonzero(prep.fit)
    normal = normal_matrix([patches[i] for i in fitted], prep.weight)
    tile_default, margin_default = default_tiling(psf.size, psf.fwhm)
    var_f, st_f, deg_f, info = marginal_variances(
        normal, np.floor(prep.x[fitted] + 0.5).astype(np.int64),
        np.floor(prep.y[fitted] + 0.5).astype(np.int64),
        int(np.max((boxes[fitted, 1] - boxes[fitted, 0]) // 2, initial=psf.half)),
        prep.data.shape, fit_sky=fit_sky, tol=degenerate_tol, max_block=max_block,
        tile_size=int(tile_size or tile_default),
        margin=int(margin if margin is not None else margin_default))
    var, status, hasdeg = _scatter(n, fitted, var_f, st_f, deg_f)
    use = st_f == K.ST_OK
    kept = fitted[use]
    flux = np.full(n, np.nan)
    flux[kept], sky_fit, model, runs, left = _fit_fluxes(
        trm, tim, [sources[i] for i in kept], [patches[i] for i in kept], normal,
        np.flatnonzero(use), np.sqrt(var[kept]), info.get("sky_var") if fit_sky else None,
        refine_tol)
    info.update(backend="tractor", tractor_version=str(getattr(trm, "__version__", "")),
                mode="scene", interp_order=_LANCZOS_ORDER, optimizer_runs=runs,
                lsq_distance=left, sky=sky_fit if fit_sky else None)
    return _assemble(prep, foot, nuse, flux, var, status, hasdeg, model, sky_fit, info,
                     patches, high_chi2=high_chi2, mismatch_sigma=mismatch_sigma,
                     return_model=return_model)


def _check_options(psf: PSFModel, sky_model: str, fit_positions: object) -> None:
    """Raise for inputs the Tractor backend cannot honour."""
    if not isinstance(psf, PixelPSF):
        raise ValueError(
            f"the tractor backend needs one PixelPSF for the image (the Tractor's "
            f"PixelizedPSF is position-independent), got {type(psf).__name__}; for a "
            f"PSFGrid use psf.at(x, y) at the image centre")
    if sky_model != "constant":
        raise ValueError(f"the tractor backend fits a constant sky only, got "
                         f"sky_model={sky_model!r}")
    if fit_positions not in (False, None):
        raise ValueError(f"the tractor backend fits fluxes only (positions frozen), got "
                         f"fit_positions={fit_positions!r}")


def _check_shapes(shapes: dict[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray] | None:
    """Validated shape arrays (float64, length ``n``) or None when every source is a point."""
    if shapes is None:
        return None
    unknown = sorted(set(shapes) - set(SHAPE_KEYS))
    missing = [k for k in SHAPE_KEYS if k not in shapes]
    if unknown or missing:
        raise ValueError(f"shapes: unknown keys {unknown} / missing keys {missing}; "
                         f"expected {list(SHAPE_KEYS)}")
    out = {}
    for key in SHAPE_KEYS:
        arr = np.atleast_1d(np.asarray(shapes[key], dtype=np.float64))
        if arr.shape != (n,):
            raise ValueError(f"shapes[{key!r}] has shape {arr.shape}, expected ({n},)")
        out[key] = arr
    gal = np.isfinite(out["r_e"]) & (out["r_e"] > 0)
    for key, bad in (
        ("r_e", out["r_e"] < 0),
        ("q", gal & ~((out["q"] > 0) & (out["q"] <= 1))),
        ("theta", gal & ~np.isfinite(out["theta"])),
        ("n", gal & ~np.isfinite(out["n"])),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"shapes[{key!r}][{i}] = {float(out[key][i])!r} is invalid "
                             f"({int(bad.sum())} bad value(s)): r_e >= 0 (0/NaN: point), "
                             f"0 < q <= 1, finite theta and n for galaxies")
    return out if gal.any() else None


def _tractor_image(trm: ModuleType, prep: Prepared, psf: PixelPSF):
    """The Tractor ``Image`` (every parameter frozen): data minus fixed sky,
    inverse error, ``PixelizedPSF``, the WCS built here, no sky."""
    wcs = trm.NullWCS(pixscale=float(psf.pixel_scale))
    s = float(psf.pixel_scale) / 3600.0
    wcs.cd = np.array([[-s, 0.0], [0.0, s]])  # north up, east left
    wcs.cd_inverse = np.linalg.inv(wcs.cd)
    tim = trm.Image(data=prep.data, inverr=np.sqrt(prep.weight),
                    psf=trm.PixelizedPSF(np.asarray(psf.array)), wcs=wcs,
                    photocal=trm.LinearPhotoCal(1.0), sky=trm.ConstantSky(0.0))
    tim.freezeAllParams()
    return tim


def _scaled_sky(scale: float):
    """The Tractor's ``ConstantSky`` with its parameter in units of ``scale``.

    The Tractor's linear forced photometry does not scale the columns of its
    LSQR solve; a sky column ``sqrt(n_pixels)`` times longer than the flux
    columns stops LSQR early (errors of 0.1 sigma on the fluxes). Measuring the
    sky in units that give its column the length of a typical source's makes
    one solve converge; the sky level is ``scale`` times the parameter.
    """
    sky_mod = importlib.import_module("tractor.sky")
    patch_mod = importlib.import_module("tractor.patch")

    unit = float(scale)

    class ScaledConstantSky(sky_mod.ConstantSky):
        def getParamDerivatives(self, tractor, img, srcs):  # the Tractor's method names
            return [patch_mod.Patch(0, 0, np.full(img.getImage().shape, unit))]

        def addTo(self, img, scale=1.0):
            img += self.val * unit * scale

        def getConstant(self):
            return self.val * unit

    return ScaledConstantSky(0.0)


def _tractor_sources(trm: ModuleType, tim, prep: Prepared,
                     shp: dict[str, np.ndarray] | None, psf: PixelPSF):
    """Tractor sources (fluxes thawed), footprint boxes and unit-flux patches.

    ``boxes[i] = (x0, x1, y0, y1)`` is the source's model box, unclipped: the PSF
    stamp around the nearest pixel for a point source (and for every source not
    fitted), the Tractor's galaxy box (its half-size rule) for a galaxy.
    ``patches[i]`` is ``(x0, y0, array)``, None for the sources not fitted.
    """
    n = prep.x.shape[0]
    sources: list = [None] * n
    patches: list = [None] * n
    c0x = np.floor(prep.x + 0.5).astype(np.int64) - psf.half
    c0y = np.floor(prep.y + 0.5).astype(np.int64) - psf.half
    boxes = np.column_stack([c0x, c0x + psf.size, c0y, c0y + psf.size])
    gal = np.zeros(n, dtype=bool) if shp is None else np.isfinite(shp["r_e"]) & (shp["r_e"] > 0)
    if gal.any():
        ell = tractor_ellipse(shp["r_e"], shp["q"], shp["theta"], psf.pixel_scale)
        sersic = importlib.import_module("tractor.sersic")
    for i in np.flatnonzero(prep.fit):
        pos = trm.PixPos(float(prep.x[i]), float(prep.y[i]))
        if gal[i]:
            src = _galaxy(trm, sersic, pos, (ell[0][i], ell[1][i], ell[2][i]), shp["n"][i])
            hs = src._getUnitFluxPatchSize(tim, px=pos.x, py=pos.y, minval=0.0)
            boxes[i] = (math.floor(pos.x - hs), math.ceil(pos.x + hs + 1) + 1,
                        math.floor(pos.y - hs), math.ceil(pos.y + hs + 1) + 1)
        else:
            src = trm.PointSource(pos, trm.Flux(0.0))
        src.freezeAllBut("brightness")
        patch = src.getUnitFluxModelPatches(tim, minval=0.0)[0]
        if patch is not None and patch.patch is not None:
            patches[i] = (int(patch.x0), int(patch.y0), patch.patch)
            if not gal[i]:
                h, w = patch.patch.shape
                boxes[i] = (patch.x0, patch.x0 + w, patch.y0, patch.y0 + h)
        sources[i] = src
    return sources, boxes, patches


def _galaxy(trm: ModuleType, sersic: ModuleType, pos, ellipse: tuple, n: float):
    """The Tractor's galaxy of Sersic index ``n`` with a frozen ``EllipseE`` shape."""
    shape = trm.EllipseE(*(float(v) for v in ellipse))
    if n == 1.0:
        return trm.ExpGalaxy(pos, trm.Flux(0.0), shape)
    if n == 4.0:
        return trm.DevGalaxy(pos, trm.Flux(0.0), shape)
    index = sersic.SersicIndex(float(n))
    if not index.isLegal():
        raise ValueError(f"shapes['n'] = {n!r} is outside the Tractor's Sersic range "
                         f"[{index.lower}, {index.upper}]")
    return sersic.SersicGalaxy(pos, trm.Flux(0.0), shape, index)


def _footprint_flags(prep: Prepared, boxes: np.ndarray, patches: list
                     ) -> tuple[np.ndarray, np.ndarray]:
    """EDGE, MASKED_PIXELS, CENTER_MASKED and NO_DATA, as the default engine sets them.

    EDGE comes from the unclipped model boxes; the other counts from each
    source's footprint: its rendered patch (a galaxy's may be a pixel or two
    narrower than its box), else its box. Updates ``prep.flags`` and
    ``prep.fit``; returns the usable-pixel counts and the footprints.
    """
    ny, nx = prep.weight.shape
    foot = boxes.copy()
    for i, patch in enumerate(patches):
        if patch is not None:
            h, w = patch[2].shape
            foot[i] = (patch[0], patch[0] + w, patch[1], patch[1] + h)
    nuse = np.rint(box_sums((prep.weight > 0).astype(np.float64), foot)).astype(np.int64)
    f = prep.flags
    f[_area_inside(boxes, nx, ny) < _area(boxes)] |= int(Flag.EDGE)
    f[_area_inside(foot, nx, ny) > nuse] |= int(Flag.MASKED_PIXELS)
    cx = np.clip(np.floor(prep.x + 0.5).astype(np.int64), 0, nx - 1)
    cy = np.clip(np.floor(prep.y + 0.5).astype(np.int64), 0, ny - 1)
    f[prep.fit & (prep.weight[cy, cx] <= 0)] |= int(Flag.CENTER_MASKED)
    nodata = prep.fit & ((nuse == 0) | np.array([p is None for p in patches], dtype=bool))
    f[nodata] |= int(Flag.NO_DATA)
    prep.fit &= ~nodata
    return nuse, foot


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])


def _area_inside(boxes: np.ndarray, nx: int, ny: int) -> np.ndarray:
    return ((np.clip(boxes[:, 1], 0, nx) - np.clip(boxes[:, 0], 0, nx)).clip(0)
            * (np.clip(boxes[:, 3], 0, ny) - np.clip(boxes[:, 2], 0, ny)).clip(0))


def _scatter(n: int, fitted: np.ndarray, var_f: np.ndarray, st_f: np.ndarray,
             deg_f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    var = np.full(n, np.nan)
    status = np.full(n, K.ST_FAILED, dtype=np.int64)
    hasdeg = np.zeros(n, dtype=bool)
    var[fitted], status[fitted], hasdeg[fitted] = var_f, st_f, deg_f
    return var, status, hasdeg


def _fit_fluxes(trm: ModuleType, tim, sources: list, patches: list, normal: Normal,
                cols: np.ndarray, err: np.ndarray, sky_var: float | None, refine_tol: float
                ) -> tuple[np.ndarray, float, np.ndarray, int, float]:
    """Fit the fluxes (and the sky when ``sky_var`` is given) with the Tractor.

    Runs the Tractor's linear forced photometry (one LSQR solve) and checks its
    solution: the Newton step to the exact least-squares solution, from the
    chi2 gradient at the Tractor's model (:func:`newton_step`). While a
    parameter would still move by more than ``refine_tol`` of its sigma, the
    Tractor is run again from its solution, at most 4 times and while that
    step halves. (LSQR stops at a relative tolerance: along poorly constrained
    directions, such as a mostly masked source blended with a neighbour, its
    solution can stay a few hundredths of a sigma short.) ``cols`` are the
    columns of ``normal`` of the sources, ``err`` their marginal sigmas.
    Returns ``flux, sky, model image (with sky), runs`` and the largest
    remaining step in sigma.
    """
    fit_sky = sky_var is not None
    if fit_sky:
        diag = normal.nmat.diagonal()[cols]
        scale = math.sqrt(np.median(diag) / normal.sky_diag) if diag.size else 1.0
        tim.setSky(_scaled_sky(scale))
        tim.freezeAllBut("sky")
        err = np.append(err, math.sqrt(sky_var))
    tr = trm.Tractor([tim], sources)
    if not fit_sky:
        tr.freezeParam("images")
    data, weight = tim.getImage(), tim.getInvError() ** 2
    runs, left = 0, math.inf
    model = tr.getModelImage(0)
    while sources and runs < 4:
        tr.optimize_forced_photometry(sky=fit_sky, priors=False, minFlux=None, wantims=False)
        runs += 1
        model = tr.getModelImage(0)
        wres = weight * (data - model)
        step = newton_step(normal, cols, [_patch_dot(p, wres) for p in patches],
                           float(wres.sum()) if fit_sky else None)
        before, left = left, float(np.max(np.abs(step) / err))
        if not (left > refine_tol and left < 0.5 * before):  # converged, or no progress
            break
    flux = np.array([s.getBrightness().getValue() for s in sources], dtype=np.float64)
    sky = float(tim.getSky().getConstant()) if fit_sky else 0.0
    return flux, sky, np.asarray(model, dtype=np.float64), runs, left if sources else 0.0


def _patch_dot(patch: tuple[int, int, np.ndarray], image: np.ndarray) -> float:
    """``sum(patch * image)`` over the patch pixels inside the image."""
    x0, y0, arr = patch
    ny, nx = image.shape
    h, w = arr.shape
    xs, xe, ys, ye = max(x0, 0), min(x0 + w, nx), max(y0, 0), min(y0 + h, ny)
    if xs >= xe or ys >= ye:
        return 0.0
    return float(np.sum(arr[ys - y0 : ye - y0, xs - x0 : xe - x0] * image[ys:ye, xs:xe]))


def _assemble(prep: Prepared, foot: np.ndarray, nuse: np.ndarray, flux: np.ndarray,
              var: np.ndarray, status: np.ndarray, hasdeg: np.ndarray, model: np.ndarray,
              sky_fit: float, info: dict, patches: list, *, high_chi2: float,
              mismatch_sigma: float, return_model: bool) -> PhotometryResult:
    """Flags, errors and chi2 as the default engine assembles them."""
    flags = prep.flags
    flux, err, ok = settle_fits(prep, flux, var, status, hasdeg)
    resid = prep.data - model
    chi2, mism = quality_flags(
        flags, ok, box_sums(prep.weight * resid**2, foot), nuse,
        mismatch_significance(_patch_stamps(patches), prep.weight, resid),
        high_chi2=high_chi2, mismatch_sigma=mismatch_sigma)
    known = prep.x > -1e8
    on_image = (flags & int(Flag.OFF_IMAGE)) == 0
    return PhotometryResult(
        flux, err, chi2, flags.astype(np.int32), np.where(known, prep.x, np.nan),
        np.where(known, prep.y, np.nan), np.where(on_image, sky_fit, 0.0) + fixed_sky_at(prep),
        nuse, model + prep.sky if return_model else None, info, mism)


def _patch_stamps(patches: list) -> Stamps:
    """The Tractor's unit-flux patches as ragged stamps (an empty one where none)."""
    arrays = [np.zeros((1, 1)) if p is None else np.asarray(p[2], dtype=np.float64)
              for p in patches]
    h = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    w = np.array([a.shape[1] for a in arrays], dtype=np.int64)
    ptr = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(h * w, out=ptr[1:])
    x0 = np.array([0 if p is None else p[0] for p in patches], dtype=np.int64)
    y0 = np.array([0 if p is None else p[1] for p in patches], dtype=np.int64)
    data = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0)
    return Stamps(data, ptr, w, h, x0, y0)
