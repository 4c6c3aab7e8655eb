"""The run: priors -> sky cells -> (cell x band) fits on Dask -> HATS catalog."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dask_phot.cells import Cell, CellSources, choose_order, partition_priors
from dask_phot.config import RunConfig, storage_options
from dask_phot.images import Mosaic, build_index
from dask_phot.pipeline.kernel import CellReport, process_cell
from dask_phot.pipeline.output import cell_paths, done_cells, finalize_catalog, write_cell
from dask_phot.priors import read_priors
from dask_phot.schema import cell_meta, column_units
from dask_phot.templates.cell import TemplateSetup, check_sharp

__all__ = ["RunSummary", "photometry_frame", "plan_cells", "run_catalog", "run_one_cell"]

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a run did."""

    output: str
    n_cells: int
    n_cells_skipped: int
    n_sources: int
    bands: list[str]
    wall_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0

    @property
    def source_bands_per_second(self) -> float:
        """Throughput over the whole run."""
        return self.n_sources * len(self.bands) / max(self.wall_seconds, 1e-9)


def plan_cells(config: RunConfig) -> tuple[list[CellSources], dict[str, list[Mosaic]]]:
    """Load the priors, partition them into cells and index every band's mosaics."""
    storage = storage_options(config)
    priors = read_priors(config.priors.path, storage_options=storage,
                         **config.priors.read_kwargs())
    order = config.cells.order
    if order == "auto":
        order = choose_order(priors["ra"].to_numpy(), priors["dec"].to_numpy(),
                             config.cells.rows_per_partition)
    if any(b.model == "template" for b in config.bands):  # bad [templates] files: now
        check_sharp(TemplateSetup(config.templates, storage), priors["ra"].to_numpy(),
                    priors["dec"].to_numpy())
    parts = partition_priors(priors, order=int(order), margin_arcsec=config.margin_arcsec)
    indexes = {
        b.name: build_index(list(b.images), list(b.noise) or None, noise_kind=b.noise_kind,
                            band=b.name, storage_options=storage)
        for b in config.bands
    }
    log.info("%d priors in %d cells at HEALPix order %d; margin %.1f\"", len(priors),
             len(parts), order, config.margin_arcsec)
    return parts, indexes


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
    cols = config.priors.output_columns
    keep = {c: str(parts[0].sources[c].dtype) for c in cols} if parts else {}
    meta = cell_meta(list(config.band_names), keep)
    return dd.from_map(_cell_table, parts, indexes=indexes, config=config, meta=meta,
                       enforce_metadata=True)


def run_one_cell(part: CellSources, indexes: Mapping[str, Sequence[Mosaic]],
                 config: RunConfig, out: str, config_hash: str,
                 schema_meta: dict[str, str]) -> CellReport:
    """Fit and write one cell (the unit of work sent to a Dask worker)."""
    table, report = process_cell(part, indexes, config)
    t0 = time.perf_counter()
    write_cell(out, part.cell, table, report, config_hash, schema_meta)
    report.seconds["write"] = time.perf_counter() - t0
    return report


def _submit_all(client, todo, indexes, config, out, chash, meta):
    idx = client.scatter(dict(indexes), broadcast=True)
    return [client.submit(run_one_cell, part, idx, config, out, chash, meta,
                          key=f"cell-{part.cell.order}-{part.cell.pixel}",
                          retries=config.cluster.retries, pure=False)
            for part in todo]


def run_catalog(
    config: RunConfig,
    *,
    client: Any = None,
    output: str | None = None,
    on_progress: Callable[[CellReport, int, int], None] | None = None,
) -> RunSummary:
    """Run forced photometry for a configuration and write the HATS catalog.

    Parameters
    ----------
    config : RunConfig
        The validated configuration.
    client : distributed.Client, optional
        Where to run the cells; in-process, one cell after another, when None.
    output : str, optional
        Output directory (default ``config.output.path``).
    on_progress : callable, optional
        Called as ``on_progress(report, n_done, n_total)`` after each cell.

    Returns
    -------
    RunSummary
        Counts, timings and failures. Cells already finished by an earlier run
        with the same configuration are skipped, so re-running resumes.
    """
    t_start = time.perf_counter()
    out = str(output or config.output.path)
    Path(out).mkdir(parents=True, exist_ok=True)
    chash = config.config_hash()
    parts, indexes = plan_cells(config)
    finished = done_cells(out, chash)
    todo = [p for p in parts if (p.cell.order, p.cell.pixel) not in finished]
    log.info("%d cells to do, %d already finished", len(todo), len(parts) - len(todo))
    calibration = {b.name: b.band.calibration_record() for b in config.bands}
    meta = {"dask_phot_units": json.dumps(column_units(list(config.band_names))),
            "dask_phot_calibration": json.dumps(calibration),
            "dask_phot_config": json.dumps(config.to_dict(), default=str),
            "dask_phot_config_hash": chash}
    reports: list[CellReport] = []
    if client is None:
        for part in todo:
            reports.append(run_one_cell(part, indexes, config, out, chash, meta))
            if on_progress:
                on_progress(reports[-1], len(reports), len(todo))
    else:
        from distributed import as_completed

        for fut in as_completed(_submit_all(client, todo, indexes, config, out, chash, meta)):
            reports.append(fut.result())
            if on_progress:
                on_progress(reports[-1], len(reports), len(todo))
    total = _count_rows(out, [p.cell for p in parts])
    finalize_catalog(out, [p.cell for p in parts], name=config.output.catalog_name,
                     bands=list(config.band_names), config=config.to_dict(), total_rows=total,
                     calibration=calibration)
    return _summary(out, parts, todo, reports, config, time.perf_counter() - t_start)


def _count_rows(out: str, cells: list[Cell]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(cell_paths(out, c)[0]).metadata.num_rows for c in cells)


def _summary(out, parts, todo, reports, config, wall) -> RunSummary:
    stages: Counter = Counter()
    failures: Counter = Counter()
    for r in reports:
        stages.update(r.seconds)
        failures.update(f"{band}: {kind}" for band, kind in r.failures().items())
    return RunSummary(out, len(todo), len(parts) - len(todo),
                      sum(p.n_primary for p in parts), list(config.band_names), wall,
                      dict(stages), dict(failures), sum(r.bytes_read for r in reports))


def read_catalog(path: str | Path) -> pd.DataFrame:
    """The whole output catalog as one pandas DataFrame, sorted by ``source_id``."""
    df = pd.read_parquet(Path(path) / "dataset")
    keep = [c for c in df.columns if c not in ("Norder", "Dir", "Npix")]
    return df[keep].sort_values("source_id").reset_index(drop=True)
