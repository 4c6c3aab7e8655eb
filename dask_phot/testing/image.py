"""One simulated image: point sources and galaxies, sky, Gaussian noise and masked pixels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from dask_phot.psf import OversampledPSF, PixelPSF
from dask_phot.testing.fourier_truth import FourierTruth
from dask_phot.testing.galaxies import FineKernel, render_fine
from dask_phot.testing.noise import mask_map
from dask_phot.testing.render import (
    FinePRF,
    GaussianPRF,
    PRFModel,
    Renderer,
    prf_model,
    render_model,
)

if TYPE_CHECKING:
    from astropy.wcs import WCS

__all__ = ["SimulatedImage", "simulate_image"]

RNGLike = int | np.random.SeedSequence | np.random.Generator | None


@dataclass(eq=False)
class SimulatedImage:
    """A simulated image and everything needed to check a measurement on it.

    Attributes
    ----------
    data : ndarray
        ``model + sky + noise``; NaN where masked.
    sigma : ndarray
        Per-pixel noise standard deviation (image units); NaN where masked.
    weight : ndarray
        Inverse variance ``1 / sigma**2``; 0 where masked.
    model : ndarray
        Noise-free image of the sources (no sky).
    sky : float or ndarray
        Sky level added to ``data`` (a map when it has a gradient).
    psf : PixelPSF or OversampledPSF
        The band's PSF (on this image's pixel grid, or finer).
    x, y : ndarray
        True 0-based pixel positions (column, row) of the sources, in input order
        (for a field: the priors' order; sources off the image are included).
    flux : ndarray
        True source fluxes in image units x pixel (``flux_uJy / to_ujy``).
    wcs : astropy.wcs.WCS or None
        Celestial WCS (None for a bare pixel grid).
    band : str
        Band name.
    to_ujy : float
        MicroJansky per (image unit x pixel).
    unit : str
        Image unit (FITS ``BUNIT``).
    shapes : dict of str to ndarray or None
        The sources' shapes on this image's grid (``r_e`` pixels, ``q``,
        ``theta`` degrees from +x, ``n``), None when all are point sources.
    """

    data: np.ndarray
    sigma: np.ndarray
    weight: np.ndarray
    model: np.ndarray
    sky: float | np.ndarray
    psf: PixelPSF | OversampledPSF
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    wcs: WCS | None = None
    band: str = ""
    to_ujy: float = 1.0
    unit: str = ""
    meta: dict[str, object] = field(default_factory=dict)
    shapes: dict[str, np.ndarray] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(ny, nx)``."""
        ny, nx = self.data.shape
        return int(ny), int(nx)

    @property
    def mask(self) -> np.ndarray:
        """Boolean map, True where the pixel is masked (weight 0)."""
        return self.weight == 0

    @property
    def flux_ujy(self) -> np.ndarray:
        """True source fluxes in microJansky."""
        return self.flux * self.to_ujy


def _sigma_map(sigma: float | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(sigma, dtype=np.float64), shape).copy()
    if not np.all(arr > 0):
        raise ValueError("sigma must be > 0 everywhere (mask pixels with mask_fraction)")
    return arr


def _sky_map(sky: float | np.ndarray, shape: tuple[int, int]) -> float | np.ndarray:
    if np.ndim(sky) == 0:
        return float(sky)
    arr = np.asarray(sky, dtype=np.float64)
    if arr.shape != tuple(shape):
        raise ValueError(f"sky map has shape {arr.shape}, image has {tuple(shape)}")
    return arr


def simulate_image(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    psf: PixelPSF | GaussianPRF | OversampledPSF,
    *,
    seed: RNGLike,
    shapes: dict[str, np.ndarray] | None = None,
    truth_oversampling: int | None = None,
    sigma: float | np.ndarray = 1.0,
    sky: float | np.ndarray = 0.0,
    mask_fraction: float = 0.0,
    renderer: Renderer = "auto",
    wcs: WCS | None = None,
    band: str = "",
    to_ujy: float = 1.0,
    unit: str = "",
) -> SimulatedImage:
    """Simulate point sources and galaxies on a pixel grid.

    Parameters
    ----------
    shape : (int, int)
        Image shape ``(ny, nx)``.
    x, y : array_like
        0-based column and row of each source (pixel centres at integers).
    flux : array_like
        Total flux of each source in image units x pixel.
    psf : PixelPSF, GaussianPRF or OversampledPSF
        The PSF; a :class:`GaussianPRF` is rendered exactly and recorded as its
        :class:`~dask_phot.psf.PixelPSF`. Through an oversampled PSF, point sources
        are rendered from its fine pixel response and galaxies exactly in Fourier
        space (:mod:`dask_phot.testing.fourier_truth`).
    seed : int, SeedSequence, Generator or None
        Randomness of the noise and the mask (see :func:`numpy.random.default_rng`).
    shapes : dict, optional
        Sersic shapes on this grid: ``r_e`` (pixels; 0 for a point source),
        ``q``, ``theta`` (degrees from +x), ``n``; rendered on a fine grid
        through the PSF, independently of the engine.
    truth_oversampling : int, optional
        Galaxies through an oversampled PSF drawn instead on a real-space canvas
        of at most this many fine pixels per image pixel
        (:func:`~dask_phot.testing.galaxies.render_fine`; the PSF binned to it):
        1e-4 to 1e-3 off in flux for compact galaxies. Default (None): exact.
    sigma : float or ndarray
        Per-pixel Gaussian noise (scalar or ``shape`` map), image units.
    sky : float or ndarray
        Sky background added to the data.
    mask_fraction : float
        Fraction of pixels masked (NaN data, weight 0) in discs and bad columns.
    renderer : {"auto", "spline", "gaussian"}
        See :func:`~dask_phot.testing.render.prf_model`.
    wcs, band, to_ujy, unit
        Recorded on the result.

    Returns
    -------
    SimulatedImage

    Examples
    --------
    >>> from dask_phot.psf import gaussian_psf
    >>> im = simulate_image((15, 12), [5.0], [7.0], [100.0], gaussian_psf(2.0), seed=0)
    >>> tuple(int(v) for v in np.unravel_index(np.argmax(im.model), im.shape))
    (7, 5)
    >>> round(float(im.model.sum()), 6)
    100.0
    """
    shape = (int(shape[0]), int(shape[1]))
    if shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    x, y, flux = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x, y, flux))
    sigma_map = _sigma_map(sigma, shape)
    sky_map = _sky_map(sky, shape)
    rng = np.random.default_rng(seed)
    model, pixel_psf = _render(shape, x, y, flux, psf, shapes, renderer, truth_oversampling)
    data = model + sky_map + sigma_map * rng.standard_normal(shape)
    weight = 1.0 / np.square(sigma_map)
    if mask_fraction > 0:
        bad = mask_map(shape, mask_fraction, rng)
        data[bad] = np.nan
        sigma_map[bad] = np.nan
        weight[bad] = 0.0
    return SimulatedImage(
        data=data, sigma=sigma_map, weight=weight, model=model, sky=sky_map, psf=pixel_psf,
        x=x, y=y, flux=flux, wcs=wcs, band=band, to_ujy=float(to_ujy), unit=unit,
        shapes=shapes,
    )


