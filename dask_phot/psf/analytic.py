"""Analytic PSFs integrated over square pixels: Gaussian and Moffat profiles."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from dask_phot.psf.pixel import PixelPSF, PSFError

__all__ = ["gaussian_psf", "moffat_psf"]


def gaussian_psf(
    fwhm: float, *, size: int | None = None, pixel_scale: float = 1.0
) -> PixelPSF:
    """Circular Gaussian PSF integrated exactly over square pixels.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum, in pixels.
    size : int, optional
        Odd stamp size; default ``2 * ceil(3 * fwhm) + 1``.
    pixel_scale : float
        Arcsec per pixel recorded on the PSF.
    """
    if size is None:
        size = 2 * math.ceil(3 * fwhm) + 1
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    h = size // 2
    edges = (np.arange(-h, h + 2) - 0.5) / (sigma * math.sqrt(2.0))
    prof = np.diff(0.5 * erf(edges))
    return PixelPSF(np.outer(prof, prof), pixel_scale, "sum", name=f"gaussian(fwhm={fwhm:g})")


def moffat_psf(
    fwhm: float,
    beta: float = 2.5,
    *,
    size: int | None = None,
    pixel_scale: float = 1.0,
    oversample: int = 9,
) -> PixelPSF:
    """Circular Moffat PSF, integrated over pixels on an ``oversample``-fold subgrid.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum, in pixels.
    beta : float
        Moffat power index (> 1).
    size : int, optional
        Odd stamp size; default ``2 * ceil(4 * fwhm) + 1``.
    pixel_scale : float
        Arcsec per pixel recorded on the PSF.
    oversample : int
        Sub-pixels per pixel side for the integration.
    """
    if beta <= 1:
        raise PSFError(f"moffat: beta must be > 1, got {beta}")
    if size is None:
        size = 2 * math.ceil(4 * fwhm) + 1
    alpha = fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    h = size // 2
    sub = (np.arange(size * oversample) + 0.5) / oversample - 0.5 - h
    r2 = sub[:, None] ** 2 + sub[None, :] ** 2
    fine = (1.0 + r2 / alpha**2) ** (-beta)
    arr = fine.reshape(size, oversample, size, oversample).sum(axis=(1, 3))
    return PixelPSF(arr, pixel_scale, "sum", name=f"moffat(fwhm={fwhm:g},beta={beta:g})")
