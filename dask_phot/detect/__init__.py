"""Priors from sharp images: background, detection, reference matching, many mosaics.

The steps survey scripts repeat, done once and configurable:

* :func:`measure_background`: background and RMS maps on a mesh (box and filter
  sizes), sources masked; :func:`noise_map`, :func:`threshold_image`;
* :func:`detect_sources`: smoothing kernel (FWHM, size), threshold, minimum area,
  deblending (levels, contrast); with a coverage map, a stricter minimum area
  where one exposure covers a source and no detections touching zero coverage;
* :func:`cosmic_ray_mask`: cosmic rays (astroscrappy), used to flag
  single-exposure sources, never to drop them;
* :func:`match_reference`, :func:`shift_wcs`: matching to a reference catalog
  (Gaia or any table) and the median offset as a WCS shift;
* :func:`run_detect` (``dask-phot detect CONFIG``): many mosaics of several surveys on
  Dask, tiled, cosmic-ray masks in single-exposure areas, one catalog per group and a
  merged catalog per survey (with the selection recorded) usable as ``[priors] path``.

Aperture measurements are in :mod:`dask_phot.aperture`, cutouts in
:mod:`dask_phot.cutouts`. Needs the ``detect`` extra (``sep``, ``astroscrappy``).

Examples
--------
>>> from dask_phot.psf import gaussian_psf
>>> from dask_phot.testing import simulate_image
>>> im = simulate_image((128, 128), [40.0, 90.0], [50.0, 80.0], [800.0, 900.0],
...                     gaussian_psf(2.5), seed=0, sky=3.0)
>>> det = detect_sources(im.data, params=DetectionParams(thresh=3.0, minarea=5),
...                      background_kwargs={"box_size": 32})
>>> len(det), bool(det.segmap.max() == det.table["id"].max())
(2, True)
"""

from dask_phot.detect.background import (
    BackgroundMap,
    measure_background,
    noise_map,
    threshold_image,
)
from dask_phot.detect.catalogs import DetectSummary, deduplicate
from dask_phot.detect.config import DetectConfig, load_detect_config
from dask_phot.detect.cosmics import cosmic_ray_mask
from dask_phot.detect.extract import (
    COSMIC_RAY,
    SINGLE_EXPOSURE,
    DetectionParams,
    Detections,
    detect_sources,
    gaussian_kernel,
    read_conv_file,
)
from dask_phot.detect.match import MatchResult, match_reference, shift_wcs
from dask_phot.detect.mosaics import exposure_count, filter_name, plan_tiles, run_detect

__all__ = [
    "COSMIC_RAY",
    "SINGLE_EXPOSURE",
    "BackgroundMap",
    "DetectConfig",
    "DetectSummary",
    "DetectionParams",
    "Detections",
    "MatchResult",
    "cosmic_ray_mask",
    "deduplicate",
    "detect_sources",
    "exposure_count",
    "filter_name",
    "gaussian_kernel",
    "load_detect_config",
    "match_reference",
    "measure_background",
    "noise_map",
    "plan_tiles",
    "read_conv_file",
    "run_detect",
    "shift_wcs",
    "threshold_image",
]
