"""Matching kernels: what turns the sharp image's PSF into the blurred band's.

A template is the sharp image's light convolved with a kernel ``K`` such that
``H * K = P``, where ``H`` is the sharp image's PSF and ``P`` the blurred
band's. :func:`matching_kernel` computes ``K`` from two PSFs sampled on one
grid as a regularised, windowed ratio of their Fourier transforms (the method
of photutils' ``create_matching_kernel``, T-PHOT and golfir): frequencies where
the sharp PSF carries no power, or beyond the window, are set to zero instead
of amplifying noise.

Templates are built on a *lattice*: points ``1/m`` of a blurred-image pixel
apart, with the blurred image's pixel centres on it (:mod:`.build`).
:func:`band_lattice_psf` samples the band's pixel response there (any PSF of
:mod:`dask_phot.psf`, at every phase); :func:`sharp_lattice_psf` deposits the
sharp PSF there through the same affine map, and the same bilinear deposit,
as the sharp image's pixels, so the kernel undoes exactly the smoothing the
deposit adds. PSFs of any pixel scale are first resampled (flux conserving)
onto the sharp image's own grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from dask_phot.psf import OversampledPSF, PixelPSF, PSFError

__all__ = [
    "TemplateKernel",
    "band_lattice_psf",
    "matching_kernel",
    "sharp_lattice_psf",
    "sharp_psf_array",
]


def _radial_window(shape: tuple[int, int], inner: float, outer: float) -> np.ndarray:
    """Split cosine bell in radial frequency (fractions of Nyquist), fft order."""
    fy = np.fft.fftfreq(shape[0])[:, None] * 2.0
    fx = np.fft.fftfreq(shape[1])[None, :] * 2.0
    r = np.hypot(fx, fy)
    w = np.ones(shape)
    if outer <= inner:
        w[r > inner] = 0.0
        return w
    t = np.clip((r - inner) / (outer - inner), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * t))


def matching_kernel(source: np.ndarray, target: np.ndarray, *,
                    window: tuple[float, float] = (0.7, 1.0),
                    regularization: float = 1e-5) -> np.ndarray:
    """Kernel ``K`` with ``source * K ~ target`` (both PSFs on one grid).

    Parameters
    ----------
    source, target : ndarray
        PSFs of equal odd shape, centred on the middle pixel, same pixel scale;
        ``target`` the broader. Each is normalised to unit sum here.
    window : (float, float)
        Split cosine bell on the radial frequency, in units of the Nyquist
        frequency: 1 below ``window[0]``, 0 beyond ``window[1]``.
    regularization : float
        Wiener term, relative to the peak power of ``source``:
        ``K^ = T^ conj(S^) / (|S^|^2 + regularization max|S^|^2)``.

    Returns
    -------
    ndarray
        The kernel, same shape, centred, unit sum.

    Examples
    --------
    Two Gaussians (sigma 1 and 2.5 pixels): the kernel is the Gaussian of the
    difference in variances, and it turns one into the other.

    >>> r2 = np.add.outer(np.arange(-20, 21) ** 2, np.arange(-20, 21) ** 2)
    >>> def gauss(v):
    ...     return np.exp(-0.5 * r2 / v) / (2 * np.pi * v)
    >>> k = matching_kernel(gauss(1.0), gauss(6.25))
    >>> bool(np.abs(k - gauss(5.25)).max() < 1e-4 * k.max())
    True
    >>> from scipy.signal import fftconvolve
    >>> bool(np.abs(fftconvolve(gauss(1.0), k, mode="same") - gauss(6.25)).max() < 1e-5)
    True
    """
    s = np.asarray(source, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 2 or s.shape[0] % 2 == 0 or s.shape[1] % 2 == 0:
        raise PSFError(f"matching_kernel: PSFs must share one odd 2-D shape, got {s.shape} "
                       f"and {t.shape}")
    for name, a in (("source", s), ("target", t)):
        if not (np.all(np.isfinite(a)) and a.sum() > 0):
            raise PSFError(f"matching_kernel: {name} PSF must be finite with a positive sum")
    sh = np.fft.fft2(np.fft.ifftshift(s / s.sum()))
    th = np.fft.fft2(np.fft.ifftshift(t / t.sum()))
    power = np.abs(sh) ** 2
    ratio = th * np.conj(sh) / (power + regularization * power.max())
    ratio *= _radial_window(s.shape, *window)
    k = np.fft.fftshift(np.fft.ifft2(ratio).real)
    return k / k.sum()


def band_lattice_psf(psf: object, m: int, half: int | None = None) -> np.ndarray:
    """The band's pixel response sampled every ``1/m`` image pixel.

    ``out[m h + j, m h + i]`` is the image-pixel value a unit-flux point source
    gives at offset ``(i / m, j / m)`` image pixels from it, for ``|i|, |j| <= m h``
    (``h = half``, by default the PSF's stamp half-size). Sampled with the PSF's
    own ``stamps`` at ``m x m`` phases, so every PSF the engine takes works.

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> psf = gaussian_psf(3.0, size=15)
    >>> lat = band_lattice_psf(psf, 2)
    >>> lat.shape, bool(np.allclose(lat[::2, ::2], psf.array))
    ((29, 29), True)
    """
    h = int(psf.size) // 2 if half is None else int(half)  # type: ignore[attr-defined]
    k = 2 * h + 1
    out = np.zeros((m * (k - 1) + 1, m * (k - 1) + 1))
    for b in range(m):
        for a in range(m):
            # a source at -(a/m, b/m): stamp pixel r holds the response at r + a/m
            px, py = np.array([-a / m]), np.array([-b / m])
            st, x0, y0 = point_stamps(psf, px, py, k)
            # stamp column c sits at offset x0 + c + a / m from the source
            cols = m * (int(x0[0]) + np.arange(k)) + a + m * h
            rows = m * (int(y0[0]) + np.arange(k)) + b + m * h
            okc = (cols >= 0) & (cols < out.shape[1])
            okr = (rows >= 0) & (rows < out.shape[0])
            out[np.ix_(rows[okr], cols[okc])] = st[0][np.ix_(okr, okc)]
    return out


def point_stamps(psf: object, x: np.ndarray, y: np.ndarray, k: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point-source stamps of side ``k`` (>= the PSF's), centred as the PSF's own."""
    if isinstance(psf, OversampledPSF):
        return psf.stamps(x, y, size=k)
    st, x0, y0 = psf.stamps(x, y)  # type: ignore[attr-defined]
    kp = st.shape[1]
    if k == kp:
        return st, x0, y0
    if k < kp:
        o = (kp - k) // 2
        return np.ascontiguousarray(st[:, o:o + k, o:o + k]), x0 + o, y0 + o
    o = (k - kp) // 2
    out = np.zeros((st.shape[0], k, k))
    out[:, o:o + kp, o:o + kp] = st
    return out, x0 - o, y0 - o


def sharp_psf_array(hires_psf: object, hires_scale: float) -> np.ndarray:
    """The sharp PSF on the sharp image's own pixel grid (odd, centred, unit sum).

    ``hires_psf`` is a :class:`~dask_phot.psf.PixelPSF` (at the sharp image's
    pixel scale or finer: it is resampled, flux conserving, to ``hires_scale``), an
    :class:`~dask_phot.psf.OversampledPSF` (its fine array) or a bare array taken
    to be sampled at ``hires_scale``.
    """
    if isinstance(hires_psf, OversampledPSF):
        arr, scale = centred(hires_psf.array, hires_psf.center), hires_psf.fine_scale
    elif isinstance(hires_psf, PixelPSF):
        arr, scale = hires_psf.array, hires_psf.pixel_scale
    else:
        arr, scale = np.asarray(hires_psf, dtype=np.float64), hires_scale
        if arr.ndim != 2:
            raise PSFError(f"hires_psf: must be a PSF or a 2-D array, got shape {arr.shape}")
    if scale > 1.02 * hires_scale:
        raise PSFError(f"hires_psf: pixel scale {scale:.4g}\"/px is coarser than the sharp "
                       f"image's {hires_scale:.4g}\"/px; give the PSF at (or finer than) the "
                       "sharp image's pixel scale")
    if abs(scale / hires_scale - 1.0) > 1e-3:
        arr = PixelPSF.from_oversampled(arr, scale, hires_scale, name="hires_psf",
                                        center_tolerance=2.0).array
    elif arr.shape[0] % 2 == 0 or arr.shape[0] != arr.shape[1]:
        arr = PixelPSF.from_array(arr, hires_scale, size=2 * (min(arr.shape) // 2) - 1,
                                  name="hires_psf").array
    return arr / arr.sum()


def centred(arr: np.ndarray, center: tuple[float, float]) -> np.ndarray:
    """``arr`` shifted (Fourier) so ``center`` is the middle pixel of an odd square."""
    n = max(arr.shape)
    n += 1 - n % 2
    out = np.zeros((n, n))
    out[: arr.shape[0], : arr.shape[1]] = arr
    sx, sy = n // 2 - center[0], n // 2 - center[1]
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    spec = np.fft.rfft2(out) * np.exp(-2j * np.pi * (fx * sx + fy * sy))
    return np.fft.irfft2(spec, s=(n, n))


@numba.njit(cache=True)
def splat(out: np.ndarray, fx: float, fy: float, v: float) -> bool:
    """Add ``v`` bilinearly at lattice position ``(fx, fy)``; False if it falls off."""
    ix = math.floor(fx)
    iy = math.floor(fy)
    n0, n1 = out.shape
    if ix < 0 or iy < 0 or ix + 1 >= n1 or iy + 1 >= n0:
        return False
    wx = fx - ix
    wy = fy - iy
    out[iy, ix] += v * (1 - wx) * (1 - wy)
    out[iy, ix + 1] += v * wx * (1 - wy)
    out[iy + 1, ix] += v * (1 - wx) * wy
    out[iy + 1, ix + 1] += v * wx * wy
    return True


@numba.njit(cache=True)
def _deposit_array(arr: np.ndarray, jac: np.ndarray, m: int, n: int, px: float,
                   py: float) -> np.ndarray:
    out = np.zeros((n, n))
    c = (arr.shape[0] - 1) / 2.0
    h = n // 2
    for r in range(arr.shape[0]):
        for col in range(arr.shape[1]):
            dx, dy = col - c, r - c
            fx = h + px + m * (jac[0, 0] * dx + jac[0, 1] * dy)
            fy = h + py + m * (jac[1, 0] * dx + jac[1, 1] * dy)
            splat(out, fx, fy, arr[r, col])
    return out


def sharp_lattice_psf(sharp: np.ndarray, jac: np.ndarray, m: int, n: int, *,
                      phases: int = 4) -> np.ndarray:
    """The sharp PSF (on the sharp grid) as the lattice deposit sees it, ``n x n``.

    ``jac`` maps sharp-pixel offsets to blurred-image pixel offsets (2 x 2);
    each sharp pixel's value is split bilinearly between the four lattice
    points around it, as :mod:`.build` does with the sharp image. A source
    lands at any phase between lattice points, so the deposit is averaged over
    ``phases x phases`` phases, each moved back to the centre in Fourier space:
    the mean transfer of the deposit, which includes its bilinear smoothing.
    """
    arr = np.ascontiguousarray(sharp, dtype=np.float64)
    jac = np.ascontiguousarray(jac, dtype=np.float64)
    f = np.fft.fftfreq(n)
    acc = np.zeros((n, n), dtype=np.complex128)
    for b in range(phases):
        for a in range(phases):
            px, py = a / phases, b / phases
            dep = _deposit_array(arr, jac, int(m), int(n), px, py)
            ramp = np.exp(2j * np.pi * (f[None, :] * px + f[:, None] * py))
            acc += np.fft.fft2(np.fft.ifftshift(dep)) * ramp
    out = np.fft.fftshift(np.fft.ifft2(acc / phases**2).real)
    return out


@dataclass(frozen=True, eq=False)
class TemplateKernel:
    """The matching kernel on the lattice, and its transforms per stamp size.

    Attributes
    ----------
    array : ndarray
        The kernel on the lattice (odd square, centred, unit sum).
    m : int
        Lattice points per blurred-image pixel.
    """

    array: np.ndarray
    m: int

    @classmethod
    def build(cls, psf: object, sharp: np.ndarray, jac: np.ndarray, m: int, *,
              window: tuple[float, float] = (0.7, 1.0),
              regularization: float = 1e-5) -> TemplateKernel:
        """Kernel from the band's PSF and the sharp PSF (on the sharp grid) for the
        sharp-to-blurred pixel map ``jac``."""
        target = band_lattice_psf(psf, m)
        n = target.shape[0]
        source = sharp_lattice_psf(sharp, jac, m, n)
        if not source.sum() > 0.5:
            raise PSFError("hires_psf: less than half of it falls inside the band PSF's "
                           "box; is its pixel scale right?")
        k = matching_kernel(source, target, window=window, regularization=regularization)
        # lattice samples of the response sum to m^2 per unit flux (sampled, not binned)
        obj = cls(k * (target.sum() / source.sum()), int(m))
        object.__setattr__(obj, "_spectra", {})
        object.__setattr__(obj, "_point_spectra", {})
        object.__setattr__(obj, "_source", source / source.sum())
        return obj

    def spectrum(self, n: int) -> np.ndarray:
        """``rfft2`` of the kernel wrapped onto an ``n x n`` periodic lattice (cached)."""
        cache = self._spectra  # type: ignore[attr-defined]
        if n not in cache:
            cache[n] = np.fft.rfft2(_wrap(self.array, n))
        return cache[n]

    def point_spectrum(self, n: int) -> np.ndarray:
        """``rfft2`` of what a sharp point source of unit flux becomes: the sharp PSF
        as deposited on the lattice, convolved with the kernel (``n x n``, periodic,
        centred on lattice point 0; cached)."""
        cache = self._point_spectra  # type: ignore[attr-defined]
        if n not in cache:
            src = self._source  # type: ignore[attr-defined]
            if src.shape[0] > n:  # only the centre fits: the rest wraps harmlessly far out
                o = (src.shape[0] - n) // 2 + 1
                src = src[o:o + n - 1, o:o + n - 1]
            cache[n] = np.fft.rfft2(_wrap(src, n)) * self.spectrum(n)
        return cache[n]


def _wrap(arr: np.ndarray, n: int) -> np.ndarray:
    """A centred odd square wrapped onto an ``n x n`` periodic lattice (centre at 0)."""
    kk = arr.shape[0]
    h = kk // 2
    wrapped = np.zeros((n, n))
    idx = np.mod(np.arange(kk) - h, n)
    np.add.at(wrapped, (idx[:, None], idx[None, :]), arr)
    return wrapped
