"""Noise-free images of galaxies and point sources on a fine grid, independent of the engine.

The engine renders a galaxy from the Fourier transform of its profile
(:mod:`dask_phot.models.render`). This truth is made another way, in real
space, the way the issue's reference images are made; the simulator draws
galaxies this way through PSFs on the image grid, and through oversampled PSFs
when asked for a quicker truth (``truth_oversampling``; by default they are
drawn exactly, :mod:`dask_phot.testing.fourier_truth`: this canvas's pixel
totals alias a compact galaxy's light, 1e-4 to 2e-4 of its flux and up to 1e-2
of the peak pixel for cuspy n = 4 galaxies of r_e 0.1-0.3"). Every source is
laid on a canvas ``s`` times finer than the image (a Sersic galaxy's light in
each fine pixel, from sub-samples, more of them near its centre; a point
source's, spread over the nearest fine pixels by Lanczos-3 weights integrated
over them), the canvas is convolved with the fine PSF
(:func:`scipy.signal.oaconvolve`; the PSF divided in Fourier space by the fine
pixel's box, which a canvas of pixel integrals otherwise adds: 0.05% of a
compact galaxy's fitted flux on IRAC's 0.1" grid, 0.1% on 0.2"), and the result
is summed over the ``s x s`` fine pixels of each image pixel (an optical PSF)
or sampled at the image pixels' centres (a pixel response that already
includes the detector pixel, e.g. a pixel-grid PRF interpolated onto the fine
grid). The image is made in chunks, each with a margin of half the PSF, so
the PSF's far wings are included.

A galaxy is laid out to the radius holding all but 1e-5 of its light, or
to :data:`LAYOUT_PIXELS` image pixels if that is smaller (but never short of
the radius holding 99.9%); its flux is the profile's total flux. Cutting at
99.9% instead left 0.1% of a compact exponential galaxy's flux out of the
image, inside the PSF's core: a fit of the whole profile then measured it
0.1% low, many sigma at the S/N of the brightest sources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft
from scipy import signal, special

from dask_phot.models.sersic import radius_fraction, sersic_b
from dask_phot.testing.prf import centred, upsampled_prf

__all__ = ["LAYOUT_PIXELS", "FineKernel", "layout_radius", "render_fine", "sersic_stamp",
           "upsampled_prf"]

#: Largest radius (image pixels) out to which a galaxy's last 0.1% of light is laid out.
LAYOUT_PIXELS = 64.0


def layout_radius(r_e: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Radius (image pixels) out to which galaxies are rendered: the one holding
    all but 1e-5 of the light, at most :data:`LAYOUT_PIXELS`, at least the 99.9% one.

    ``r_e`` in image pixels; ``n`` is clipped to the Sersic indices 0.5-6.

    Examples
    --------
    >>> round(float(layout_radius(np.array([0.5]), np.array([1.0]))[0]), 1)
    4.2
    >>> float(layout_radius(np.array([10.0]), np.array([4.0]))[0]) > 64.0
    True
    """
    r_e = np.asarray(r_e, dtype=np.float64)
    n = np.clip(np.asarray(n, dtype=np.float64), 0.5, 6.0)
    full = r_e * radius_fraction(n, 1.0 - 1e-5)
    most = r_e * radius_fraction(n, 0.999)
    return np.maximum(np.minimum(full, LAYOUT_PIXELS), most)


