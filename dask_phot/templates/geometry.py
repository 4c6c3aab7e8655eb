"""From the sharp image's pixels to the blurred image's, through both WCSs.

The map between two TAN mosaics is smooth: around each source it is an
affine map (:func:`map_sources`: the source's position on the blurred grid and
the 2 x 2 Jacobian of blurred pixels per sharp pixel, rotation, flip and the
ratio of pixel scales included), exact to far below a pixel over a galaxy's
extent. Frames are converted on the way (FK5 to ICRS, say). This module also
holds the checks of the geometry a user passes: pixel scales of WCSs and
PSFs, and that the two images overlap.
"""

from __future__ import annotations

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from dask_phot.psf import PSFError

__all__ = ["check_overlap", "check_psf_scale", "map_sources", "pixel_scale"]


def pixel_scale(wcs: WCS, name: str) -> float:
    """Mean pixel scale of a celestial WCS, arcsec per pixel."""
    if not isinstance(wcs, WCS) or not wcs.has_celestial:
        raise TypeError(f"{name}: must be a celestial astropy.wcs.WCS, got "
                        f"{type(wcs).__name__}")
    scales = proj_plane_pixel_scales(wcs.celestial) * 3600.0
    return float(np.sqrt(scales[0] * scales[1]))


def _to_pixels(src: WCS, dst: WCS, x: np.ndarray, y: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    sky = src.pixel_to_world(x, y)
    if not isinstance(sky, SkyCoord):
        raise TypeError("WCS must be celestial (pixel_to_world gave no SkyCoord)")
    px, py = dst.world_to_pixel(sky)
    return np.asarray(px, dtype=np.float64), np.asarray(py, dtype=np.float64)


def map_sources(hires_wcs: WCS, wcs: WCS, x: np.ndarray, y: np.ndarray, *,
                step: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blurred-image positions of sharp-image positions, and the local Jacobians.

    Parameters
    ----------
    hires_wcs, wcs : astropy.wcs.WCS
        The sharp and the blurred image's WCSs.
    x, y : ndarray
        0-based positions on the sharp image.
    step : float
        Finite-difference step, sharp pixels.

    Returns
    -------
    X, Y : ndarray
        0-based positions on the blurred image.
    jac : ndarray, shape (n, 2, 2)
        ``d(X, Y) / d(x, y)`` at each position.

    Examples
    --------
    >>> sharp = WCS(naxis=2); sharp.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> sharp.wcs.crval = [150.0, 2.0]; sharp.wcs.crpix = [101, 101]
    >>> sharp.wcs.cdelt = [-0.06 / 3600, 0.06 / 3600]
    >>> blur = WCS(naxis=2); blur.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    >>> blur.wcs.crval = [150.0, 2.0]; blur.wcs.crpix = [11, 11]
    >>> blur.wcs.cdelt = [-0.6 / 3600, 0.6 / 3600]
    >>> X, Y, jac = map_sources(sharp, blur, np.array([110.0]), np.array([100.0]))
    >>> round(float(X[0]), 4), round(float(Y[0]), 4), (np.round(jac[0], 4) + 0.0).tolist()
    (11.0, 10.0, [[0.1, 0.0], [0.0, 0.1]])
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    xs = np.concatenate([x, x + step, x - step, x, x])
    ys = np.concatenate([y, y, y, y + step, y - step])
    px, py = _to_pixels(hires_wcs, wcs, xs, ys)
    jac = np.empty((n, 2, 2))
    jac[:, 0, 0] = (px[n:2 * n] - px[2 * n:3 * n]) / (2 * step)
    jac[:, 1, 0] = (py[n:2 * n] - py[2 * n:3 * n]) / (2 * step)
    jac[:, 0, 1] = (px[3 * n:4 * n] - px[4 * n:]) / (2 * step)
    jac[:, 1, 1] = (py[3 * n:4 * n] - py[4 * n:]) / (2 * step)
    return px[:n], py[:n], jac


def check_overlap(hires_wcs: WCS, hires_shape: tuple[int, int], wcs: WCS,
                  shape: tuple[int, int], *, hires_name: str = "hires",
                  name: str = "image") -> None:
    """Raise ValueError (naming both images) unless the sharp image's footprint
    overlaps the blurred image."""
    ny, nx = hires_shape
    t = np.linspace(0.0, 1.0, 9)
    ex = np.concatenate([t * (nx - 1), np.full(9, nx - 1.0), t * (nx - 1), np.zeros(9)])
    ey = np.concatenate([np.zeros(9), t * (ny - 1), np.full(9, ny - 1.0), t * (ny - 1)])
    px, py = _to_pixels(hires_wcs, wcs, ex, ey)
    ok = np.isfinite(px) & np.isfinite(py)
    if not ok.any():
        raise ValueError(f"{hires_name} and {name}: the WCSs do not overlap (the sharp "
                         "image's corners do not map onto the blurred image's sky)")
    lo_x, hi_x = px[ok].min(), px[ok].max()
    lo_y, hi_y = py[ok].min(), py[ok].max()
    if hi_x < -0.5 or lo_x > shape[1] - 0.5 or hi_y < -0.5 or lo_y > shape[0] - 0.5:
        raise ValueError(
            f"{hires_name} and {name}: the WCSs do not overlap: the sharp image maps to "
            f"x {lo_x:.1f}..{hi_x:.1f}, y {lo_y:.1f}..{hi_y:.1f} of {name}, whose shape is "
            f"{shape[0]} x {shape[1]}")


def check_psf_scale(psf: object, scale: float, name: str, image_name: str) -> None:
    """Raise PSFError unless a band PSF's image pixel scale matches the image's WCS."""
    ps = getattr(psf, "pixel_scale", None)
    if ps is None:
        raise PSFError(f"{name}: a PSF with a pixel scale is needed (PixelPSF or "
                       f"OversampledPSF), got {type(psf).__name__}")
    if abs(float(ps) / scale - 1.0) > 0.02:
        raise PSFError(f"{name}: pixel scale {float(ps):.4g}\"/px, but {image_name}'s WCS "
                       f"has {scale:.4g}\"/px; give the PSF at the image's pixel scale "
                       "(an OversampledPSF for a finer one)")
