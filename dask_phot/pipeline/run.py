"""The run: priors -> sky cells -> (cell x band) fits on Dask -> HATS catalog.

On Dask each band of a cell is a task, then the cell's write
(:mod:`dask_phot.pipeline.graph`); in-process, each cell in turn (:func:`run_one_cell`).

:func:`run_catalog` takes a plan (:func:`~dask_phot.pipeline.plan.prepare_run`:
inputs checked, cells keyed, made before any cluster starts), removes cells of
another catalog when told to, computes the cells whose inputs changed (or that
failed before) one by one in-process or on a Dask client, each written as soon
as it is done, and writes the catalog's metadata at the end. A run that stops
(Ctrl-C, a killed process) resumes where it stopped; a bug in dask-phot fails the
run with its traceback.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from dask_phot.cells import Cell, CellSources
from dask_phot.config import RunConfig
from dask_phot.images import Mosaic
from dask_phot.pipeline.graph import BandResult, join_bands, run_cells
from dask_phot.pipeline.kernel import CellReport, process_cell
from dask_phot.pipeline.output import CatalogStore, arrow_table
from dask_phot.pipeline.plan import RunPlan, plan_cells, prepare_run
from dask_phot.pipeline.psfs import prepare_psfs, psf_records
from dask_phot.pipeline.resume import why_rerun
from dask_phot.schema import cell_meta, column_info, column_units
from dask_phot.storage import StorageError

__all__ = ["RunInterrupted", "RunSummary", "photometry_frame", "read_catalog", "run_catalog",
           "run_one_cell", "run_order"]

log = logging.getLogger(__name__)


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C; what it kept stays and the next run resumes from it.

    Attributes
    ----------
    kept, total : int
        Cells written (of this run and earlier ones) and cells of the catalog.
    output : str
        The catalog's location.
    """

    def __init__(self, kept: int, total: int, output: str) -> None:
        super().__init__(f"interrupted: {kept} of {total} cells kept in {output}")
        self.kept, self.total, self.output = kept, total, output


@dataclass
class RunSummary:
    """What a run did.

    ``reasons`` counts why cells ran (``"new"``, ``"failed before"``, ``"priors rows
    changed"``...); ``warnings`` are what the run noticed without failing (a band
    that covers no source); ``n_removed`` cells of another catalog were removed.
    ``bytes_read`` is what the cells fetched, ``box_bytes`` the bytes of their pixel
    boxes (image and noise map) and ``requests`` the ranged requests they made;
    ``cpu_seconds`` the CPU time of the threads that computed them (a measure of work
    that, unlike the wall time, does not grow when others share the machine).
    """

    output: str
    n_cells: int
    n_cells_skipped: int
    n_sources: int
    bands: list[str]
    wall_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    n_removed: int = 0
    box_bytes: int = 0
    requests: int = 0
    cpu_seconds: float = 0.0

    @property
    def source_bands_per_second(self) -> float:
        """Throughput over the whole run."""
        return self.n_sources * len(self.bands) / max(self.wall_seconds, 1e-9)


def _cell_table(part: CellSources, indexes: Mapping[str, Sequence[Mosaic]],
                config: RunConfig) -> pd.DataFrame:
    return process_cell(part, indexes, config)[0]


def photometry_frame(config: RunConfig) -> Any:
    """The photometry as a lazy dask DataFrame, one partition per sky cell.

    Nothing is written and nothing resumes: use :func:`run_catalog` for runs. The
    ``meta`` comes from :func:`dask_phot.schema.cell_meta`.

    Returns
    -------
    dask.dataframe.DataFrame
        Primary sources only, with the columns of the output catalog.
    """
    import dask.dataframe as dd

    parts, indexes = plan_cells(config)
    config = prepare_psfs(config, parts, indexes, str(config.output.path))
    cols = config.priors.output_columns
    keep = {c: str(parts[0].sources[c].dtype) for c in cols} if parts else {}
    meta = cell_meta(list(config.band_names), keep)
    return dd.from_map(_cell_table, parts, indexes=indexes, config=config, meta=meta,
                       enforce_metadata=True)


