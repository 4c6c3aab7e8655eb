"""Seeded simulated fields for tests, benchmarks and demos.

A simulation has three layers, each usable alone:

* :func:`simulate_sources`: a prior catalog (COSMOS-like density, power-law
  counts, per-band true fluxes through random colours);
* :func:`simulate_image`: point sources on a bare pixel grid with noise, sky
  and masks (the workhorse of the engine's unit tests);
* :func:`simulate_field`: priors plus one image per :class:`SimBand`, each on
  its own pixel scale with a TAN WCS; :func:`write_field` writes it as FITS and
  Parquet.

:func:`simulate_to_dir` writes a field in preset bands with a ready run
configuration (the demo's), and :func:`accuracy_table` measures a catalogue
against the truth. :class:`FaultyProxy` puts dropped connections, 503s, stalled
replies and cut bodies between a client and a local S3 endpoint.

The truth is rendered with a bicubic spline through the PSF (or exact ``erf``
integrals for Gaussian PSFs), not with the engine's Lanczos stamps, so tests
that fit these images are not circular. Every draw comes from
:func:`numpy.random.default_rng` seeded by the caller.

Examples
--------
>>> from dask_phot.testing import demo_bands, simulate_field
>>> fld = simulate_field(bands=demo_bands()[:1], area_arcmin2=0.5, seed=3)
>>> im = fld.images["irac1"]
>>> im.data.shape == im.weight.shape, len(im.x) == len(fld.priors)
(True, True)
"""

from dask_phot.testing.demo import accuracy_table, simulate_to_dir
from dask_phot.testing.faults import FaultyProxy
from dask_phot.testing.field import (
    SimBand,
    SimulatedField,
    demo_bands,
    field_wcs,
    mjysr_to_ujy,
    simulate_field,
)
from dask_phot.testing.image import SimulatedImage, simulate_image
from dask_phot.testing.io import write_field
from dask_phot.testing.noise import depth_map, mask_map, noise_equivalent_area, pixel_sigma
from dask_phot.testing.render import GaussianPRF, SplinePRF, prf_model, render_model
from dask_phot.testing.sources import Colour, colour_for_band, simulate_sources

__all__ = [
    "Colour",
    "FaultyProxy",
    "GaussianPRF",
    "SimBand",
    "SimulatedField",
    "SimulatedImage",
    "SplinePRF",
    "accuracy_table",
    "colour_for_band",
    "demo_bands",
    "depth_map",
    "field_wcs",
    "mask_map",
    "mjysr_to_ujy",
    "noise_equivalent_area",
    "pixel_sigma",
    "prf_model",
    "render_model",
    "simulate_field",
    "simulate_image",
    "simulate_sources",
    "simulate_to_dir",
    "write_field",
]
