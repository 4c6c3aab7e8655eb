"""Many mosaics of several surveys on Dask: grouping, tiles with overlaps, per-tile
detection (with cosmic-ray masks where one exposure covers the sky) and measurement.

:func:`plan_tiles` cuts each mosaic into ``tile_size`` cores read with
``tile_overlap`` pixels around them; a detection is kept only by the tile whose
core holds its centre, so tiles never double-count. :func:`run_detect` runs the
tiles of every mosaic of every survey as one set of Dask tasks (or in-process),
then :mod:`~dask_phot.detect.catalogs` de-duplicates overlapping mosaics of a
group (filter) and merges the groups: ``<output>/<group>.parquet`` and
``<output>/merged.parquet`` (with ``[detect.surveys.<name>]``: the same in
``<output>/<name>/``, with ``selection.json``), whose ``source_id``, ``ra``,
``dec`` a forced-photometry run reads as its priors.

Coverage maps are exposure counts, or context images (JWST ``CON``, HST ``CTX``:
a bit per input, :func:`exposure_count`). With ``[detect.cosmics] enabled``, each
tile's single-exposure area is searched for cosmic rays (astroscrappy) and
sources near one are flagged ``COSMIC_RAY``; none is dropped for it.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.config import storage_options
from dask_phot.detect.catalogs import DetectSummary, assemble_catalogs
from dask_phot.detect.config import DetectConfig, SurveyInputs
from dask_phot.images import split_extension

__all__ = ["MosaicJob", "Tile", "detect_tile", "exposure_count", "filter_name", "group_of",
           "plan_tiles", "run_detect"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tile:
    """A piece of a mosaic: the core it owns and the box read around it (half-open)."""

    mosaic: int
    core_x: tuple[int, int]
    core_y: tuple[int, int]
    box_x: tuple[int, int]
    box_y: tuple[int, int]


def plan_tiles(shape: tuple[int, int], tile_size: int, overlap: int,
               mosaic: int = 0) -> list[Tile]:
    """Cut an image of ``shape`` into tiles of at most ``tile_size`` with ``overlap``.

    Examples
    --------
    >>> tiles = plan_tiles((100, 250), 128, 16)
    >>> [(t.core_x, t.box_x) for t in tiles]
    [((0, 125), (0, 141)), ((125, 250), (109, 250))]
    """
    ny, nx = shape

    def cuts(n: int) -> list[tuple[int, int]]:
        k = max(1, math.ceil(n / tile_size))
        edges = np.linspace(0, n, k + 1).round().astype(int)
        return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))

    return [Tile(mosaic, cx, cy, (max(cx[0] - overlap, 0), min(cx[1] + overlap, nx)),
                 (max(cy[0] - overlap, 0), min(cy[1] + overlap, ny)))
            for cy in cuts(ny) for cx in cuts(nx)]


def group_of(url: str, header: Any, cfg: DetectConfig) -> str:
    """The group a mosaic belongs to (file-name pattern, a header keyword, or one group).

    Examples
    --------
    >>> cfg = DetectConfig(images=("x",))
    >>> group_of("s3://b/f814w_sci.fits.gz", {}, cfg)
    'f814w'
    """
    if cfg.group_by == "none":
        return "all"
    if cfg.group_by == "filter":
        name = filter_name(header)
        if not name:
            raise ValueError(f"{url}: no FILTER, PUPIL, FILTER1 or FILTER2 keyword to group by")
    elif cfg.group_by.startswith("header:"):
        key = cfg.group_by.split(":", 1)[1]
        if key not in header:
            raise ValueError(f"{url}: header has no {key!r} to group by")
        name = str(header[key]).strip()
    else:
        stem = PurePosixPath(split_extension(url)[0]).name
        stem = re.sub(r"\.(fits|fit|fts)(\.gz|\.fz)?$", "", stem, flags=re.IGNORECASE)
        match = re.match(cfg.group_pattern, stem)
        if not match:
            raise ValueError(f"{url}: file name does not match group_pattern "
                             f"{cfg.group_pattern!r}")
        name = match["group"]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "group"


def filter_name(header: Any) -> str:
    """The filter of a mosaic from its header: FILTER/PUPIL (JWST) or FILTER1/FILTER2 (HST
    ACS), elements named CLEAR left out; "" without any.

    Examples
    --------
    >>> filter_name({"FILTER": "F200W", "PUPIL": "CLEAR"}), filter_name({"FILTER1": "CLEAR1L",
    ...                                                                    "FILTER2": "F814W"})
    ('f200w', 'f814w')
    >>> filter_name({"FILTER": "F150W2", "PUPIL": "F162M"})
    'f150w2-f162m'
    """
    values = [str(header.get(k, "")).strip() for k in ("FILTER", "PUPIL", "FILTER1", "FILTER2")]
    useful = [v.lower() for v in values if v and not v.upper().startswith(("CLEAR", "N/A"))]
    return "-".join(dict.fromkeys(useful))


def exposure_count(coverage: np.ndarray, kind: str) -> np.ndarray:
    """Exposures per pixel from a coverage map: counts as they are (NaN -> 0), or the set
    bits of a context image (JWST ``CON``, HST ``CTX``, read as floats).

    Examples
    --------
    >>> exposure_count(np.array([[5.0, -2147483648.0, np.nan]]), "context").tolist()
    [[2, 1, 0]]
    """
    if kind == "count":
        return np.nan_to_num(np.asarray(coverage, dtype=np.float64), nan=0.0)
    bits = np.nan_to_num(np.asarray(coverage, dtype=np.float64), nan=0.0).astype(np.int64)
    return np.bitwise_count(bits & 0xFFFFFFFF).astype(np.int64)


@dataclass(frozen=True, eq=False)
class MosaicJob:
    """One mosaic of a run: its coverage, group, survey and flux conversion."""

    mosaic: Any
    coverage: Any
    coverage_kind: str
    group: str
    survey: str
    to_ujy: float | None


def _cosmic_rays(data: np.ndarray, cov: np.ndarray, cfg: DetectConfig) -> np.ndarray | None:
    """Cosmic-ray mask of the few-exposure areas of a tile (None: there are none).

    Each connected area (the corners and edges a dither pattern leaves) is searched on
    its own bounding box, so the masks cost what those areas cost.
    """
    from scipy import ndimage

    from dask_phot.detect.cosmics import cosmic_ray_mask

    c = cfg.cosmics
    few = (cov > 0) & (cov <= c.max_exposures) & np.isfinite(data)
    if few.sum() < 25:
        return None
    values = data[few]
    rms = 1.4826 * float(np.median(np.abs(values - np.median(values)))) or float(np.std(values))
    # in image units with no gain given: electrons such that the background RMS is 100 e-,
    # read-noise dominated (sky-subtracted mosaics have no sky to make Poisson noise of)
    gain = c.gain or cfg.gain or (100.0 / rms if rms > 0 else 1.0)
    readnoise = c.readnoise or rms * gain
    mask = np.zeros(data.shape, bool)
    labels, _ = ndimage.label(ndimage.binary_dilation(few, iterations=8))
    for box in ndimage.find_objects(labels):
        area = few[box]
        if area.sum() < 25:
            continue
        mask[box] |= cosmic_ray_mask(
            data[box], mask=~area, gain=gain, readnoise=readnoise, sigclip=c.sigclip,
            sigfrac=c.sigfrac, objlim=c.objlim, niter=c.niter, grow=c.grow) & area
    return mask


def _tile_pixels(job: MosaicJob, tile: Tile, cfg: DetectConfig
                 ) -> tuple[Any, np.ndarray | None, np.ndarray | None]:
    """The tile's region, exposure count and cosmic-ray mask."""
    from dask_phot.images import read_region

    storage = storage_options(cfg)
    region = read_region(job.mosaic, tile.box_x, tile.box_y, storage_options=storage)
    if job.coverage is None:
        return region, None, None
    cov_region = read_region(job.coverage, tile.box_x, tile.box_y, storage_options=storage)
    cov = exposure_count(cov_region.data, job.coverage_kind)
    crs = _cosmic_rays(region.data, cov, cfg) if cfg.cosmics.enabled else None
    return region, cov, crs


