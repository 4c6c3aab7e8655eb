"""Pixelized PSFs on a mosaic's pixel grid: validation, normalisation, resampling.

A :class:`PixelPSF` is a pixelized PSF (strictly a PRF: already integrated
over the detector pixel) sampled at a known pixel scale, odd-sized and
centred, with an explicit normalisation. It renders stamps at arbitrary
sub-pixel positions with the flux-conserving, separable Lanczos interpolation
of :mod:`dask_phot.psf.render`. :func:`resample_array` moves a PSF to another
pixel scale, conserving flux.

Pixel convention: 0-based, pixel centres at integers, ``x`` is the column and
``y`` the row (``image[y, x]``), as in numpy and ``astropy.wcs.world_to_pixel``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from dask_phot.psf.render import lanczos_stamps
from dask_phot.psf.transfer import Transfer, pixel_transfer

__all__ = ["Normalize", "PSFError", "PSFModel", "PixelPSF", "as_psf_array",
           "header_pixel_scale",
           "resample_array"]

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


def as_psf_array(array: np.ndarray, name: str) -> np.ndarray:
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
    >>> from dask_phot.psf import gaussian_psf
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
        arr = as_psf_array(self.array, self.name)
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
        object.__setattr__(self, "_transfers", {})

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
        pixel_centred: bool = False,
    ) -> PixelPSF:
        """Build a PSF from any array, trimming (around the peak) to ``size`` first.

        Even-sized arrays (GALEX's 120x120 PSFs, for instance) are accepted here
        only when ``size`` is given: the odd-sized box is cut around the peak. With
        ``pixel_centred`` (a PSF on a mosaic's pixel grid), the peak must then be
        centred on its pixel: a PSF centred between pixels, as the even-sized image
        of a symmetric PSF is, would be off by half a mosaic pixel and bias every
        flux (:data:`EVEN_PSF_CENTRE_TOLERANCE`).
        """
        arr = as_psf_array(array, name)
        if size is not None:
            shape = arr.shape
            arr = _trim_around_peak(arr, int(size), name)
            if pixel_centred and (shape[0] % 2 == 0 or shape[1] % 2 == 0):
                _check_peak_centred(arr, shape, name)
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
            pixel_scale = header_pixel_scale(header)
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
        >>> from dask_phot.psf import gaussian_psf
        >>> fine = gaussian_psf(20.0, size=121, pixel_scale=0.1)  # 2" FWHM at 0.1"/px
        >>> psf = PixelPSF.from_oversampled(fine.array, 0.1, 0.6, size=21)
        >>> psf.size, round(psf.sum, 6)
        (21, 1.0)
        >>> coarse = gaussian_psf(2.0 / 0.6, size=21)  # the same Gaussian made at 0.6"/px
        >>> bool(np.abs(psf.array - coarse.array).max() < 0.01 * coarse.array.max())
        True
        """
        arr = as_psf_array(array, name)
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


    def transfer(self, k: int) -> Transfer:
        """The PSF's transform on the Fourier grid of a ``k x k`` stamp (``k >= size``),
        for rendering extended sources (see :mod:`dask_phot.psf.transfer`); cached."""
        cache = self._transfers  # type: ignore[attr-defined]
        if k not in cache:
            cache[k] = pixel_transfer(self.array, k)
        return cache[k]


#: Largest offset (pixels) of an even-sized PSF's peak (a parabola through the brightest
#: pixel and its neighbours) from that pixel: beyond it the PSF is centred between pixels.
EVEN_PSF_CENTRE_TOLERANCE = 0.25


def _check_peak_centred(stamp: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    """An even-sized PSF cut around its peak is usable only when centred on that pixel."""
    c = stamp.shape[0] // 2
    row, col = stamp[c, c - 1:c + 2], stamp[c - 1:c + 2, c]

    def vertex(v: np.ndarray) -> float:
        curve = 2.0 * v[1] - v[0] - v[2]
        return float((v[2] - v[0]) / (2.0 * curve)) if curve > 0 else 0.0

    dx, dy = vertex(row), vertex(col)
    if max(abs(dx), abs(dy)) > EVEN_PSF_CENTRE_TOLERANCE:
        raise PSFError(
            f"{name}: the PSF is {shape[0]}x{shape[1]} pixels and centred between pixels "
            f"(its peak is {dx:+.2f}, {dy:+.2f} px from the brightest pixel): an even-sized "
            "PSF on the mosaic grid has no central pixel; give an odd-sized PSF, or the "
            "file's psf_pixel_scale if it is sampled finer than the mosaic")


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


def header_pixel_scale(header: Any) -> float | None:
    """A PSF file's pixel scale (arcsec/pixel) from its FITS header, or None.

    Read from ``PIXSCALE`` (or ``PIXSCAL``, ``PXSCAL``, ``PIXASEC``, ``SECPIX``,
    ``PSFSCALE``), else from the WCS ``CD1_1``/``CD1_2`` or ``CDELT1``.
    """
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
    arr = as_psf_array(array, "resample")
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
