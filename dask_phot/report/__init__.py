"""``dask-phot report RESULT --out DIR``: a static HTML page to check a run by eye.

Summary plots (flux check, colour-colour diagrams, one cell's diagnostics), then
for a selection of sources the SED beside cutouts in every band with the
catalogue's model and the residual (:mod:`dask_phot.report.model_images`).
"""

from dask_phot.report.html import ReportSummary, select_sources, write_report
from dask_phot.report.model_images import (
    RunImages,
    band_cutout,
    cell_panels,
    cutouts_for,
)

__all__ = [
    "ReportSummary",
    "RunImages",
    "band_cutout",
    "cell_panels",
    "cutouts_for",
    "select_sources",
    "write_report",
]