def detect_tile(job: MosaicJob, tile: Tile, cfg: DetectConfig, psf: Any) -> pd.DataFrame:
    """Detect and measure the sources whose centres fall in one tile's core.

    A pure function of its arguments (reads the tile's pixels, returns a table),
    run on Dask workers by :func:`run_detect`, or in-process to debug one tile.
    """
    from dask_phot.aperture import measure_sources
    from dask_phot.detect.extract import detect_sources

    region, cov, crs = _tile_pixels(job, tile, cfg)
    if not np.isfinite(region.data).any():
        return pd.DataFrame()
    bk = cfg.background
    gain = cfg.gain or None
    det = detect_sources(region.data, params=cfg.params, weight=region.weight, coverage=cov,
                         cosmic_rays=crs, gain=gain,
                         background_kwargs={"box_size": bk.box_size,
                                            "filter_size": bk.filter_size,
                                            "mask_sources": bk.mask_sources})
    t = det.table
    xm, ym = t["x"].to_numpy() + tile.box_x[0], t["y"].to_numpy() + tile.box_y[0]
    ix, iy = np.floor(xm + 0.5), np.floor(ym + 0.5)
    own = ((ix >= tile.core_x[0]) & (ix < tile.core_x[1]) & (iy >= tile.core_y[0])
           & (iy < tile.core_y[1]))
    t = t[own].reset_index(drop=True)
    if t.empty:
        return pd.DataFrame()
    ap = cfg.aperture
    meas = measure_sources(
        region.data, t["x"], t["y"], shape=(t["a"], t["b"], t["theta"]), segmap=det.segmap,
        seg_id=t["id"], background=det.background.back, rms=det.noise, gain=gain,
        radii=ap.radii, annulus=tuple(ap.annulus) or None, psf=psf, to_ujy=job.to_ujy,
        kron_factor=ap.kron_factor, min_kron_radius=ap.min_kron_radius,
        min_diameter=ap.min_diameter)
    out = pd.concat([t.drop(columns=["x", "y"]).rename(columns={"flux": "flux_iso",
                                                              "id": "segment_id"}),
                     meas.drop(columns=["x", "y"])], axis=1)
    return _finish(out, job, xm[own], ym[own])


