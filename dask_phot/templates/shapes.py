"""Galaxy shapes measured on a sharp image, for Sersic models in a blurred one.

The galaxies issue's models need a half-light radius, an axis ratio and a
position angle. :func:`sky_shapes` measures them on the sharp image a
template fit already uses: the half-light radius of each detection (``sep``'s
``flux_radius`` out to six times its isophotal semi-major axis) with the
sharp PSF's own removed in quadrature, the axis ratio and orientation of its
second moments, turned into a position angle east of north through the sharp
image's WCS. The Sersic index is not fitted (1, exponential). The result
feeds :func:`dask_phot.models.shapes.sky_to_pixel` for any other image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from dask_phot.models.shapes import wcs_jacobian

__all__ = ["sky_shapes"]


def sky_shapes(image: np.ndarray, table: pd.DataFrame, psf: np.ndarray, wcs: WCS,
               pixel_scale: float) -> pd.DataFrame:
    """Shapes on the sky of detections on a sharp, background-subtracted image.

    Parameters
    ----------
    image : ndarray
        The sharp image, background subtracted.
    table : pandas.DataFrame
        Detections (:func:`dask_phot.detect.detect_sources`): ``x, y, a, b, theta``.
    psf : ndarray
        The sharp PSF on the image's grid (odd, centred).
    wcs : astropy.wcs.WCS
        The sharp image's WCS.
    pixel_scale : float
        Arcsec per sharp pixel.

    Returns
    -------
    pandas.DataFrame
        ``r_e`` (arcsec, PSF removed; 0 when unresolved), ``q`` (b/a), ``pa``
        (degrees east of north), ``n`` (1).
    """
    from dask_phot._optional import require

    sep = require("sep")
    data = np.array(image, dtype=np.float64)
    x = table["x"].to_numpy(np.float64).copy()
    y = table["y"].to_numpy(np.float64).copy()
    a = table["a"].to_numpy(np.float64)
    r50, _ = sep.flux_radius(data, x, y, 6.0 * a, 0.5, subpix=5)
    c = float(psf.shape[0] // 2)
    psf_r50, _ = sep.flux_radius(np.array(psf, dtype=np.float64), np.array([c]),
                                 np.array([c]), np.array([c]), 0.5, subpix=5)
    r_e = np.sqrt(np.clip(r50**2 - psf_r50[0] ** 2, 0.0, None)) * pixel_scale
    t = table["theta"].to_numpy(np.float64)
    jac = wcs_jacobian(wcs, x, y)
    east = jac[:, 0, 0] * np.cos(t) + jac[:, 0, 1] * np.sin(t)
    north = jac[:, 1, 0] * np.cos(t) + jac[:, 1, 1] * np.sin(t)
    q = np.clip(table["b"].to_numpy(np.float64) / np.maximum(a, 1e-12), 0.05, 1.0)
    return pd.DataFrame({"r_e": np.nan_to_num(r_e), "q": q,
                         "pa": np.degrees(np.arctan2(east, north)) % 180.0,
                         "n": np.ones_like(r_e)})
