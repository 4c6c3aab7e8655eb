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
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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
from dask_phot.testing.sources import COSMOS_CENTER, simulate_sources

__all__ = ["SurveyImage", "cut_priors", "write_survey"]

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
            sim = simulate_image((y1 - y0, nx), x[sel], y[sel] - y0, flux[sel], psf,
                                 seed=child_rng(entropy, IMAGE, f"{image.name}:{y0}"),
                                 sigma=sigma, sky=sky, mask_fraction=mask_fraction,
                                 shapes=sub, truth_oversampling=truth_oversampling)
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
