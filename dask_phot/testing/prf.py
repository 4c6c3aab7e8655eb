"""Pixel-grid PRFs in continuous form: centred and band-limited interpolation.

A PRF sampled only on the image grid (GALEX's, oversampling 1) has no finer
samples; its continuous form is the band-limited interpolation of its pixels
(zero-padded spectrum), which the simulator's truth and the engine both use.
"""

from __future__ import annotations

import numpy as np

__all__ = ["centred", "upsampled_prf"]


def centred(arr: np.ndarray, center: tuple[float, float]) -> np.ndarray:
    """The array shifted (Fourier, exact for band-limited data) so that ``center`` is
    its middle pixel, trimmed to an odd square."""
    n = max(arr.shape)
    n += 1 - n % 2
    h = n // 2
    out = np.zeros((n, n))
    out[: arr.shape[0], : arr.shape[1]] = arr
    sx, sy = h - center[0], h - center[1]
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    shifted = np.fft.irfft2(np.fft.rfft2(out) * np.exp(-2j * np.pi * (fx * sx + fy * sy)),
                            s=(n, n))
    return shifted / shifted.sum()


def upsampled_prf(array: np.ndarray, center: tuple[float, float], s: int) -> np.ndarray:
    """A pixel-grid PRF's band-limited interpolation on a grid ``s`` (odd) times finer.

    The PRF (unit sum) is centred (:func:`centred`) and its spectrum zero-padded:
    the values are the PRF's per unit flux at offsets ``j / s`` pixels, the centre
    on the middle fine pixel. This is the continuous form of a PRF that has no
    finer samples; a spline through its pixels (the simulator's former truth)
    is not band-limited and differs from it by 0.1-0.5% of a fitted flux.

    Examples
    --------
    >>> u = np.arange(-15, 16)
    >>> g = np.exp(-0.5 * (u[:, None] ** 2 + u[None, :] ** 2) / 1.5**2)
    >>> up = upsampled_prf(g, (15.0, 15.0), 5)
    >>> up.shape, bool(np.allclose(up[2::5, 2::5], g / g.sum(), atol=1e-12))
    ((155, 155), True)
    """
    if s < 1 or s % 2 == 0:
        raise ValueError(f"upsampled_prf: s must be odd and positive, got {s!r}")
    arr = centred(np.asarray(array, dtype=np.float64) / np.sum(array), center)
    n = arr.shape[0]
    m = n * s
    spec = np.fft.fftshift(np.fft.fft2(arr))
    o = (m - n) // 2
    big = np.zeros((m, m), dtype=np.complex128)
    big[o:o + n, o:o + n] = spec
    fine = np.fft.ifft2(np.fft.ifftshift(big)).real * s**2
    # fine pixel j holds coarse position j / s: the centre n // 2 -> s (n // 2); to the middle
    return np.roll(fine, ((s - 1) // 2, (s - 1) // 2), axis=(0, 1))
