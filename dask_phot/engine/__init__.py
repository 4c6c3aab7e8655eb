"""Forced-photometry engine: fluxes of known sources in one image.

The public entry point is :func:`forced_photometry`; its result is a
:class:`PhotometryResult`. ``mode="scene"`` fits every source jointly (sparse,
tiled linear least squares), ``mode="cutout"`` reproduces the COSMOS notebook's
per-target cutout fit for parity studies.
"""

from dask_phot.engine.core import forced_photometry
from dask_phot.engine.prepare import robust_sigma
from dask_phot.engine.result import PhotometryResult

__all__ = ["PhotometryResult", "forced_photometry", "robust_sigma"]
