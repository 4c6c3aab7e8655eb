"""Reading and checking what :func:`~dask_phot.templates.fit_templates` is given.

Images may be arrays or FITS paths; errors name the file when there is one,
else the argument.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from dask_phot.templates.segments import label_range
from dask_phot.templates.share import Shares

__all__ = ["Inputs", "load_inputs"]


@dataclass
class Inputs:
    """Validated inputs (arrays as float64 / int64) and their names for messages."""

    image: np.ndarray
    wcs: WCS
    psf: object
    hires: np.ndarray
    hires_wcs: WCS
    hires_psf: object
    segmap: np.ndarray
    sigma: float | np.ndarray | None
    weight: np.ndarray | None
    image_name: str
    hires_name: str
    segmap_name: str
    share: Shares | None = None
    wings: np.ndarray | None = None
    max_label: int | None = None


def _read(value: object, arg: str) -> tuple[np.ndarray, str]:
    """An array, or the first image HDU of a FITS file; with its name."""
    if isinstance(value, str | os.PathLike):
        from astropy.io import fits

        name = os.fspath(value)
        try:
            with fits.open(name) as hdul:
                data = next((h.data for h in hdul if getattr(h, "data", None) is not None
                             and np.ndim(h.data) >= 2), None)
                if data is None:
                    raise ValueError(f"{name}: no image HDU (given as {arg})")
                arr = np.array(data)
        except OSError as exc:
            raise ValueError(f"{name}: cannot read FITS file given as {arg} ({exc})") from exc
    else:
        name = arg
        arr = np.asarray(value)
    if arr.ndim != 2:
        raise ValueError(f"{name}: must be a 2-D image, got shape {arr.shape}")
    if not arr.dtype.isnative:  # FITS is big-endian; the compiled kernels want native
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr, name


def _as_wcs(value: object, name: str) -> WCS:
    """A celestial WCS from a WCS (its celestial axes) or a FITS header."""
    from astropy.io import fits

    if isinstance(value, fits.Header):
        value = WCS(value)
    if not isinstance(value, WCS):
        raise TypeError(f"{name}: must be an astropy.wcs.WCS or a FITS header, got "
                        f"{type(value).__name__}")
    if not value.has_celestial:
        raise ValueError(f"{name}: has no celestial axes (RA/Dec)")
    return value.celestial


def load_inputs(image: object, wcs: WCS, psf: object, hires: object, hires_wcs: WCS,
                hires_psf: object, segmap: object, *, sigma: float | np.ndarray | None,
                weight: np.ndarray | None) -> Inputs:
    """Read and check the inputs of a template fit.

    Raises
    ------
    ValueError
        Non-2-D images, a segmentation map whose shape differs from the sharp
        image's or that does not hold integer labels; the message names the
        file or argument.

    Examples
    --------
    >>> from astropy.wcs import WCS
    >>> load_inputs(np.zeros((4, 4)), WCS(naxis=2), None, np.zeros((8, 8)), WCS(naxis=2),
    ...             None, np.zeros((8, 9), dtype=int), sigma=None, weight=None)
    Traceback (most recent call last):
    ...
    ValueError: segmap: shape (8, 9) differs from hires's (8, 8); it must be the sharp image's segmentation map
    """  # noqa: E501
    img, img_name = _read(image, "image")
    hi, hi_name = _read(hires, "hires")
    seg, seg_name = _read(segmap, "segmap")
    if seg.shape != hi.shape:
        raise ValueError(f"{seg_name}: shape {seg.shape} differs from {hi_name}'s {hi.shape};"
                         " it must be the sharp image's segmentation map")
    if seg.dtype.kind == "f":
        finite = np.isfinite(seg)
        if not (finite.all() and np.all(seg == np.round(seg))):
            raise ValueError(f"{seg_name}: a segmentation map holds integer labels, got "
                             "non-integer values")
    elif seg.dtype.kind not in "iub":
        raise ValueError(f"{seg_name}: a segmentation map holds integer labels, got dtype "
                         f"{seg.dtype}")
    wcs, hires_wcs = _as_wcs(wcs, "wcs"), _as_wcs(hires_wcs, "hires_wcs")
    if isinstance(psf, np.ndarray):  # a bare PSF array is on the image's pixel grid
        from astropy.wcs.utils import proj_plane_pixel_scales

        from dask_phot.psf import PixelPSF

        scale = float(np.sqrt(np.prod(proj_plane_pixel_scales(wcs)))) * 3600.0
        psf = PixelPSF(psf, scale, name="psf")
    # the sharp image and its map stay in their own dtypes (large mosaics: no copies)
    hi = hi if hi.dtype.kind == "f" else hi.astype(np.float64)
    seg = seg if seg.dtype.kind in "iu" else seg.astype(np.int64)
    if not seg.dtype.isnative:
        seg = seg.astype(seg.dtype.newbyteorder("="))
    lowest, highest = label_range(seg)
    if lowest < 0:
        raise ValueError(f"{seg_name}: labels must be >= 0 (0: no source)")
    return Inputs(img.astype(np.float64, copy=False), wcs, psf, hi, hires_wcs, hires_psf,
                  seg, sigma, weight, img_name, hi_name, seg_name, max_label=highest)
