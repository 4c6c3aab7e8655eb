"""Point-source aperture corrections from a PSF's curve of growth.

A point source's flux in a circle of radius ``r`` is ``EE(r)`` (the encircled
energy of the PSF) of its total. With a local background taken as the mean
level in an annulus ``(r_in, r_out)``, the PSF's own wings in the annulus are
subtracted too, so the measured fraction is
``EE(r) - area(r) * (EE(r_out) - EE(r_in)) / area(r_in, r_out)``;
the aperture correction is its inverse. The PSF is rendered at each source's
sub-pixel position (:meth:`dask_phot.psf.PixelPSF.stamps`) and summed with the
same exact-overlap apertures as the image, so small apertures are corrected
for where the source falls within its pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dask_phot._optional import as_sep_array, require
from dask_phot.aperture._common import check_radii, positions
from dask_phot.psf import PixelPSF

__all__ = ["aperture_corrections", "curve_of_growth"]

_BATCH = 2048


def curve_of_growth(psf: PixelPSF, radii: Sequence[float], x: Any = 0.0,
                    y: Any = 0.0) -> np.ndarray:
    """Encircled energy of a PSF in circles of ``radii`` at sub-pixel positions.

    Parameters
    ----------
    psf : PixelPSF
        The PSF (unit sum: the fraction of the flux inside its stamp is 1).
    radii : sequence of float
        Radii, pixels.
    x, y : float or array_like
        Positions whose fractional parts set the sub-pixel centring (the integer
        parts do not matter).

    Returns
    -------
    ndarray
        ``(n_positions, n_radii)`` fractions (1-D ``(n_radii,)`` for scalar ``x, y``).

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> ee = curve_of_growth(gaussian_psf(3.0, size=41), [1.5, 3.0, 20.0])
    >>> ee.round(3).tolist()   # a bit under 0.5 within FWHM / 2: pixels blur it
    [0.477, 0.918, 1.0]
    """
    sep = require("sep")
    scalar = np.ndim(x) == 0 and np.ndim(y) == 0
    xa, ya = positions(x, y)
    radii = check_radii(radii)
    fx, fy = xa - np.floor(xa), ya - np.floor(ya)
    pad = max(math.ceil(max(radii)) + 2, psf.half + 1)
    side = 2 * pad + 1
    out = np.empty((len(xa), len(radii)))
    for start in range(0, len(xa), _BATCH):
        sl = slice(start, start + _BATCH)
        n = len(fx[sl])
        stamps, x0, y0 = psf.stamps(fx[sl] + pad, fy[sl] + pad)
        canvas = np.zeros((n, side, side))
        k = stamps.shape[1]
        for i in range(n):  # place each stamp on its own zero-padded tile
            canvas[i, y0[i]:y0[i] + k, x0[i]:x0[i] + k] = stamps[i]
        strip = as_sep_array(canvas.transpose(1, 0, 2).reshape(side, n * side))
        cx = fx[sl] + pad + side * np.arange(n)
        for j, r in enumerate(radii):
            out[sl, j] = sep.sum_circle(strip, cx, fy[sl] + pad, r, subpix=0)[0]
    return out[0] if scalar else out


def aperture_corrections(
    psf: PixelPSF,
    radii: Sequence[float],
    x: Any = 0.0,
    y: Any = 0.0,
    *,
    annulus: tuple[float, float] | None = None,
) -> np.ndarray:
    """Multiplicative point-source aperture corrections (total / measured flux).

    Parameters
    ----------
    psf : PixelPSF
        The image's PSF.
    radii : sequence of float
        Aperture radii, pixels.
    x, y : float or array_like
        Source positions (their sub-pixel parts matter).
    annulus : (float, float), optional
        The local-background annulus used for the measurement; its share of the
        PSF's light is accounted for.

    Returns
    -------
    ndarray
        Same shape as :func:`curve_of_growth`.

    Examples
    --------
    >>> from dask_phot.psf import moffat_psf
    >>> psf = moffat_psf(3.0, 2.5, size=61)
    >>> c = aperture_corrections(psf, [2.0, 6.0], annulus=(10.0, 15.0))
    >>> bool(c[0] > c[1] > 1.0)
    True
    """
    radii = check_radii(radii)
    if annulus is None:
        return 1.0 / curve_of_growth(psf, radii, x, y)
    r_in, r_out = annulus
    ee = curve_of_growth(psf, (*radii, r_in, r_out), x, y)
    per_pixel = (ee[..., -1] - ee[..., -2]) / (math.pi * (r_out**2 - r_in**2))
    area = math.pi * np.square(radii)
    return 1.0 / (ee[..., : len(radii)] - per_pixel[..., None] * area)
