"""Cosmic-ray masks (astroscrappy's L.A.Cosmic) for single-exposure areas of mosaics."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import ndimage

from dask_phot._optional import require

__all__ = ["cosmic_ray_mask"]

logger = logging.getLogger(__name__)


def cosmic_ray_mask(
    data: Any,
    *,
    mask: Any = None,
    gain: float = 1.0,
    readnoise: float = 5.0,
    sigclip: float = 4.5,
    sigfrac: float = 0.3,
    objlim: float = 5.0,
    niter: int = 4,
    grow: int = 1,
    satlevel: float = np.inf,
) -> np.ndarray:
    """Boolean mask of cosmic-ray pixels, grown by ``grow`` pixels.

    Parameters
    ----------
    data : array_like
        2-D image (sky included, in image units; ``gain`` converts to electrons).
    mask : array_like of bool, optional
        Bad pixels to ignore.
    gain, readnoise : float
        Electrons per image unit and read noise in electrons.
    sigclip, sigfrac, objlim, niter
        L.A.Cosmic's detection limit, neighbour fraction, contrast limit against
        real objects and iterations (:func:`astroscrappy.detect_cosmics`).
    grow : int
        Dilation of the mask (a 3x3 kernel applied ``grow`` times).
    satlevel : float
        Saturation level in image units (stars above it are not taken for rays).

    Returns
    -------
    ndarray of bool

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = rng.normal(100.0, 10.0, (64, 64)); img[20, 30] += 3000.0
    >>> crs = cosmic_ray_mask(img, gain=1.0, readnoise=10.0)
    >>> bool(crs[20, 30]), bool(crs[21, 31]), int(crs[30:].sum())  # grown; none elsewhere
    (True, True, 0)
    """
    scrappy = require("astroscrappy")
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"data must be a 2-D image, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if mask is not None:
        bad |= np.asarray(mask, dtype=bool)
    clean = np.where(bad, np.nanmedian(arr) if (~bad).any() else 0.0, arr).astype(np.float32)
    crmask, _ = scrappy.detect_cosmics(
        clean, inmask=bad, sigclip=sigclip, sigfrac=sigfrac, objlim=objlim, gain=gain,
        readnoise=readnoise, satlevel=float(min(satlevel, 1e30)), niter=niter)
    crmask = np.asarray(crmask, dtype=bool) & ~bad
    if grow > 0 and crmask.any():
        crmask = ndimage.binary_dilation(crmask, structure=np.ones((3, 3), bool),
                                         iterations=int(grow))
    logger.debug("cosmic rays: %d pixels masked", int(crmask.sum()))
    return crmask
