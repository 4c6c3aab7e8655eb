"""Aperture photometry of sources on sharp images: the measurements priors carry.

* :func:`aperture_photometry`: fluxes in circles of several radii (default 2, 4,
  6, 8, 10 px) minus the sigma-clipped median of an annulus (default 10-15 px),
  errors from the RMS or weight map, a Poisson term (``gain``) and the
  background's own uncertainty;
* :func:`radial_fwhm`: FWHM from the radial profile;
* :func:`kron_photometry`: Kron radius and "auto" flux with SExtractor's
  minimum-radius and minimum-diameter rules;
* :func:`curve_of_growth`, :func:`aperture_corrections`: point-source corrections
  from a :class:`~dask_phot.psf.PixelPSF`;
* :func:`flux_conversion`, :func:`add_physical_fluxes`: microjansky from
  PHOTFNU / PHOTFLAM / MJy/sr / a band preset, and AB magnitudes (NaN when the
  flux is not positive);
* :func:`measure_sources`: all of the above in one table.

Positions are 0-based (column ``x``, row ``y``, pixel centres at integers), as in
numpy and :meth:`astropy.wcs.WCS.world_to_pixel`. Needs the ``detect`` extra
(``sep``).

Examples
--------
>>> import numpy as np
>>> img = np.full((50, 50), 2.0); img[25, 25] += 300.0
>>> t = aperture_photometry(img, [25.0], [25.0], radii=[2, 4], rms=1.0)
>>> t[["flux_aper_2", "flux_aper_4"]].round(6).values.tolist()
[[300.0, 300.0]]
"""

from dask_phot.aperture.circular import annulus_background, aperture_photometry, radial_fwhm
from dask_phot.aperture.kron import KRON_CIRCULAR, KRON_FAILED, kron_photometry
from dask_phot.aperture.measure import measure_sources
from dask_phot.aperture.psfcorr import aperture_corrections, curve_of_growth
from dask_phot.aperture.units import add_physical_fluxes, flux_conversion

__all__ = [
    "KRON_CIRCULAR",
    "KRON_FAILED",
    "add_physical_fluxes",
    "annulus_background",
    "aperture_corrections",
    "aperture_photometry",
    "curve_of_growth",
    "flux_conversion",
    "kron_photometry",
    "measure_sources",
    "radial_fwhm",
]
