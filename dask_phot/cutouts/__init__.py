"""Cutouts of catalog sources in every band (FITS with WCS) and colour composites (PNG).

At survey scale, on Dask (``dask-phot cutouts``):

* :mod:`~dask_phot.cutouts.spec`: the size rule (:class:`CutoutSpec`: the side
  follows each source's extent within bounds, an odd number of pixels so the
  source sits on the central pixel) and the colour (:class:`ColourSpec`);
* :mod:`~dask_phot.cutouts.extract`: one partition of nearby sources, each
  band's boxes read together, only their rows, from disk or S3;
* :mod:`~dask_phot.cutouts.colour`: Lupton et al. (2004) composites whose stretch
  follows the bands' noise and the source's peak, or asinh per band with a
  common white point;
* :mod:`~dask_phot.cutouts.run`: partitions on a cluster, resumable
  (:func:`run_cutouts`; :func:`make_cutouts` here, in-process);
* :mod:`~dask_phot.cutouts.sheet`: a contact sheet (:func:`contact_sheet`).

Examples
--------
>>> cutout_size_arcsec([0.1, 2.0, 100.0]).tolist()
[3.0, 8.0, 30.0]
>>> summary = run_cutouts(catalog, {"f200w": "s3://b/x_i2d.fits[SCI]"}, "cutouts",
...                       colour=ColourSpec(("f444w", "f200w", "f115w")),
...                       client=client)                               # doctest: +SKIP
"""

from dask_phot.cutouts.colour import Stretch, composite, write_png
from dask_phot.cutouts.extract import CutoutJob, cutout_partition
from dask_phot.cutouts.run import CutoutSummary, make_cutouts, plan_partitions, run_cutouts
from dask_phot.cutouts.sheet import contact_sheet
from dask_phot.cutouts.spec import (
    COLOUR_METHODS,
    ColourSpec,
    CutoutSpec,
    cutout_size_arcsec,
    load_band_list,
    odd_pixels,
)

__all__ = [
    "COLOUR_METHODS",
    "ColourSpec",
    "CutoutJob",
    "CutoutSpec",
    "CutoutSummary",
    "Stretch",
    "composite",
    "contact_sheet",
    "cutout_partition",
    "cutout_size_arcsec",
    "load_band_list",
    "make_cutouts",
    "odd_pixels",
    "plan_partitions",
    "run_cutouts",
    "write_png",
]
