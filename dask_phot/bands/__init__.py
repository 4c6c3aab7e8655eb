"""Imaging bands: PSF, pixel grid and flux calibration of each band.

A :class:`Band` is the small parameter object the COSMOS forced-photometry
notebook kept per band (PRF, cutout width, flux conversion, mosaic pixel
scale), plus what the rest of dask-phot needs to know about the band. Presets
for Spitzer/IRAC, GALEX and unWISE ship with the package, with their PSF files
(:mod:`~dask_phot.bands.presets`); any other band is made from a PSF file with
:meth:`Band.from_psf_file` or from a configuration table with
:func:`dask_phot.config.band_from_config`.

Modules: :mod:`~dask_phot.bands.band` (:class:`Band`, flux conversions),
:mod:`~dask_phot.bands.files` (PSF files, the band's PSF object) and
:mod:`~dask_phot.bands.presets` (:data:`PRESETS`, :func:`get_band`).
"""

from dask_phot.bands.band import AB_ZEROPOINT_UJY, Band, flux_to_mag, mjysr_to_ujy
from dask_phot.bands.files import BandError, locate_psf_file, packaged_psf_files
from dask_phot.bands.presets import NOTEBOOK_BANDS, PRESETS, get_band

__all__ = [
    "AB_ZEROPOINT_UJY",
    "NOTEBOOK_BANDS",
    "PRESETS",
    "Band",
    "BandError",
    "flux_to_mag",
    "get_band",
    "locate_psf_file",
    "mjysr_to_ujy",
    "packaged_psf_files",
]