def _render(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray,
            psf: PixelPSF | GaussianPRF | OversampledPSF, shapes: dict[str, np.ndarray] | None,
            renderer: Renderer, max_s: int | None = None
            ) -> tuple[np.ndarray, PixelPSF | OversampledPSF]:
    """The noise-free image and the PSF to record."""
    ext = np.zeros(x.size, dtype=bool) if shapes is None else \
        np.nan_to_num(np.asarray(shapes["r_e"], dtype=np.float64)) > 0
    if isinstance(psf, OversampledPSF):
        # points from a spline on the fine pixel response (their stamps not renormalised:
        # the wings beyond the stamp are the PSF file's own edge), galaxies exactly in
        # Fourier space (or, with max_s, on a fine canvas)
        model = render_model(shape, x, y, np.where(ext, 0.0, flux), FinePRF(psf),
                             normalise=False)
        if ext.any() and max_s is None:
            model += FourierTruth(psf).render(shape, x, y, flux, shapes)
        elif ext.any():
            model += render_fine(shape, x, y, flux, FineKernel.from_psf(psf, max_s=max_s),
                                 shapes, only_extended=True)
        return model, psf
    if isinstance(psf, GaussianPRF):
        prf: PRFModel = psf
        pixel_psf = psf.pixel_psf()
    else:
        prf, pixel_psf = prf_model(psf, renderer), psf
    model = render_model(shape, x, y, np.where(ext, 0.0, flux), prf, norm=pixel_psf.sum)
    if ext.any():
        model += render_fine(shape, x, y, flux, FineKernel.from_psf(pixel_psf), shapes,
                             only_extended=True)
    return model, pixel_psf
