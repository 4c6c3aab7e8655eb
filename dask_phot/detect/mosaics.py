"""Many mosaics on Dask: grouping, tiles with overlaps, per-tile detection and
measurement, de-duplication, one catalog per group and a merged priors catalog.

:func:`plan_tiles` cuts each mosaic into ``tile_size`` cores read with
``tile_overlap`` pixels around them; a detection is kept only by the tile whose
core holds its centre, so tiles never double-count. Mosaics of one group that
overlap (visits, pointings) and the groups among themselves (filters) are
de-duplicated by position (:func:`deduplicate`), keeping the highest-S/N
measurement. :func:`run_detect` runs the tiles on a Dask client (or in-process)
and writes ``<output>/<group>.parquet`` and ``<output>/merged.parquet``, whose
``source_id``, ``ra``, ``dec`` a forced-photometry run reads as its priors.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.config import storage_options
from dask_phot.detect.config import DetectConfig

__all__ = ["DetectSummary", "Tile", "deduplicate", "group_of", "plan_tiles", "run_detect"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tile:
    """A piece of a mosaic: the core it owns and the box read around it (half-open)."""

    mosaic: int
    core_x: tuple[int, int]
    core_y: tuple[int, int]
    box_x: tuple[int, int]
    box_y: tuple[int, int]


@dataclass(frozen=True)
class DetectSummary:
    """What :func:`run_detect` wrote."""

    groups: dict[str, str]
    merged: str
    n_sources: int
    n_tiles: int
    offsets_arcsec: dict[str, tuple[float, float]]


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
    if cfg.group_by.startswith("header:"):
        key = cfg.group_by.split(":", 1)[1]
        if key not in header:
            raise ValueError(f"{url}: header has no {key!r} to group by")
        name = str(header[key]).strip()
    else:
        stem = PurePosixPath(url).name
        stem = re.sub(r"\.(fits|fit|fts)(\.gz|\.fz)?$", "", stem, flags=re.IGNORECASE)
        match = re.match(cfg.group_pattern, stem)
        if not match:
            raise ValueError(f"{url}: file name does not match group_pattern "
                             f"{cfg.group_pattern!r}")
        name = match["group"]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "group"


def deduplicate(table: pd.DataFrame, radius_arcsec: float, *,
                score: str = "snr") -> pd.DataFrame:
    """Keep one row per position: the highest ``score`` within ``radius_arcsec``.

    Adds ``n_dup``, how many rows each kept one stands for.

    Examples
    --------
    >>> t = pd.DataFrame({"ra": [10.0, 10.0 + 0.1 / 3600, 10.1], "dec": [0.0, 0.0, 0.0],
    ...                   "snr": [5.0, 9.0, 3.0]})
    >>> deduplicate(t, 0.3)[["snr", "n_dup"]].values.tolist()
    [[9.0, 2.0], [3.0, 1.0]]
    """
    from scipy.spatial import cKDTree

    if table.empty:
        return table.assign(n_dup=np.zeros(0, np.int64))
    ra, dec = np.radians(table["ra"].to_numpy()), np.radians(table["dec"].to_numpy())
    xyz = np.c_[np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]
    chord = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
    order = np.argsort(-np.nan_to_num(table[score].to_numpy(dtype=float), nan=-np.inf),
                       kind="stable")
    tree = cKDTree(xyz)
    taken = np.zeros(len(table), bool)
    keep, count = [], []
    for i in order:
        if taken[i]:
            continue
        near = [j for j in tree.query_ball_point(xyz[i], chord) if not taken[j]]
        taken[near] = True
        keep.append(i)
        count.append(len(near))
    out = table.iloc[keep].copy()
    out["n_dup"] = np.asarray(count, dtype=np.int64)
    return out.sort_values(["dec", "ra"], kind="stable").reset_index(drop=True)


def detect_tile(mosaic: Any, coverage: Any, tile: Tile, cfg: DetectConfig, psf: Any,
                to_ujy: float | None, group: str) -> pd.DataFrame:
    """Detect and measure the sources whose centres fall in one tile's core.

    A pure function of its arguments (reads the tile's pixels, returns a table),
    run on Dask workers by :func:`run_detect`, or in-process to debug one tile.
    """
    from dask_phot.aperture import measure_sources
    from dask_phot.detect.extract import detect_sources
    from dask_phot.images import read_region

    storage = storage_options(cfg)
    region = read_region(mosaic, tile.box_x, tile.box_y, storage_options=storage)
    cov = None
    if coverage is not None:
        cov_region = read_region(coverage, tile.box_x, tile.box_y, storage_options=storage)
        cov = np.nan_to_num(cov_region.data, nan=0.0)
    if not np.isfinite(region.data).any():
        return pd.DataFrame()
    bk = cfg.background
    gain = cfg.gain or None
    det = detect_sources(region.data, params=cfg.params, weight=region.weight, coverage=cov,
                         gain=gain, background_kwargs={"box_size": bk.box_size,
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
        radii=ap.radii, annulus=tuple(ap.annulus) or None, psf=psf, to_ujy=to_ujy,
        kron_factor=ap.kron_factor, min_kron_radius=ap.min_kron_radius,
        min_diameter=ap.min_diameter)
    out = pd.concat([t.drop(columns=["x", "y"]).rename(columns={"flux": "flux_iso",
                                                              "id": "segment_id"}),
                     meas.drop(columns=["x", "y"])], axis=1)
    out.insert(0, "x_mosaic", xm[own])
    out.insert(1, "y_mosaic", ym[own])
    ra, dec = mosaic.wcs.pixel_to_world_values(xm[own], ym[own])
    out.insert(0, "ra", np.mod(ra, 360.0))
    out.insert(1, "dec", dec)
    scale = mosaic.pixel_scale_arcsec
    with np.errstate(divide="ignore", invalid="ignore"):
        out["snr"] = out["flux_auto"] / out["flux_err_auto"]
        # semi-major axis of the Kron aperture, and the segment's equivalent radius
        out["extent_arcsec"] = out["auto_radius"] * np.sqrt(out["a"] / out["b"]) * scale
    out["segment_radius_arcsec"] = np.sqrt(out["npix"] / np.pi) * scale
    out["group"] = group
    out["mosaic"] = mosaic.source_url
    return out


def _read_reference(cfg: DetectConfig) -> pd.DataFrame | None:
    from dask_phot.priors import read_priors

    ref = cfg.reference
    if not ref.path:
        return None
    return read_priors(ref.path, ra_column=ref.ra_column, dec_column=ref.dec_column,
                       id_column="source_id", columns=list(ref.columns),
                       storage_options=storage_options(cfg))


def _align(table: pd.DataFrame, reference: pd.DataFrame | None,
           cfg: DetectConfig) -> tuple[pd.DataFrame, tuple[float, float]]:
    from dask_phot.detect.match import match_reference

    if reference is None or table.empty:
        return table, (math.nan, math.nan)
    ref = cfg.reference
    res = match_reference(table["ra"], table["dec"], reference, radius_arcsec=ref.radius_arcsec,
                          columns=tuple(ref.columns))
    out = pd.concat([table.reset_index(drop=True), res.table], axis=1)
    if ref.apply_shift and res.n_matched:
        cosd = np.cos(np.radians(out["dec"].to_numpy()))
        out["ra"] = np.mod(out["ra"] + res.dra_arcsec / 3600.0 / cosd, 360.0)
        out["dec"] = out["dec"] + res.ddec_arcsec / 3600.0
    return out, (res.dra_arcsec, res.ddec_arcsec)


def _write(table: pd.DataFrame, path: str, storage: dict[str, Any]) -> str:
    import fsspec

    fs, local = fsspec.core.url_to_fs(path, **(storage if "://" in path else {}))
    fs.makedirs(str(PurePosixPath(local).parent), exist_ok=True)
    with fs.open(local, "wb") as f:
        table.to_parquet(f, index=False)
    return path


def _index(cfg: DetectConfig) -> tuple[list[Any], list[Any]]:
    from dask_phot.images import build_index

    kind = cfg.noise_kind if cfg.noise else "none"
    mosaics = build_index(list(cfg.images), list(cfg.noise) or None, noise_kind=kind,  # type: ignore[arg-type]
                          band="detect", storage_options=storage_options(cfg))
    coverage: list[Any] = [None] * len(mosaics)
    if cfg.coverage:
        coverage = build_index(list(cfg.coverage), band="coverage",
                               storage_options=storage_options(cfg))
        if len(coverage) != len(mosaics):
            raise ValueError(f"coverage: {len(coverage)} maps for {len(mosaics)} images")
    return mosaics, coverage


def _to_ujy(cfg: DetectConfig, header: Any) -> float | None:
    from dask_phot.aperture import flux_conversion

    if cfg.to_ujy:
        return cfg.to_ujy
    try:
        return flux_conversion(header)
    except ValueError:
        return None


def run_detect(cfg: DetectConfig, *, client: Any = None) -> DetectSummary:
    """Detect and measure sources on every mosaic of ``cfg``; write the catalogs.

    Parameters
    ----------
    cfg : DetectConfig
        See :mod:`dask_phot.detect.config`.
    client : distributed.Client, optional
        Tiles run as tasks on it; without one they run here, one after another.

    Returns
    -------
    DetectSummary
    """
    from dask_phot.psf import PixelPSF

    mosaics, coverage = _index(cfg)
    psf = PixelPSF.from_fits(cfg.psf_file) if cfg.psf_file else None
    jobs = []
    for i, (m, c) in enumerate(zip(mosaics, coverage, strict=True)):
        group = group_of(m.source_url, m.header, cfg)
        for tile in plan_tiles(m.shape, cfg.tile_size, cfg.tile_overlap, i):
            jobs.append((m, c, tile, cfg, psf, _to_ujy(cfg, m.header), group))
    logger.info("detect: %d mosaic(s), %d tile(s)", len(mosaics), len(jobs))
    if client is not None:
        futures = [client.submit(detect_tile, *job, pure=False) for job in jobs]
        tables = client.gather(futures)
    else:
        tables = [detect_tile(*job) for job in jobs]
    return _assemble([t for t in tables if not t.empty], cfg, len(jobs))


def _assemble(tables: Sequence[pd.DataFrame], cfg: DetectConfig, n_tiles: int) -> DetectSummary:
    reference = _read_reference(cfg)
    all_rows = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        {"ra": [], "dec": [], "snr": [], "group": []})
    written, offsets, per_group = {}, {}, []
    for group, rows in all_rows.groupby("group", sort=True):
        cat = deduplicate(rows, cfg.merge_radius_arcsec)
        cat, offsets[str(group)] = _align(cat, reference, cfg)
        cat.insert(0, "id", np.arange(1, len(cat) + 1, dtype=np.int64))
        written[str(group)] = _write(cat, f"{cfg.output.rstrip('/')}/{group}.parquet",
                                     storage_options(cfg))
        per_group.append(cat)
    merged = deduplicate(pd.concat(per_group, ignore_index=True) if per_group else all_rows,
                         cfg.merge_radius_arcsec).rename(columns={"n_dup": "n_groups"})
    merged = merged.drop(columns=["id"], errors="ignore")
    merged.insert(0, "source_id", np.arange(1, len(merged) + 1, dtype=np.int64))
    path = _write(merged, f"{cfg.output.rstrip('/')}/merged.parquet", storage_options(cfg))
    logger.info("detect: %d source(s) in %d group(s) -> %s", len(merged), len(written), path)
    return DetectSummary(groups=written, merged=path, n_sources=len(merged), n_tiles=n_tiles,
                         offsets_arcsec=offsets)
