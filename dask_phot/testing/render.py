"""Noise-free rendering of point sources, independent of :mod:`dask_phot.psf`.

The engine renders its models with :meth:`dask_phot.psf.PixelPSF.stamps`
(Lanczos-3 shifts). Rendering the simulated truth the same way would make the
engine's tests circular, so this module uses other interpolants:

* :class:`SplinePRF`: an interpolating bicubic spline
  (:class:`scipy.interpolate.RectBivariateSpline`) through the band's
  pixel-grid PSF. The PSF is a PRF (already integrated over a pixel), so the
  spline evaluated at ``pixel centre - source position`` is that pixel's value.
* :class:`GaussianPRF`: a circular Gaussian integrated exactly (``erf``) over
  each pixel at the source's true sub-pixel position.

Every stamp is ``k x k`` (``k`` the PSF size) around the pixel nearest the
source and is rescaled to sum to the PSF array's sum (1), so the image-unit
flux of a source is its total in the image unless the stamp leaves the image.

Pixel convention: 0-based, pixel centres at integers, ``x`` is the column and
``y`` the row (``image[y, x]``).
"""

from __future__ import annotations

import math
import re
from typing import Literal, NamedTuple, Protocol

import numpy as np
from scipy.interpolate import BSpline, RectBivariateSpline
from scipy.special import erf

from dask_phot.psf import OversampledPSF, PixelPSF, gaussian_psf
from dask_phot.testing.prf import upsampled_prf

__all__ = [
    "FinePRF",
    "GaussianPRF",
    "PRFModel",
    "SplinePRF",
    "prf_model",
    "render_model",
]

Renderer = Literal["auto", "spline", "gaussian"]

#: Fine pixels per image pixel of the band-limited form of a PRF on the image grid.
_UPSAMPLE = 5

_GAUSSIAN_NAME = re.compile(r"^gaussian\(fwhm=([0-9.eE+\-]+)\)$")


