"""The per-cell kernel: one sky cell's sources, all bands, one table.

:func:`fit_cell` is pure (arrays and config in, a table out); :func:`process_cell`
adds the I/O: it picks each band's mosaic, reads only the cell's pixel box and
calls :func:`fit_cell`. A band whose data fail (:func:`data_errors`: the
mosaic cannot be read, the fit's matrix is singular) gets flag bits, a status
string and an error record (type, message, traceback) in the cell's report; the
other bands and cells carry on. Any other exception is a bug of dask-phot and
fails the cell, and the run, loudly.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.cells import CellSources, healpix_29
from dask_phot.config import (
    BandImages,
    CellsConfig,
    EngineConfig,
    PriorsConfig,
    RunConfig,
    storage_options,
)
from dask_phot.engine import forced_photometry, robust_sigma
from dask_phot.engine.result import PhotometryResult
from dask_phot.images import (
    Mosaic,
    Region,
    icrs_to_pixel,
    read_region,
    sky_to_box,
)
from dask_phot.models.sersic import N_MAX, N_MIN
from dask_phot.models.shapes import sky_to_pixel, wcs_jacobian
from dask_phot.pipeline.psfs import band_psf, band_psf_error
from dask_phot.pipeline.resume import owners
from dask_phot.pipeline.zones import within_reach
from dask_phot.schema import MODEL_CODES, Flag, band_values, cell_table
from dask_phot.storage import network_errors
from dask_phot.templates.cell import TemplateSetup, fit_band_templates

__all__ = ["CellReport", "data_errors", "error_record", "fit_band", "fit_cell", "fit_read",
           "process_cell", "read_cell", "source_shapes"]

log = logging.getLogger(__name__)


@dataclass
class CellReport:
    """What happened in one cell: counts, timings, bytes and per-band status.

    ``cpu_seconds`` is the CPU time of the threads that computed the cell (on Dask:
    its band tasks, :mod:`dask_phot.pipeline.graph`), whatever else shared the machine;
    ``band_cpu`` the same per band (its task's), and ``band_modelled`` the sources each
    band modelled (its primaries and the margin sources within its own margin).
    """

    order: int
    pixel: int
    n_primary: int = 0
    n_sources: int = 0
    status: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "fit": 0.0,
                                                               "write": 0.0})
    bytes_read: int = 0
    box_bytes: int = 0
    requests: int = 0
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    band_cpu: dict[str, float] = field(default_factory=dict)
    band_modelled: dict[str, int] = field(default_factory=dict)

    def failures(self) -> dict[str, str]:
        """Band -> kind of failure (``"failed"``, ``"read failed"``) of the bands that failed.

        A band that no mosaic covers is not a failure.
        """
        return {band: status.split(":")[0] for band, status in self.status.items()
                if status != "ok" and not status.startswith("not covered")}

    @property
    def failed(self) -> bool:
        """True when any band of the cell failed."""
        return bool(self.failures())


def data_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a band's data cannot be measured, not a bug.

    I/O failures (:class:`OSError`: missing, truncated or unreadable files, timeouts,
    network errors after the storage layer's retries; botocore's and aiohttp's own
    errors) and singular fits (:class:`numpy.linalg.LinAlgError`).
    """
    return (OSError, np.linalg.LinAlgError, *network_errors())


def error_record(exc: BaseException, stage: str) -> dict[str, str]:
    """What a cell report keeps of a data failure: stage, type, message, traceback."""
    kind = type(exc)
    return {"stage": stage, "type": f"{kind.__module__}.{kind.__qualname__}",
            "message": str(exc), "traceback": "".join(traceback.format_exception(exc))}


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
    primary sources, so a pixel within ``reach_pix`` (margin minus the half-width of
    the box a source's light reaches: its PSF's wings, or its stamp) of a primary
    source receives light from modelled sources only, but for the box's corners, which
    hold less light than the stamp's edges every fit leaves out
    (:attr:`~dask_phot.config.model.BandImages.margin_arcsec`).
    """
    weight = (region.weight.copy() if region.weight is not None
              else np.where(np.isfinite(region.data), 1.0 / robust_sigma(region.data) ** 2, 0.0))
    if not primary.any() or reach_pix <= 0:
        return np.zeros_like(weight)
    weight[~within_reach(weight.shape, x[primary], y[primary], reach_pix)] = 0.0
    return weight


def source_shapes(sources: pd.DataFrame, region: Region, x: np.ndarray, y: np.ndarray,
                  priors: PriorsConfig) -> dict[str, np.ndarray] | None:
    """The sources' Sersic shapes on the region's pixel grid, from ``[priors] shape_columns``
    (None when there are none): radii in arcsec (times ``shape_scale``), position angles
    east of north, mapped through the mosaic's WCS (:func:`~dask_phot.models.sky_to_pixel`)."""
    cols = priors.shape_columns
    if not cols:
        return None
    n = len(sources)

    def column(key: str, default: float) -> np.ndarray:
        if key not in cols:
            return np.full(n, default)
        return sources[cols[key]].to_numpy(np.float64)

    r_arcsec = column("r_e", 0.0) * priors.shape_scale
    q, pa, sersic = column("q", 1.0), column("pa", 0.0), column("n", 1.0)
    good = np.isfinite(r_arcsec) & (r_arcsec > 0) & np.isfinite(q) & (q > 0) & (q <= 1) \
        & np.isfinite(pa) & np.isfinite(sersic)
    r_e, qq, theta = np.zeros(n), np.ones(n), np.zeros(n)
    ext = np.flatnonzero(good)
    if ext.size:
        jac = wcs_jacobian(region.wcs, x[ext], y[ext])
        r_e[ext], qq[ext], theta[ext] = sky_to_pixel(jac, r_arcsec[ext], q[ext], pa[ext])
    return {"r_e": r_e, "q": qq, "theta": theta,
            "n": np.clip(np.where(good, sersic, 1.0), N_MIN, N_MAX)}


def fit_band(
    sources: pd.DataFrame, region: Region | None, band: BandImages, engine: EngineConfig,
    *, margin_arcsec: float | None = None, targets: np.ndarray | None = None,
    priors: PriorsConfig | None = None, templates: TemplateSetup | None = None,
    modelled: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Forced photometry of a cell's sources (primary and margin) in one band.

    Parameters
    ----------
    sources : pandas.DataFrame
        ``ra``, ``dec`` of every source modelled in the cell.
    region : Region or None
        The band's pixel box; None when no mosaic covers it.
    band : BandImages
        The band's settings (PSF, flux conversion, sky treatment).
    engine : EngineConfig
        Engine options.
    margin_arcsec : float, optional
        The band's cell margin; when given, only sources within it of the targets
        are modelled and pixels that sources beyond it could light are left out
        of the fit (:func:`clean_weight`), so that the targets are measured as in
        a fit of the whole mosaic.
    targets : ndarray of bool, optional
        The sources whose measurements are wanted (default: the primary ones);
        the clean-pixel zone is built around them.
    priors : PriorsConfig, optional
        With ``shape_columns``, sources with shapes are fitted as Sersic galaxies
        (unless the band's ``model`` is ``"point"``).
    templates : TemplateSetup, optional
        ``[templates]`` (the sharp mosaic), for a band whose ``model`` is ``"template"``.
    modelled : dict, optional
        When given, the number of sources the fit models is added to ``modelled[band]``.

    Returns
    -------
    pandas.DataFrame
        :func:`~dask_phot.schema.band_table` (fluxes in microJansky), one row per source.
    """
    return pd.DataFrame(_band_values(sources, region, band, engine,
                                     margin_arcsec=margin_arcsec, targets=targets,
                                     priors=priors, templates=templates, modelled=modelled))


def _band_values(
    sources: pd.DataFrame, region: Region | None, band: BandImages, engine: EngineConfig,
    *, margin_arcsec: float | None = None, targets: np.ndarray | None = None,
    priors: PriorsConfig | None = None, templates: TemplateSetup | None = None,
    modelled: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`fit_band`'s columns as arrays (:func:`~dask_phot.schema.band_values`)."""
    if region is None:
        return _uncovered(len(sources))
    if targets is None:
        targets = sources["_primary"].to_numpy(dtype=bool)
    x, y = icrs_to_pixel(region.wcs, sources["ra"].to_numpy(), sources["dec"].to_numpy())
    kwargs = engine.forced_kwargs()
    kwargs.update(_sky_options(band, region))
    if kwargs["mode"] == "cutout":
        kwargs["fit_sky"] = False
        kwargs["cutout_width"] = round(band.band.cutout_width / band.band.pixel_scale) | 1
    psf, correction = band_psf(band, region)
    psf_error = band_psf_error(band, region)  # an ePSF's own, in quadrature (0 for a file)
    # the sources this band models: within its margin of the targets (all without one)
    use = np.ones(len(sources), dtype=bool) if margin_arcsec is None else \
        _within(x, y, targets, margin_arcsec / band.band.pixel_scale)
    n_use = int(use.sum())
    if modelled is not None:
        modelled[band.name] = modelled.get(band.name, 0) + n_use
    noise = _noise(region, x[use], y[use], targets[use], band, margin_arcsec)
    to_ujy = band.band.to_ujy * correction
    flux, flux_err, chi2, mismatch, model, flags = _fit_sources(
        sources, use, x[use], y[use], region, psf, noise, kwargs, band, engine, priors,
        templates)
    part = band_values(n_use, flux=flux * to_ujy,
                       flux_err=np.hypot(flux_err, psf_error * flux) * to_ujy,
                       chi2=chi2, mismatch=mismatch, model=model, flags=flags)
    if n_use == len(sources):
        return part
    columns = _uncovered(len(sources))
    rows = np.flatnonzero(use)
    for name, values in columns.items():
        values[rows] = part[name]
    return columns


def _fit_sources(sources: pd.DataFrame, use: np.ndarray, x: np.ndarray, y: np.ndarray,
                 region: Region, psf: Any, noise: dict[str, Any], kwargs: dict[str, Any],
                 band: BandImages, engine: EngineConfig, priors: PriorsConfig | None,
                 templates: TemplateSetup | None) -> tuple[Any, ...]:
    """Fit the sources ``use`` of ``sources`` (at ``x, y``) in a band's region: their
    flux, flux error, chi2, mismatch, model codes and flags, in the region's units."""
    t = None
    if band.model == "template":  # the sharp mosaic's light: dask_phot.templates.cell
        if templates is None:
            raise ValueError(f"bands.{band.name}: model \"template\" needs [templates]")
        t = fit_band_templates(sources[use], region, psf, templates,
                               weight=noise.get("weight"), engine=engine, priors=priors)
    if t is not None:
        return t["flux"], t["flux_err"], t["chi2"], t["mismatch"], t["model"], t["flags"]
    # (the sources' rows are copied only where their shapes are read)
    shapes = (source_shapes(sources[use], region, x, y, priors)
              if priors is not None and priors.shape_columns and band.model != "point"
              else None)
    choose = band.model == "choose" and kwargs["mode"] == "scene"
    res = forced_photometry(region.data, psf, x, y, shapes=shapes, **noise, **kwargs,
                            choose_models=choose)
    return (res.flux, res.flux_err, res.chi2, res.mismatch, _model_codes(res, shapes),
            res.flags)


def _uncovered(n: int) -> dict[str, np.ndarray]:
    """The columns of a band table of ``n`` sources none of which is measured, writable."""
    return band_values(n, flags=Flag.NOT_COVERED)


def _model_codes(res: PhotometryResult, shapes: dict[str, np.ndarray] | None) -> np.ndarray:
    """The ``model`` column: what each measured flux is the flux of."""
    fitted = np.isfinite(res.flux)
    model = np.where(fitted, MODEL_CODES["point"], MODEL_CODES["none"]).astype(np.int8)
    if shapes is not None:
        model[fitted & (shapes["r_e"] > 0)] = MODEL_CODES["sersic"]
    if res.chosen_r_e is not None:
        model[fitted & (res.chosen_r_e > 0)] = MODEL_CODES["chosen"]
    return model


def _within(x: np.ndarray, y: np.ndarray, targets: np.ndarray, radius: float) -> np.ndarray:
    """Sources within ``radius`` pixels of a target (the targets included)."""
    from scipy.spatial import cKDTree

    if not targets.any():
        return targets.copy()
    dist, _ = cKDTree(np.column_stack([x[targets], y[targets]])).query(
        np.column_stack([x, y]), distance_upper_bound=radius)
    return np.isfinite(dist) | targets


def _noise(region: Region, x: np.ndarray, y: np.ndarray, targets: np.ndarray,
           band: BandImages, margin_arcsec: float | None) -> dict[str, Any]:
    """The engine's noise arguments: the weights cut to the zones of the targets that the
    first and the final fit use (:meth:`~dask_phot.config.BandImages.fit_zones`)."""
    if margin_arcsec is not None:
        first, final = (r / band.band.pixel_scale for r in band.fit_zones(margin_arcsec))
        if final <= 0:
            raise ValueError(f"bands.{band.name}: the cell margin ({margin_arcsec:.1f}\") is "
                             f"too small for this band's PSF wings; it needs "
                             f"{band.margin_arcsec:.1f}\" (cells.margin_arcsec = \"auto\")")
        weight = clean_weight(region, x, y, targets, first)
        out: dict[str, Any] = {"weight": weight}
        if final < first:
            out["final_weight"] = clean_weight(region, x, y, targets, final)
        return out
    if region.weight is not None:
        return {"weight": region.weight}
    return {"sigma": robust_sigma(region.data)}


#: One band's input to :func:`fit_cell`: ``(targets, region)`` pairs, one per mosaic used;
#: ``targets`` marks the sources measured in that mosaic's region.
BandRegions = Sequence[tuple[np.ndarray, "Region | None"]]


def _fit_band_groups(sources: pd.DataFrame, groups: BandRegions, band: BandImages,
                     engine: EngineConfig, margin_arcsec: float | None,
                     priors: PriorsConfig | None, templates: TemplateSetup | None,
                     modelled: dict[str, int] | None) -> dict[str, np.ndarray]:
    columns = _uncovered(len(sources))
    for targets, region in groups:
        part = _band_values(sources, region, band, engine, margin_arcsec=margin_arcsec,
                            targets=targets, priors=priors, templates=templates,
                            modelled=modelled)
        rows = np.flatnonzero(targets)
        for name, values in columns.items():
            values[rows] = part[name][rows]
    return columns


def fit_cell(
    sources: pd.DataFrame,
    regions: Mapping[str, BandRegions],
    *,
    bands: Sequence[BandImages],
    engine: EngineConfig,
    keep: Sequence[str] = (),
    margins: Mapping[str, float] | None = None,
    priors: PriorsConfig | None = None,
    errors: dict[str, dict[str, str]] | None = None,
    templates: TemplateSetup | None = None,
    modelled: dict[str, int] | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Measure every band for one cell; return its primary rows and per-band status.

    ``regions[band]`` lists the pixel boxes of the band's mosaics with the sources
    measured in each (a cell may straddle tiles). A band whose data fail
    (:func:`data_errors`) is recorded as failed (its columns NaN, flag
    ``CELL_FAILED``, the reason in the status, and in ``errors`` when given its
    :func:`error_record`); the other bands are unaffected. Other exceptions (bugs)
    propagate. ``modelled``, when given, receives each band's count of modelled sources.
    """
    primary = sources["_primary"].to_numpy(dtype=bool)
    ra = sources["ra"].to_numpy(np.float64)[primary]
    dec = sources["dec"].to_numpy(np.float64)[primary]
    base = {"source_id": sources["source_id"].to_numpy(np.int64)[primary], "ra": ra,
            "dec": dec, "_healpix_29": healpix_29(ra, dec)}
    tables: dict[str, dict[str, np.ndarray]] = {}
    status: dict[str, str] = {}
    for band in bands:
        groups = regions.get(band.name, ())
        try:
            margin = None if margins is None else margins[band.name]
            table = _fit_band_groups(sources, groups, band, engine, margin, priors, templates,
                                     modelled)
            covered = any(r is not None for _, r in groups)
            status[band.name] = "ok" if covered else "not covered"
        except data_errors() as exc:  # recorded as data (status, CELL_FAILED, error record)
            log.warning("cell band %s failed: %s", band.name, exc)
            status[band.name] = f"failed: {type(exc).__name__}: {exc}"
            if errors is not None:
                errors[band.name] = error_record(exc, "fit")
            table = band_values(len(sources), flags=Flag.CELL_FAILED)
        tables[band.name] = {name: values[primary] for name, values in table.items()}
    order = np.argsort(base["_healpix_29"], kind="stable")  # the rows by HEALPix index
    return cell_table(base, tables, {c: sources[c][primary] for c in keep}, order), status


def _read_band(part: CellSources, index: Sequence[Mosaic], band: BandImages,
               storage: Mapping[str, Any], cells: CellsConfig, margin_arcsec: float
               ) -> list[tuple[np.ndarray, Region | None]]:
    """Read the band's pixel boxes for the cell: one per mosaic its primaries fall in.

    The cell is measured in one mosaic where one holds its whole box, else each primary
    source in the mosaic where it is most central (tiles such as GALEX's overlap:
    :func:`~dask_phot.pipeline.resume.owners`); the box around a group of primaries
    extends by the band's margin and half a PSF stamp. Rows of a box are merged into one
    request as ``[cells] read_merge_gap`` says (by default when that is quicker, given a
    request's latency, and reads at most ``read_max_overread`` times the box: narrow
    boxes of wide mosaics are read row by row, concurrently).
    """
    src = part.sources
    primary = src["_primary"].to_numpy(dtype=bool)
    ra, dec = src["ra"].to_numpy(), src["dec"].to_numpy()
    owner = np.full(len(src), -1, dtype=np.int64)
    owner[primary] = owners(part, index, band, margin_arcsec)
    groups: list[tuple[np.ndarray, Region | None]] = []
    for k in np.unique(owner[primary]):
        targets = owner == k
        if k < 0:
            continue
        mosaic = index[int(k)]
        pad = margin_arcsec / mosaic.pixel_scale_arcsec + band.band.psf_size // 2 + 2
        xr, yr = sky_to_box(mosaic, ra[targets], dec[targets], pad)
        region = (read_region(mosaic, xr, yr, storage_options=storage,
                              max_gap=cells.merge_gap(), costs=cells.read_costs(),
                              row_cache_bytes=cells.row_cache_bytes())
                  if xr[1] > xr[0] and yr[1] > yr[0] else None)
        groups.append((targets, region))
    return groups


def read_cell(
    part: CellSources, indexes: Mapping[str, Sequence[Mosaic]], config: RunConfig
) -> tuple[dict[str, list[tuple[np.ndarray, Region | None]]], dict[str, str], CellReport]:
    """Read each band's pixel boxes for one cell (the I/O of :func:`process_cell`).

    Returns
    -------
    regions, read_status, report
        ``regions[band]`` as :func:`fit_cell` takes them; the bands whose read failed
        with the reason; the report with the bytes read, the boxes' bytes, the
        requests and the read time.
    """
    report = CellReport(part.cell.order, part.cell.pixel, part.n_primary, len(part.sources))
    storage = storage_options(config)
    margins = config.band_margins()
    regions: dict[str, list[tuple[np.ndarray, Region | None]]] = {}
    read_status: dict[str, str] = {}
    t0 = time.perf_counter()
    for band in config.bands:
        try:  # each band's box: its own margin (the sources it models), not the cells' largest
            regions[band.name] = _read_band(part, indexes[band.name], band, storage,
                                            config.cells, margins[band.name])
            read = [r for _, r in regions[band.name] if r is not None]
            report.bytes_read += sum(r.bytes_read for r in read)
            report.box_bytes += sum(r.box_bytes for r in read)
            report.requests += sum(r.requests for r in read)
        except data_errors() as exc:  # becomes this band's status, flags and error record
            log.warning("cell %s band %s: read failed: %s", part.cell, band.name, exc)
            read_status[band.name] = f"read failed: {type(exc).__name__}: {exc}"
            report.errors[band.name] = error_record(exc, "read")
    report.seconds["read"] = time.perf_counter() - t0
    return regions, read_status, report


def process_cell(
    part: CellSources, indexes: Mapping[str, Sequence[Mosaic]], config: RunConfig
) -> tuple[pd.DataFrame, CellReport]:
    """Read each band's pixel boxes for one cell and fit them (I/O around :func:`fit_cell`).

    This is also the single-cell debug path: it runs in-process.
    """
    return fit_read(part, *read_cell(part, indexes, config), config)


def fit_read(
    part: CellSources, regions: Mapping[str, BandRegions], read_status: Mapping[str, str],
    report: CellReport, config: RunConfig
) -> tuple[pd.DataFrame, CellReport]:
    """Fit a cell from what :func:`read_cell` returned (the compute of :func:`process_cell`).

    The bands whose read failed get their status and ``CELL_FAILED`` flags; ``report``
    receives the statuses and the fit time, and is returned with the table.
    """
    t0 = time.perf_counter()
    table, status = fit_cell(part.sources, regions, bands=config.bands, engine=config.engine,
                             keep=config.priors.output_columns,
                             margins=config.band_margins(), priors=config.priors,
                             errors=report.errors, modelled=report.band_modelled,
                             templates=TemplateSetup(config.templates,
                                                     storage_options(config)))
    for name, why in read_status.items():
        status[name] = why
        table[f"flags_{name}"] = np.int32(Flag.CELL_FAILED)
    report.status = status
    report.seconds["fit"] = time.perf_counter() - t0
    return table, report
