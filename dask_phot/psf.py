"""Point-spread-function models on a mosaic's pixel grid.

A :class:`PixelPSF` is a pixelized PSF (strictly a PRF: already integrated
over the detector pixel) sampled at a known pixel scale, odd-sized and
centred, with an explicit normalisation. It renders stamps at arbitrary
sub-pixel positions with a flux-conserving, separable Lanczos-3 interpolation
(the same interpolant The Tractor uses). A :class:`PSFGrid` holds several
PSFs measured at different image positions and interpolates between them.

Pixel convention: 0-based, pixel centres at integers, ``x`` is the column and
``y`` the row (``image[y, x]``), as in numpy and ``astropy.wcs.world_to_pixel``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numba
import numpy as np
from scipy.special import erf

__all__ = [
    "PSFError",
    "PSFGrid",
    "PSFModel",
    "PixelPSF",
    "gaussian_psf",
    "moffat_psf",
]

Normalize = Literal["sum", "peak", "none"]

#: header keywords that may carry a PSF file's pixel scale, in arcsec/pixel
_SCALE_KEYS = ("PIXSCALE", "PIXSCAL", "PXSCAL", "PIXASEC", "SECPIX", "PSFSCALE")


class PSFError(ValueError):
    """A PSF that cannot be used as given (the message says why and how to fix it)."""


class PSFModel(Protocol):
    """What the engine needs from a PSF: a stamp size and stamps at positions."""

    size: int
    pixel_scale: float

    def stamps(
        self, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(stamps (n, k, k), x0 (n,), y0 (n,))``; see :meth:`PixelPSF.stamps`."""

    @property
    def fwhm(self) -> float:
        """Full width at half maximum in pixels."""