class PRFModel(Protocol):
    """A continuous pixel-response model that renders ``size x size`` stamps."""

    @property
    def size(self) -> int:
        """Odd stamp side, in pixels."""

    def stamps(self, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
        """Unnormalised stamps ``(n, size, size)`` for sources at fractional offsets.

        ``stamps[i, r, c]`` is the pixel at offset ``(c - h, r - h)`` (``h = size // 2``)
        from the pixel nearest source ``i``, whose position is ``(fx[i], fy[i])``
        relative to that pixel's centre (``-0.5 <= fx, fy < 0.5``).
        """


class SplinePRF:
    """Bicubic interpolating spline through a pixel-grid PRF.

    Parameters
    ----------
    psf : PixelPSF
        The PRF; it is padded with one ring of zeros so that every stamp pixel
        (offsets up to ``half + 0.5``) lies inside the spline's domain.

    Examples
    --------
    >>> prf = SplinePRF(gaussian_psf(2.0, size=11))
    >>> s = prf.stamps(np.zeros(1), np.zeros(1))
    >>> bool(np.allclose(s[0], prf.psf.array))
    True
    """

    def __init__(self, psf: PixelPSF) -> None:
        self.psf = psf
        padded = np.pad(np.asarray(psf.array, dtype=np.float64), 1)
        grid = np.arange(padded.shape[0], dtype=np.float64) - padded.shape[0] // 2
        self._spline = RectBivariateSpline(grid, grid, padded, kx=3, ky=3, s=0)
        # first spline axis is the row (dy), second the column (dx)
        self._ty, self._tx = self._spline.get_knots()
        self._coeffs = self._spline.get_coeffs().reshape(self._ty.size - 4, self._tx.size - 4)

    @property
    def size(self) -> int:
        """Odd stamp side, in pixels (the PSF's size)."""
        return self.psf.size

    def evaluate(self, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """PRF value of a pixel whose centre lies at ``(dx, dy)`` from the source."""
        return self._spline.ev(dy, dx)

    def stamps(self, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
        """Unnormalised stamps; see :meth:`PRFModel.stamps`.

        The spline is a tensor product ``sum_ab C[a, b] B_a(dy) B_b(dx)``, and a
        stamp's offsets form a grid, so each stamp is ``By @ C @ Bx.T``: the same
        values as :meth:`evaluate` on every pixel, several times faster.
        """
        offs = np.arange(self.size, dtype=np.float64) - self.size // 2
        by = self._basis(self._ty, offs[None, :] - np.asarray(fy, dtype=np.float64)[:, None])
        bx = self._basis(self._tx, offs[None, :] - np.asarray(fx, dtype=np.float64)[:, None])
        return (by @ self._coeffs) @ bx.transpose(0, 2, 1)

    @staticmethod
    def _basis(knots: np.ndarray, d: np.ndarray) -> np.ndarray:
        nb = knots.size - 4
        return BSpline(knots, np.eye(nb), 3)(d.ravel()).reshape(*d.shape, nb)


class GaussianPRF:
    """Circular Gaussian integrated exactly over square pixels.

    Parameters
    ----------
    fwhm : float
        Full width at half maximum, in pixels.
    size : int, optional
        Odd stamp side; default ``2 * ceil(3 * fwhm) + 1`` as :func:`~dask_phot.psf.gaussian_psf`.
    """

    def __init__(self, fwhm: float, size: int | None = None) -> None:
        if not fwhm > 0:
            raise ValueError(f"GaussianPRF: fwhm must be > 0, got {fwhm!r}")
        if size is None:
            size = 2 * math.ceil(3 * fwhm) + 1
        if size % 2 == 0 or size < 1:
            raise ValueError(f"GaussianPRF: size must be odd and positive, got {size!r}")
        self.fwhm = float(fwhm)
        self._size = int(size)
        self._scale = 1.0 / (fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0))) * math.sqrt(2.0))

    @property
    def size(self) -> int:
        """Odd stamp side, in pixels."""
        return self._size

    def profile(self, d: np.ndarray) -> np.ndarray:
        """1-D pixel integrals for pixel centres at offsets ``d`` from the source."""
        return 0.5 * (erf((d + 0.5) * self._scale) - erf((d - 0.5) * self._scale))

    def stamps(self, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
        """Unnormalised stamps; see :meth:`PRFModel.stamps`."""
        offs = np.arange(self.size, dtype=np.float64) - self.size // 2
        px = self.profile(offs[None, :] - np.asarray(fx, dtype=np.float64)[:, None])
        py = self.profile(offs[None, :] - np.asarray(fy, dtype=np.float64)[:, None])
        return py[:, :, None] * px[:, None, :]

    def pixel_psf(self, pixel_scale: float = 1.0) -> PixelPSF:
        """The same PSF as a :class:`~dask_phot.psf.PixelPSF` (centred, unit sum)."""
        return gaussian_psf(self.fwhm, size=self.size, pixel_scale=pixel_scale)


class SplineGrid(NamedTuple):
    """Cubic B-spline coefficients of a pixel response on a fine grid (see :class:`FinePRF`).

    Attributes
    ----------
    coef : numpy.ndarray
        Spline coefficients (prefiltered, zero-padded).
    cx, cy : float
        Fine-grid index of the source's centre.
    oversampling : int
        Fine pixels per image pixel.
    """

    coef: np.ndarray
    cx: float
    cy: float
    oversampling: int


class FinePRF:
    """The pixel response of an oversampled PSF, from a cubic spline on its fine grid.

    The engine renders an :class:`~dask_phot.psf.OversampledPSF` from its
    pixel response built in Fourier space and tabulated by phase; here the
    response is summed directly over the ``s x s`` fine pixels an image pixel
    covers (optical PSFs; an effective PRF is taken as it is; a PRF on the
    image's own grid is first interpolated onto a 5 times finer grid by
    zero-padding its spectrum, :func:`~dask_phot.testing.prf.upsampled_prf`)
    and the cubic B-spline through those sums
    (:func:`scipy.ndimage.map_coordinates`) is evaluated at each image pixel's
    offset from the source. The stamps cover
    ``size`` pixels (the PSF's wings included) and are not renormalised.

    Parameters
    ----------
    psf : OversampledPSF
        The PSF.
    size : int, optional
        Odd stamp side in image pixels; default the PSF's ``wing_size``.
    """

    def __init__(self, psf: OversampledPSF, size: int | None = None) -> None:
        from scipy.ndimage import spline_filter

        s = psf.oversampling
        arr = np.asarray(psf.array, dtype=np.float64)
        centre = psf.center
        if s == 1 and psf.integrated:  # no finer samples: the PRF's band-limited form
            s = _UPSAMPLE
            arr = upsampled_prf(arr, centre, s) / s**2
            centre = ((arr.shape[1] - 1) / 2.0, (arr.shape[0] - 1) / 2.0)
        if psf.integrated:
            resp, start = arr * s**2, 0.0
        else:  # the sum of fine pixels j .. j + s - 1, centred at j + (s - 1) / 2
            c = np.cumsum(np.pad(arr, ((1, 0), (1, 0))), axis=0).cumsum(axis=1)
            resp = c[s:, s:] - c[:-s, s:] - c[s:, :-s] + c[:-s, :-s]
            start = (s - 1) / 2.0
        pad = 4
        self._coef = spline_filter(np.pad(resp, pad), order=3, mode="constant")
        # fine grid index of the source's centre in the padded response
        self._cx = centre[0] - start + pad
        self._cy = centre[1] - start + pad
        self._s = s
        self._size = int(psf.wing_size if size is None else size)

    @property
    def size(self) -> int:
        """Odd stamp side, in image pixels."""
        return self._size

    @property
    def spline(self) -> SplineGrid:
        """The B-spline coefficients of the pixel response and where the source sits on them.

        For renderers that evaluate the same spline in compiled code
        (:func:`dask_phot.testing.survey.render_points`).
        """
        return SplineGrid(self._coef, self._cx, self._cy, self._s)

    def stamps(self, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
        """Stamps (see :meth:`PRFModel.stamps`), evaluated pixel by pixel."""
        from scipy.ndimage import map_coordinates

        offs = np.arange(self.size, dtype=np.float64) - self.size // 2
        fx = np.asarray(fx, dtype=np.float64)
        fy = np.asarray(fy, dtype=np.float64)
        uy = self._cy + self._s * (offs[None, :, None] - fy[:, None, None])
        ux = self._cx + self._s * (offs[None, None, :] - fx[:, None, None])
        uy, ux = np.broadcast_arrays(uy, ux)
        out = map_coordinates(self._coef, [uy.ravel(), ux.ravel()], order=3,
                              mode="constant", cval=0.0, prefilter=False)
        return out.reshape(uy.shape)


def _as_gaussian(psf: PixelPSF) -> GaussianPRF | None:
    """The exact Gaussian behind a PSF made by :func:`~dask_phot.psf.gaussian_psf`, if any."""
    m = _GAUSSIAN_NAME.match(psf.name)
    if m is None:
        return None
    try:
        fwhm = float(m.group(1))
    except ValueError:
        return None
    ref = gaussian_psf(fwhm, size=psf.size).array
    if not np.allclose(ref, psf.array, rtol=1e-5, atol=1e-7 * float(ref.max())):
        return None
    return GaussianPRF(fwhm, psf.size)


def prf_model(psf: PixelPSF | PRFModel, renderer: Renderer = "auto") -> PRFModel:
    """Choose the independent renderer for a PSF.

    Parameters
    ----------
    psf : PixelPSF or PRFModel
        A PRF model is returned as is.
    renderer : {"auto", "spline", "gaussian"}
        ``"auto"`` uses exact ``erf`` integration for PSFs built by
        :func:`~dask_phot.psf.gaussian_psf` and the bicubic spline otherwise;
        ``"gaussian"`` requires such a PSF.
    """
    if not isinstance(psf, PixelPSF):
        return psf
    if renderer not in ("auto", "spline", "gaussian"):
        raise ValueError(f"renderer must be 'auto', 'spline' or 'gaussian', got {renderer!r}")
    gauss = None if renderer == "spline" else _as_gaussian(psf)
    if gauss is not None:
        return gauss
    if renderer == "gaussian":
        raise ValueError(f"renderer='gaussian' needs a PSF from gaussian_psf(), got {psf.name!r}")
    return SplinePRF(psf)


def render_model(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    prf: PRFModel,
    *,
    norm: float = 1.0,
    chunk: int = 4096,
    normalise: bool = True,
) -> np.ndarray:
    """Noise-free image of point sources.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(ny, nx)``.
    x, y : ndarray
        0-based column and row of each source.
    flux : ndarray
        Total flux of each source in image units x pixel (the stamp's sum).
    prf : PRFModel
        Renderer (see :func:`prf_model`).
    norm : float
        Sum of each stamp per unit flux (the PSF array's sum, 1).
    normalise : bool
        Rescale each stamp to ``norm`` (False: keep the renderer's values, for a
        pixel response that is already per unit flux and whose stamp holds part
        of the light).
    chunk : int
        Sources rendered per vectorised batch (bounds the memory).

    Returns
    -------
    ndarray
        ``(ny, nx)`` float64 image; stamp pixels off the image are dropped.
    """
    ny, nx = (int(v) for v in shape)
    x, y, flux = (np.asarray(v, dtype=np.float64).ravel() for v in (x, y, flux))
    if not x.shape == y.shape == flux.shape:
        raise ValueError(f"x, y, flux differ in length: {x.shape}, {y.shape}, {flux.shape}")
    k = prf.size
    h = k // 2
    cx, cy = np.floor(x + 0.5), np.floor(y + 0.5)
    keep = (
        np.isfinite(cx) & np.isfinite(cy) & (flux != 0) & np.isfinite(flux)
        & (cx + h >= 0) & (cx - h < nx) & (cy + h >= 0) & (cy - h < ny)
    )
    idx = np.flatnonzero(keep)
    out = np.zeros(ny * nx)
    offs = np.arange(-h, h + 1, dtype=np.int64)
    for start in range(0, idx.size, chunk):
        sel = idx[start : start + chunk]
        stamps = prf.stamps(x[sel] - cx[sel], y[sel] - cy[sel])
        scale = norm / stamps.sum(axis=(1, 2)) if normalise else np.ones(sel.size)
        stamps *= (scale * flux[sel])[:, None, None]
        cols = cx[sel].astype(np.int64)[:, None] + offs
        rows = cy[sel].astype(np.int64)[:, None] + offs
        valid = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
        pix = rows[:, :, None] * nx + cols[:, None, :]
        out += np.bincount(pix[valid], weights=stamps[valid], minlength=ny * nx)
    return out.reshape(ny, nx)
