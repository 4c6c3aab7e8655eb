"""Colour composites whose stretch follows the bands' noise and the source's brightness.

Both methods take three images on one pixel grid, in common units (surface
brightness, uJy/arcsec^2, when the bands' calibrations are known; otherwise each
band in units of its own noise), with the local sky level removed:

* ``"lupton"`` (Lupton et al. 2004, PASP 116, 133): the intensity ``I = (r+g+b)/3``
  is mapped through ``asinh(Q I / s) / Q`` and every band scaled by the same
  factor, so colours are kept where bright parts saturate. The linear stretch
  ``s`` puts the background noise (1 sigma of ``I``) at ``noise_level`` of full
  scale; ``Q`` is then chosen so that ``white`` times the source's peak reaches
  full scale (a bright source is compressed). A source fainter than that stays
  linear with its peak at full scale, the noise then showing brighter, up to
  ``max_noise_level`` of full scale (fainter sources show dimmer).
* ``"asinh"``: each band through ``asinh(x / beta) / asinh(W / beta)`` with one
  white point ``W`` (``white`` times the brightest band's peak) and one softening
  ``beta`` (the noise at ``noise_level`` of full scale) for all three bands; faint
  sources as for Lupton.

:func:`composite` returns the 8-bit image and a :class:`Stretch` saying what
was chosen; :func:`write_png` stores both (the choice in the PNG's text).

Examples
--------
>>> rng = np.random.default_rng(1)
>>> yy, xx = np.mgrid[:41, :41]
>>> blob = np.exp(-((xx - 20) ** 2 + (yy - 20) ** 2) / 8.0)
>>> bands = [a * 50 * blob + rng.normal(0, 1, blob.shape) for a in (1.0, 0.6, 0.3)]
>>> rgb, how = composite(bands, method="lupton")
>>> rgb.shape, rgb.dtype.name, bool(rgb[20, 20, 0] > rgb[20, 20, 2])  # red source
((41, 41, 3), 'uint8', True)
>>> round(how.noise_level, 3), bool(rgb[20, 20].max() >= 250)  # peak at full scale
(0.04, True)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["Stretch", "composite", "robust_noise", "source_peak", "write_png"]


@dataclass(frozen=True)
class Stretch:
    """What a composite used: its method and parameters, the bands' noise and the peak.

    Attributes
    ----------
    method : str
    stretch : float
        Lupton's linear stretch ``s``, or the asinh softening ``beta``.
    q : float
        Lupton's Q (0 for asinh).
    white : float
        The value shown at full scale (Lupton: peak of ``I``; asinh: ``W``).
    noise : tuple of float
        Robust 1-sigma noise of each band, in the images' units.
    peak : float
        The source's peak (of ``I`` or of the brightest band), same units.
    noise_level : float
        Fraction of full scale at which the 1-sigma background shows.
    """

    method: str
    stretch: float
    q: float
    white: float
    noise: tuple[float, float, float]
    peak: float
    noise_level: float


def robust_noise(image: np.ndarray) -> tuple[float, float]:
    """``(sky, sigma)`` of an image: median and 1.4826 MAD, twice clipped at 3 sigma.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sky, sigma = robust_noise(rng.normal(5.0, 2.0, (200, 200)))
    >>> round(sky, 1), round(sigma, 1)
    (5.0, 2.0)
    """
    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 0.0
    sky, sigma = float(np.median(values)), 0.0
    for _ in range(3):
        sigma = 1.4826 * float(np.median(np.abs(values - sky)))
        if sigma <= 0:
            break
        kept = values[np.abs(values - sky) < 3.0 * sigma]
        if kept.size < 10:
            break
        values, sky = kept, float(np.median(kept))
    if sigma <= 0:
        sigma = float(np.std(values))
    return sky, sigma


def source_peak(image: np.ndarray, radius: float | None = None) -> float:
    """The brightest 3x3 mean within ``radius`` pixels of the centre (the source's peak).

    ``radius`` defaults to an eighth of the side (at least 2 pixels).
    """
    arr = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    ny, nx = arr.shape
    radius = max(2.0, min(ny, nx) / 8.0) if radius is None else radius
    yy, xx = np.mgrid[:ny, :nx]
    near = np.hypot(xx - (nx - 1) / 2, yy - (ny - 1) / 2) <= radius
    return float(np.max(ndimage.uniform_filter(arr, 3, mode="nearest")[near]))


def _solve_q(a: float) -> float:
    """Q > 0 with ``asinh(Q a) = Q`` (a > 1): the asinh that takes ``a`` to 1."""
    lo, hi = 1e-9, math.log(2.0 * a) + 10.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if math.asinh(mid * a) > mid:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def _lupton(bands: np.ndarray, noise: np.ndarray, levels: tuple[float, float], white: float,
            stretch: float | None, q: float | None) -> tuple[np.ndarray, Stretch]:
    noise_level, max_noise_level = levels
    intensity = bands.mean(axis=0)
    sigma_i = float(np.sqrt(np.sum(noise**2)) / 3.0) or 1.0
    peak = source_peak(intensity)
    s = stretch if stretch is not None else sigma_i / noise_level
    a = white * peak / s
    if q is None:
        if a > 1.0 + 1e-6:
            q = _solve_q(a)
        else:  # a faint source: linear, its peak at full scale if the noise allows
            q, s = 1e-6, max(white * peak, sigma_i / max_noise_level)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.arcsinh(q * intensity / s) / q
        factor = np.where(intensity > 0, f / intensity, 0.0)
    rgb = np.clip(bands * factor, 0.0, None)
    top = rgb.max(axis=0)
    rgb = np.where(top > 1.0, rgb / np.where(top > 1.0, top, 1.0), rgb)
    how = Stretch("lupton", float(s), float(q), float(white * peak), tuple(noise.tolist()),
                  peak, float(sigma_i / s))
    return _to_uint8(np.moveaxis(rgb, 0, -1)), how


def _asinh(bands: np.ndarray, noise: np.ndarray, levels: tuple[float, float],
           white: float) -> tuple[np.ndarray, Stretch]:
    noise_level, max_noise_level = levels
    sigma = float(np.mean(noise)) or 1.0
    peak = max(source_peak(b) for b in bands)
    w = max(white * peak, sigma)
    target = sigma / noise_level  # beta * asinh(W / beta) shows sigma at noise_level
    if target >= w:  # faint: linear, the white point at the peak if the noise allows
        w = max(w, sigma / max_noise_level)
        rgb = np.clip(bands / w, 0.0, 1.0)
        beta = math.inf
    else:
        lo, hi = math.log(w) - 40.0, math.log(w) + 40.0
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            b = math.exp(mid)
            if b * math.asinh(w / b) < target:
                lo = mid
            else:
                hi = mid
        beta = math.exp(0.5 * (lo + hi))
        rgb = np.clip(np.arcsinh(bands / beta) / math.asinh(w / beta), 0.0, 1.0)
    shown = sigma / (w if beta == math.inf else beta * math.asinh(w / beta))
    how = Stretch("asinh", float(beta), 0.0, float(w), tuple(noise.tolist()), peak,
                  float(shown))
    return _to_uint8(np.moveaxis(rgb, 0, -1)), how


def composite(images: Sequence[np.ndarray], *, method: str = "lupton",
              noise_level: float = 0.04, max_noise_level: float = 0.1, white: float = 1.0,
              stretch: float | None = None,
              q: float | None = None) -> tuple[np.ndarray, Stretch]:
    """An 8-bit RGB composite of (red, green, blue) images, stretch chosen per source.

    Parameters
    ----------
    images : three ndarray
        Red, green, blue on one grid, in common units; NaN is shown black.
    method : {"lupton", "asinh"}
    noise_level, max_noise_level, white, stretch, q
        See :class:`~dask_phot.cutouts.ColourSpec`.

    Returns
    -------
    rgb : ndarray (ny, nx, 3) of uint8
        Row 0 is the bottom of the image (FITS order).
    stretch : Stretch
    """
    bands = np.array([np.asarray(im, dtype=np.float64) for im in images])
    if bands.shape[0] != 3 or bands.ndim != 3:
        raise ValueError(f"need three 2-D images of one shape, got {bands.shape}")
    noise = np.zeros(3)
    for i in range(3):
        sky, noise[i] = robust_noise(bands[i])
        bands[i] = np.nan_to_num(bands[i] - sky, nan=0.0)
    levels = (noise_level, max(max_noise_level, noise_level))
    if method == "lupton":
        return _lupton(bands, noise, levels, white, stretch, q)
    if method == "asinh":
        return _asinh(bands, noise, levels, white)
    raise ValueError(f"unknown colour method {method!r}; use 'lupton' or 'asinh'")


def write_png(rgb: np.ndarray, path: str | os.PathLike[str], how: Stretch) -> Path:
    """Write a composite as PNG (north of the pixel grid up), its stretch in the text."""
    from dask_phot._optional import require

    require("matplotlib")
    import matplotlib.image as mpimg

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    mpimg.imsave(tmp, np.flipud(rgb), format="png",
                 metadata={"Software": "dask-phot",
                           "Description": json.dumps(dataclasses.asdict(how))})
    os.replace(tmp, out)
    return out