def _as_psf_array(array: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim != 2:
        raise PSFError(f"{name}: PSF must be a 2-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise PSFError(
            f"{name}: PSF has {int(bad.sum())} non-finite pixel(s) "
            f"(first at row/col {tuple(int(v) for v in np.argwhere(bad)[0])}); "
            "replace them (e.g. with 0) before use"
        )
    return arr


@dataclass(frozen=True, eq=False)
class PixelPSF:
    """A pixelized PSF sampled on a mosaic's pixel grid.

    Parameters
    ----------
    array : array_like
        2-D PSF image, odd size in both axes, centred on the middle pixel.
    pixel_scale : float
        Pixel scale the array is sampled at, in arcsec per pixel.
    normalize : {"sum", "peak", "none"}
        ``"sum"`` rescales to unit sum (the fluxes then are total fluxes),
        ``"peak"`` to unit peak, ``"none"`` keeps the values. Forced photometry
        needs unit sum: the engine refuses a PSF whose sum is not 1.
    name : str
        Label used in error messages (a file name, a band).
    center_tolerance : float
        Largest allowed distance, in pixels, of the peak and of the centroid of
        the central region from the middle pixel.
    interp_order : int
        Order ``a`` of the Lanczos kernel used to shift the PSF to sub-pixel
        positions (``2a + 1`` taps). The default 8 keeps interpolation errors
        near 1e-4 of the flux for a PSF of ~3 px FWHM; 3 is The Tractor's and the
        COSMOS notebook's choice (~0.3% errors at half-pixel offsets).

    Raises
    ------
    PSFError
        Non-2-D, even-sized, non-finite, all-zero or off-centre arrays.

    Examples
    --------
    >>> psf = gaussian_psf(3.0, size=15)
    >>> psf.size, round(psf.sum, 6)
    (15, 1.0)
    >>> stamps, x0, y0 = psf.stamps(np.array([20.3]), np.array([10.0]))
    >>> stamps.shape, int(x0[0]), int(y0[0])
    ((1, 15, 15), 13, 3)
    """

    array: np.ndarray
    pixel_scale: float = 1.0
    normalize: Normalize = "sum"
    name: str = "psf"
    center_tolerance: float = 1.0
    interp_order: int = 8

    def __post_init__(self) -> None:
        if not (isinstance(self.interp_order, int | np.integer) and 2 <= self.interp_order <= 12):
            raise PSFError(f"{self.name}: interp_order must be an integer 2..12, "
                           f"got {self.interp_order!r}")
        arr = _as_psf_array(self.array, self.name)
        ny, nx = arr.shape
        if ny % 2 == 0 or nx % 2 == 0 or ny != nx:
            raise PSFError(
                f"{self.name}: PSF must be square with an odd size so that its centre is a "
                f"pixel, got {arr.shape}; use PixelPSF.from_array(..., size=N) to trim it"
            )
        if not (self.pixel_scale > 0 and math.isfinite(self.pixel_scale)):
            raise PSFError(f"{self.name}: pixel_scale must be > 0, got {self.pixel_scale!r}")
        total = arr.sum()
        if self.normalize == "sum":
            if not total > 0:
                raise PSFError(f"{self.name}: PSF sum is {total}, cannot normalise to 1")
            arr = arr / total
        elif self.normalize == "peak":
            arr = arr / arr.max()
        elif self.normalize != "none":
            raise PSFError(f"{self.name}: normalize must be 'sum', 'peak' or 'none'")
        self._check_centred(arr)
        arr.setflags(write=False)
        object.__setattr__(self, "array", arr)

    def _check_centred(self, arr: np.ndarray) -> None:
        h = arr.shape[0] // 2
        peak = np.unravel_index(np.argmax(arr), arr.shape)
        r = max(1, min(h, round(2 * self.fwhm_of(arr))))
        core = np.clip(arr[h - r : h + r + 1, h - r : h + r + 1], 0, None)
        grid = np.arange(-r, r + 1)
        tot = core.sum()
        cy = (core.sum(axis=1) @ grid) / tot if tot > 0 else 0.0
        cx = (core.sum(axis=0) @ grid) / tot if tot > 0 else 0.0
        off = max(abs(peak[0] - h), abs(peak[1] - h), abs(cy), abs(cx))
        if off > self.center_tolerance:
            raise PSFError(
                f"{self.name}: PSF is not centred: peak at row/col {tuple(map(int, peak))}, "
                f"centroid offset ({cx:+.2f}, {cy:+.2f}) px from the middle pixel ({h}, {h}); "
                "recentre it or trim it around its peak with PixelPSF.from_array(..., size=N)"
            )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        pixel_scale: float,
        *,
        size: int | None = None,
        normalize: Normalize = "sum",
        name: str = "psf",
        center_tolerance: float = 1.0,
    ) -> PixelPSF:
        """Build a PSF from any array, trimming (around the peak) to ``size`` first.

        Even-sized arrays (GALEX's 120x120 PSFs, for instance) are accepted here
        only when ``size`` is given: the odd-sized box is cut around the peak.
        """
        arr = _as_psf_array(array, name)
        if size is not None:
            arr = _trim_around_peak(arr, int(size), name)
        return cls(arr, pixel_scale, normalize, name, center_tolerance)

    @classmethod
    def from_fits(
        cls,
        path: str | os.PathLike[str],
        *,
        pixel_scale: float | None = None,
        hdu: int | str = 0,
        size: int | None = None,
        normalize: Normalize = "sum",
        center_tolerance: float = 1.0,
    ) -> PixelPSF:
        """Read a PSF image from a FITS file.

        Parameters
        ----------
        path : path-like
            The FITS file.
        pixel_scale : float, optional
            Arcsec per pixel; read from the header (PIXSCALE, PXSCAL, PIXASEC,
            CD/CDELT) when not given. An error names the file when neither exists.
        hdu : int or str
            HDU holding the image.
        size : int, optional
            Trim to this odd size around the peak.
        normalize : {"sum", "peak", "none"}
            See :class:`PixelPSF`.
        center_tolerance : float
            See :class:`PixelPSF`.
        """
        from astropy.io import fits

        name = os.fspath(path)
        try:
            with fits.open(path) as hdul:
                data = hdul[hdu].data
                header = hdul[hdu].header
                if data is None:
                    raise PSFError(f"{name}: HDU {hdu!r} holds no image")
                data = np.array(data, dtype=np.float64)
        except OSError as exc:
            raise PSFError(f"{name}: cannot read PSF FITS file ({exc})") from exc
        if pixel_scale is None:
            pixel_scale = _header_pixel_scale(header)
            if pixel_scale is None:
                raise PSFError(
                    f"{name}: no pixel scale in the header ({', '.join(_SCALE_KEYS)}, CD, "
                    "CDELT); pass pixel_scale= in arcsec/pixel"
                )
        return cls.from_array(
            data, pixel_scale, size=size, normalize=normalize, name=os.path.basename(name),
            center_tolerance=center_tolerance,
        )

    @classmethod
    def from_oversampled(
        cls,
        array: np.ndarray,
        scale_in: float,
        scale_out: float,
        *,
        size: int | None = None,
        normalize: Normalize = "sum",
        name: str = "psf",
        center_tolerance: float = 1.0,
    ) -> PixelPSF:
        """Build a PSF on a mosaic grid from a PSF sampled at another pixel scale.

        The input's centre is its geometric centre ``((n - 1) / 2, (n - 1) / 2)``,
        so even-sized oversampled PSFs (drizzled 300x300 IRAC PSFs, say) work.
        A finer input (``scale_in < scale_out``) is integrated over the output
        pixels with :func:`resample_array` (flux conserving); a coarser one is
        interpolated with a cubic spline and scaled by the pixel-area ratio (as
        legacypipe upsamples the 5.5"/px unWISE W4 model onto 2.75" coadds).

        Parameters
        ----------
        array : array_like
            2-D PSF image, any size.
        scale_in, scale_out : float
            Pixel scales of the input and of the output (same units, > 0).
        size : int, optional
            Odd output size; by default the smallest odd size covering the input.
        normalize, name, center_tolerance
            See :class:`PixelPSF`; the centring check is made in output pixels.

        Examples
        --------
        >>> fine = gaussian_psf(20.0, size=121, pixel_scale=0.1)  # 2" FWHM at 0.1"/px
        >>> psf = PixelPSF.from_oversampled(fine.array, 0.1, 0.6, size=21)
        >>> psf.size, round(psf.sum, 6)
        (21, 1.0)
        >>> coarse = gaussian_psf(2.0 / 0.6, size=21)  # the same Gaussian made at 0.6"/px
        >>> bool(np.abs(psf.array - coarse.array).max() < 0.01 * coarse.array.max())
        True
        """
        arr = _as_psf_array(array, name)
        for label, value in (("scale_in", scale_in), ("scale_out", scale_out)):
            if not (value > 0 and math.isfinite(value)):
                raise PSFError(f"{name}: {label} must be > 0, got {value!r}")
        if size is not None and (int(size) % 2 == 0 or int(size) < 3):
            raise PSFError(f"{name}: output size must be odd and >= 3, got {size}")
        if scale_out >= scale_in:
            out = resample_array(arr, scale_in, scale_out, size=size)
        else:
            out = _interpolate_array(arr, scale_out / scale_in, size)
        return cls(out, scale_out, normalize, name, center_tolerance)

    # ------------------------------------------------------------------ properties
    @property
    def size(self) -> int:
        """Side of the square stamp, in pixels (odd)."""
        return int(self.array.shape[0])

    @property
    def half(self) -> int:
        """Half-width ``size // 2``: the stamp spans ``[c - half, c + half]``."""
        return self.size // 2

    @property
    def sum(self) -> float:
        """Sum of the PSF pixels (1 for a sum-normalised PSF)."""
        return float(self.array.sum())

    @property
    def fwhm(self) -> float:
        """Full width at half maximum, in pixels, from the area above half peak."""
        return self.fwhm_of(self.array)

    @staticmethod
    def fwhm_of(arr: np.ndarray) -> float:
        """FWHM (pixels) of a centred PSF array, from its area above half maximum.

        The array is bilinearly upsampled 8x so that well-sampled PSFs of a few
        pixels FWHM are measured to a few per cent.
        """
        from scipy.ndimage import zoom

        peak = arr.max()
        if not peak > 0:
            return float("nan")
        up = zoom(arr, 8, order=1)
        area = np.count_nonzero(up >= 0.5 * peak) / 64.0
        return float(2.0 * math.sqrt(area / math.pi))

    def check_normalized(self, rtol: float = 1e-3) -> None:
        """Raise :class:`PSFError` unless the PSF sums to 1 within ``rtol``."""
        if abs(self.sum - 1.0) > rtol:
            raise PSFError(
                f"{self.name}: PSF sums to {self.sum:.6g}, not 1: forced fluxes would be "
                "scaled by that factor; build it with normalize='sum'"
            )

    # ------------------------------------------------------------------ transforms
    def trimmed(self, size: int) -> PixelPSF:
        """Return the central ``size`` x ``size`` box (odd ``size``), renormalised as before."""
        return PixelPSF.from_array(
            self.array, self.pixel_scale, size=size,
            normalize=self.normalize, name=self.name, center_tolerance=self.center_tolerance,
        )

    def resampled(
        self, pixel_scale: float, *, size: int | None = None, normalize: Normalize = "sum"
    ) -> PixelPSF:
        """Resample onto a grid of another pixel scale, conserving flux.

        Each output pixel is the exact integral of the input (taken as constant
        over each of its pixels) over the output pixel's area, so an oversampled
        PSF becomes the PRF of the coarser mosaic pixels. See :func:`resample_array`.
        """
        out = resample_array(self.array, self.pixel_scale, pixel_scale, size=size)
        return PixelPSF(out, pixel_scale, normalize, self.name, self.center_tolerance)

    # ------------------------------------------------------------------ rendering
    def stamps(
        self, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render unit-flux stamps at sub-pixel positions.

        Parameters
        ----------
        x, y : ndarray
            0-based pixel positions (column, row) of the sources.

        Returns
        -------
        stamps : ndarray, shape (n, k, k)
            ``stamps[i]`` covers rows ``y0[i] .. y0[i]+k-1`` and columns
            ``x0[i] .. x0[i]+k-1`` of the image; each sums to :attr:`sum`.
        x0, y0 : ndarray of int64
            Column and row of each stamp's first pixel.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        cx = np.floor(x + 0.5)
        cy = np.floor(y + 0.5)
        base = self.array[None, :, :]
        idx = np.zeros(x.shape[0], dtype=np.int64)
        out = lanczos_stamps(base, idx, x - cx, y - cy, int(self.interp_order))
        return out, cx.astype(np.int64) - self.half, cy.astype(np.int64) - self.half


def _trim_around_peak(arr: np.ndarray, size: int, name: str) -> np.ndarray:
    if size % 2 == 0 or size < 3:
        raise PSFError(f"{name}: trim size must be odd and >= 3, got {size}")
    py, px = np.unravel_index(np.argmax(arr), arr.shape)
    h = size // 2
    out = np.zeros((size, size))
    y0, x0 = py - h, px - h
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + size, arr.shape[0]), min(x0 + size, arr.shape[1])
    out[ys - y0 : ye - y0, xs - x0 : xe - x0] = arr[ys:ye, xs:xe]
    return out


