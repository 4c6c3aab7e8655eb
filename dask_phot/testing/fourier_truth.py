"""Exact truth images of Sersic galaxies through a finely sampled PSF, in Fourier space.

The real-space truth (:mod:`dask_phot.testing.galaxies`: a canvas of fine-pixel
light totals convolved with the fine PSF) aliases a compact galaxy's light:
the canvas's pixel totals are not band-limited, and their spectrum beyond the
fine grid's Nyquist frequency folds onto the frequencies the PSF passes. On
IRAC's 0.1" grid that put the brightest sources of the benchmark field 1e-4 to
2e-4 low in flux and their images 1e-3 to 1e-2 of the peak pixel off (cuspy
n = 4 galaxies of r_e ~ 0.1-0.3"), many sigma at S/N 1,000-20,000.

Here each galaxy's image is computed exactly instead: the product of

* the Sersic profile's transform at every frequency, from its own Hankel
  transform (FFTLog, 2^15 samples over 18 decades, for the galaxy's exact
  index, interpolated linearly between its 1,800 samples per decade of ``t``:
  within 1e-7; no table in ``n``),
* the PSF's transform (the DFT of its fine samples: their band-limited
  interpolation), times the detector pixel's response (an image pixel sums its
  ``s x s`` fine pixels; an effective PRF already includes it), and
* the phase ramp of the source's position,

inverted on a stamp's whole fine grid in double precision and sampled at the
image pixels' centres. Nothing is truncated but the stamp, which reaches the
radius holding all but 1e-5 of the galaxy's light (at most 64 pixels) plus the
PSF file's half-width; the little light beyond wraps into the stamp's edge.
This shares no code with the engine's renderer (:mod:`dask_phot.models`:
tabulated transforms, stamps folded at image resolution, a point stamp plus an
extension). ``tests/test_truth_accuracy.py`` holds it to GalSim.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft
from scipy import special

__all__ = ["FourierTruth", "sersic_transform"]

#: Largest radius (image pixels) of a galaxy's stamp beyond the PSF's half-width.
MAX_REACH = 64.0


@functools.lru_cache(maxsize=4096)
def sersic_transform(n: float) -> tuple[np.ndarray, np.ndarray]:
    """``(ln t, F_n(t))``: the transform of a unit-flux circular Sersic profile of index
    ``n`` at ``t`` cycles per half-light radius, sampled for ``1e-6 < t < 1e4`` (1 below,
    0 above).

    Examples
    --------
    >>> lnt, f = sersic_transform(0.5)  # a Gaussian: exp(-pi^2 t^2 / ln 2)
    >>> t = 0.3
    >>> bool(abs(np.interp(math.log(t), lnt, f) - math.exp(-math.pi**2 * t**2 / math.log(2)))
    ...      < 1e-7)
    True
    """
    b = float(special.gammaincinv(2.0 * n, 0.5))
    nlog, lo, hi = 2**15, -12.0, 6.0
    dln = (hi - lo) * math.log(10.0) / nlog
    j = np.arange(nlog) - (nlog - 1) / 2.0
    lnxc = 0.5 * (lo + hi) * math.log(10.0)
    r = np.exp(lnxc + j * dln)
    total = 2.0 * math.pi * n * math.gamma(2.0 * n) * b ** (-2.0 * n)
    offset = scipy.fft.fhtoffset(dln, mu=0.0, initial=0.0)
    lnk = offset - lnxc + j * dln
    # fht: A(k) = int a(r) J0(k r) k dr; with a = I(r) r, int I J0(k r) r dr = A / k
    hank = scipy.fft.fht(np.exp(-b * r ** (1.0 / n)) * r, dln, mu=0.0, offset=offset)
    lnt = lnk - math.log(2.0 * math.pi)
    keep = (lnt > math.log(1e-6)) & (lnt < math.log(1e4))
    return lnt[keep], 2.0 * math.pi * hank[keep] / np.exp(lnk[keep]) / total


def _transform(n: float, r_e: float, q: float, theta_deg: float,
               k2: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The elliptical profile's transform at the frequencies whose ``kx^2, kx ky, ky^2``
    (cycles per pixel) are ``k2``."""
    c, s = math.cos(math.radians(theta_deg)), math.sin(math.radians(theta_deg))
    r2 = r_e * r_e
    t2 = (r2 * (c * c + q * q * s * s)) * k2[0] + (2.0 * r2 * c * s * (1.0 - q * q)) * k2[1] \
        + (r2 * (s * s + q * q * c * c)) * k2[2]
    lnt, f = sersic_transform(round(float(n), 12))
    # the samples are uniform in ln t: linear interpolation by direct index
    with np.errstate(divide="ignore"):
        u = (0.5 * np.log(t2) - lnt[0]) * ((lnt.size - 1) / (lnt[-1] - lnt[0]))
    np.clip(u, 0.0, lnt.size - 1.000001, out=u)
    j = u.astype(np.int64)
    u -= j
    out = f[j] * (1.0 - u) + f[j + 1] * u
    out[t2 <= math.exp(2.0 * lnt[0])] = 1.0
    out[t2 >= math.exp(2.0 * lnt[-1])] = 0.0
    return out