def calibration(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Each band's calibration: units, conversion to uJy, aperture correction, PSF
    (with ePSFs, each mosaic's: :func:`~dask_phot.pipeline.psfs.psf_records`)."""
    psfs = psf_records(config)
    return {b.name: b.band.calibration_record() | psfs[b.name] for b in config.bands}


def _schema_metadata(config: RunConfig) -> dict[str, str]:
    """Schema metadata of every cell file: units, the configuration (no credentials)."""
    return {"dask_phot_units": json.dumps(column_units(list(config.band_names))),
            "dask_phot_calibration": json.dumps(calibration(config)),
            "dask_phot_config": json.dumps(config.public_dict(), default=str),
            "dask_phot_config_hash": config.config_hash()}


def run_one_cell(part: CellSources, indexes: Mapping[str, Sequence[Mosaic]],
                 config: RunConfig, store: CatalogStore, inputs: Mapping[str, Any]
                 ) -> CellReport:
    """Fit and write one cell (a run without a Dask client, cell after cell).

    The report written beside the table records ``inputs`` (what the cell was
    computed from), the per-band status and the error records of failed bands.
    """
    cpu0 = time.thread_time()
    table, report = process_cell(part, indexes, config)
    report.cpu_seconds = time.thread_time() - cpu0
    _write(part.cell, table, report, config, store, inputs)
    return report


def write_cell_task(cell: Cell, counts: tuple[int, int], results: Sequence[BandResult],
                    config: RunConfig, store: CatalogStore, inputs: Mapping[str, Any]
                    ) -> CellReport:
    """Join a cell's bands (:func:`~dask_phot.pipeline.graph.join_bands`) and write it:
    the cell's last task on Dask, after its band tasks."""
    cpu0 = time.thread_time()
    table, report = join_bands(cell, counts, results, config)
    _write(cell, table, report, config, store, inputs)
    report.cpu_seconds += time.thread_time() - cpu0
    return report


def _write(cell: Cell, table: pd.DataFrame, report: CellReport, config: RunConfig,
           store: CatalogStore, inputs: Mapping[str, Any]) -> None:
    """Write a cell's table and its report (the write time recorded in the report)."""
    t0 = time.perf_counter()
    arrow = arrow_table(table, column_info(list(config.band_names)), _schema_metadata(config))
    try:
        store.write_cell(cell, arrow, dataclasses.asdict(report) | {"inputs": dict(inputs)})
    except OSError as exc:  # after the storage layer's retries
        raise StorageError(f"{store.url}: cannot write cell {cell.order}/"
                           f"{cell.pixel} ({type(exc).__name__}: {exc})") from exc
    report.seconds["write"] = time.perf_counter() - t0


def _run_cells(plan: RunPlan, client: Any, on_cell: Callable[[CellReport], None]) -> None:
    todo, config = run_order(plan.todo), plan.config
    args = [(p, plan.inputs[p.cell.order, p.cell.pixel].as_dict()) for p in todo]
    if client is None:
        for part, inputs in args:
            on_cell(run_one_cell(part, plan.indexes, config, plan.store, inputs))
        return
    run_cells(client, [p for p, _ in args], plan.indexes, config, write_cell_task,
              [(plan.store, inputs) for _, inputs in args], on_cell)


def run_catalog(
    config: RunConfig,
    *,
    client: Any = None,
    output: str | None = None,
    overwrite: bool = False,
    on_progress: Callable[[CellReport, int, int], None] | None = None,
    plan: RunPlan | None = None,
) -> RunSummary:
    """Run forced photometry for a configuration and write the HATS catalog.

    Parameters
    ----------
    config : RunConfig
        The validated configuration.
    client : distributed.Client, optional
        Where to run the cells; in-process, one cell after another, when None.
    output : str, optional
        Output folder or URL (default ``config.output.path``): local or ``s3://``.
    overwrite : bool
        Remove cells of another catalog found in the output folder (else refuse).
    on_progress : callable, optional
        Called as ``on_progress(report, n_done, n_total)`` after each cell.
    plan : RunPlan, optional
        From :func:`~dask_phot.pipeline.plan.prepare_run` (made here when None).

    Returns
    -------
    RunSummary
        Counts, timings, failures and why cells ran. Cells whose inputs are those
        of a successful earlier cell are kept, so re-running resumes.

    Raises
    ------
    InputError, StorageError, BandError
        Unusable inputs (before anything is computed).
    RunInterrupted
        Ctrl-C: the cells written so far are kept.
    StorageError
        The output cannot be written (after the storage layer's retries).
    """
    t_start = time.perf_counter()
    plan = plan or prepare_run(config, output=output, overwrite=overwrite)
    plan.config = prepare_psfs(plan.config, plan.parts, plan.indexes, plan.store.url,
                               client=client)
    todo = plan.todo
    log.info("%d cells to do, %d already finished", len(todo), len(plan.parts) - len(todo))
    record = _start(plan)
    reports: list[CellReport] = []

    def on_cell(report: CellReport) -> None:
        reports.append(report)
        if on_progress:
            on_progress(report, len(reports), len(todo))

    try:
        _run_cells(plan, client, on_cell)
    except KeyboardInterrupt:
        raise RunInterrupted(_kept(plan), len(plan.parts), plan.store.url) from None
    try:
        plan.store.finish([p.cell for p in plan.parts], name=config.output.catalog_name,
                          record=record)
    except OSError as exc:
        raise StorageError(f"{plan.store.url}: cannot write the catalog's metadata "
                           f"({type(exc).__name__}: {exc}); run again to finish it") from exc
    return _summary(plan, reports, time.perf_counter() - t_start)


def _start(plan: RunPlan) -> dict[str, Any]:
    """Mark the catalog "running" (when anything changes), then remove stale cells."""
    store, bands = plan.store, list(plan.config.band_names)
    record = {"n_cells": len(plan.parts), "bands": bands, "units": column_units(bands),
              "calibration": calibration(plan.config), "config": plan.config.public_dict()}
    if plan.reasons or plan.stale or (store.record() or {}).get("status") != "finished":
        store.begin(record)
    if plan.stale:
        log.warning("removing %d cell(s) of another catalog from %s", len(plan.stale),
                    store.url)
        store.remove_cells(plan.stale)
    return record


def _kept(plan: RunPlan) -> int:
    """Cells of the plan the output holds, done from the plan's inputs (what a resume keeps)."""
    reports = plan.store.reports()
    return sum(why_rerun(reports.get(key), inputs) is None
               for key, inputs in plan.inputs.items())


def _summary(plan: RunPlan, reports: list[CellReport], wall: float) -> RunSummary:
    stages: Counter = Counter()
    failures: Counter = Counter()
    for r in reports:
        stages.update(r.seconds)
        failures.update(f"{band}: {kind}" for band, kind in r.failures().items())
    n_todo = len(plan.reasons)
    return RunSummary(plan.store.url, n_todo, len(plan.parts) - n_todo, plan.n_sources,
                      list(plan.config.band_names), wall, dict(stages), dict(failures),
                      sum(r.bytes_read for r in reports), dict(Counter(plan.reasons.values())),
                      list(plan.warnings), len(plan.stale),
                      sum(r.box_bytes for r in reports), sum(r.requests for r in reports),
                      sum(r.cpu_seconds for r in reports))


def run_order(parts: Sequence[CellSources]) -> list[CellSources]:
    """The cells in the order a run submits them: in rows of the sky (HEALPix centres lie
    on rings of equal Dec), so that the next cell a worker takes reads mostly the mosaic
    rows its last one read (:mod:`dask_phot.images.rows`)."""
    def key(part: CellSources) -> tuple[float, float]:
        ra, dec = part.cell.center()
        return round(dec, 9), ra

    return sorted(parts, key=key)


def read_catalog(path: str | Path, *, storage_options: Mapping[str, Any] | None = None,
                 partial: bool = False) -> pd.DataFrame:
    """The whole output catalog as one pandas DataFrame, sorted by ``source_id``.

    Parameters
    ----------
    path : str or path-like
        The catalog's folder or URL (``s3://...``).
    storage_options : mapping, optional
        fsspec options for a URL (:func:`dask_phot.config.storage_options`).
    partial : bool
        Read a catalog whose run has not finished; the frame's
        ``attrs["dask_phot_partial"]`` then says how much of it there is.

    Raises
    ------
    IncompleteCatalogError
        The run writing the catalog has not finished (and ``partial`` is False).
    FileNotFoundError
        No catalog there.
    """
    store = CatalogStore.open(path, storage_options)
    record = store.check_finished(allow_partial=partial)
    cells = sorted(store.written_cells())
    files = [store.cell_paths(Cell(*c))[0] for c in cells]
    if files:
        df = pq.ParquetDataset(files, filesystem=store.fs, partitioning=None).read().to_pandas()
    else:
        df = pd.DataFrame(columns=["source_id"])
    out = df.sort_values("source_id").reset_index(drop=True)
    if record.get("status") != "finished":
        planned = record.get("n_cells", "?")
        out.attrs["dask_phot_partial"] = (f"run not finished: {len(cells)} of {planned} cells "
                                          "written")
        log.warning("%s: %s", store.url, out.attrs["dask_phot_partial"])
    return out