def _header_pixel_scale(header) -> float | None:
    for key in _SCALE_KEYS:
        if key in header and float(header[key]) > 0:
            return float(header[key])
    for key in ("CD1_1", "CDELT1"):
        if key in header and float(header[key]) != 0:
            if key == "CD1_1" and "CD1_2" in header:
                return float(math.hypot(header["CD1_1"], header["CD1_2"]) * 3600.0)
            return float(abs(header[key]) * 3600.0)
    return None


def _overlap_matrix(n_in: int, n_out: int, ratio: float) -> np.ndarray:
    """Overlap lengths (in input pixels) of output pixels with input pixels, centred."""
    c_in = (n_in - 1) / 2.0
    h = n_out // 2
    lo = c_in + (np.arange(n_out) - h - 0.5) * ratio
    hi = lo + ratio
    e0 = np.arange(n_in) - 0.5
    e1 = e0 + 1.0
    return np.clip(np.minimum(hi[:, None], e1[None, :]) - np.maximum(lo[:, None], e0[None, :]),
                   0.0, None)


def resample_array(
    array: np.ndarray, scale_in: float, scale_out: float, *, size: int | None = None
) -> np.ndarray:
    """Flux-conserving resampling of a centred PSF array to another pixel scale.

    Parameters
    ----------
    array : ndarray
        Input PSF, any size; its centre is the array's geometric centre
        ``((n - 1) / 2, (n - 1) / 2)`` (so even-sized oversampled PSFs work).
    scale_in, scale_out : float
        Input and output pixel scales (same units).
    size : int, optional
        Odd output size; by default the smallest odd size covering the input.

    Returns
    -------
    ndarray
        ``(size, size)`` array whose sum equals the input's sum when the output
        covers the input.

    Examples
    --------
    >>> a = np.ones((6, 6))
    >>> out = resample_array(a, 0.1, 0.3, size=3)
    >>> float(out.sum()), out.shape
    (36.0, (3, 3))
    """
    arr = _as_psf_array(array, "resample")
    ratio = scale_out / scale_in
    if size is None:
        size = math.ceil(max(arr.shape) / ratio)
        size += 1 - size % 2
    if size % 2 == 0:
        raise PSFError(f"resample: output size must be odd, got {size}")
    wy = _overlap_matrix(arr.shape[0], size, ratio)
    wx = _overlap_matrix(arr.shape[1], size, ratio)
    return wy @ arr @ wx.T


