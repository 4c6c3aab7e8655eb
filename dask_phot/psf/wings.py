"""Far wings of an ePSF from a model PSF, and its normalisation to total flux.

Stars measure the core of a mosaic's PSF well, but not the faint, wide wings
that hold several per cent of the light (about 4.5% of IRAC ch1's beyond 9").
The ePSF is completed with a model's wings: the model (a PSF file, or a Moffat
profile fitted to the stars' outer profile) is scaled to match the stacked
core in an annulus where both are measured, the two are blended across that
annulus, and the result is normalised so that its flux inside the ePSF box plus
the model's flux beyond the box is 1: its curve of growth reaches 1.

All arrays here are ePSF node grids: ``values[j, i]`` is the ePSF at offset
``((i - c) / O, (j - c) / O)`` pixels (``c`` the middle node, ``O`` the
oversampling), a unit-flux source's pixel value there; ``values.sum() / O**2``
is the flux the grid holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from dask_phot.psf.pixel import PixelPSF, PSFError

__all__ = [
    "WingModel",
    "complete_wings",
    "curve_of_growth",
    "moffat_nodes",
    "node_radii",
    "psf_nodes",
    "radial_profile",
]


def node_radii(n: int, oversampling: int) -> np.ndarray:
    """Distance of each node of an ``n x n`` grid from its middle, in pixels."""
    u = (np.arange(n) - (n - 1) / 2.0) / oversampling
    return np.hypot(u[None, :], u[:, None])


def _overlap(centres: np.ndarray, width: float, n_in: int) -> np.ndarray:
    """Overlap of intervals ``[c - width/2, c + width/2]`` with the pixels of a centred input."""
    c_in = (n_in - 1) / 2.0
    lo = centres[:, None] - width / 2.0
    hi = centres[:, None] + width / 2.0
    e0 = np.arange(n_in)[None, :] - c_in - 0.5
    return np.clip(np.minimum(hi, e0 + 1.0) - np.maximum(lo, e0), 0.0, None)


def psf_nodes(array: np.ndarray, array_scale: float, n: int, oversampling: int,
              pixel_scale: float, *, includes_pixel_response: bool, name: str = "psf"
              ) -> np.ndarray:
    """A PSF image's ePSF on an ``n x n`` node grid (per unit total flux of the image).

    The image's origin is its geometric centre (even sizes allowed). An optical
    PSF (``includes_pixel_response=False``, e.g. the golfir 0.1" IRAC PSFs) is
    summed over a mosaic pixel centred on each node; a PRF on the mosaic grid is
    interpolated (cubic spline) at the nodes.
    """
    ratio = pixel_scale / array_scale
    u = (np.arange(n) - (n - 1) / 2.0) / oversampling
    arr = np.asarray(array, dtype=np.float64)
    arr = arr / arr.sum()
    if not includes_pixel_response:
        m = _overlap(u * ratio, ratio, arr.shape[0])
        return m @ arr @ m.T
    if abs(ratio - 1.0) > 1e-6:
        raise PSFError(f"{name}: a PRF (pixel response included) must be sampled at the "
                       f"mosaic's pixel scale {pixel_scale}\", got {array_scale}\"")
    from scipy.ndimage import map_coordinates

    c = (arr.shape[0] - 1) / 2.0
    yy, xx = np.meshgrid(c + u, c + u, indexing="ij")
    return map_coordinates(arr, [yy, xx], order=3, mode="constant", cval=0.0)


def moffat_nodes(n: int, oversampling: int, alpha: float, beta: float) -> np.ndarray:
    """Unit-total Moffat profile ``(beta-1)/(pi alpha^2) (1 + r^2/alpha^2)^-beta`` at the nodes."""
    r = node_radii(n, oversampling)
    return (beta - 1.0) / (math.pi * alpha**2) * (1.0 + (r / alpha) ** 2) ** (-beta)


def radial_profile(values: np.ndarray, oversampling: int, *, step: float = 0.25
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthal mean of a node grid in rings of ``step`` pixels: ``(radius, mean)``."""
    r = node_radii(values.shape[0], oversampling).ravel()
    k = np.floor(r / step).astype(np.int64)
    num = np.bincount(k, weights=values.ravel())
    cnt = np.bincount(k)
    good = cnt > 0
    return ((np.arange(num.size) + 0.5) * step)[good], num[good] / cnt[good]


def curve_of_growth(values: np.ndarray, oversampling: int, radii: np.ndarray) -> np.ndarray:
    """Flux within each radius (pixels) of a node grid: ``sum(values[r < R]) / O**2``."""
    r = node_radii(values.shape[0], oversampling).ravel()
    order = np.argsort(r)
    cum = np.cumsum(values.ravel()[order]) / oversampling**2
    pos = np.searchsorted(r[order], np.asarray(radii, float), side="left")
    return np.where(pos > 0, cum[np.maximum(pos - 1, 0)], 0.0)


@dataclass(frozen=True, eq=False)
class WingModel:
    """Where an ePSF's far wings come from.

    Parameters
    ----------
    kind : {"moffat", "psf", "none"}
        A Moffat profile fitted to the stars' outer profile, a PSF image, or no
        wings (the ePSF is then normalised to its box, and fluxes are box fluxes).
    array : ndarray, optional
        The PSF image for ``kind="psf"`` (square, origin at its geometric centre,
        normalised here to unit sum); it must reach beyond the ePSF box to help.
    array_scale : float, optional
        Arcsec per pixel of ``array``.
    includes_pixel_response : bool, optional
        Whether ``array`` is already a PRF; default: it is when sampled at the
        mosaic's pixel scale, and an optical PSF to be summed over pixels when finer.
    label : str
        Name recorded in the ePSF's header (a file name).
    """

    kind: str = "moffat"
    array: np.ndarray | None = None
    array_scale: float | None = None
    includes_pixel_response: bool | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("moffat", "psf", "none"):
            raise PSFError(f"wings: kind must be 'moffat', 'psf' or 'none', got {self.kind!r}")
        if (self.kind == "psf") != (self.array is not None):
            raise PSFError("wings: kind='psf' needs array=, and only it takes one")
        if self.kind == "psf":
            arr = np.asarray(self.array, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or not np.isfinite(arr).all() \
                    or not arr.sum() > 0:
                raise PSFError(f"wings: {self.label or 'psf'}: need a square, finite PSF image "
                               f"with a positive sum, got shape {arr.shape}")
            if not (self.array_scale is not None and self.array_scale > 0):
                raise PSFError(f"wings: {self.label or 'psf'}: array_scale must be > 0")

    @classmethod
    def from_psf(cls, psf: PixelPSF, *, includes_pixel_response: bool | None = None
                 ) -> WingModel:
        """Wings from a :class:`~dask_phot.psf.PixelPSF` (a preset, say)."""
        return cls("psf", psf.array, psf.pixel_scale, includes_pixel_response, psf.name)

    @classmethod
    def from_fits(cls, path: str, pixel_scale: float | None = None, *,
                  includes_pixel_response: bool | None = None) -> WingModel:
        """Wings from a PSF FITS file (scale from ``pixel_scale`` or the header)."""
        import os

        from astropy.io import fits

        from dask_phot.psf.pixel import header_pixel_scale

        with fits.open(path) as hdul:
            arr = np.asarray(hdul[0].data, dtype=np.float64)
            scale = pixel_scale or header_pixel_scale(hdul[0].header)
        if scale is None:
            raise PSFError(f"wings: {path}: no pixel scale in the header; give pixel_scale")
        return cls("psf", arr, float(scale), includes_pixel_response, os.path.basename(path))

    @property
    def name(self) -> str:
        """Label recorded in the ePSF's header."""
        return (self.label or "psf") if self.kind == "psf" else self.kind

    def nodes(self, n: int, oversampling: int, pixel_scale: float) -> np.ndarray:
        """The model's ePSF on the node grid (``kind="psf"`` only)."""
        assert self.array is not None and self.array_scale is not None
        pr = self.includes_pixel_response
        if pr is None:
            pr = abs(self.array_scale - pixel_scale) < 1e-6 * pixel_scale
        return psf_nodes(self.array, self.array_scale, n, oversampling, pixel_scale,
                         includes_pixel_response=pr, name=self.name)


@dataclass(frozen=True)
class WingMatch:
    """How the wings were joined: annulus radii (pixels), model scale and fluxes."""

    model: str
    r_inner: float
    r_outer: float
    scale: float
    flux_in_box: float
    moffat: tuple[float, float] | None = None


def _fit_moffat(core: np.ndarray, oversampling: int, r1: float, r2: float
                ) -> tuple[float, float]:
    rad, prof = radial_profile(core, oversampling, step=0.5)
    sel = (rad >= r1) & (rad <= r2) & (prof > 0)
    if sel.sum() < 3:
        raise PSFError(f"wings: the stacked profile is not positive between {r1:.1f} and "
                       f"{r2:.1f} px; cannot fit a Moffat wing (use a PSF file or wings='none')")
    r, p = rad[sel], prof[sel]

    def resid(q: np.ndarray) -> np.ndarray:
        alpha, beta, lnamp = q
        return np.log(p) - (lnamp - beta * np.log1p((r / alpha) ** 2))

    # in the wings alpha and the amplitude are nearly degenerate: keep alpha at the
    # scale of the core so that the profile is well sampled by the nodes
    lo = max(0.25 * r1, 1.0)
    start = np.array([max(r1 / 2, lo), 2.5, math.log(p[0]) + 2.5 * math.log1p(4.0)])
    sol = least_squares(resid, start, bounds=([lo, 1.05, -np.inf], [50 * r2, 20.0, np.inf]))
    return float(sol.x[0]), float(sol.x[1])


def complete_wings(core: np.ndarray, oversampling: int, pixel_scale: float, wings: WingModel,
                   r_inner: float, r_outer: float) -> tuple[np.ndarray, WingMatch]:
    """Join a stacked core to the wing model and normalise the result to total flux.

    Parameters
    ----------
    core : ndarray
        Stacked ePSF node grid (any normalisation).
    oversampling : int
        Nodes per pixel.
    pixel_scale : float
        Mosaic arcsec per pixel.
    wings : WingModel
        The wing model.
    r_inner, r_outer : float
        Annulus (pixels) where the model is matched to the core and the two are blended.

    Returns
    -------
    values : ndarray
        The completed ePSF; ``values.sum() / O**2`` is its flux inside the box.
    match : WingMatch
    """
    o = oversampling
    n = core.shape[0]
    if wings.kind == "none":
        out = core / (core.sum() / o**2)
        return out, WingMatch("none", r_inner, r_outer, 0.0, 1.0)
    moffat = None
    if wings.kind == "moffat":
        moffat = _fit_moffat(core, o, r_inner, r_outer)
        model = moffat_nodes(n, o, *moffat)
    else:
        model = wings.nodes(n, o, pixel_scale)
    outside = 1.0 - model.sum() / o**2
    r = node_radii(n, o)
    ring = (r >= r_inner) & (r <= r_outer)
    den = model[ring].sum()
    if not den > 0:
        raise PSFError(f"wings: the {wings.name} model has no flux between {r_inner:.1f} and "
                       f"{r_outer:.1f} px")
    scale = float(core[ring].sum() / den)
    blend = np.clip((r_outer - r) / max(r_outer - r_inner, 1e-9), 0.0, 1.0)
    out = blend * core + (1.0 - blend) * scale * model
    total = out.sum() / o**2 + scale * outside
    if not (scale > 0 and total > 0 and 0.5 < out.sum() / o**2 / total <= 1.0 + 1e-6):
        raise PSFError(f"wings: joining the {wings.name} wings between {r_inner:.1f} and "
                       f"{r_outer:.1f} px failed (scale {scale:.3g}, flux in box "
                       f"{out.sum() / o**2 / total:.3g}); use wings='none' or a PSF file")
    out = out / total
    match = WingMatch(wings.name, float(r_inner), float(r_outer), scale / total,
                      float(out.sum() / o**2), moffat)
    return out, match
