"""ICRS positions to a mosaic's pixels and back, whatever the mosaic's celestial frame.

Priors are ICRS (right ascension, declination). A mosaic's WCS may be in
another frame: Galactic (Spitzer GLIMPSE: ``GLON-CAR``/``GLAT-CAR``), FK5 of
some equinox, FK4 (``RADESYS = 'FK4'``, ``EQUINOX = 1950``), ecliptic. These
functions transform the positions into the mosaic's frame
(:class:`astropy.coordinates.SkyCoord`) before the projection, vectorised; an
ICRS mosaic (the common case, and RA/Dec without ``RADESYS`` or ``EQUINOX``, as
the FITS standard says) takes the direct path.

Examples
--------
>>> from astropy.wcs import WCS
>>> w = WCS(naxis=2)
>>> w.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
>>> w.wcs.cdelt = [-0.6 / 3600, 0.6 / 3600]
>>> w.wcs.crval = [0.0, 0.0]
>>> w.wcs.crpix = [1.0, 1.0]
>>> ra, dec = pixel_to_icrs(w, [0.0], [0.0])  # (l, b) = (0, 0): the Galactic centre
>>> round(float(ra[0]), 4), round(float(dec[0]), 4)
(266.405, -28.9362)
>>> x, y = icrs_to_pixel(w, ra, dec)
>>> round(float(x[0]), 6), round(float(y[0]), 6)
(0.0, 0.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from astropy.wcs import WCS

__all__ = ["icrs_to_pixel", "is_icrs", "pixel_to_icrs"]


def is_icrs(wcs: WCS) -> bool:
    """True when the WCS's celestial frame is ICRS with longitude on the first axis."""
    from astropy.coordinates import ICRS
    from astropy.wcs.utils import wcs_to_celestial_frame

    w = wcs.wcs
    icrs = w.radesys == "ICRS" or (w.radesys == "" and np.isnan(w.equinox))
    if icrs and w.lng == 0 and w.lat == 1 and w.ctype[0].startswith("RA--") \
            and w.ctype[1].startswith("DEC-"):
        return True  # what astropy's frame of such a WCS is, without building it (~0.4 ms)
    try:
        frame = wcs_to_celestial_frame(wcs)
    except ValueError:  # no celestial frame astropy knows: take the values as they are
        return True
    return isinstance(frame, ICRS) and wcs.wcs.lng == 0


def icrs_to_pixel(wcs: WCS, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel coordinates ``(x, y)`` of ICRS positions (degrees) on a mosaic.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        The mosaic's (or a region's) celestial WCS, any frame.
    ra, dec : array_like
        ICRS coordinates, degrees.

    Returns
    -------
    x, y : ndarray
        Column and row (pixel centres at integers), float64.
    """
    ra = np.atleast_1d(np.asarray(ra, dtype=np.float64))
    dec = np.atleast_1d(np.asarray(dec, dtype=np.float64))
    if ra.size == 0:
        return np.zeros(0), np.zeros(0)
    if is_icrs(wcs):
        x, y = wcs.all_world2pix(ra, dec, 0)
    else:
        from astropy import units as u
        from astropy.coordinates import SkyCoord

        x, y = wcs.world_to_pixel(SkyCoord(ra * u.deg, dec * u.deg, frame="icrs"))
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def pixel_to_icrs(wcs: WCS, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """ICRS ``(ra, dec)`` in degrees of 0-based pixel coordinates on a mosaic."""
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if is_icrs(wcs):
        ra, dec = wcs.all_pix2world(x, y, 0)
        return np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    icrs = wcs.pixel_to_world(x, y).icrs
    return icrs.ra.deg.astype(np.float64), icrs.dec.deg.astype(np.float64)
