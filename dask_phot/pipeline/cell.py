"""The per-cell kernel: one sky cell's sources, all bands, one table.

:func:`fit_cell` is pure (arrays and config in, a table out); :func:`process_cell`
adds the I/O: it picks each band's mosaic, reads only the cell's pixel box and
calls :func:`fit_cell`. Failures of one band become flag bits and a status
string for that band; the other bands and cells carry on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.bands import flux_to_mag
from dask_phot.cells import CellSources, healpix_29
from dask_phot.config import BandImages, EngineConfig, RunConfig, storage_options
from dask_phot.engine import forced_photometry
from dask_phot.engine.prepare import robust_sigma
from dask_phot.images import Mosaic, Region, read_region, select_mosaic, sky_to_box
from dask_phot.schema import Flag, cell_meta

__all__ = ["CellReport", "fit_band", "fit_cell", "process_cell"]

log = logging.getLogger(__name__)


@dataclass
class CellReport:
    """What happened in one cell: counts, timings, bytes and per-band status."""

    order: int
    pixel: int
    n_primary: int = 0
    n_sources: int = 0
    status: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "fit": 0.0,
                                                               "write": 0.0})
    bytes_read: int = 0

    @property
    def failed(self) -> bool:
        """True when any band of the cell failed."""
        return any(s != "ok" and not s.startswith("not covered") for s in self.status.values())


def _sky_options(band: BandImages, region: Region) -> dict[str, Any]:
    if band.sky == "fit":
        return {"fit_sky": True}
    if band.sky == "none":
        return {"sky": 0.0, "fit_sky": False}
    if band.sky == "clipped":
        from astropy.stats import sigma_clipped_stats

        good = region.data[np.isfinite(region.data)]
        return {"sky": float(sigma_clipped_stats(good, sigma=3.0)[0]), "fit_sky": False}
    return {"sky": float(band.sky), "fit_sky": False}


def clean_weight(region: Region, x: np.ndarray, y: np.ndarray, primary: np.ndarray,
                 reach_pix: float) -> np.ndarray:
    """Weight map with pixels that unmodelled sources may light set to 0.

    Every source not in the cell's partition lies more than the margin from all
    primary sources, so a pixel within ``reach_pix`` (margin minus the PSF stamp's
    half-diagonal) of a primary source receives light from modelled sources only.
    """
    from scipy.spatial import cKDTree

    weight = (region.weight.copy() if region.weight is not None
              else np.where(np.isfinite(region.data), 1.0 / robust_sigma(region.data) ** 2, 0.0))
    ny, nx = weight.shape
    if not primary.any() or reach_pix <= 0:
        return np.zeros_like(weight)
    tree = cKDTree(np.column_stack([x[primary], y[primary]]))
    yy, xx = np.mgrid[0:ny, 0:nx]
    dist, _ = tree.query(np.column_stack([xx.ravel(), yy.ravel()]),
                         distance_upper_bound=reach_pix)
    weight[~np.isfinite(dist.reshape(ny, nx))] = 0.0
    return weight


def fit_band(
    sources: pd.DataFrame, region: Region | None, band: BandImages, engine: EngineConfig,
    *, margin_arcsec: float | None = None,
) -> pd.DataFrame:
    """Forced photometry of a cell's sources (primary and margin) in one band.

    Parameters
    ----------
    sources : pandas.DataFrame
        ``ra``, ``dec`` of every source modelled in the cell.
    region : Region or None
        The band's pixel box around the cell; None when no mosaic covers it.
    band : BandImages
        The band's settings (PSF, flux conversion, sky treatment).
    engine : EngineConfig
        Engine options.
    margin_arcsec : float, optional
        The cell margin; when given, pixels that sources beyond it could light
        are left out of the fit (:func:`clean_weight`), so that a cell's
        primary sources are measured as in a fit of the whole mosaic.

    Returns
    -------
    pandas.DataFrame
        ``flux, flux_err, mag, mag_err, chi2, flags`` in microJansky, one row per source.
    """
    n = len(sources)
    if region is None:
        nan = np.full(n, np.nan)
        return pd.DataFrame({"flux": nan, "flux_err": nan, "mag": nan, "mag_err": nan,
                             "chi2": nan, "flags": np.full(n, int(Flag.NOT_COVERED), np.int32)})
    x, y = region.wcs.all_world2pix(sources["ra"].to_numpy(), sources["dec"].to_numpy(), 0)
    kwargs = engine.forced_kwargs()
    kwargs.update(_sky_options(band, region))
    if kwargs["mode"] == "cutout":
        kwargs["fit_sky"] = False
        kwargs["cutout_width"] = round(band.band.cutout_width / band.band.pixel_scale) | 1
    psf = band.band.load_psf()
    if margin_arcsec is not None:
        reach = margin_arcsec / band.band.pixel_scale - psf.half * np.sqrt(2.0)
        primary = sources["_primary"].to_numpy(dtype=bool)
        noise = {"weight": clean_weight(region, x, y, primary, reach)}
    elif region.weight is not None:
        noise = {"weight": region.weight}
    else:
        noise = {"sigma": robust_sigma(region.data)}
    res = forced_photometry(region.data, psf, x, y, **noise, **kwargs)
    flux = res.flux * band.band.to_ujy
    err = res.flux_err * band.band.to_ujy
    mag, mag_err = flux_to_mag(flux, err)
    return pd.DataFrame({"flux": flux, "flux_err": err, "mag": mag, "mag_err": mag_err,
                         "chi2": res.chi2, "flags": res.flags.astype(np.int32)})


def fit_cell(
    sources: pd.DataFrame,
    regions: Mapping[str, Region | None],
    *,
    bands: Sequence[BandImages],
    engine: EngineConfig,
    keep: Sequence[str] = (),
    margin_arcsec: float | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Measure every band for one cell; return its primary rows and per-band status.

    A band whose fit raises is recorded as failed (its columns NaN, flag
    ``CELL_FAILED``, the reason in the status); the others are unaffected.
    """
    primary = sources["_primary"].to_numpy(dtype=bool)
    out = pd.DataFrame({
        "source_id": sources["source_id"].to_numpy(np.int64)[primary],
        "ra": sources["ra"].to_numpy(np.float64)[primary],
        "dec": sources["dec"].to_numpy(np.float64)[primary],
    })
    out["_healpix_29"] = healpix_29(out["ra"].to_numpy(), out["dec"].to_numpy())
    for col in keep:
        out[col] = sources[col].to_numpy()[primary]
    status: dict[str, str] = {}
    for band in bands:
        region = regions.get(band.name)
        try:
            table = fit_band(sources, region, band, engine, margin_arcsec=margin_arcsec)
            status[band.name] = "ok" if region is not None else "not covered"
        except Exception as exc:  # recorded as data (status + CELL_FAILED), never swallowed
            log.warning("cell band %s failed: %s", band.name, exc)
            status[band.name] = f"failed: {type(exc).__name__}: {exc}"
            nan = np.full(len(sources), np.nan)
            table = pd.DataFrame({"flux": nan, "flux_err": nan, "mag": nan, "mag_err": nan,
                                  "chi2": nan,
                                  "flags": np.full(len(sources), int(Flag.CELL_FAILED), np.int32)})
        for col in table.columns:
            out[f"{col}_{band.name}"] = table[col].to_numpy()[primary]
    meta = cell_meta([b.name for b in bands], {c: str(sources[c].dtype) for c in keep})
    out = out[list(meta.columns)].astype(meta.dtypes.to_dict())
    return out.sort_values("_healpix_29", kind="stable").reset_index(drop=True), status


