"""Survey-sized simulated fields, written strip by strip: large mosaics and overlapping tiles.

:func:`simulate_field` holds every image in memory, which a 2 deg² field in six bands
does not fit (an IRAC mosaic of COSMOS is ~8,500 pixels square). :func:`write_survey`
draws the priors once and renders each band's images in strips of rows, each strip
written to its FITS file as soon as it is done (:class:`astropy.io.fits.StreamingHDU`),
so memory stays at a few strips whatever the area. The layout is the archives':

* ``mosaic`` bands (IRAC): one north-up TAN mosaic covering the field;
* ``tiled`` bands (GALEX): a 2x2 grid of overlapping tiles, each with its own tangent
  point, noise and mask, as GALEX serves its deep COSMOS tiles.

The truth is the simulator's (:func:`~dask_phot.testing.simulate_image`: a spline
through the PSF, galaxies on a fine canvas), rendered per strip with every source whose
light reaches the strip; a strip's noise, mask and sky are drawn from their own seeded
stream (keyed by band, tile and strip), and the depth map is smooth across strips.

Point sources, nearly all of a survey's light and all of its rendering time, are drawn
by :func:`render_points`: the same cubic B-spline through the PSF's fine pixel response
as :class:`~dask_phot.testing.render.FinePRF` (the same coefficients, evaluated with the
same 4 x 4 taps, to rounding), accumulated straight into the strip. A source's taps share
their weights along a row and a column (the fine grid is an integer number of steps per
image pixel), so each pixel costs 16 multiply-adds instead of a general spline
evaluation, and no stamps are stored.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import pandas as pd
from astropy.io import fits
from astropy.wcs import WCS
from scipy.ndimage import map_coordinates

from dask_phot.psf import OversampledPSF, PixelPSF
from dask_phot.testing._seeding import IMAGE, child_rng, root_entropy
from dask_phot.testing.field import field_wcs, pixel_shapes
from dask_phot.testing.galaxies import layout_radius
from dask_phot.testing.image import simulate_image
from dask_phot.testing.noise import depth_map, pixel_sigma
from dask_phot.testing.render import FinePRF
from dask_phot.testing.sources import COSMOS_CENTER, simulate_sources

__all__ = ["SurveyImage", "cut_priors", "render_points", "write_survey"]

log = logging.getLogger(__name__)

#: Name of the manifest written last (a cache whose manifest exists is complete).
MANIFEST = "survey.json"
#: Tiles per side of a tiled band, and the fraction of the field each tile spans.
TILES_PER_SIDE = 2
TILE_SPAN = 0.65


@dataclass(frozen=True)
class SurveyImage:
    """One image of a band: its name, WCS and shape (the files are ``<name>_sci/_wht``)."""

    band: str
    name: str
    wcs: WCS
    shape: tuple[int, int]


def _layout(band: str, psf: PixelPSF | OversampledPSF, tiled: bool, side_arcsec: float,
            center: tuple[float, float]) -> list[SurveyImage]:
    """The images of one band: one mosaic, or a grid of overlapping tiles."""
    scale = float(psf.pixel_scale)
    pad = psf.half * scale
    if not tiled:
        n = math.ceil((side_arcsec + 2 * pad) / scale)
        return [SurveyImage(band, band, field_wcs(center, scale, (n, n)), (n, n))]
    n = math.ceil((TILE_SPAN * side_arcsec + 2 * pad) / scale)
    step = (1.0 - TILE_SPAN) / 2 * side_arcsec / 3600.0
    cos_dec = math.cos(math.radians(center[1]))
    out = []
    for j in range(TILES_PER_SIDE):
        for i in range(TILES_PER_SIDE):
            dx, dy = (2 * i - 1) * step, (2 * j - 1) * step
            tile_center = (center[0] + dx / cos_dec, center[1] + dy)
            out.append(SurveyImage(band, f"{band}_t{j}{i}", field_wcs(tile_center, scale, (n, n)),
                                   (n, n)))
    return out


def _reach(psf: PixelPSF | OversampledPSF, shapes: dict[str, np.ndarray] | None,
           n: int) -> np.ndarray:
    """Per-source distance (image pixels) beyond which a source adds no light."""
    stamp = getattr(psf, "wing_size", None) or psf.size
    reach = np.full(n, stamp // 2 + 2.0)
    if shapes is not None:
        ext = shapes["r_e"] > 0
        reach[ext] += layout_radius(shapes["r_e"][ext], shapes["n"][ext]) + 4.0
    return reach


@numba.njit(cache=True)
def _bspline_weights(t: float) -> tuple[float, float, float, float]:
    """Cubic B-spline weights of the taps ``floor(u) - 1 .. floor(u) + 2``, ``t = u - floor(u)``."""
    u = 1.0 - t
    return (u * u * u / 6.0, (3.0 * t * t * t - 6.0 * t * t + 4.0) / 6.0,
            (-3.0 * t * t * t + 3.0 * t * t + 3.0 * t + 1.0) / 6.0, t * t * t / 6.0)


@numba.njit(cache=True)
def _add_points(out: np.ndarray, coef: np.ndarray, cx: float, cy: float, s: int, size: int,
                x: np.ndarray, y: np.ndarray, flux: np.ndarray) -> None:
    """Add each source's ``size x size`` stamp of the spline ``coef`` to ``out``, in place."""
    ny, nx = out.shape
    h = size // 2
    for k in range(x.size):
        ix, iy = math.floor(x[k] + 0.5), math.floor(y[k] + 0.5)
        # fine coordinate of the stamp's first pixel: the same for every pixel up to s steps
        ux, uy = cx + s * (-h - (x[k] - ix)), cy + s * (-h - (y[k] - iy))
        fx, fy = math.floor(ux), math.floor(uy)
        wx0, wx1, wx2, wx3 = _bspline_weights(ux - fx)
        wy0, wy1, wy2, wy3 = _bspline_weights(uy - fy)
        bx, by = int(fx) - 1, int(fy) - 1
        for r in range(size):
            row = iy - h + r
            if row < 0 or row >= ny:
                continue
            a = by + s * r
            for c in range(size):
                col = ix - h + c
                if col < 0 or col >= nx:
                    continue
                b = bx + s * c
                v = 0.0
                for da, wy in ((0, wy0), (1, wy1), (2, wy2), (3, wy3)):
                    line = coef[a + da]
                    v += wy * (wx0 * line[b] + wx1 * line[b + 1] + wx2 * line[b + 2]
                               + wx3 * line[b + 3])
                out[row, col] += flux[k] * v