class FourierTruth:
    """Renders galaxies exactly through an :class:`~dask_phot.psf.OversampledPSF`.

    Parameters
    ----------
    psf : OversampledPSF
        The band's PSF: an optical PSF on a fine grid, or an effective PRF (on
        a fine grid or the image's own).

    Examples
    --------
    >>> from dask_phot.psf import OversampledPSF, gaussian_psf
    >>> fine = gaussian_psf(15.0, size=121, pixel_scale=0.1).array
    >>> truth = FourierTruth(OversampledPSF(fine, 0.1, 0.5))
    >>> img = truth.render((60, 60), [30.2], [29.7], [2.0], {"r_e": [1.5], "q": [0.6],
    ...                    "theta": [20.0], "n": [1.0]})
    >>> round(float(img.sum()), 4)
    2.0
    """

    def __init__(self, psf: object) -> None:
        from dask_phot.psf import OversampledPSF

        if not isinstance(psf, OversampledPSF):
            raise TypeError(f"FourierTruth needs an OversampledPSF, got {type(psf).__name__}")
        self.psf = psf
        self.s = int(psf.oversampling)
        arr = np.asarray(psf.array, dtype=np.float64)
        self._arr = arr / arr.sum()
        self._half = math.ceil(max(arr.shape) / 2 / self.s) + 1
        self._spectra: dict[int, tuple[np.ndarray, ...]] = {}

    def _side(self, reach: float) -> int:
        """Odd stamp side covering ``reach`` and the PSF, whose fine grid FFTs fast."""
        side = 2 * math.ceil(reach + self._half) + 1
        while scipy.fft.next_fast_len(side * self.s) != side * self.s:
            side += 2
        return side

    def _psf_spectrum(self, side: int) -> tuple[np.ndarray, ...]:
        """The PSF's half spectrum on the fine grid of a ``side`` stamp, centred on its
        centre, times the pixel's response; the frequencies (cycles per pixel) and their
        products ``kx^2, kx ky, ky^2``."""
        if side not in self._spectra:
            s, m = self.s, side * self.s
            cx, cy = self.psf.center
            ix, iy = math.floor(cx), math.floor(cy)
            big = np.zeros((m, m))
            ny, nx = self._arr.shape
            big[:min(ny, m), :min(nx, m)] = self._arr[:m, :m]
            big = np.roll(big, (-iy, -ix), axis=(0, 1))
            ky = np.fft.fftfreq(m, 1.0 / m)[:, None] / side
            kx = np.fft.rfftfreq(m, 1.0 / m)[None, :] / side
            spec = scipy.fft.rfft2(big) * np.exp(2j * np.pi * ((cx - ix) / s * kx
                                                               + (cy - iy) / s * ky))
            if not self.psf.integrated:  # an image pixel sums its s x s fine pixels
                spec *= (np.sinc(kx) / np.sinc(kx / s)) * (np.sinc(ky) / np.sinc(ky / s))
            kx2, ky2 = np.broadcast_arrays(kx, ky)
            self._spectra[side] = (spec, kx2, ky2, (kx2 * kx2, kx2 * ky2, ky2 * ky2))
        return self._spectra[side]

    def stamp(self, dx: float, dy: float, shape: tuple[float, float, float, float],
              side: int) -> np.ndarray:
        """A unit-flux galaxy ``shape = (n, r_e, q, theta)`` (pixels, degrees) at ``(dx, dy)``
        from the middle pixel of a ``side x side`` stamp."""
        spec, kx, ky, k2 = self._psf_spectrum(side)
        n, r_e, q, theta = shape
        g = _transform(n, r_e, q, theta, k2)
        ramp = np.exp(-2j * np.pi * kx[:1] * dx) * np.exp(-2j * np.pi * ky[:, :1] * dy)
        # only the image pixels' centres (every s-th fine row) are needed: the rows'
        # spectrum folds onto the stamp's side (exact), then the inverse transforms
        m = side * self.s
        folded = (spec * g * ramp).reshape(self.s, side, -1).sum(axis=0)
        cols = scipy.fft.ifft(folded, axis=0)
        img = scipy.fft.irfft(cols, n=m, axis=1)[:, ::self.s] * self.s
        return np.roll(img, (side // 2, side // 2), axis=(0, 1))

    def render(self, shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
               shapes: dict[str, np.ndarray]) -> np.ndarray:
        """Noise-free image of the galaxies (``r_e > 0``) among the sources; points are
        left out. ``shapes`` as in :func:`~dask_phot.testing.simulate_image`."""
        from dask_phot.testing.galaxies import layout_radius

        ny, nx = (int(v) for v in shape)
        x, y, flux = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x, y, flux))
        r_e = np.nan_to_num(np.asarray(shapes["r_e"], dtype=np.float64))
        n = np.asarray(shapes["n"], dtype=np.float64)
        q = np.asarray(shapes["q"], dtype=np.float64)
        theta = np.asarray(shapes["theta"], dtype=np.float64)
        reach = np.minimum(layout_radius(np.maximum(r_e, 1e-9), n), MAX_REACH)
        out = np.zeros((ny, nx))
        ok = (r_e > 0) & np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & (flux != 0)
        for i in np.flatnonzero(ok & (x + reach + self._half >= 0) & (y + reach + self._half >= 0)
                                & (x - reach - self._half < nx) & (y - reach - self._half < ny)):
            side = self._side(float(reach[i]))
            cx, cy = math.floor(x[i] + 0.5), math.floor(y[i] + 0.5)
            st = self.stamp(x[i] - cx, y[i] - cy, (float(n[i]), float(r_e[i]), float(q[i]),
                                                   float(theta[i])), side)
            h = side // 2
            y0, x0 = cy - h, cx - h
            ys, xs, ye, xe = max(y0, 0), max(x0, 0), min(y0 + side, ny), min(x0 + side, nx)
            if ys < ye and xs < xe:
                out[ys:ye, xs:xe] += flux[i] * st[ys - y0:ye - y0, xs - x0:xe - x0]
        return out
