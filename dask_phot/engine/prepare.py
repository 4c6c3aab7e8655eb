"""Validation of the engine's inputs and the pre-fit per-source flags."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from dask_phot.engine import _kernels as K
from dask_phot.psf import PixelPSF, PSFModel
from dask_phot.schema import Flag

__all__ = ["Prepared", "prepare_inputs", "robust_sigma"]

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Validated arrays shared by the fitting modes."""

    data: np.ndarray  # image minus fixed sky, 0 where masked
    weight: np.ndarray  # inverse variance, 0 where masked
    sky: np.ndarray  # fixed sky map (zeros when none)
    x: np.ndarray
    y: np.ndarray
    flags: np.ndarray  # pre-fit flags (int64)
    fit: np.ndarray  # bool: sources that enter the fit


def robust_sigma(values: np.ndarray) -> float:
    """Noise of an image from the median absolute deviation of its finite pixels.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> round(robust_sigma(rng.normal(0, 2.0, 100_000)), 1)
    2.0
    """
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan")
    med = np.median(v)
    return float(1.4826 * np.median(np.abs(v - med)))


def _weight_map(
    image: np.ndarray, sigma: float | np.ndarray | None, weight: np.ndarray | None
) -> np.ndarray:
    if sigma is not None and weight is not None:
        raise ValueError("give either sigma or weight, not both")
    if weight is not None:
        w = np.array(weight, dtype=np.float64)
        if w.shape != image.shape:
            raise ValueError(f"weight has shape {w.shape}, image has {image.shape}")
    else:
        if sigma is None:
            s = robust_sigma(image)
            log.info("no noise given: using sigma = %.4g from the image's MAD", s)
            sigma = s
        sig = np.asarray(sigma, dtype=np.float64)
        if sig.ndim not in (0, 2) or (sig.ndim == 2 and sig.shape != image.shape):
            raise ValueError(f"sigma must be a scalar or a map of shape {image.shape}")
        if sig.ndim == 0 and not (np.isfinite(sig) and sig > 0):
            raise ValueError(f"sigma must be finite and > 0, got {float(sig)!r}")
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.broadcast_to(1.0 / sig**2, image.shape).copy()
    w[~np.isfinite(w) | (w < 0)] = 0.0
    w[~np.isfinite(image)] = 0.0
    return w


def _sky_map(image: np.ndarray, sky: float | np.ndarray | None) -> np.ndarray:
    if sky is None:
        return np.zeros_like(image)
    s = np.asarray(sky, dtype=np.float64)
    if s.ndim == 2 and s.shape != image.shape:
        raise ValueError(f"sky map has shape {s.shape}, image has {image.shape}")
    if s.ndim not in (0, 2) or not np.all(np.isfinite(s)):
        raise ValueError("sky must be a finite scalar or a finite map of the image's shape")
    return np.broadcast_to(s, image.shape).astype(np.float64)


def prepare_inputs(
    image: np.ndarray,
    psf: PSFModel | None,
    x: np.ndarray,
    y: np.ndarray,
    *,
    sigma: float | np.ndarray | None,
    weight: np.ndarray | None,
    sky: float | np.ndarray | None,
) -> Prepared:
    """Validate inputs, build data/weight maps and the pre-fit flags.

    Raises
    ------
    ValueError
        Wrong shapes or inconsistent arguments.
    dask_phot.psf.PSFError
        A PSF that is not sum-normalised.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {img.shape}")
    xa = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ya = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise ValueError(f"x and y must be 1-D of equal length, got {xa.shape} and {ya.shape}")
    if isinstance(psf, PixelPSF):
        psf.check_normalized()
    w = _weight_map(img, sigma, weight)
    skymap = _sky_map(img, sky)
    data = np.where(w > 0, img - skymap, 0.0)
    ny, nx = img.shape
    flags = np.zeros(xa.shape[0], dtype=np.int64)
    finite = np.isfinite(xa) & np.isfinite(ya)
    inside = finite & (xa >= -0.5) & (xa < nx - 0.5) & (ya >= -0.5) & (ya < ny - 0.5)
    flags[~inside] |= int(Flag.OFF_IMAGE)
    fit = inside.copy()
    return Prepared(data, w, skymap, np.where(finite, xa, -1e9), np.where(finite, ya, -1e9),
                    flags, fit)


def footprint_flags(
    prep: Prepared, x0: np.ndarray, y0: np.ndarray, w: np.ndarray, h: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flag edge-truncated, partly masked, centre-masked and data-less footprints.

    ``x0, y0, w, h`` are the sources' stamp boxes, in input order. Updates
    ``prep.flags`` and ``prep.fit`` in place; returns the usable-pixel count and
    the pixel count outside the image of every source.
    """
    nuse, nmask, nout = K.footprint_counts(x0, y0, w, h, prep.weight)
    f = prep.flags
    f[nout > 0] |= int(Flag.EDGE)
    f[nmask > 0] |= int(Flag.MASKED_PIXELS)
    ny, nx = prep.weight.shape
    cx = np.clip(np.floor(prep.x + 0.5).astype(np.int64), 0, nx - 1)
    cy = np.clip(np.floor(prep.y + 0.5).astype(np.int64), 0, ny - 1)
    f[prep.fit & (prep.weight[cy, cx] <= 0)] |= int(Flag.CENTER_MASKED)
    nodata = prep.fit & (nuse == 0)
    f[nodata] |= int(Flag.NO_DATA)
    prep.fit &= ~nodata
    return nuse, nout


def blend_flags(prep: Prepared, radius: float) -> None:
    """Flag sources with another fitted source closer than ``radius`` pixels."""
    idx = np.flatnonzero(prep.fit)
    if idx.size < 2 or radius <= 0:
        return
    tree = cKDTree(np.column_stack([prep.x[idx], prep.y[idx]]))
    pairs = tree.query_pairs(radius, output_type="ndarray")
    if pairs.size:
        prep.flags[idx[pairs.ravel()]] |= int(Flag.BLENDED)
