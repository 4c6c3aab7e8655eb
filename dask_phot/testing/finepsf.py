"""True PSFs rendered on a fine grid and binned into mosaic pixels, for ePSF validation.

:class:`LatticePRF` takes an optical PSF sampled finely (the golfir IRAC PSFs at
0.1", say), optionally convolves it with a kernel (an elliptical Gaussian and
an offset secondary lobe, so the truth is broader than the PSF and lopsided),
shifts it by Fourier phase ramps and sums it over each mosaic pixel. Source
positions live on a lattice of ``bin * lattice`` phases per pixel, so every
stamp is exact (no interpolation at all); :meth:`LatticePRF.snap` puts
positions on the lattice. None of this shares code with :mod:`dask_phot.psf`.

It follows the :class:`~dask_phot.testing.render.PRFModel` protocol, so
:func:`~dask_phot.testing.render_model` renders images with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dask_phot.testing.image import SimulatedImage

__all__ = ["LatticePRF", "Lobe", "simulate_lattice_field"]


@dataclass(frozen=True)
class Lobe:
    """An elliptical Gaussian component of a convolution kernel (angles in arcsec, degrees).

    Parameters
    ----------
    weight : float
        Fraction of the kernel's flux in this component.
    fwhm_major, fwhm_minor : float
        FWHM along the major and minor axes, arcsec (0 for a point).
    pa : float
        Position angle of the major axis from +x towards +y, degrees.
    dx, dy : float
        Offset of the component from the origin, arcsec.
    """

    weight: float
    fwhm_major: float
    fwhm_minor: float
    pa: float = 0.0
    dx: float = 0.0
    dy: float = 0.0


class LatticePRF:
    """Exact pixel response of a finely sampled PSF (optionally convolved) on a phase lattice.

    Parameters
    ----------
    fine : ndarray
        Optical PSF, square, sampled at ``fine_scale``; its origin is the array's
        geometric centre.
    fine_scale : float
        Arcsec per fine pixel.
    pixel_scale : float
        Mosaic arcsec per pixel; ``pixel_scale / fine_scale`` must be an integer ``bin``.
    kernel : sequence of Lobe, optional
        Components of the kernel the PSF is convolved with.
    lattice : int
        Sub-steps per fine pixel: positions are multiples of ``1 / (bin * lattice)`` pixel.

    Examples
    --------
    >>> g = np.exp(-0.5 * ((np.arange(60) - 29.5) ** 2)[:, None] / 36) * np.exp(
    ...     -0.5 * ((np.arange(60) - 29.5) ** 2)[None, :] / 36)
    >>> prf = LatticePRF(g / g.sum(), 0.1, 0.6, lattice=2)
    >>> s = prf.stamps(np.array([0.25]), np.array([-1 / 3]))
    >>> s.shape, round(float(s.sum()), 6)
    ((1, 15, 15), 1.0)
    """

    def __init__(self, fine: np.ndarray, fine_scale: float, pixel_scale: float, *,
                 kernel: tuple[Lobe, ...] = (), lattice: int = 4) -> None:
        ratio = pixel_scale / fine_scale
        self.bin = round(ratio)
        if abs(ratio - self.bin) > 1e-6 or self.bin < 1:
            raise ValueError(f"pixel_scale / fine_scale must be an integer, got {ratio}")
        self.lattice = int(lattice)
        self.steps = self.bin * self.lattice
        self.pixel_scale = float(pixel_scale)
        fine = np.asarray(fine, dtype=np.float64)
        n = fine.shape[0]
        pad = 2 * self.bin + (n % self.bin)
        size = (n + 2 * pad) // self.bin
        size += 1 - size % 2
        self._size = size
        nf = size * self.bin + 2 * self.bin
        big = np.zeros((nf, nf))
        o = (nf - n) // 2
        big[o:o + n, o:o + n] = fine
        # origin of the fine PSF in `big` coordinates (fine pixel units)
        self._origin = o + (n - 1) / 2.0
        ft = np.fft.fft2(big)
        k = np.fft.fftfreq(nf)
        self._ky, self._kx = np.meshgrid(k, k, indexing="ij")
        self._ft = ft * self._kernel_ft(kernel, fine_scale)
        self._nf = nf
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def _kernel_ft(self, kernel: tuple[Lobe, ...], scale: float) -> np.ndarray:
        if not kernel:
            return np.ones_like(self._kx, dtype=complex)
        total = np.zeros_like(self._kx, dtype=complex)
        wsum = sum(lobe.weight for lobe in kernel)
        for lobe in kernel:
            s1 = lobe.fwhm_major / scale / 2.3548200450309493
            s2 = lobe.fwhm_minor / scale / 2.3548200450309493
            c, s = math.cos(math.radians(lobe.pa)), math.sin(math.radians(lobe.pa))
            ku = c * self._kx + s * self._ky
            kv = -s * self._kx + c * self._ky
            g = np.exp(-2.0 * math.pi**2 * (s1**2 * ku**2 + s2**2 * kv**2))
            shift = np.exp(-2j * math.pi * (self._kx * lobe.dx + self._ky * lobe.dy) / scale)
            total += lobe.weight / wsum * g * shift
        return total

    @property
    def size(self) -> int:
        """Odd stamp side in mosaic pixels (covers the whole PSF)."""
        return self._size

    def snap(self, v: np.ndarray) -> np.ndarray:
        """Nearest lattice positions (multiples of ``1 / (bin * lattice)`` pixel)."""
        return np.round(np.asarray(v, dtype=np.float64) * self.steps) / self.steps

    def _stamp(self, qx: int, qy: int) -> np.ndarray:
        """Stamp for a source at ``(qx, qy) / steps`` pixels from the centre pixel."""
        key = (qx, qy)
        if key not in self._cache:
            # shift the PSF origin onto fine-pixel position (origin + bin*q/steps) of `big`,
            # re-centred so that the stamp's centre pixel spans fine pixels [c0, c0 + bin)
            sx = qx / self.lattice
            sy = qy / self.lattice
            c0 = (self._nf - self.bin) // 2
            tx = c0 + (self.bin - 1) / 2.0 + sx - self._origin
            ty = c0 + (self.bin - 1) / 2.0 + sy - self._origin
            ramp = np.exp(-2j * math.pi * (self._kx * tx + self._ky * ty))
            img = np.fft.ifft2(self._ft * ramp).real
            start = c0 - (self._size // 2) * self.bin
            img = img[start:start + self._size * self.bin, start:start + self._size * self.bin]
            self._cache[key] = img.reshape(self._size, self.bin, self._size, self.bin).sum(
                axis=(1, 3))
        return self._cache[key]

    def stamps(self, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
        """Stamps ``(n, size, size)`` of sources at ``(fx, fy)`` from their nearest pixel.

        Raises
        ------
        ValueError
            A position that is not on the lattice (see :meth:`snap`).
        """
        fx = np.atleast_1d(np.asarray(fx, dtype=np.float64))
        fy = np.atleast_1d(np.asarray(fy, dtype=np.float64))
        qx = np.round(fx * self.steps)
        qy = np.round(fy * self.steps)
        if (np.abs(qx - fx * self.steps).max(initial=0) > 1e-6
                or np.abs(qy - fy * self.steps).max(initial=0) > 1e-6):
            raise ValueError("LatticePRF: positions must be on the lattice; use snap()")
        out = np.empty((fx.size, self._size, self._size))
        for i, (a, b) in enumerate(zip(qx.astype(int), qy.astype(int), strict=True)):
            out[i] = self._stamp(a, b)
        return out


def simulate_lattice_field(prf: LatticePRF | Sequence[LatticePRF], *, area_arcmin2: float,
                           seed: int, depth_5sigma_ujy: float = 0.5, to_ujy: float = 1.0,
                           sky: float = 0.0, density_per_deg2: float = 6.0e5,
                           flux_range_ujy: tuple[float, float] = (0.05, 2000.0),
                           center: tuple[float, float] = (150.01, 2.2)) -> SimulatedImage:
    """A field of point sources whose truth is ``prf`` (exact, on its lattice).

    Parameters
    ----------
    prf : LatticePRF or sequence of LatticePRF
        The true PSF; with several, the image is cut into as many vertical strips
        (left to right), each with its own PSF.
    area_arcmin2 : float
        Area over which sources are placed (the image adds half a stamp around it).
    seed : int
        Seed of the sources and the noise.
    depth_5sigma_ujy, to_ujy, sky : float
        Point-source 5-sigma depth (sets the constant pixel noise), uJy per image unit,
        constant sky level.
    density_per_deg2, flux_range_ujy, center
        See :func:`~dask_phot.testing.simulate_sources`.

    Returns
    -------
    SimulatedImage
        Positions on the lattice; ``meta["priors"]`` holds ``source_id, ra, dec, x, y,
        flux`` (image units) of every source; ``psf`` is the first PRF at phase 0.
    """
    from dask_phot.psf import PixelPSF
    from dask_phot.testing.field import field_wcs
    from dask_phot.testing.render import render_model
    from dask_phot.testing.sources import simulate_sources

    prfs = [prf] if isinstance(prf, LatticePRF) else list(prf)
    scale = prfs[0].pixel_scale
    priors = simulate_sources(area_arcmin2=area_arcmin2, bands=["sim"], seed=seed,
                              density_per_deg2=density_per_deg2, center=center,
                              flux_range_ujy=flux_range_ujy)
    n = math.ceil(math.sqrt(area_arcmin2) * 60.0 / scale) + prfs[0].size
    wcs = field_wcs(center, scale, (n, n))
    x, y = wcs.wcs_world2pix(priors["ra"].to_numpy(), priors["dec"].to_numpy(), 0)
    x, y = prfs[0].snap(x), prfs[0].snap(y)
    ra, dec = wcs.wcs_pix2world(x, y, 0)
    flux = priors["flux_true_sim"].to_numpy() / to_ujy
    strip = np.clip((x / n * len(prfs)).astype(int), 0, len(prfs) - 1)
    model = np.zeros((n, n))
    for k, p in enumerate(prfs):
        sel = strip == k
        model += render_model((n, n), x[sel], y[sel], flux[sel], p)
    psf0 = PixelPSF(prfs[0].stamps(np.zeros(1), np.zeros(1))[0], scale, name="lattice")
    nea = 1.0 / float(np.sum(np.square(psf0.array)))
    sigma = depth_5sigma_ujy / 5.0 / to_ujy / math.sqrt(nea)
    rng = np.random.default_rng(seed)
    data = model + sky + sigma * rng.standard_normal((n, n))
    table = pd.DataFrame({"source_id": priors["source_id"], "ra": ra, "dec": dec, "x": x,
                          "y": y, "flux": flux})
    return SimulatedImage(data=data, sigma=np.full((n, n), sigma),
                          weight=np.full((n, n), 1.0 / sigma**2), model=model, sky=sky,
                          psf=psf0, x=x, y=y, flux=flux, wcs=wcs, band="sim", to_ujy=to_ujy,
                          meta={"priors": table, "sigma_pix": sigma})
