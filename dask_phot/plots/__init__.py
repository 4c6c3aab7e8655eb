"""Science and diagnostic plots (matplotlib, ``pip install 'dask-phot[plots]'``).

Each function returns a :class:`matplotlib.figure.Figure`, built without
``pyplot``; the ``dask-phot plot KIND CATALOG --out FILE`` command
(:mod:`dask_phot.commands.plot`) saves them as PNG or PDF.

* :func:`flux_comparison`: measured vs reference flux per band, 1:1 line, median
  ratio and robust scatter on each panel;
* :func:`irac_color_color`: IRAC colours with the Lacy et al. (2004) wedge and
  UV- and X-ray-detected overlays;
* :func:`uv_ir_color_color`: FUV-NUV vs NUV-[3.6] (Bouquin et al. 2015), X-ray
  sources coloured by hardness ratio;
* :func:`sed_plot`: one source's SED with errors and upper limits;
* :func:`cell_diagnostics`: per band, data, model, residual / sigma and chi2.
"""

from dask_phot.plots.catalog import (
    LACY_WEDGE,
    flux_comparison,
    irac_color_color,
    robust_ratio,
    sed_plot,
    uv_ir_color_color,
)
from dask_phot.plots.images import BandPanel, cell_diagnostics, draw_images, panel_from_fit

__all__ = [
    "LACY_WEDGE",
    "BandPanel",
    "cell_diagnostics",
    "draw_images",
    "flux_comparison",
    "irac_color_color",
    "panel_from_fit",
    "robust_ratio",
    "sed_plot",
    "uv_ir_color_color",
]