@dataclass(frozen=True)
class FineKernel:
    """A PSF on a grid ``s`` times finer than the image.

    Attributes
    ----------
    array : ndarray
        The fine PSF, unit sum, odd-sized, centred on its middle pixel.
    s : int
        Fine pixels per image pixel (odd values centre fine pixels on image pixels).
    integrated : bool
        True: the array already includes the detector pixel (image pixels are
        samples of the convolved canvas, scaled by ``s**2``); False: an optical
        PSF (image pixels sum their ``s x s`` fine pixels).
    native : float
        Side, in this grid's pixels, of the pixels whose light an optical PSF's
        values hold (< 1 when the PSF file's grid was decimated to this one).
    """

    array: np.ndarray
    s: int
    integrated: bool = False
    native: float = 1.0

    def canvas_kernel(self) -> np.ndarray:
        """The array divided by the transform of a pixel's box (``sinc``), so that the
        image is the sources convolved with the PSF, not with the PSF blurred by a box.

        The canvas holds fine-pixel *integrals* (the sources blurred by a fine
        pixel's box). A pixel response (``integrated``) is sampled at the image
        pixels' centres: that box is removed. An optical PSF is summed over the
        image pixel's fine pixels, a midpoint rule that itself removes one fine
        pixel's box (to second order): what is left is the box of the PSF file's
        own pixels, whose light its values hold (``native``), the same as the
        canvas's unless the file's grid was decimated.

        Examples
        --------
        >>> u = np.arange(-20, 21)
        >>> g = np.exp(-0.5 * (u[:, None] ** 2 + u[None, :] ** 2) / 3.0**2)
        >>> k = FineKernel(g / g.sum(), 5).canvas_kernel()
        >>> round(float(k.sum()), 12), bool(k[20, 20] > g[20, 20] / g.sum())
        (1.0, True)
        """
        n = self.array.shape[0]
        m = scipy.fft.next_fast_len(2 * n)
        f = np.fft.fftfreq(m)
        box = np.sinc(f if self.integrated else f * self.native)
        spec = scipy.fft.fft2(self.array, s=(m, m)) / (box[:, None] * box[None, :])
        shift = np.exp(2j * np.pi * f * (n // 2))  # the middle pixel to the origin and back
        out = scipy.fft.ifft2(spec * shift[:, None] * shift[None, :]).real
        out = np.roll(out, (n // 2, n // 2), axis=(0, 1))[:n, :n]
        return out / out.sum()

    @classmethod
    def from_psf(cls, psf: object, s: int = 5, max_s: int | None = None) -> FineKernel:
        """The PSF on a fine grid.

        An :class:`~dask_phot.psf.OversampledPSF` (``oversampling >= 3``) keeps its
        own grid, recentred on its middle pixel, or is binned to at most ``max_s``
        fine pixels per image pixel (a quicker truth, e.g. 0.2" for IRAC's 0.1"
        PSFs). A :class:`~dask_phot.psf.PixelPSF` (or an oversampled PSF with fewer
        than 3 fine pixels per image pixel) has its pixel response interpolated
        onto an ``s`` times finer grid by a bicubic spline.
        """
        from dask_phot.psf import OversampledPSF, PixelPSF

        if isinstance(psf, OversampledPSF) and psf.oversampling >= 3:
            arr = centred(psf.array, psf.center)
            f = psf.oversampling
            b = min((d for d in range(1, f + 1) if f % d == 0 and f // d <= (max_s or f)),
                    default=1)
            if b > 1:
                arr = _decimated(arr, b)
            return cls(arr, f // b, psf.integrated, native=1.0 / b)
        if isinstance(psf, OversampledPSF):  # a wide pixel-grid PRF (oversampling 1 or 2)
            if psf.oversampling != 1 or not psf.integrated:
                raise ValueError("FineKernel: an oversampled PSF needs >= 3 fine pixels per "
                                 "image pixel, or must be a pixel-grid PRF")
            fine = upsampled_prf(psf.array, psf.center, int(s))
            return cls(fine / fine.sum(), int(s), integrated=True)
        if isinstance(psf, PixelPSF):
            from dask_phot.testing.render import SplinePRF

            spline = SplinePRF(psf)
            h = psf.half * s + (s - 1) // 2
            off = np.arange(-h, h + 1) / s
            dy, dx = np.meshgrid(off, off, indexing="ij")
            fine = spline.evaluate(dx.ravel(), dy.ravel()).reshape(dx.shape)
            return cls(fine / fine.sum(), int(s), integrated=True)
        raise TypeError(f"FineKernel.from_psf: unsupported PSF {type(psf).__name__}")


def _decimated(arr: np.ndarray, b: int) -> np.ndarray:
    """Every ``b``-th sample of a PSF centred on its middle pixel (band-limited
    interpolation to the new grid's points, the centre on its middle point): the
    same PSF sampled ``b`` times more coarsely, not summed over blocks, so that a
    canvas of pixel-integrated sources convolved with it is integrated only once."""
    n = arr.shape[0]
    h = n // 2
    m = h // b
    out = arr[h - b * m : h + b * m + 1 : b, h - b * m : h + b * m + 1 : b]
    return out / out.sum()


def sersic_stamp(n: float, r_e: float, q: float, theta_deg: float, dx: float, dy: float,
                 radius: float) -> np.ndarray:
    """Flux of a unit-flux Sersic galaxy in each pixel of a square stamp.

    The galaxy sits at ``(dx, dy)`` from the stamp's middle pixel (units of
    the stamp's pixels, as ``r_e``) and is laid out to elliptical radius
    ``radius``. Pixels are sampled at their centres far from the galaxy's
    centre, 4-8 x 4-8 times within 8 pixels of it and 8-32 x 8-32 times within
    2.5 pixels (the more, the smaller ``r_e``), where cuspy profiles change
    fastest; the light a cusp hides from
    any sampling (the analytic enclosed light minus the sum) goes to the pixels
    at the centre.

    Examples
    --------
    >>> st = sersic_stamp(1.0, 3.0, 0.7, 30.0, 0.2, -0.1, 40.0)
    >>> round(float(st.sum()), 6) == round(enclosed_fraction(1.0, 40.0 / 3.0), 6)
    True
    """
    h = math.ceil(radius + 2)
    b = float(sersic_b(n))
    norm = 2.0 * math.pi * q * n * r_e**2 * math.gamma(2.0 * n) * b ** (-2.0 * n)
    t = math.radians(theta_deg)
    out = _sersic_pixels(h, b, 1.0 / n, r_e, q, math.cos(t), math.sin(t), dx, dy, radius)
    out /= norm
    missing = enclosed_fraction(n, radius / r_e) - out.sum()
    ix, iy = math.floor(dx), math.floor(dy)
    wx, wy = dx - ix, dy - iy
    for ddy, wgy in ((0, 1 - wy), (1, wy)):
        for ddx, wgx in ((0, 1 - wx), (1, wx)):
            out[h + iy + ddy, h + ix + ddx] += missing * wgy * wgx
    return out


@numba.njit(cache=True)
def _sersic_pixels(h: int, b: float, inv_n: float, r_e: float, q: float, c: float, s: float,
                   dx: float, dy: float, radius: float) -> np.ndarray:
    """Pixel means of ``exp(-b (r / r_e)^(1/n))`` with adaptive sub-sampling."""
    k = 2 * h + 1
    out = np.zeros((k, k))
    for r in range(k):
        for col in range(k):
            u0 = col - h - dx
            v0 = r - h - dy
            d = max(abs(u0), abs(v0))
            # finer where the profile changes within a pixel: near the centre of a small galaxy
            if d <= 2.5:
                sub = 32 if r_e < 1.0 else (16 if r_e < 4.0 else 8)
            elif d <= 8.5:
                sub = 8 if r_e < 4.0 else 4
            else:
                sub = 1
            acc = 0.0
            for a in range(sub):
                v = v0 + (a + 0.5) / sub - 0.5
                for bb in range(sub):
                    u = u0 + (bb + 0.5) / sub - 0.5
                    xp = c * u + s * v
                    yp = -s * u + c * v
                    rr = math.sqrt(xp * xp + (yp / q) ** 2)
                    if rr <= radius:
                        acc += math.exp(-b * (rr / r_e) ** inv_n)
            out[r, col] = acc / (sub * sub)
    return out


def _deposit(canvas: np.ndarray, fx: float, fy: float, flux: float, shape: np.ndarray | None,
             s: int) -> None:
    """Add one source at fine position ``(fx, fy)``; ``shape`` = (r_e, q, theta, n) in
    fine pixels, or None for a point source."""
    ny, nx = canvas.shape
    if shape is None:  # a band-limited point's light in each fine pixel (Lanczos-3)
        ix, iy = round(fx), round(fy)
        wx, wy = _lanczos3_box(fx - ix), _lanczos3_box(fy - iy)
        ys, xs = slice(max(iy - 3, 0), min(iy + 4, ny)), slice(max(ix - 3, 0), min(ix + 4, nx))
        canvas[ys, xs] += flux * np.outer(wy[ys.start - iy + 3 : ys.stop - iy + 3],
                                          wx[xs.start - ix + 3 : xs.stop - ix + 3])
        return
    r_e, q, theta, n = shape
    radius = min(float(layout_radius(np.array([r_e / s]), np.array([n]))[0]) * s, 400.0 * s)
    cx, cy = round(fx), round(fy)
    st = sersic_stamp(n, r_e, q, theta, fx - cx, fy - cy, radius)
    h = st.shape[0] // 2
    y0, x0 = cy - h, cx - h
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + st.shape[0], ny), min(x0 + st.shape[1], nx)
    if ys < ye and xs < xe:
        canvas[ys:ye, xs:xe] += flux * st[ys - y0 : ye - y0, xs - x0 : xe - x0]


def render_fine(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
                kernel: FineKernel, shapes: dict[str, np.ndarray] | None = None, *,
                chunk: int | None = None, only_extended: bool = False) -> np.ndarray:
    """Noise-free image of sources through a fine PSF (see the module docstring).

    Parameters
    ----------
    shape : (int, int)
        Image shape.
    x, y : ndarray
        0-based positions in image pixels.
    flux : ndarray
        Total fluxes (image units x pixel).
    kernel : FineKernel
        The PSF on the fine grid.
    shapes : dict, optional
        ``r_e`` (image pixels; 0 for a point), ``q``, ``theta`` (degrees from +x),
        ``n``: Sersic shapes; None: all point sources.
    chunk : int, optional
        Side of the image chunks convolved at once, image pixels; default 192, or
        twice the largest galaxy's reach (up to 512) so that large galaxies are
        laid out in few chunks.
    only_extended : bool
        Render only the galaxies (the caller renders the point sources).
    """
    ny, nx = (int(v) for v in shape)
    s = kernel.s
    x, y, flux = (np.asarray(v, dtype=np.float64) for v in (x, y, flux))
    r_e = np.zeros(x.size) if shapes is None else np.nan_to_num(np.asarray(shapes["r_e"], float))
    ext = r_e > 0
    sersic = np.asarray(shapes["n"] if shapes else np.ones(x.size), float)
    reach = np.where(ext, np.minimum(layout_radius(r_e, sersic), 400.0), 0.0) + 1.0
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & (flux != 0)
    if chunk is None:
        chunk = int(min(max(192, 2 * reach[keep].max(initial=0.0)), 512))
    if only_extended:
        keep &= ext
    kh = kernel.array.shape[0] // 2
    pad = math.ceil(kh / s) + 1
    psf = kernel.canvas_kernel()
    out = np.zeros((ny, nx))
    for cy0 in range(0, ny, chunk):
        for cx0 in range(0, nx, chunk):
            cy1, cx1 = min(cy0 + chunk, ny), min(cx0 + chunk, nx)
            lo_x, hi_x, lo_y, hi_y = cx0 - pad, cx1 + pad, cy0 - pad, cy1 + pad
            sel = np.flatnonzero(keep & (x + reach >= lo_x - 0.5) & (x - reach <= hi_x - 0.5)
                                 & (y + reach >= lo_y - 0.5) & (y - reach <= hi_y - 0.5))
            if sel.size == 0:
                continue
            canvas = np.zeros(((hi_y - lo_y) * s, (hi_x - lo_x) * s))
            for i in sel:
                # fine pixel f covers image coordinate lo + (f + 0.5) / s - 0.5
                fx = (x[i] - lo_x + 0.5) * s - 0.5
                fy = (y[i] - lo_y + 0.5) * s - 0.5
                shp = None if not ext[i] else (r_e[i] * s, float(shapes["q"][i]),
                                               float(shapes["theta"][i]), float(shapes["n"][i]))
                _deposit(canvas, fx, fy, flux[i], shp, s)
            conv = signal.oaconvolve(canvas, psf, mode="same")
            img = _to_image(conv, s, kernel.integrated)
            out[cy0:cy1, cx0:cx1] += img[pad : pad + cy1 - cy0, pad : pad + cx1 - cx0]
    return out


def _to_image(conv: np.ndarray, s: int, integrated: bool) -> np.ndarray:
    """Image pixels from the convolved canvas: sums of ``s x s`` fine pixels, or the
    samples at the image pixels' centres (times ``s**2``) for a pixel response."""
    my, mx = conv.shape[0] // s, conv.shape[1] // s
    if integrated:
        c = s // 2
        if s % 2:
            return conv[c::s, c::s][:my, :mx] * s**2
        # even s: the image pixel's centre lies between fine pixels
        return 0.25 * s**2 * (conv[c - 1::s, c - 1::s][:my, :mx] + conv[c::s, c - 1::s][:my, :mx]
                              + conv[c - 1::s, c::s][:my, :mx] + conv[c::s, c::s][:my, :mx])
    return conv[: my * s, : mx * s].reshape(my, s, mx, s).sum(axis=(1, 3))


def _lanczos3_box(f: float, sub: int = 16) -> np.ndarray:
    """Light in the fine pixels at offsets -3..3 of a point at offset ``f`` (|f| <= 0.5):
    its Lanczos-3 interpolant integrated over each pixel (midpoint rule, ``sub`` points)."""
    t = (f - np.arange(-3, 4))[:, None] + ((np.arange(sub) + 0.5) / sub - 0.5)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(t == 0, 1.0, 3 * np.sin(np.pi * t) * np.sin(np.pi * t / 3) / (np.pi * t) ** 2)
    w = np.where(np.abs(t) < 3, w, 0.0).mean(axis=1)
    return w / w.sum()


def enclosed_fraction(n: float, x: float) -> float:
    """Fraction of a Sersic profile's light within ``x`` half-light radii."""
    return float(special.gammainc(2.0 * n, sersic_b(n) * x ** (1.0 / n)))