def render_points(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                  psf: OversampledPSF) -> np.ndarray:
    """Noise-free image of point sources through an oversampled PSF, as
    ``render_model(shape, x, y, flux, FinePRF(psf), normalise=False)`` computes it.

    Parameters
    ----------
    shape, x, y, flux
        As for :func:`~dask_phot.testing.render.render_model` (flux in image units x
        pixel; sources with a zero or non-finite flux or position are left out).
    psf : OversampledPSF
        The PSF; stamps span its ``wing_size``.

    Returns
    -------
    ndarray
        The ``(ny, nx)`` float64 image.

    Examples
    --------
    >>> from dask_phot.bands import get_band
    >>> from dask_phot.testing.render import FinePRF, render_model
    >>> psf = get_band("irac1").load_psf()
    >>> x, y, f = np.array([20.3, 31.0]), np.array([24.8, 30.6]), np.array([100.0, 50.0])
    >>> a = render_points((60, 64), x, y, f, psf)
    >>> b = render_model((60, 64), x, y, f, FinePRF(psf), normalise=False)
    >>> bool(np.abs(a - b).max() < 1e-12 * b.max())
    True
    """
    return _render_points(shape, x, y, flux, FinePRF(psf))


def _render_points(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                   prf: FinePRF) -> np.ndarray:
    """:func:`render_points` with the PSF's spline built (once per image)."""
    (coef, cx, cy, s), size = prf.spline, prf.size
    h = size // 2
    # every tap of every stamp lies inside the coefficients (as in FinePRF's own use)
    lo_y, hi_y = cy - s * (h + 0.5) - 1, cy + s * (h + 0.5) + 2
    lo_x, hi_x = cx - s * (h + 0.5) - 1, cx + s * (h + 0.5) + 2
    if lo_y < 0 or lo_x < 0 or hi_y > coef.shape[0] - 1 or hi_x > coef.shape[1] - 1:
        from dask_phot.testing.render import render_model

        return render_model(shape, x, y, flux, prf, normalise=False)
    x, y, flux = (np.ascontiguousarray(v, dtype=np.float64).ravel() for v in (x, y, flux))
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & (flux != 0)
    out = np.zeros((int(shape[0]), int(shape[1])))
    _add_points(out, np.ascontiguousarray(coef), float(cx), float(cy), int(s), int(size),
                x[keep], y[keep], flux[keep])
    return out


