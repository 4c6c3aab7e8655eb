"""Simulated JWST/NIRCam surveys: level-3 ``i2d`` mosaics (and HLSP copies) with truth.

A :class:`SimSurvey` is a program's NIRCam imaging: one or more mosaics (tiles)
per filter, each the combination of dithered exposures (so its edges and corners
are covered by fewer exposures, and cosmic rays survive only where one exposure
covers the sky), in the pipeline's ``i2d`` layout (:func:`write_i2d`) and named as
MAST names them: ``jw01345-o001_t001_nircam_clear-f200w_i2d.fits`` for the
level-3 products, ``hlsp_ceers_jwst_nircam_egs1_f200w_v1.0_i2d.fits`` for a
team's HLSP copy. Sources (points and Sersic galaxies, per-filter fluxes) come
from :func:`~dask_phot.testing.simulate_sources`; galaxies are rendered quickly
(``_galaxy_stamp``), not for flux-accuracy tests.

:func:`simulate_survey` writes a survey's files and returns them with the truth;
:data:`DEMO_SURVEYS` is the two-survey set (CEERS-like and PRIMER-like, at those
surveys' positions) whose MAST replies are recorded in ``tests/data/archive``.

Examples
--------
>>> import tempfile
>>> small = SimSurvey("demo", "01345", (214.86, 52.88), ("F200W",), shape=(120, 120),
...                   density_per_arcmin2=400.0)
>>> with tempfile.TemporaryDirectory() as tmp:
...     out = simulate_survey(small, tmp, seed=1)
...     list(out.files["product"])
['jw01345-o001_t001_nircam_clear-f200w_i2d.fits']
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.wcs import WCS
from scipy import ndimage

from dask_phot.psf import gaussian_psf
from dask_phot.testing.field import pixel_shapes
from dask_phot.testing.image import simulate_image
from dask_phot.testing.mast_products import write_i2d
from dask_phot.testing.sources import simulate_sources

__all__ = ["DEMO_SURVEYS", "NIRCAM_FWHM", "SimSurvey", "SurveyFiles", "simulate_survey",
           "survey_wcs"]

#: NIRCam PSF FWHM, arcsec (JWST User Documentation, NIRCam PSFs).
NIRCAM_FWHM = {"F090W": 0.033, "F115W": 0.040, "F150W": 0.050, "F200W": 0.066,
               "F277W": 0.092, "F356W": 0.116, "F410M": 0.137, "F444W": 0.145}
_ARCSEC2_PER_SR = (180.0 / math.pi * 3600.0) ** 2


@dataclass(frozen=True)
class SimSurvey:
    """A simulated NIRCam survey.

    Parameters
    ----------
    name : str
        Survey (and HLSP) name, lower case.
    program : str
        JWST program number, 5 digits.
    center : (float, float)
        (RA, Dec) of the first tile, degrees.
    filters : tuple of str
        NIRCam filters (keys of :data:`NIRCAM_FWHM`).
    tiles : int
        Mosaics per filter, side by side in RA (each its own observation).
    shape : (int, int)
        Pixels of each mosaic.
    pixel_scale : float
        Arcsec per pixel.
    rotation_deg : float
        Position angle of the mosaics' y axis, east of north.
    depth_5sigma_ujy : float
        Point-source 5-sigma depth where all exposures overlap, microJansky.
    density_per_arcmin2 : float
        Sources per arcmin^2 (above ``flux_range_ujy[0]``).
    flux_range_ujy : (float, float)
    exposures : int
        Dithered exposures per mosaic (4: corners of ``dither`` x ``dither``
        pixels see one exposure).
    dither : float
        Dither step as a fraction of the mosaic's side.
    cosmic_rays : int
        Cosmic rays left in each mosaic's single-exposure areas.
    hlsp_filters : tuple of str
        Filters also written as the team's HLSP mosaic.
    field_name : str
        Field name in HLSP file names.
    """

    name: str
    program: str
    center: tuple[float, float]
    filters: tuple[str, ...]
    tiles: int = 1
    shape: tuple[int, int] = (1000, 1000)
    pixel_scale: float = 0.04
    rotation_deg: float = 20.0
    depth_5sigma_ujy: float = 0.02
    density_per_arcmin2: float = 2000.0
    flux_range_ujy: tuple[float, float] = (0.02, 300.0)
    exposures: int = 4
    dither: float = 0.12
    cosmic_rays: int = 40
    hlsp_filters: tuple[str, ...] = ()
    field_name: str = "field"

    def product(self, filt: str, tile: int, *, hlsp: bool = False) -> str:
        """The MAST file name of a mosaic (level 3, or the HLSP copy)."""
        if hlsp:
            return (f"hlsp_{self.name}_jwst_nircam_{self.field_name}{tile + 1}_"
                    f"{filt.lower()}_v1.0_i2d.fits")
        return f"jw{self.program}-o{tile + 1:03d}_t001_nircam_clear-{filt.lower()}_i2d.fits"

    def tile_center(self, tile: int) -> tuple[float, float]:
        """Centre of a tile: tiles follow each other along the rotated x axis,
        overlapping by 5% of their width."""
        step = self.shape[1] * self.pixel_scale * 0.95 / 3600.0 * tile
        pa = math.radians(self.rotation_deg)
        dra = -step * math.cos(pa) / math.cos(math.radians(self.center[1]))
        return self.center[0] + dra, self.center[1] + step * math.sin(pa)


@dataclass
class SurveyFiles:
    """What :func:`simulate_survey` wrote.

    Attributes
    ----------
    files : pandas.DataFrame
        ``survey``, ``filter``, ``tile``, ``kind`` ("level3" or "hlsp"),
        ``product`` (MAST file name), ``path`` (local file).
    truth : pandas.DataFrame
        The sources: ``source_id``, ``ra``, ``dec``, ``flux_true_<filter>`` (uJy)
        and shapes.
    cosmic_rays : pandas.DataFrame
        ``filter``, ``tile``, ``x``, ``y`` of the cosmic rays added.
    """

    files: pd.DataFrame
    truth: pd.DataFrame
    cosmic_rays: pd.DataFrame = field(default_factory=pd.DataFrame)


def survey_wcs(center: tuple[float, float], pixel_scale: float, shape: tuple[int, int],
               rotation_deg: float) -> WCS:
    """A TAN WCS (PC matrix, CDELT) rotated by ``rotation_deg`` east of north."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [float(center[0]), float(center[1])]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    w.wcs.pc = [[c, -s], [s, c]]
    w.wcs.radesys = "ICRS"
    w.pixel_shape = (nx, ny)
    w.wcs.set()
    return w