def _mean_position(ra: np.ndarray, dec: np.ndarray) -> tuple[float, float]:
    """Mean direction of positions (safe across RA = 0/360)."""
    r, d = np.radians(ra), np.radians(dec)
    v = np.array([np.sum(np.cos(d) * np.cos(r)), np.sum(np.cos(d) * np.sin(r)), np.sum(np.sin(d))])
    return (float(np.degrees(np.arctan2(v[1], v[0])) % 360.0),
            float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1])))))


def _read_band(part: CellSources, index: Sequence[Mosaic], band: BandImages,
               storage: Mapping[str, Any], merge_gap: int) -> Region | None:
    """Read the band's pixel box around the cell's sources (None when not covered).

    Rows of the box closer than ``merge_gap`` bytes are fetched in one request:
    one ranged GET costs about as much as transferring tens of kB, so narrow boxes
    of small mosaics become full-width strips, while boxes of wide mosaics (a
    10,000-pixel float32 row is 40 kB) are still read row by row.
    """
    prim = part.sources[part.sources["_primary"].to_numpy(dtype=bool)]
    ra0, dec0 = _mean_position(prim["ra"].to_numpy(), prim["dec"].to_numpy())
    mosaic = select_mosaic(index, ra0, dec0, radius_deg=part.cell.radius_deg())
    if mosaic is None:  # the cell's sources' centre is off every mosaic: try the sources
        for ra, dec in zip(prim["ra"].to_numpy(), prim["dec"].to_numpy(), strict=True):
            if (mosaic := select_mosaic(index, ra, dec)) is not None:
                break
    if mosaic is None:
        return None
    margin = band.band.psf_size // 2 + 2
    xr, yr = sky_to_box(mosaic, part.sources["ra"].to_numpy(), part.sources["dec"].to_numpy(),
                        margin)
    if xr[1] <= xr[0] or yr[1] <= yr[0]:
        return None
    return read_region(mosaic, xr, yr, storage_options=storage, max_gap=merge_gap)


def process_cell(
    part: CellSources, indexes: Mapping[str, Sequence[Mosaic]], config: RunConfig
) -> tuple[pd.DataFrame, CellReport]:
    """Read each band's pixel box for one cell and fit it (I/O around :func:`fit_cell`)."""
    report = CellReport(part.cell.order, part.cell.pixel, part.n_primary, len(part.sources))
    storage = storage_options(config)
    regions: dict[str, Region | None] = {}
    pre_status: dict[str, str] = {}
    t0 = time.perf_counter()
    for band in config.bands:
        try:
            regions[band.name] = _read_band(part, indexes[band.name], band, storage,
                                            config.cells.read_merge_gap)
            if regions[band.name] is not None:
                report.bytes_read += regions[band.name].bytes_read
        except Exception as exc:  # becomes this band's status
            log.warning("cell %s band %s: read failed: %s", part.cell, band.name, exc)
            pre_status[band.name] = f"read failed: {type(exc).__name__}: {exc}"
            regions[band.name] = _FailedRead(str(exc))  # type: ignore[assignment]
    report.seconds["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    table, status = fit_cell(part.sources, regions, bands=config.bands, engine=config.engine,
                             keep=config.priors.keep_columns,
                             margin_arcsec=config.margin_arcsec)
    status.update(pre_status)
    report.status = status
    report.seconds["fit"] = time.perf_counter() - t0
    return table, report


class _FailedRead:
    """Stands in for a Region whose read failed: any use raises with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __getattr__(self, name: str) -> Any:
        raise OSError(self.reason)