def _header(image: SurveyImage, unit: str, to_ujy: float, weight: bool) -> fits.Header:
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = image.shape[1]
    header["NAXIS2"] = image.shape[0]
    header.extend(image.wcs.to_header())
    header["BAND"] = (image.band, "band name")
    header["BUNIT"] = (f"({unit})**-2" if weight else unit,
                       "inverse variance" if weight else "image unit")
    header["TOUJY"] = (to_ujy, "microJansky per (image unit x pixel)")
    header["ORIGIN"] = "dask_phot.testing.survey"
    return header


def _write_image(image: SurveyImage, priors: pd.DataFrame, psf: PixelPSF | OversampledPSF, *,
                 to_ujy: float, unit: str, depth_ujy: float, sky: float, entropy: int,
                 outdir: Path, strip: int, mask_fraction: float,
                 truth_oversampling: int | None) -> list[Path]:
    """Render one image strip by strip into ``<name>_sci.fits`` and ``<name>_wht.fits``."""
    ny, nx = image.shape
    x, y = image.wcs.wcs_world2pix(priors["ra"].to_numpy(), priors["dec"].to_numpy(), 0)
    shapes = pixel_shapes(priors, image.wcs, x, y)
    reach = _reach(psf, shapes, len(priors))
    on = (x + reach >= -0.5) & (x - reach <= nx - 0.5)
    flux = priors[f"flux_true_{image.band}"].to_numpy() / to_ujy
    points = np.ones(len(priors), dtype=bool) if shapes is None else ~(shapes["r_e"] > 0)
    prf = FinePRF(psf) if isinstance(psf, OversampledPSF) else None
    sigma0 = pixel_sigma(depth_ujy, to_ujy, psf)
    rng = child_rng(entropy, IMAGE, image.name)
    coarse = depth_map((ny // 32 + 2, nx // 32 + 2), rng)
    paths = [outdir / f"{image.name}_sci.fits", outdir / f"{image.name}_wht.fits"]
    parts = [p.with_name(".part-" + p.name) for p in paths]
    sci = fits.StreamingHDU(parts[0], _header(image, unit, to_ujy, False))
    wht = fits.StreamingHDU(parts[1], _header(image, unit, to_ujy, True))
    try:
        for y0 in range(0, ny, strip):
            y1 = min(y0 + strip, ny)
            sel = np.flatnonzero(on & (y + reach >= y0 - 0.5) & (y - reach <= y1 - 0.5))
            rows = np.arange(y0, y1)[:, None] / 32.0 * np.ones((1, nx))
            cols = np.ones((y1 - y0, 1)) * (np.arange(nx)[None, :] / 32.0)
            sigma = sigma0 * map_coordinates(coarse, [rows, cols], order=1, mode="nearest")
            sub = None if shapes is None else {k: v[sel] for k, v in shapes.items()}
            # point sources drawn here (render_points: FinePRF's spline, quicker), the
            # galaxies, noise, sky and mask by simulate_image
            fast = points[sel] if prf is not None else np.zeros(sel.size, dtype=bool)
            sim = simulate_image((y1 - y0, nx), x[sel], y[sel] - y0,
                                 np.where(fast, 0.0, flux[sel]), psf,
                                 seed=child_rng(entropy, IMAGE, f"{image.name}:{y0}"),
                                 sigma=sigma, sky=sky, mask_fraction=mask_fraction,
                                 shapes=sub, truth_oversampling=truth_oversampling)
            if fast.any():
                sim.data += _render_points((y1 - y0, nx), x[sel][fast], y[sel][fast] - y0,
                                           flux[sel][fast], prf)
            sci.write(sim.data.astype(">f4"))
            wht.write(sim.weight.astype(">f4"))
    finally:
        sci.close()
        wht.close()
    for part, path in zip(parts, paths, strict=True):
        os.replace(part, path)
    return paths


def write_survey(outdir: str | os.PathLike[str], *, area_arcmin2: float, bands: Sequence[str],
                 seed: int, tiled: Sequence[str] = ("nuv", "fuv"), galaxies: float = 0.0,
                 center: tuple[float, float] = COSMOS_CENTER, strip: int = 512,
                 mask_fraction: float = 0.005, truth_oversampling: int | None = None
                 ) -> dict[str, object]:
    """Simulate a survey field in preset bands and write it, or reuse a complete copy.

    Parameters
    ----------
    outdir : path-like
        Cache folder: ``priors.parquet``, ``<image>_sci.fits``, ``<image>_wht.fits`` and
        :data:`MANIFEST` (written last). When the manifest exists with the same
        parameters nothing is simulated again.
    area_arcmin2 : float
        Area of the square field.
    bands : sequence of str
        Preset band names (:data:`dask_phot.bands.PRESETS`).
    seed : int
        Root seed.
    tiled : sequence of str
        Bands served as overlapping tiles; the others as one mosaic each.
    galaxies : float
        Fraction of Sersic galaxies among the sources.
    center : (float, float)
        Field centre, degrees.
    strip : int
        Rows rendered at once.
    mask_fraction : float
        Fraction of masked pixels.
    truth_oversampling : int, optional
        See :func:`~dask_phot.testing.simulate_image`.

    Returns
    -------
    dict
        The manifest: ``params``, ``n_priors``, ``images`` (band -> list of image names)
        and ``seconds`` (time spent simulating, when it was).
    """
    import time

    from dask_phot.bands import get_band

    out = Path(outdir)
    params = {"area_arcmin2": float(area_arcmin2), "bands": list(bands), "seed": int(seed),
              "tiled": sorted(tiled), "galaxies": float(galaxies), "center": list(center),
              "mask_fraction": mask_fraction, "truth_oversampling": truth_oversampling}
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest["params"] == params:
            return manifest
        raise ValueError(f"{manifest_path} holds another field ({manifest['params']}); "
                         f"use another cache folder for {params}")
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    entropy = root_entropy(seed)
    priors = simulate_sources(area_arcmin2=area_arcmin2, bands=list(bands), seed=entropy,
                              center=center, galaxies=galaxies)
    priors.to_parquet(out / "priors.parquet", index=False)
    side = math.sqrt(area_arcmin2) * 60.0
    images: dict[str, list[str]] = {}
    for name in bands:
        band = get_band(name)
        psf = band.load_psf()
        sky = 0.05 if band.unit == "MJy/sr" else 1e-3
        layout = _layout(name, psf, name in tiled, side, center)
        for image in layout:
            _write_image(image, priors, psf, to_ujy=band.to_ujy, unit=band.unit,
                         depth_ujy=band.depth_5sigma_ujy, sky=sky, entropy=entropy, outdir=out,
                         strip=strip, mask_fraction=mask_fraction,
                         truth_oversampling=truth_oversampling)
            log.info("wrote %s (%d x %d)", image.name, *image.shape)
        images[name] = [image.name for image in layout]
    manifest = {"params": params, "n_priors": len(priors), "images": images,
                "seconds": time.perf_counter() - t0}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def cut_priors(priors: pd.DataFrame, area_arcmin2: float,
               center: tuple[float, float] = COSMOS_CENTER) -> pd.DataFrame:
    """The priors in a square of ``area_arcmin2`` at ``center`` (on the tangent plane)."""
    wcs = field_wcs(center, 1.0, (1, 1))
    x, y = wcs.wcs_world2pix(priors["ra"].to_numpy(), priors["dec"].to_numpy(), 0)
    half = math.sqrt(area_arcmin2) * 30.0
    keep = (np.abs(x) <= half) & (np.abs(y) <= half)
    return priors[keep].reset_index(drop=True)
