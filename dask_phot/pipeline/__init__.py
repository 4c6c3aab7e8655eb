"""The distributed pipeline: sky cells x bands through the engine into a HATS catalog.

:func:`prepare_run` checks every input and plans a run (before any cluster
starts); :func:`run_catalog` runs it on a Dask client (or in-process) into a
local or ``s3://`` catalog (:class:`~dask_phot.pipeline.output.CatalogStore`);
:func:`fit_cell` is the pure per-cell kernel and :func:`process_cell` the
single-cell debug path with I/O; :func:`read_catalog` reads a finished catalog.
"""

from dask_phot.pipeline.kernel import CellReport, fit_band, fit_cell, process_cell
from dask_phot.pipeline.output import CatalogStore, IncompleteCatalogError
from dask_phot.pipeline.plan import InputError, RunPlan, plan_cells, prepare_run
from dask_phot.pipeline.run import (
    RunInterrupted,
    RunSummary,
    photometry_frame,
    read_catalog,
    run_catalog,
)

__all__ = [
    "CatalogStore",
    "CellReport",
    "IncompleteCatalogError",
    "InputError",
    "RunInterrupted",
    "RunPlan",
    "RunSummary",
    "fit_band",
    "fit_cell",
    "photometry_frame",
    "plan_cells",
    "prepare_run",
    "process_cell",
    "read_catalog",
    "run_catalog",
]
