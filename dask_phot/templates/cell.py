"""Template fits of one pixel box of a blurred mosaic: what a sky cell's band needs.

The pipeline reads one box of each band's mosaic per sky cell
(:func:`dask_phot.images.read_region`). For template fitting it also needs the
same sky from the sharp mosaic and its segmentation map: :func:`read_sharp`
reads only that box (local files, HTTP or S3, lazily, through the mosaic
index), widened by a margin that holds every segment whose blurred light
reaches the cell; :func:`fit_region` builds the templates on the worker and
fits them. Segment labels are the priors' source ids: a prior without a
segment (outside the sharp mosaic, or undetected there) is fitted as a point
source, or as a Sersic galaxy when the priors give its shape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.images import Mosaic, Region, build_index, read_region
from dask_phot.schema import Flag

__all__ = ["SharpImages", "fit_region", "read_sharp"]


@dataclass(frozen=True, eq=False)
class SharpImages:
    """The sharp mosaic, its segmentation map (labels = priors ids) and its PSF."""

    image: Mosaic
    segmap: Mosaic
    psf: object

    @classmethod
    def open(cls, image: str | os.PathLike[str], segmap: str | os.PathLike[str], psf: object,
             *, storage_options: Mapping[str, Any] | None = None) -> SharpImages:
        """Index the two files from their headers (no pixels are read).

        Raises
        ------
        ValueError
            Not one file each, or a segmentation map of another shape (the
            message names both files).
        """
        img = build_index(os.fspath(image), band="sharp", storage_options=storage_options)
        seg = build_index(os.fspath(segmap), band="segmap", storage_options=storage_options)
        if len(img) != 1 or len(seg) != 1:
            raise ValueError(f"templates: one sharp mosaic and one segmentation map are "
                             f"needed, got {len(img)} and {len(seg)}")
        if tuple(seg[0].shape) != tuple(img[0].shape):
            raise ValueError(f"{seg[0].url}: shape {tuple(seg[0].shape)} differs from "
                             f"{img[0].url}'s {tuple(img[0].shape)}; it must be the sharp "
                             "mosaic's segmentation map")
        return cls(img[0], seg[0], psf)


def read_sharp(sharp: SharpImages, region: Region, *, margin_arcsec: float,
               storage_options: Mapping[str, Any] | None = None) -> tuple[Region, Region]:
    """The sharp mosaic's and segmentation map's box over a blurred region, plus a margin.

    Returns
    -------
    image, segmap : Region
        Same box of both (the map's labels as float; off-mosaic pixels NaN).
    """
    ny, nx = region.shape
    cx = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    cy = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    sky = region.wcs.pixel_to_world(cx, cy)
    x, y = sharp.image.wcs.world_to_pixel(sky)
    from astropy.wcs.utils import proj_plane_pixel_scales

    scale = float(np.mean(proj_plane_pixel_scales(sharp.image.wcs.celestial))) * 3600.0
    m = margin_arcsec / scale
    xr = (int(np.floor(np.min(x) - m)), int(np.ceil(np.max(x) + m)) + 1)
    yr = (int(np.floor(np.min(y) - m)), int(np.ceil(np.max(y) + m)) + 1)
    xr = (max(xr[0], 0), min(xr[1], sharp.image.shape[1]))
    yr = (max(yr[0], 0), min(yr[1], sharp.image.shape[0]))
    if xr[1] <= xr[0] or yr[1] <= yr[0]:
        raise ValueError(f"{sharp.image.url}: the sharp mosaic does not cover this region")
    img = read_region(sharp.image, xr, yr, storage_options=storage_options)
    seg = read_region(sharp.segmap, xr, yr, storage_options=storage_options)
    return img, seg


def fit_region(sources: pd.DataFrame, region: Region, psf: object, sharp: SharpImages, *,
               id_column: str = "source_id", margin_arcsec: float | None = None,
               storage_options: Mapping[str, Any] | None = None,
               sigma: float | None = None, **options: object) -> pd.DataFrame:
    """Template fit of the priors ``sources`` in one box of a blurred mosaic.

    Parameters
    ----------
    sources : pandas.DataFrame
        ``id_column``, ``ra``, ``dec``; optional ``r_e`` (arcsec), ``q``, ``pa``,
        ``n`` for priors the sharp image lacks.
    region : Region
        The blurred box (:func:`dask_phot.images.read_region`).
    psf : PSF
        The band's PSF.
    sharp : SharpImages
        The sharp mosaic, its segmentation map and PSF.
    margin_arcsec : float, optional
        Sharp margin around the box; default the PSF stamp's half-width plus 3".
    sigma : float, optional
        Noise when the region has no weight map (default: its robust RMS).
    **options
        :func:`~dask_phot.templates.fit_templates` options.

    Returns
    -------
    pandas.DataFrame
        ``flux, flux_err, chi2, flags, model`` per row of ``sources`` (image units).
    """
    from dask_phot.templates.fit import fit_templates

    scale = float(psf.pixel_scale)  # type: ignore[attr-defined]
    if margin_arcsec is None:
        margin_arcsec = int(psf.size) // 2 * scale + 3.0  # type: ignore[attr-defined]
    img, seg = read_sharp(sharp, region, margin_arcsec=margin_arcsec,
                          storage_options=storage_options)
    hires = np.where(np.isfinite(img.data), img.data, 0.0)
    labels = np.nan_to_num(seg.data, nan=0.0).astype(np.int64)
    ids = sources[id_column].to_numpy().astype(np.int64)
    present = np.isin(ids, np.unique(labels[labels > 0]))
    extra = None
    if (~present).any():
        cols = [c for c in ("ra", "dec", "r_e", "q", "pa", "n") if c in sources.columns]
        extra = sources.loc[~present, cols].assign(id=ids[~present])
    noise: dict[str, Any] = {"weight": region.weight} if region.weight is not None \
        else {"sigma": sigma}
    tab = fit_templates(region.data, region.wcs, psf, hires, img.wcs, sharp.psf, labels,
                        extra=extra, **noise, **options).set_index("id")
    out = pd.DataFrame({"flux": np.nan, "flux_err": np.nan, "chi2": np.nan,
                        "flags": int(Flag.NO_DATA), "model": ""}, index=range(len(ids)))
    found = np.isin(ids, tab.index.to_numpy())
    rows = tab.loc[ids[found]]
    for col in ("flux", "flux_err", "chi2", "flags", "model"):
        out.loc[found, col] = rows[col].to_numpy()
    return out.astype({"flags": np.int64})
