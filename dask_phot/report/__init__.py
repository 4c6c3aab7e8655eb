"""``dask-phot report RESULT --out DIR``: a static HTML page to check a run by eye.

Summary plots (flux check, colour-colour diagrams, one cell's diagnostics), then
for a selection of sources the SED beside cutouts in every band with the
catalogue's model and the residual (:mod:`dask_phot.report.cutouts`).
"""

from dask_phot.report.cutouts import (
    RunImages,
    band_cutout,
    cell_panels,
    cutouts_for,
    render_sources,
)
from dask_phot.report.html import ReportSummary, select_sources, write_report

__all__ = [
    "ReportSummary",
    "RunImages",
    "band_cutout",
    "cell_panels",
    "cutouts_for",
    "render_sources",
    "select_sources",
    "write_report",
]
