"""PSF files of bands: packaged or on disk, read once, turned into the band's PSF.

A band's PSF file is either a packaged one (``dask_phot/data/psf``, provenance
in its README.md; see :func:`packaged_psf_files`) or a path. :func:`load_band_psf`
makes the engine's PSF from it: a :class:`~dask_phot.psf.PixelPSF` cut to the
stamp size and normalised there (the COSMOS notebook's way), or, when the band
models its PSF's wings or its file is finer than the mosaic, an
:class:`~dask_phot.psf.OversampledPSF` that keeps the whole file, normalised
over all of it, so that fluxes are total fluxes.
"""

from __future__ import annotations

import functools
import io
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dask_phot.psf import (
    Normalize,
    OversampledPSF,
    PixelPSF,
    PSFError,
    header_pixel_scale,
    psf_centroid,
)

__all__ = ["BandError", "file_stamp", "load_band_psf", "locate_psf_file", "locate_source",
           "packaged_psf_files", "read_psf_file"]

_PSF_PACKAGE = "dask_phot"
_PSF_DIR = ("data", "psf")


class BandError(ValueError):
    """A band definition that cannot be used (the message names the band and key)."""


@functools.cache
def packaged_psf_files() -> tuple[str, ...]:
    """Names of the PSF FITS files shipped in ``dask_phot/data/psf``."""
    folder = resources.files(_PSF_PACKAGE).joinpath(*_PSF_DIR)
    return tuple(sorted(p.name for p in folder.iterdir() if p.name.endswith(".fits")))


def locate_source(
    psf_file: str, where: str, *, key: str = "psf_file", base_dir: str | os.PathLike | None = None
) -> tuple[str, Any]:
    """Resolve a PSF name to ``("package", name)`` or ``("file", absolute Path)``."""
    bare = os.path.basename(psf_file) == psf_file
    if bare and psf_file in packaged_psf_files():
        return ("package", psf_file)
    path = Path(psf_file).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_file():
        return ("file", path.resolve())
    raise BandError(
        f"{where}: {key} {psf_file!r} not found: no file {str(path)!r}"
        f"{'' if not bare else ' and no packaged PSF of that name'}; packaged PSFs: "
        f"{', '.join(packaged_psf_files())}"
    )


def locate_psf_file(psf_file: Any, where: str, *,
                    base_dir: str | os.PathLike[str] | None = None) -> str:
    """A PSF file as a band stores it: a packaged PSF's name, or an absolute path.

    Parameters
    ----------
    psf_file : str
        A packaged PSF name (see :func:`packaged_psf_files`) or a path.
    where : str
        The band (``bands.<name>``) for messages.
    base_dir : path-like, optional
        Directory relative paths are taken from; default the working directory.

    Raises
    ------
    BandError
        Not a non-empty string, or no such packaged PSF or file.
    """
    if not isinstance(psf_file, str) or not psf_file:
        raise BandError(f"{where}: psf_file must be a non-empty string, got {psf_file!r}")
    kind, loc = locate_source(psf_file, where, base_dir=base_dir)
    return loc if kind == "package" else str(loc)


def file_stamp(source: tuple[str, Any]) -> tuple[int, int]:
    """Cache key part that changes when a filesystem PSF file is rewritten."""
    if source[0] == "package":
        return (0, 0)
    st = os.stat(source[1])
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def read_psf_file(source: tuple[str, Any], stamp: tuple[int, int]
                  ) -> tuple[np.ndarray, float | None, tuple[float, float] | None]:
    """``(image, header pixel scale, CRPIX - 1 or None)`` from the first 2-D image HDU."""
    from astropy.io import fits

    kind, loc = source
    label = loc if kind == "package" else str(loc)
    try:
        if kind == "package":
            blob = resources.files(_PSF_PACKAGE).joinpath(*_PSF_DIR, loc).read_bytes()
            opened = fits.open(io.BytesIO(blob))
        else:
            opened = fits.open(loc)
        with opened as hdul:
            hdu = next((h for h in hdul if h.data is not None and h.data.ndim == 2), None)
            if hdu is None:
                raise PSFError(f"{label}: no HDU holds a 2-D image")
            data = np.array(hdu.data, dtype=np.float64)
            scale = header_pixel_scale(hdu.header)
            crpix = ((float(hdu.header["CRPIX1"]) - 1.0, float(hdu.header["CRPIX2"]) - 1.0)
                     if "CRPIX1" in hdu.header and "CRPIX2" in hdu.header else None)
    except OSError as exc:
        raise PSFError(f"{label}: cannot read PSF FITS file ({exc})") from exc
    data.setflags(write=False)
    return data, scale, crpix


@functools.lru_cache(maxsize=64)
def load_band_psf(
    source: tuple[str, Any],
    stamp: tuple[int, int],
    pixel_scale: float,
    psf_pixel_scale: float,
    psf_size: int,
    normalize: Normalize,
    wing_size: int | None,
    kind: str,
    centre: str,
) -> PixelPSF | OversampledPSF:
    """Pure, cached: the PSF of a band from its file and parameters (raises PSFError).

    ``wing_size`` None and a file on the mosaic grid (or coarser) give a
    :class:`PixelPSF` cut to ``psf_size`` and normalised there; otherwise an
    :class:`OversampledPSF` over the whole file (``kind`` ``"prf"``: the file is a
    pixel response; ``"optical"``: mosaic pixels sum its fine pixels), centred on
    the file's CRPIX (``centre="file"``, else its geometric centre) or on its
    light's centroid (``"centroid"``).
    """
    arr, _, crpix = read_psf_file(source, stamp)
    label = source[1] if source[0] == "package" else Path(source[1]).name
    finer = psf_pixel_scale < pixel_scale * (1 - 1e-9)
    if wing_size is None and not (finer and kind == "optical"):
        if math.isclose(psf_pixel_scale, pixel_scale, rel_tol=1e-9):
            if arr.shape == (psf_size, psf_size):
                return PixelPSF(arr, pixel_scale, normalize, name=label)
            return PixelPSF.from_array(arr, pixel_scale, size=psf_size, normalize=normalize,
                                       name=label, pixel_centred=True)
        return PixelPSF.from_oversampled(arr, psf_pixel_scale, pixel_scale, size=psf_size,
                                         normalize=normalize, name=label)
    center = psf_centroid(arr) if centre == "centroid" else crpix
    return OversampledPSF(arr, psf_pixel_scale, pixel_scale, size=psf_size, center=center,
                          integrated=kind == "prf", name=label,
                          wing_size=wing_size if wing_size is not None else psf_size)
