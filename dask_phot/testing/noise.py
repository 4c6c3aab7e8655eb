"""Sky, noise and mask ingredients of simulated images.

* :func:`depth_map`: a smooth random factor map (like a mosaic's coverage) that
  scales the per-pixel noise by ``1 ± variation``;
* :func:`sky_plane`: a constant sky plus a gentle plane gradient;
* :func:`mask_map`: NaN holes (discs) and bad column segments covering a
  requested fraction of the pixels;
* :func:`pixel_sigma`: per-pixel noise from a 5-sigma point-source depth.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import zoom

from dask_phot.psf import OversampledPSF, PixelPSF

__all__ = ["depth_map", "mask_map", "noise_equivalent_area", "pixel_sigma", "sky_plane"]


def noise_equivalent_area(psf: PixelPSF | OversampledPSF) -> float:
    """Noise-equivalent area ``1 / sum(psf**2)`` of a unit-sum PSF, in image pixels
    (an oversampled PSF's stamp at phase 0, normalised to unit sum)."""
    if isinstance(psf, OversampledPSF):
        st = psf.stamps(np.zeros(1), np.zeros(1))[0][0]
        return float(1.0 / np.sum(np.square(st / st.sum())))
    return float(1.0 / np.sum(np.square(psf.array / psf.sum)))


def pixel_sigma(depth_5sigma_ujy: float, to_ujy: float, psf: PixelPSF | OversampledPSF
                ) -> float:
    """Per-pixel noise (image units) giving a point-source 5-sigma depth.

    ``sigma_pix = depth / 5 / to_ujy / sqrt(NEA)``: a PSF-fitted flux on white
    noise has the uncertainty ``sigma_pix * sqrt(NEA)``.

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> round(pixel_sigma(5.0, 1.0, gaussian_psf(3.0)), 4)
    0.2159
    """
    if not (depth_5sigma_ujy > 0 and to_ujy > 0):
        raise ValueError(
            f"depth_5sigma_ujy and to_ujy must be > 0, got {depth_5sigma_ujy!r}, {to_ujy!r}"
        )
    return depth_5sigma_ujy / 5.0 / to_ujy / math.sqrt(noise_equivalent_area(psf))


def depth_map(
    shape: tuple[int, int], rng: np.random.Generator, *, variation: float = 0.3, nodes: int = 4
) -> np.ndarray:
    """Smooth random factor map spanning ``[1 - variation, 1 + variation]``.

    A ``nodes x nodes`` grid of uniform random values is interpolated
    bicubically over the image (like the slowly varying coverage of a mosaic),
    then centred and scaled so that its extremes are exactly ``1 ± variation``.
    """
    if not 0.0 <= variation < 1.0:
        raise ValueError(f"depth variation must be in [0, 1), got {variation!r}")
    coarse = rng.uniform(-1.0, 1.0, (nodes, nodes))
    if variation == 0.0:
        return np.ones(shape)
    fine = zoom(coarse, (shape[0] / nodes, shape[1] / nodes), order=3, mode="nearest",
                grid_mode=True)
    fine -= 0.5 * (fine.max() + fine.min())
    span = float(np.abs(fine).max())
    return 1.0 + variation * (fine / span if span > 0 else fine)


def sky_plane(
    shape: tuple[int, int], level: float, gradient: float, rng: np.random.Generator
) -> float | np.ndarray:
    """Constant ``level`` plus a plane whose peak-to-peak range is ``gradient``.

    The direction of the gradient is random. Returns a float when ``gradient`` is 0.
    """
    angle = rng.uniform(0.0, 2.0 * math.pi)
    if gradient == 0.0:
        return float(level)
    ny, nx = shape
    u = np.linspace(-0.5, 0.5, nx)[None, :] * math.cos(angle)
    v = np.linspace(-0.5, 0.5, ny)[:, None] * math.sin(angle)
    plane = u + v
    span = float(plane.max() - plane.min()) or 1.0
    return level + gradient * plane / span


def mask_map(
    shape: tuple[int, int],
    fraction: float,
    rng: np.random.Generator,
    *,
    column_share: float = 0.3,
    max_radius: int = 12,
) -> np.ndarray:
    """Boolean mask (True = bad) of discs and bad column segments.

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    fraction : float
        Fraction of pixels to mask (reached to within one hole or segment).
    rng : numpy.random.Generator
        Random stream.
    column_share : float
        Share of the masked pixels in bad column segments; the rest are discs.
    max_radius : int
        Largest disc radius, in pixels (radii are uniform in ``[2, max_radius]``).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"mask_fraction must be in [0, 1), got {fraction!r}")
    ny, nx = shape
    mask = np.zeros(shape, dtype=bool)
    target = round(fraction * ny * nx)
    count = 0
    while count < column_share * target:
        col = int(rng.integers(nx))
        length = int(rng.integers(max(1, ny // 8), ny + 1))
        start = int(rng.integers(0, ny - length + 1))
        seg = mask[start : start + length, col]
        count += int(np.count_nonzero(~seg))
        seg[:] = True
    while count < target:
        r = int(rng.integers(2, max(3, max_radius + 1)))
        cy, cx = int(rng.integers(ny)), int(rng.integers(nx))
        y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, ny), max(cx - r, 0), min(cx + r + 1, nx)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        box = mask[y0:y1, x0:x1]
        count += int(np.count_nonzero(disc & ~box))
        box |= disc
    return mask