def _finish(out: pd.DataFrame, job: MosaicJob, xm: np.ndarray, ym: np.ndarray) -> pd.DataFrame:
    out.insert(0, "x_mosaic", xm)
    out.insert(1, "y_mosaic", ym)
    ra, dec = job.mosaic.wcs.pixel_to_world_values(xm, ym)
    out.insert(0, "ra", np.mod(ra, 360.0))
    out.insert(1, "dec", dec)
    scale = job.mosaic.pixel_scale_arcsec
    with np.errstate(divide="ignore", invalid="ignore"):
        out["snr"] = out["flux_auto"] / out["flux_err_auto"]
        # semi-major axis of the Kron aperture, and the segment's equivalent radius
        out["extent_arcsec"] = out["auto_radius"] * np.sqrt(out["a"] / out["b"]) * scale
    out["segment_radius_arcsec"] = np.sqrt(out["npix"] / np.pi) * scale
    out["group"] = job.group
    out["survey"] = job.survey
    out["mosaic"] = job.mosaic.source_url
    return out


def _index(name: str, spec: SurveyInputs, cfg: DetectConfig) -> list[MosaicJob]:
    """A survey's mosaics (with their coverage maps on the same grids) as jobs."""
    from dask_phot.images import build_index, companion

    storage = storage_options(cfg)
    kind = spec.noise_kind if spec.noise else "none"
    mosaics = build_index(list(spec.images), list(spec.noise) or None,
                          noise_kind=kind, band="detect",  # type: ignore[arg-type]
                          storage_options=storage)
    coverage: list[Any] = [None] * len(mosaics)
    if spec.coverage:
        from dask_phot.images import expand_urls

        urls = expand_urls(list(spec.coverage), storage)
        if len(urls) != len(mosaics):
            raise ValueError(f"{name or 'detect'}: {len(urls)} coverage maps for "
                             f"{len(mosaics)} images")
        coverage = [companion(m, u, band="coverage", storage_options=storage)
                    for m, u in zip(mosaics, urls, strict=True)]
    return [MosaicJob(m, c, spec.coverage_kind, group_of(m.source_url, m.header, cfg), name,
                      _to_ujy(cfg, m)) for m, c in zip(mosaics, coverage, strict=True)]


def _to_ujy(cfg: DetectConfig, mosaic: Any) -> float | None:
    from dask_phot.images import header_to_ujy

    if cfg.to_ujy:
        return cfg.to_ujy
    return header_to_ujy(mosaic.header, url=mosaic.source_url)


def run_detect(cfg: DetectConfig, *, client: Any = None) -> DetectSummary:
    """Detect and measure sources on every mosaic of ``cfg``; write the catalogs.

    Parameters
    ----------
    cfg : DetectConfig
        See :mod:`dask_phot.detect.config`.
    client : distributed.Client, optional
        Tiles (of every survey) run as tasks on it; without one they run here,
        one after another.

    Returns
    -------
    DetectSummary

    Raises
    ------
    MosaicError
        A mosaic that cannot be read as given (no such extension, a weight map
        of another shape) or whose header units cannot be converted to
        microjansky; raised before any tile runs.
    """
    from dask_phot.psf import PixelPSF

    jobs = [job for name, spec in cfg.inputs().items() for job in _index(name, spec, cfg)]
    psf = PixelPSF.from_fits(cfg.psf_file) if cfg.psf_file else None
    tiles = [(job, tile) for i, job in enumerate(jobs)
             for tile in plan_tiles(job.mosaic.shape, cfg.tile_size, cfg.tile_overlap, i)]
    logger.info("detect: %d mosaic(s) of %d survey(s), %d tile(s)", len(jobs),
                len(cfg.inputs()), len(tiles))
    if client is not None:
        futures = [client.submit(detect_tile, job, tile, cfg, psf, pure=False)
                   for job, tile in tiles]
        tables = client.gather(futures)
    else:
        tables = [detect_tile(job, tile, cfg, psf) for job, tile in tiles]
    mosaics = [{"survey": j.survey, "group": j.group, "image": j.mosaic.source_url,
                "noise": j.mosaic.noise_source_url, "to_ujy": j.to_ujy,
                "coverage": None if j.coverage is None else j.coverage.source_url}
               for j in jobs]
    return assemble_catalogs(tables, mosaics, cfg, len(tiles))
