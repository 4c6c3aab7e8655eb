"""The distributed pipeline: sky cells x bands through the engine into a HATS catalog.

:func:`run_catalog` runs a :class:`~dask_phot.config.RunConfig` on a Dask client
(or in-process); :func:`fit_cell` is the pure per-cell kernel and
:func:`process_cell` the single-cell debug path with I/O.
"""

from dask_phot.pipeline.kernel import CellReport, fit_band, fit_cell, process_cell
from dask_phot.pipeline.run import (
    RunSummary,
    photometry_frame,
    plan_cells,
    read_catalog,
    run_catalog,
)

__all__ = [
    "CellReport",
    "RunSummary",
    "fit_band",
    "fit_cell",
    "photometry_frame",
    "plan_cells",
    "process_cell",
    "read_catalog",
    "run_catalog",
]
