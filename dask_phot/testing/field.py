"""Seeded multi-band fields: a prior catalog and one image per band with a TAN WCS."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from astropy.wcs import WCS

from dask_phot.models.shapes import sky_to_pixel, wcs_jacobian
from dask_phot.psf import OversampledPSF, PixelPSF, gaussian_psf, moffat_psf
from dask_phot.testing._seeding import IMAGE, SeedLike, child_rng, root_entropy
from dask_phot.testing.image import SimulatedImage, simulate_image
from dask_phot.testing.noise import depth_map, pixel_sigma, sky_plane
from dask_phot.testing.render import Renderer
from dask_phot.testing.sources import COSMOS_CENTER, COSMOS_DENSITY, simulate_sources

__all__ = [
    "SimBand",
    "SimulatedField",
    "demo_bands",
    "field_wcs",
    "mjysr_to_ujy",
    "pixel_shapes",
    "simulate_field",
]

logger = logging.getLogger(__name__)

#: Square arcseconds per steradian.
ARCSEC2_PER_SR = 4.254517e10


def mjysr_to_ujy(pixel_scale: float) -> float:
    """MicroJansky per (MJy/sr x pixel) for square pixels of ``pixel_scale`` arcsec.

    Examples
    --------
    >>> round(mjysr_to_ujy(0.6), 4)
    8.4616
    """
    return 1e12 / ARCSEC2_PER_SR * pixel_scale**2


@dataclass(frozen=True, eq=False)
class SimBand:
    """Parameters of one simulated band (plain values, no preset lookup).

    Parameters
    ----------
    name : str
        Band name (``flux_true_<name>`` in the priors, file prefix).
    psf : PixelPSF or OversampledPSF
        The band's PSF; the image's pixel scale is ``psf.pixel_scale``.
    to_ujy : float
        MicroJansky per (image unit x pixel).
    depth_5sigma_ujy : float
        Point-source 5-sigma depth (median over the field), microJansky.
    sky : float
        Constant sky level, image units.
    unit : str
        Image unit (FITS ``BUNIT``).
    sky_gradient : float
        Peak-to-peak range of a plane added to the sky across the image, image units.
    renderer : {"auto", "spline", "gaussian"}
        How the truth is rendered (see :func:`~dask_phot.testing.render.prf_model`).
    truth_oversampling : int, optional
        Galaxies through an oversampled PSF drawn on a real-space canvas of this
        many fine pixels per image pixel instead of exactly (see
        :func:`~dask_phot.testing.simulate_image`).
    """

    name: str
    psf: PixelPSF | OversampledPSF
    to_ujy: float
    depth_5sigma_ujy: float
    sky: float = 0.0
    unit: str = ""
    sky_gradient: float = 0.0
    renderer: Renderer = "auto"
    truth_oversampling: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"SimBand name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.psf, PixelPSF | OversampledPSF):
            raise TypeError(f"SimBand {self.name}: psf must be a PixelPSF or OversampledPSF, "
                            f"got {self.psf!r}")
        for key in ("to_ujy", "depth_5sigma_ujy"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"SimBand {self.name}: {key} must be > 0, got {value!r}")

    @property
    def pixel_scale(self) -> float:
        """Arcsec per pixel (the PSF's)."""
        return float(self.psf.pixel_scale)

    @property
    def sigma_pix(self) -> float:
        """Median per-pixel noise, image units, from the 5-sigma depth."""
        return pixel_sigma(self.depth_5sigma_ujy, self.to_ujy, self.psf)


@dataclass(eq=False)
class SimulatedField:
    """A simulated field: the priors (with true fluxes) and one image per band.

    Attributes
    ----------
    priors : pandas.DataFrame
        ``source_id``, ``ra``, ``dec``, ``flux_ref``, ``flux_true_<band>``.
    images : dict of str to SimulatedImage
        By band name; ``images[b].x[i]`` is the pixel column of ``priors.iloc[i]``.
    bands : dict of str to SimBand
        The band parameters used.
    center : (float, float)
        Field centre (RA, Dec), degrees.
    area_arcmin2 : float
        Area of the square over which sources were placed.
    seed : int
        Root entropy (the seed, or the fresh entropy drawn for ``seed=None``).
    """

    priors: pd.DataFrame
    images: dict[str, SimulatedImage]
    bands: dict[str, SimBand] = field(default_factory=dict)
    center: tuple[float, float] = COSMOS_CENTER
    area_arcmin2: float = 0.0
    seed: int = 0


def field_wcs(
    center: tuple[float, float], pixel_scale: float, shape: tuple[int, int]
) -> WCS:
    """North-up TAN WCS centred on ``center`` (the image's middle pixel).

    Parameters
    ----------
    center : (float, float)
        (RA, Dec) of the tangent point, degrees.
    pixel_scale : float
        Arcsec per pixel.
    shape : (int, int)
        Image shape ``(ny, nx)``.
    """
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.crval = [float(center[0]), float(center[1])]
    w.wcs.crpix = [(nx + 1) / 2.0, (ny + 1) / 2.0]
    w.wcs.cdelt = [-pixel_scale / 3600.0, pixel_scale / 3600.0]
    w.wcs.radesys = "ICRS"
    w.wcs.equinox = 2000.0
    w.pixel_shape = (nx, ny)
    w.wcs.set()
    return w


def _band_image(
    band: SimBand,
    priors: pd.DataFrame,
    *,
    entropy: int,
    center: tuple[float, float],
    side_arcsec: float,
    pad_arcsec: float | None,
    depth_variation: float,
    mask_fraction: float,
) -> SimulatedImage:
    scale = band.pixel_scale
    pad = band.psf.half * scale if pad_arcsec is None else float(pad_arcsec)
    n = math.ceil((side_arcsec + 2.0 * pad) / scale)
    shape = (n, n)
    wcs = field_wcs(center, scale, shape)
    x, y = wcs.wcs_world2pix(priors["ra"].to_numpy(), priors["dec"].to_numpy(), 0)
    rng = child_rng(entropy, IMAGE, band.name)
    sigma0 = band.sigma_pix
    sigma = sigma0 * depth_map(shape, rng, variation=depth_variation)
    sky = sky_plane(shape, band.sky, band.sky_gradient, rng)
    flux = priors[f"flux_true_{band.name}"].to_numpy() / band.to_ujy
    image = simulate_image(
        shape, x, y, flux, band.psf, seed=rng, sigma=sigma, sky=sky,
        mask_fraction=mask_fraction, renderer=band.renderer, wcs=wcs, band=band.name,
        to_ujy=band.to_ujy, unit=band.unit, shapes=pixel_shapes(priors, wcs, x, y),
        truth_oversampling=band.truth_oversampling,
    )
    image.meta.update(depth_5sigma_ujy=band.depth_5sigma_ujy, sigma_pix=sigma0)
    return image


def pixel_shapes(priors: pd.DataFrame, wcs: WCS, x: np.ndarray, y: np.ndarray
                 ) -> dict[str, np.ndarray] | None:
    """The priors' shape columns (``r_e`` arcsec, ``q``, ``pa`` east of north, ``n``) on an
    image's pixel grid, or None when the priors have none."""
    if "r_e" not in priors.columns:
        return None
    r_arcsec = priors["r_e"].to_numpy(np.float64)
    r_e = np.zeros(r_arcsec.size)
    q = np.ones(r_arcsec.size)
    theta = np.zeros(r_arcsec.size)
    ext = np.flatnonzero(r_arcsec > 0)
    if ext.size:
        jac = wcs_jacobian(wcs, x[ext], y[ext])
        r_e[ext], q[ext], theta[ext] = sky_to_pixel(
            jac, r_arcsec[ext], priors["q"].to_numpy(np.float64)[ext],
            priors["pa"].to_numpy(np.float64)[ext])
    return {"r_e": r_e, "q": q, "theta": theta, "n": priors["n"].to_numpy(np.float64)}


def simulate_field(
    *,
    bands: Sequence[SimBand],
    seed: SeedLike,
    area_arcmin2: float = 25.0,
    density_per_deg2: float = COSMOS_DENSITY,
    center: tuple[float, float] = COSMOS_CENTER,
    clustering: float = 0.0,
    mask_fraction: float = 0.0,
    depth_variation: float = 0.3,
    pad_arcsec: float | None = None,
    flux_range_ujy: tuple[float, float] = (0.05, 2000.0),
    slope: float = 0.7,
    colors: Mapping[str, tuple[float, ...]] | None = None,
    galaxies: float = 0.0,
) -> SimulatedField:
    """Simulate priors and an image per band over a square field.

    Parameters
    ----------
    bands : sequence of SimBand
        The bands; each image has the band's pixel scale and a TAN WCS.
    seed : int or None
        Root seed. Each band's noise, depth map, sky and mask come from their own
        stream, keyed by the band's name.
    area_arcmin2 : float
        Area of the square over which sources are placed, arcmin².
    density_per_deg2, center, clustering, flux_range_ujy, slope, colors
        See :func:`~dask_phot.testing.sources.simulate_sources`.
    mask_fraction : float
        Fraction of each image's pixels masked (NaN data, weight 0).
    depth_variation : float
        Relative range of the smooth noise map: sigma varies by ``1 ± depth_variation``.
    pad_arcsec : float, optional
        Margin of each image beyond the source area; default half the PSF stamp.
    galaxies : float
        Fraction of Sersic galaxies among the sources (shape columns in the priors;
        see :func:`~dask_phot.testing.sources.simulate_sources`).

    Returns
    -------
    SimulatedField
    """
    bands = list(bands)
    names = [b.name for b in bands]
    if not bands or len(set(names)) != len(names):
        raise ValueError(f"bands must be a non-empty list with distinct names, got {names}")
    entropy = root_entropy(seed)
    priors = simulate_sources(
        area_arcmin2=area_arcmin2, bands=names, seed=entropy,
        density_per_deg2=density_per_deg2, center=center, clustering=clustering,
        flux_range_ujy=flux_range_ujy, slope=slope, colors=colors, galaxies=galaxies,
    )
    side_arcsec = math.sqrt(area_arcmin2) * 60.0
    images = {
        b.name: _band_image(
            b, priors, entropy=entropy, center=center, side_arcsec=side_arcsec,
            pad_arcsec=pad_arcsec, depth_variation=depth_variation, mask_fraction=mask_fraction,
        )
        for b in bands
    }
    logger.info(
        "simulated field: %d sources, %d band(s) %s over %.3g arcmin2",
        len(priors), len(bands), names, area_arcmin2,
    )
    return SimulatedField(
        priors=priors, images=images, bands={b.name: b for b in bands},
        center=(float(center[0]), float(center[1])), area_arcmin2=float(area_arcmin2),
        seed=entropy,
    )


def demo_bands() -> list[SimBand]:
    """Four bands with analytic PSFs, roughly like COSMOS IRAC ch1/ch2 and GALEX NUV/FUV.

    Needs no data files: IRAC-like bands use Moffat PSFs (FWHM 1.7"/1.8" at
    0.6"/px, MJy/sr), GALEX-like bands Gaussians (FWHM 5.3"/4.2" at 1.5"/px,
    counts/s). Depths and skies are only indicative.

    Examples
    --------
    >>> [b.name for b in demo_bands()]
    ['irac1', 'irac2', 'nuv', 'fuv']
    """
    irac = mjysr_to_ujy(0.6)
    return [
        SimBand("irac1", moffat_psf(1.7 / 0.6, 2.5, pixel_scale=0.6), irac, 0.3,
                sky=0.02, unit="MJy/sr"),
        SimBand("irac2", moffat_psf(1.8 / 0.6, 2.5, pixel_scale=0.6), irac, 0.35,
                sky=0.03, unit="MJy/sr"),
        SimBand("nuv", gaussian_psf(5.3 / 1.5, pixel_scale=1.5), 33.73, 0.5,
                sky=1e-3, unit="counts/s"),
        SimBand("fuv", gaussian_psf(4.2 / 1.5, pixel_scale=1.5), 107.6, 0.5,
                sky=1e-4, unit="counts/s"),
    ]