def _exposure_masks(survey: SimSurvey) -> np.ndarray:
    """Which of the dithered exposures covers each pixel, ``(n, ny, nx)``."""
    ny, nx = survey.shape
    dx, dy = round(survey.dither * nx), round(survey.dither * ny)
    yy, xx = np.mgrid[:ny, :nx]
    offsets = [(i % 2, (i // 2) % 2) for i in range(survey.exposures)]
    masks = []
    for ox, oy in offsets:
        x0, y0 = ox * dx, oy * dy
        masks.append((xx >= x0) & (xx < nx - dx + x0) & (yy >= y0) & (yy < ny - dy + y0))
    return np.array(masks)


def _cosmic_rays(rng: np.random.Generator, count: np.ndarray, n: int,
                 sigma: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    """Sharp hits (1-3 pixels, 30-300 sigma) in the single-exposure areas."""
    hits = np.zeros(count.shape)
    iy, ix = np.nonzero(count == 1)
    rows = []
    if iy.size == 0:
        return hits, pd.DataFrame({"x": [], "y": []})
    for k in rng.choice(iy.size, size=min(n, iy.size), replace=False):
        y, x = int(iy[k]), int(ix[k])
        amp = rng.uniform(30.0, 300.0) * sigma[y, x]
        length = int(rng.integers(1, 4))
        step = (0, 1) if rng.uniform() < 0.5 else (1, 0)
        for j in range(length):
            yy, xx = y + j * step[0], x + j * step[1]
            if yy < count.shape[0] and xx < count.shape[1] and count[yy, xx] == 1:
                hits[yy, xx] += amp * (1.0 if j == 0 else rng.uniform(0.3, 0.8))
        rows.append((x, y))
    return hits, pd.DataFrame(rows, columns=["x", "y"])


def _galaxy_stamp(r_e: float, q: float, theta: float, n: float, dx: float, dy: float,
                  psf_sigma: float, s: int = 3) -> np.ndarray:
    """A unit-flux Sersic galaxy through a Gaussian PSF on a (2h+1)^2 pixel stamp.

    Evaluated on an ``s x s`` finer grid, convolved there and binned: quick rather
    than exact (the engine's galaxy tests use :mod:`dask_phot.testing.galaxies`);
    light beyond the stamp (8 r_e, at most 120 pixels) is dropped.
    """
    h = int(min(120, math.ceil(8.0 * r_e + 4.0 * psf_sigma + 2)))
    fine = (np.arange(-h * s, (h + 1) * s) - (s - 1) / 2) / s
    yy, xx = np.meshgrid(fine - dy, fine - dx, indexing="ij")
    c, si = math.cos(math.radians(theta)), math.sin(math.radians(theta))
    u, v = xx * c + yy * si, -xx * si + yy * c
    r = np.hypot(u, v / max(q, 0.05))
    b = 2.0 * n - 1.0 / 3.0 + 0.009876 / n
    img = np.exp(-b * (np.maximum(r, 0.05 / s) / r_e) ** (1.0 / n))
    img = ndimage.gaussian_filter(img, psf_sigma * s, mode="constant")
    binned = img.reshape(2 * h + 1, s, 2 * h + 1, s).sum(axis=(1, 3))
    return binned / binned.sum()


def _render_galaxies(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                     shapes: dict[str, np.ndarray], psf_sigma: float) -> np.ndarray:
    canvas = np.zeros(shape)
    ny, nx = shape
    for i in np.flatnonzero(shapes["r_e"] > 0):
        ix, iy = int(np.floor(x[i] + 0.5)), int(np.floor(y[i] + 0.5))
        stamp = _galaxy_stamp(float(shapes["r_e"][i]), float(shapes["q"][i]),
                              float(shapes["theta"][i]), float(shapes["n"][i]),
                              float(x[i] - ix), float(y[i] - iy), psf_sigma) * flux[i]
        h = stamp.shape[0] // 2
        y0, y1, x0, x1 = iy - h, iy + h + 1, ix - h, ix + h + 1
        cy0, cy1, cx0, cx1 = max(y0, 0), min(y1, ny), max(x0, 0), min(x1, nx)
        if cy0 < cy1 and cx0 < cx1:
            canvas[cy0:cy1, cx0:cx1] += stamp[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return canvas


def _render_tile(survey: SimSurvey, truth: pd.DataFrame, filt: str, tile: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, WCS,
                                                    pd.DataFrame]:
    wcs = survey_wcs(survey.tile_center(tile), survey.pixel_scale, survey.shape,
                     survey.rotation_deg)
    x, y = wcs.wcs_world2pix(truth["ra"].to_numpy(), truth["dec"].to_numpy(), 0)
    ny, nx = survey.shape
    near = (x > -30) & (x < nx + 30) & (y > -30) & (y < ny + 30)
    part = truth[near]
    pixar_sr = (survey.pixel_scale**2) / _ARCSEC2_PER_SR
    to_ujy = pixar_sr * 1e12
    psf = gaussian_psf(NIRCAM_FWHM[filt] / survey.pixel_scale, pixel_scale=survey.pixel_scale)
    masks = _exposure_masks(survey)
    count = masks.sum(axis=0)
    # 5-sigma point depth with all exposures: sigma_pix = depth / 5 / sqrt(NEA) in uJy
    nea = 1.0 / float(np.sum(psf.array**2))
    sigma_all = survey.depth_5sigma_ujy / 5.0 / math.sqrt(nea) / to_ujy
    with np.errstate(divide="ignore"):
        sigma = np.where(count > 0, sigma_all * math.sqrt(survey.exposures) / np.sqrt(count),
                         np.nan)
    flux = part[f"flux_true_{filt}"].to_numpy() / to_ujy
    shapes = pixel_shapes(part, wcs, x[near], y[near])
    extended = shapes["r_e"] > 0 if shapes is not None else np.zeros(flux.size, bool)
    image = simulate_image(survey.shape, x[near], y[near], np.where(extended, 0.0, flux), psf,
                           seed=rng, sigma=np.nan_to_num(sigma, nan=1.0))
    fwhm_pix = NIRCAM_FWHM[filt] / survey.pixel_scale
    galaxies = np.zeros(survey.shape) if shapes is None else _render_galaxies(
        survey.shape, x[near], y[near], flux, shapes, fwhm_pix / 2.3548)
    hits, crs = _cosmic_rays(rng, count, survey.cosmic_rays, np.nan_to_num(sigma))
    data = np.where(count > 0, image.data + galaxies + hits, np.nan)
    return data, sigma, masks, wcs, crs


def simulate_survey(survey: SimSurvey, outdir: str | os.PathLike[str], *, seed: int,
                    ) -> SurveyFiles:
    """Write a survey's mosaics (every filter and tile, and the HLSP copies).

    Parameters
    ----------
    survey : SimSurvey
    outdir : path-like
        Files go to ``outdir/<survey name>/``.
    seed : int

    Returns
    -------
    SurveyFiles
    """
    ny, nx = survey.shape
    side_x = nx * survey.pixel_scale * (1 + 0.95 * (survey.tiles - 1))
    side = max(side_x, ny * survey.pixel_scale) / 60.0  # arcmin, square covering the tiles
    centre = survey.tile_center(0)
    last = survey.tile_center(survey.tiles - 1)
    mid = ((centre[0] + last[0]) / 2, (centre[1] + last[1]) / 2)
    truth = simulate_sources(area_arcmin2=side**2, bands=list(survey.filters), seed=seed,
                             density_per_deg2=survey.density_per_arcmin2 * 3600.0,
                             center=mid, flux_range_ujy=survey.flux_range_ujy, slope=0.6,
                             galaxies=0.7, size_median_arcsec=0.15, size_sigma=0.5)
    out = Path(outdir) / survey.name
    rows, crs = [], []
    rng = np.random.default_rng(seed)
    for tile in range(survey.tiles):
        for filt in survey.filters:
            data, sigma, masks, wcs, cr = _render_tile(survey, truth, filt, tile, rng)
            crs.append(cr.assign(filter=filt, tile=tile))
            kinds = [("level3", False)] + ([("hlsp", True)] if filt in survey.hlsp_filters
                                            else [])
            for kind, hlsp in kinds:
                name = survey.product(filt, tile, hlsp=hlsp)
                path = write_i2d(out / name, data, sigma, masks, wcs, filter=filt,
                                 program=survey.program, observation=f"{tile + 1:03d}")
                rows.append({"survey": survey.name, "filter": filt, "tile": tile,
                             "kind": kind, "product": name, "path": str(path)})
    return SurveyFiles(pd.DataFrame(rows), truth, pd.concat(crs, ignore_index=True))


#: The two-survey set of the recorded MAST replies (``tests/data/archive``): a
#: CEERS-like survey (program 1345, two tiles, HLSP copies in F200W) in EGS and a
#: PRIMER-like one (program 1837, one tile) in UDS, in F115W, F200W and F444W.
DEMO_SURVEYS = (
    SimSurvey("ceers", "01345", (214.86, 52.88), ("F115W", "F200W", "F444W"), tiles=2,
              shape=(2000, 2000), pixel_scale=0.04, rotation_deg=20.0,
              density_per_arcmin2=3000.0, hlsp_filters=("F200W",), field_name="egs"),
    SimSurvey("primer", "01837", (34.42, -5.19), ("F115W", "F200W", "F444W"), tiles=1,
              shape=(2600, 2600), pixel_scale=0.04, rotation_deg=-35.0,
              density_per_arcmin2=3000.0, field_name="uds"),
)
