"""Cutouts of catalog sources in every band (FITS with WCS) and colour composites (PNG).

Each source's cutout is a square on the sky whose side follows its extent:
``clip(scale x 2 x extent, min_size, max_size)`` arcsec, where the extent is a
catalog column (the Kron aperture's semi-major axis ``extent_arcsec`` written by
``dask-phot detect``, or the segment's equivalent radius), rounded up to an odd
number of pixels in each band so the source sits on the central pixel. One FITS
file per source holds an image extension per band (``EXTNAME`` = band) with its
WCS; :func:`make_cutouts` can also write an asinh (Lupton et al. 2004) colour
composite from three bands (:func:`astropy.visualization.make_lupton_rgb`; needs
matplotlib, the ``plots`` extra).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

__all__ = ["CutoutSpec", "cutout_size_arcsec", "lupton_png", "make_cutouts"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CutoutSpec:
    """The size rule of :func:`make_cutouts`.

    Parameters
    ----------
    size_column : str
        Catalog column holding each source's extent (radius), arcsec.
    scale : float
        Side = ``scale x 2 x extent`` (so 2 shows twice the source's diameter).
    min_size, max_size : float
        Bounds on the side, arcsec (also used when the extent is missing).
    """

    size_column: str = "extent_arcsec"
    scale: float = 2.0
    min_size: float = 3.0
    max_size: float = 30.0

    def __post_init__(self) -> None:
        if not (0 < self.min_size <= self.max_size and self.scale > 0):
            raise ValueError(f"need 0 < min_size <= max_size and scale > 0, got {self}")


def cutout_size_arcsec(extent: Any, spec: CutoutSpec = CutoutSpec()) -> np.ndarray:
    """Side of each source's cutout, arcsec.

    Examples
    --------
    >>> cutout_size_arcsec([0.1, 2.0, 100.0, np.nan]).tolist()
    [3.0, 8.0, 30.0, 3.0]
    """
    ext = np.asarray(extent, dtype=np.float64)
    side = np.clip(spec.scale * 2.0 * ext, spec.min_size, spec.max_size)
    return np.where(np.isfinite(side), side, spec.min_size)


def _odd_pixels(side_arcsec: float, pixel_scale: float) -> int:
    n = math.ceil(side_arcsec / pixel_scale)
    return n if n % 2 else n + 1


def _band_cutout(index: Sequence[Any], ra: float, dec: float, side: float,
                 storage_options: Mapping[str, Any] | None) -> fits.ImageHDU | None:
    from dask_phot.images import read_region, select_mosaic

    mosaic = select_mosaic(index, ra, dec, radius_deg=side / 2 / 3600.0)
    if mosaic is None:
        return None
    n = _odd_pixels(side, mosaic.pixel_scale_arcsec)
    x, y = mosaic.wcs.world_to_pixel_values(ra, dec)
    cx, cy = int(np.floor(float(x) + 0.5)), int(np.floor(float(y) + 0.5))
    h = n // 2
    region = read_region(mosaic, (cx - h, cx + h + 1), (cy - h, cy + h + 1),
                         storage_options=storage_options)
    header = region.wcs.to_header()
    header["BAND"] = (mosaic.band, "band")
    header["MOSAIC"] = (os.path.basename(mosaic.source_url)[:60], "source mosaic")
    header["PIXSCALE"] = (mosaic.pixel_scale_arcsec, "[arcsec/pixel]")
    if mosaic.header.get("BUNIT"):
        header["BUNIT"] = mosaic.header["BUNIT"]
    return fits.ImageHDU(region.data.astype(np.float32), header, name=mosaic.band.upper())


def _on_grid(hdu: fits.ImageHDU, target: fits.ImageHDU) -> np.ndarray:
    """``hdu``'s image resampled (bilinear) onto ``target``'s pixel grid via the WCSs."""
    from astropy.wcs import WCS
    from scipy import ndimage

    src, dst = WCS(hdu.header), WCS(target.header)
    ny, nx = target.data.shape
    yy, xx = np.mgrid[:ny, :nx]
    ra, dec = dst.pixel_to_world_values(xx, yy)
    sx, sy = src.world_to_pixel_values(ra, dec)
    data = np.nan_to_num(np.asarray(hdu.data, dtype=np.float64), nan=0.0)
    return ndimage.map_coordinates(data, [sy, sx], order=1, cval=0.0)


def _normalised(image: np.ndarray) -> np.ndarray:
    """Median subtracted, in units of the robust (MAD) noise; NaN -> 0."""
    good = image[np.isfinite(image)]
    if good.size == 0:
        return np.zeros_like(image)
    med = np.median(good)
    sigma = 1.4826 * np.median(np.abs(good - med))
    sigma = sigma if sigma > 0 else (np.std(good) or 1.0)
    return np.nan_to_num((image - med) / sigma, nan=0.0)


def lupton_png(red: fits.ImageHDU, green: fits.ImageHDU, blue: fits.ImageHDU,
               path: str | os.PathLike[str], *, stretch: float = 30.0,
               q: float = 8.0) -> Path:
    """Write an asinh colour composite of three cutouts as PNG.

    ``green`` and ``blue`` are resampled onto ``red``'s grid; each band is scaled to
    its own robust noise, so ``stretch`` (the linear range, in noise units) and
    ``q`` (the asinh softening) work the same in any units.

    Returns
    -------
    Path
        The PNG written.
    """
    from astropy.visualization import make_lupton_rgb

    from dask_phot._optional import require

    require("matplotlib")
    r = _normalised(np.asarray(red.data, dtype=np.float64))
    g = _normalised(_on_grid(green, red))
    b = _normalised(_on_grid(blue, red))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    make_lupton_rgb(r, g, b, minimum=0.0, stretch=stretch, Q=q, filename=str(out))
    return out


def make_cutouts(
    catalog: pd.DataFrame,
    images: Mapping[str, str | Sequence[str]],
    outdir: str | os.PathLike[str],
    *,
    spec: CutoutSpec | None = None,
    rgb: Sequence[str] | None = None,
    stretch: float = 30.0,
    q: float = 8.0,
    id_column: str = "source_id",
    storage_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Write a FITS cutout (one extension per band) and optionally a PNG per source.

    Parameters
    ----------
    catalog : pandas.DataFrame
        ``ra``, ``dec`` (degrees), ``id_column`` and ``spec.size_column`` (arcsec; a
        missing column gives every source ``spec.min_size``).
    images : mapping of str to path/glob/URL or list of them
        The mosaics of each band (read lazily, only each cutout's pixels).
    outdir : path-like
        Files are ``<outdir>/<id>.fits`` and ``<outdir>/<id>.png``.
    spec : CutoutSpec, optional
        The size rule.
    rgb : (str, str, str), optional
        Bands for red, green, blue of a colour composite.
    stretch, q : float
        See :func:`lupton_png`.
    id_column : str
        Source identifier used in the file names.
    storage_options : mapping, optional
        fsspec options for remote mosaics.

    Returns
    -------
    pandas.DataFrame
        ``id_column``, ``size_arcsec``, ``fits`` and ``png`` paths (``""`` when not
        written), ``bands`` (those covering the source).
    """
    from dask_phot.images import build_index

    spec = spec or CutoutSpec()
    if rgb is not None and (len(rgb) != 3 or not set(rgb) <= set(images)):
        raise ValueError(f"rgb must name three of the bands {list(images)}, got {rgb!r}")
    for col in ("ra", "dec", id_column):
        if col not in catalog.columns:
            raise ValueError(f"catalog has no {col!r} column")
    index = {band: build_index(paths, band=band, storage_options=storage_options)
             for band, paths in images.items()}
    extent = catalog[spec.size_column] if spec.size_column in catalog else np.nan
    sizes = cutout_size_arcsec(np.broadcast_to(extent, len(catalog)), spec)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for (sid, ra, dec), side in zip(catalog[[id_column, "ra", "dec"]].itertuples(index=False),
                                    sizes, strict=True):
        hdus = {b: _band_cutout(ix, float(ra), float(dec), float(side), storage_options)
                for b, ix in index.items()}
        present = {b: h for b, h in hdus.items() if h is not None}
        row = {id_column: sid, "size_arcsec": float(side), "fits": "", "png": "",
               "bands": ",".join(present)}
        if present:
            primary = fits.PrimaryHDU()
            primary.header["SRC_ID"] = (str(sid), "catalog id")
            primary.header["RA"], primary.header["DEC"] = float(ra), float(dec)
            primary.header["SIZEAS"] = (float(side), "[arcsec] cutout side")
            path = out / f"{sid}.fits"
            fits.HDUList([primary, *present.values()]).writeto(path, overwrite=True)
            row["fits"] = str(path)
        if rgb is not None and all(b in present for b in rgb):
            row["png"] = str(lupton_png(*(present[b] for b in rgb), out / f"{sid}.png",
                                        stretch=stretch, q=q))
        rows.append(row)
    logger.info("cutouts: %d source(s) -> %s", len(rows), out)
    return pd.DataFrame(rows)