def _interpolate_array(arr: np.ndarray, ratio: float, size: int | None) -> np.ndarray:
    """Cubic-spline upsampling (``ratio`` = output/input pixel size < 1), centred."""
    from scipy.ndimage import map_coordinates

    if size is None:
        size = math.ceil(max(arr.shape) / ratio)
        size += 1 - size % 2
    offsets = (np.arange(size) - size // 2) * ratio
    yy, xx = np.meshgrid(
        (arr.shape[0] - 1) / 2.0 + offsets, (arr.shape[1] - 1) / 2.0 + offsets, indexing="ij"
    )
    out = map_coordinates(arr, [yy, xx], order=3, mode="constant", cval=0.0)
    return out * ratio**2


@numba.njit(cache=True, inline="always")
def _lanczos(t: float, a: int) -> float:
    if t == 0.0:
        return 1.0
    if abs(t) >= a:
        return 0.0
    pt = math.pi * t
    return a * math.sin(pt) * math.sin(pt / a) / (pt * pt)


@numba.njit(cache=True)
def _taps(frac: float, a: int, out: np.ndarray) -> None:
    # out[j] weights the input sample at offset (j - a) for an output shifted by ``frac``
    s = 0.0
    for j in range(2 * a + 1):
        w = _lanczos(float(j - a) + frac, a)
        out[j] = w
        s += w
    for j in range(2 * a + 1):
        out[j] /= s


@numba.njit(cache=True)
def _rotations(a: int) -> tuple[np.ndarray, np.ndarray]:
    """``cos(pi m / a), sin(pi m / a)`` for ``m = -a .. a`` (index ``m + a``), with
    the exact values at multiples of ``pi / 2``."""
    cm = np.empty(2 * a + 1)
    sm = np.empty(2 * a + 1)
    for j in range(2 * a + 1):
        m = j - a
        if m == 0:
            cm[j], sm[j] = 1.0, 0.0
        elif abs(m) == a:
            cm[j], sm[j] = -1.0, 0.0
        elif 2 * abs(m) == a:
            cm[j], sm[j] = 0.0, 1.0 if m > 0 else -1.0
        else:
            cm[j], sm[j] = math.cos(math.pi * m / a), math.sin(math.pi * m / a)
    return cm, sm


@numba.njit(cache=True)
def _taps_rot(frac: float, a: int, cm: np.ndarray, sm: np.ndarray, out: np.ndarray) -> None:
    """:func:`_taps` with three trigonometric calls instead of ``2 (2a + 1)``.

    At ``t = m + frac`` (``m = j - a``), ``sin(pi t) = (-1)^m sin(pi frac)`` and
    ``sin(pi t / a) = sin(th) cos(pi m / a) + cos(th) sin(pi m / a)`` with
    ``th = pi frac / a`` (tables ``cm, sm`` from :func:`_rotations`).
    """
    sf = math.sin(math.pi * frac)
    th = math.pi * frac / a
    st, ct = math.sin(th), math.cos(th)
    s = 0.0
    for j in range(2 * a + 1):
        m = j - a
        t = float(m) + frac
        if t == 0.0:
            w = 1.0
        elif abs(t) >= a:
            w = 0.0
        else:
            pt = math.pi * t
            s1 = sf if m % 2 == 0 else -sf
            s2 = st * cm[j] + ct * sm[j]
            w = a * s1 * s2 / (pt * pt)
        out[j] = w
        s += w
    for j in range(2 * a + 1):
        out[j] /= s


@numba.njit(cache=True)
def lanczos_stamps(
    bases: np.ndarray, idx: np.ndarray, dx: np.ndarray, dy: np.ndarray, order: int = 3
) -> np.ndarray:
    """Shift PSF stamps by sub-pixel offsets with separable Lanczos interpolation.

    ``out[i]`` is the PSF ``bases[idx[i]]`` evaluated at ``(c - dx[i], r - dy[i])``
    relative to the stamp centre, ``P(u) = sum_m P[m] L_a(u - m)`` with the
    Lanczos kernel of order ``a = order`` (``2a + 1`` taps), each 1-D kernel
    normalised to sum 1 and the stamp rescaled to the base's sum (flux conserving).
    """
    # Both passes are sums over the taps j = 0 .. 2a of whole k*k planes (long
    # contiguous loops that vectorise): the x pass adds tap-weighted copies of
    # the base shifted along rows (zero filled), the y pass adds tap-weighted
    # row-shifted copies of its result, read from a buffer with ``a`` zero rows
    # above and below. Zero-filled samples add exact zeros, so each pixel gets
    # the same sum, in the same order, as the direct tap loop.
    n = dx.shape[0]
    nb = bases.shape[0]
    k = bases.shape[1]
    kk = k * k
    nt = 2 * order + 1
    # allocated by numpy, which asks for huge pages: first-touch page faults on
    # numba's own allocation of a large output cost more than the rendering
    with numba.objmode(out="float64[:, :, ::1]"):
        out = np.empty((n, k, k))
    flat = out.reshape((n, kk))
    pad = np.zeros((k + 2 * order) * k)
    kx = np.zeros(nt)
    ky = np.zeros(nt)
    cm, sm = _rotations(order)
    # shifted copies of each base (built once per base when bases are shared,
    # per source otherwise) and each base's sum, the flux stamps are rescaled to
    shared = nb < n
    nstack = nb if shared else 1
    shifted = np.zeros((nstack, nt, kk))
    targets = np.zeros(nstack)
    if shared:
        for b in range(nb):
            targets[b] = _shift_stack(bases[b], order, shifted[b])
    for i in range(n):
        b = idx[i]
        if shared:
            stack = shifted[b]
            target = targets[b]
        else:
            stack = shifted[0]
            target = _shift_stack(bases[b], order, stack)
        _taps_rot(dx[i], order, cm, sm, kx)
        _taps_rot(dy[i], order, cm, sm, ky)
        # x pass: value at column c is P(c - dx) = sum_j kx[nt-1-j] * P[c - (j - order)]
        tmp = pad[order * k : order * k + kk]
        tmp[:] = 0.0
        for j in range(nt):
            w = kx[nt - 1 - j]
            sj = stack[j]
            for p in range(kk):
                tmp[p] += w * sj[p]
        # y pass: row r takes ky[nt-1-j] * tmp[r - (j - order)]
        o = flat[i]
        o[:] = 0.0
        for j in range(nt):
            w = ky[nt - 1 - j]
            src = pad[(2 * order - j) * k : (2 * order - j) * k + kk]
            for p in range(kk):
                o[p] += w * src[p]
        total = 0.0
        for p in range(kk):
            total += o[p]
        if total != 0.0:
            scale = target / total
            for p in range(kk):
                o[p] *= scale
    return out


@numba.njit(cache=True)
def _shift_stack(base: np.ndarray, order: int, stack: np.ndarray) -> float:
    """Fill ``stack[j]`` with ``base`` shifted by ``j - order`` columns (zero filled,
    flattened); return the base's row-major sum."""
    k = base.shape[0]
    total = 0.0
    for j in range(2 * order + 1):
        s = j - order
        sj = stack[j]
        for r in range(k):
            for c in range(k):
                cc = c - s
                sj[r * k + c] = base[r, cc] if 0 <= cc < k else 0.0
    for r in range(k):
        for c in range(k):
            total += base[r, c]
    return total


# ---------------------------------------------------------------------- analytic PSFs
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


# ---------------------------------------------------------------------- PSF grids
class PSFGrid:
    """PSFs measured at several image positions, interpolated in between.

    Inside the convex hull of the measurement positions the PSF is the
    barycentric (linear) interpolation of the three surrounding PSFs; outside
    it, the nearest PSF is used. Interpolated PSFs are renormalised to unit sum.

    Parameters
    ----------
    psfs : sequence of PixelPSF
        Same size and pixel scale, sum-normalised.
    x, y : array_like
        0-based pixel positions where each PSF applies.
    """

    def __init__(self, psfs: Sequence[PixelPSF], x: Sequence[float], y: Sequence[float]):
        if len(psfs) == 0 or len(psfs) != len(x) or len(x) != len(y):
            raise PSFError("PSFGrid needs as many positions as PSFs, and at least one")
        sizes = {p.size for p in psfs}
        scales = {round(p.pixel_scale, 9) for p in psfs}
        if len(sizes) != 1 or len(scales) != 1:
            raise PSFError(f"PSFGrid: PSFs differ in size {sizes} or pixel scale {scales}")
        for p in psfs:
            p.check_normalized()
        self.psfs = list(psfs)
        self.size = psfs[0].size
        self.half = self.size // 2
        self.pixel_scale = psfs[0].pixel_scale
        self._bases = np.stack([p.array for p in psfs])
        self.interp_order = int(psfs[0].interp_order)
        self._points = np.column_stack([np.asarray(x, float), np.asarray(y, float)])

    @property
    def fwhm(self) -> float:
        """Median FWHM of the grid's PSFs, in pixels."""
        return float(np.median([p.fwhm for p in self.psfs]))

    def weights(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(indices (n, 3), weights (n, 3))`` of the PSFs to blend at each position."""
        from scipy.spatial import Delaunay, cKDTree

        pts = np.column_stack([np.asarray(x, float), np.asarray(y, float)])
        n = len(pts)
        idx = np.zeros((n, 3), dtype=np.int64)
        w = np.zeros((n, 3))
        nearest = cKDTree(self._points).query(pts)[1] if n else np.zeros(0, int)
        idx[:, 0] = nearest
        w[:, 0] = 1.0
        if len(self._points) >= 3 and np.linalg.matrix_rank(
            self._points - self._points[0]
        ) == 2:
            tri = Delaunay(self._points)
            simplex = tri.find_simplex(pts)
            inside = simplex >= 0
            t = tri.transform[simplex[inside]]
            b = np.einsum("nij,nj->ni", t[:, :2], pts[inside] - t[:, 2])
            bary = np.column_stack([b, 1.0 - b.sum(axis=1)])
            idx[inside] = tri.simplices[simplex[inside]]
            w[inside] = bary
        return idx, w

    def at(self, x: float, y: float) -> PixelPSF:
        """The interpolated PSF at one position."""
        idx, w = self.weights(np.array([x]), np.array([y]))
        arr = np.tensordot(w[0], self._bases[idx[0]], axes=1)
        return PixelPSF(arr, self.pixel_scale, "sum", name=f"grid@({x:.1f},{y:.1f})")

    def stamps(
        self, x: np.ndarray, y: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Render unit-flux stamps with the PSF interpolated at each position."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        idx, w = self.weights(x, y)
        local = np.einsum("nk,nkij->nij", w, self._bases[idx])
        local /= local.sum(axis=(1, 2))[:, None, None]
        cx = np.floor(x + 0.5)
        cy = np.floor(y + 0.5)
        out = lanczos_stamps(local, np.arange(len(x)), x - cx, y - cy, self.interp_order)
        return out, cx.astype(np.int64) - self.half, cy.astype(np.int64) - self.half
