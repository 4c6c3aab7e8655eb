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

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.images import Mosaic, Region, build_index, read_region
from dask_phot.schema import Flag

__all__ = ["SharpImages", "TemplateSetup", "check_sharp", "fit_band_templates", "fit_region",
           "model_image", "read_sharp"]


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


def covers(sharp: SharpImages, region: Region) -> bool:
    """Whether the sharp mosaic holds any of the region's sky."""
    return _sharp_box(sharp, region, 0.0) is not None


def _sharp_box(sharp: SharpImages, region: Region, margin_arcsec: float
               ) -> tuple[tuple[int, int], tuple[int, int]] | None:
    ny, nx = region.shape
    cx = np.array([-0.5, nx - 0.5, nx - 0.5, -0.5])
    cy = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    sky = region.wcs.pixel_to_world(cx, cy)
    x, y = sharp.image.wcs.world_to_pixel(sky)
    m = margin_arcsec / sharp.image.pixel_scale_arcsec
    xr = (max(int(np.floor(np.min(x) - m)), 0),
          min(int(np.ceil(np.max(x) + m)) + 1, sharp.image.shape[1]))
    yr = (max(int(np.floor(np.min(y) - m)), 0),
          min(int(np.ceil(np.max(y) + m)) + 1, sharp.image.shape[0]))
    if xr[1] <= xr[0] or yr[1] <= yr[0]:
        return None
    return xr, yr


def read_sharp(sharp: SharpImages, region: Region, *, margin_arcsec: float,
               storage_options: Mapping[str, Any] | None = None) -> tuple[Region, Region]:
    """The sharp mosaic's and segmentation map's box over a blurred region, plus a margin.

    Returns
    -------
    image, segmap : Region
        Same box of both (the map's labels as float; off-mosaic pixels NaN).
    """
    box = _sharp_box(sharp, region, margin_arcsec)
    if box is None:
        raise ValueError(f"{sharp.image.url}: the sharp mosaic does not cover this region")
    xr, yr = box
    img = read_region(sharp.image, xr, yr, storage_options=storage_options)
    seg = read_region(sharp.segmap, xr, yr, storage_options=storage_options)
    return img, seg


def fit_region(sources: pd.DataFrame, region: Region, psf: object, sharp: SharpImages, *,
               id_column: str = "source_id", margin_arcsec: float | None = None,
               storage_options: Mapping[str, Any] | None = None,
               sigma: float | None = None, weight: np.ndarray | None = None,
               **options: object) -> pd.DataFrame:
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
    weight : ndarray, optional
        Inverse-variance weights of the region's pixels, instead of its own.
    **options
        :func:`~dask_phot.templates.fit_templates` options.

    Returns
    -------
    pandas.DataFrame
        ``flux, flux_err, chi2, mismatch, flags, model`` per row of ``sources``
        (image units; ``model`` "template", "point", "sersic" or "" when not fitted).
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
    if weight is None:
        weight = region.weight
    noise: dict[str, Any] = {"weight": weight} if weight is not None else {"sigma": sigma}
    tab = fit_templates(region.data, region.wcs, psf, hires, img.wcs, sharp.psf, labels,
                        extra=extra, **noise, **options).set_index("id")
    out = pd.DataFrame({"flux": np.nan, "flux_err": np.nan, "chi2": np.nan,
                        "mismatch": np.nan, "flags": int(Flag.NO_DATA), "model": ""},
                       index=range(len(ids)))
    found = np.isin(ids, tab.index.to_numpy())
    rows = tab.loc[ids[found]]
    for col in ("flux", "flux_err", "chi2", "mismatch", "flags", "model"):
        out.loc[found, col] = rows[col].to_numpy()
    return out.astype({"flags": np.int64})


@dataclass(frozen=True, eq=False)
class TemplateSetup:
    """``[templates]`` and the storage options to read its files with: what a cell's
    template bands need (:func:`fit_band_templates`)."""

    config: Any
    storage_options: Mapping[str, Any] | None = None

    def open(self) -> SharpImages:
        """The sharp mosaic, its map and PSF (headers and the PSF read, no pixels)."""
        cfg = self.config
        return _open_cached(cfg.image, cfg.segmap, cfg.psf, float(cfg.psf_pixel_scale),
                            _freeze(self.storage_options))


def _freeze(opts: Mapping[str, Any] | None) -> str:
    import json

    return json.dumps(dict(opts or {}), sort_keys=True, default=str)


@functools.lru_cache(maxsize=4)
def _open_cached(image: str, segmap: str, psf: str, psf_scale: float, opts: str
                 ) -> SharpImages:
    import json

    from dask_phot.psf import PixelPSF

    storage = json.loads(opts) or None
    sharp = SharpImages.open(image, segmap, None, storage_options=storage)
    scale = psf_scale or sharp.image.pixel_scale_arcsec
    arr = _read_psf(psf, storage)
    k = min(arr.shape) - (1 - min(arr.shape) % 2)
    return SharpImages(sharp.image, sharp.segmap,
                       PixelPSF.from_array(arr, scale, size=k, name=os.path.basename(psf)))


def _read_psf(path: str, storage: Mapping[str, Any] | None) -> np.ndarray:
    """The first image HDU of a PSF FITS file (local, HTTP or S3)."""
    import fsspec
    from astropy.io import fits

    with fsspec.open(path, "rb", **dict(storage or {})) as f, fits.open(f) as hdul:
        for hdu in hdul:
            if hdu.data is not None and hdu.data.ndim == 2:
                return np.array(hdu.data, dtype=np.float64)
    raise ValueError(f"{path}: no 2-D image in this PSF file")


def fit_band_templates(sources: pd.DataFrame, region: Region, psf: object,
                       setup: TemplateSetup, *, weight: np.ndarray | None, engine: Any,
                       priors: Any = None) -> pd.DataFrame | None:
    """One band of a sky cell fitted with templates (a band's ``model = "template"``).

    Parameters
    ----------
    sources : pandas.DataFrame
        The cell's sources this band models: ``source_id`` (the segment labels),
        ``ra``, ``dec`` and the priors' shape columns.
    region : Region
        The band's pixel box.
    psf : PSF
        The band's PSF.
    setup : TemplateSetup
        ``[templates]`` and the storage options.
    weight : ndarray or None
        The pixels' inverse-variance weights (the cell's fit zone).
    engine : EngineConfig
        ``fit_sky``, ``sky_model``, ``high_chi2`` are used.
    priors : PriorsConfig, optional
        Its ``shape_columns`` make the priors without a segment Sersic galaxies.

    Returns
    -------
    pandas.DataFrame or None
        Per row of ``sources``: ``flux``, ``flux_err`` (image units), ``chi2``,
        ``mismatch``, ``flags`` and ``model`` (:data:`dask_phot.schema.MODEL_CODES`);
        None where the sharp mosaic does not cover the region (its sources then
        get the band's other models).
    """
    from dask_phot.schema import MODEL_CODES

    cfg = setup.config
    sharp = setup.open()
    if not covers(sharp, region):
        return None
    sub = sources[["source_id", "ra", "dec"]].copy()
    cols = getattr(priors, "shape_columns", None) or {}
    for key, col in cols.items():
        scale = priors.shape_scale if key == "r_e" else 1.0
        sub[key] = sources[col].to_numpy(np.float64) * scale
    margin = None if cfg.margin_arcsec == "auto" else float(cfg.margin_arcsec)
    out = fit_region(sub, region, psf, sharp, margin_arcsec=margin,
                     storage_options=setup.storage_options, weight=weight,
                     fit_sky=engine.fit_sky, sky_model=engine.sky_model,
                     high_chi2=engine.high_chi2, **cfg.fit_options())
    codes = {"": MODEL_CODES["none"], **{k: MODEL_CODES[k] for k in
                                          ("point", "sersic", "template")}}
    out["model"] = out["model"].map(codes).astype(np.int8)
    return out


def check_sharp(setup: TemplateSetup, ra: np.ndarray, dec: np.ndarray) -> SharpImages:
    """Open ``[templates]``' files before a run: one clear error naming the file.

    Raises
    ------
    dask_phot.config.ConfigError
        An unreadable file, a segmentation map of another shape than its mosaic,
        a PSF coarser than the mosaic's pixels (``psf_pixel_scale``), or a sharp
        mosaic that holds none of the priors (WCSs that do not overlap).
    """
    from astropy.coordinates import SkyCoord

    from dask_phot.config import ConfigError
    from dask_phot.psf import PSFError
    from dask_phot.templates.kernel import sharp_psf_array

    cfg = setup.config
    try:
        sharp = setup.open()
    except (ValueError, OSError) as exc:
        raise ConfigError(f"templates: {exc}") from exc
    try:
        sharp_psf_array(sharp.psf, sharp.image.pixel_scale_arcsec)
    except PSFError as exc:
        raise ConfigError(f"{cfg.psf}: {exc} (templates.psf_pixel_scale)") from exc
    if len(ra):
        x, y = sharp.image.wcs.world_to_pixel(SkyCoord(ra, dec, unit="deg"))
        ny, nx = sharp.image.shape
        inside = (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
        if not inside.any():
            raise ConfigError(f"{sharp.image.url}: the sharp mosaic holds none of the "
                              f"{len(ra)} priors; do its WCS and the priors overlap?")
    return sharp


def model_image(ids: np.ndarray, ra: np.ndarray, dec: np.ndarray, flux: np.ndarray,
                region: Region, psf: object, setup: TemplateSetup) -> np.ndarray | None:
    """A catalogue's fluxes drawn with their templates over a blurred region (the
    report's model of a template band); None where the sharp mosaic does not
    cover the region.

    ``ids`` are the sources' segment labels; sources without a segment are drawn
    as point sources; segments without a catalogue row are left out.
    """
    from dask_phot.engine.fit import scatter_stamps
    from dask_phot.templates.fit import template_stamps

    sharp = setup.open()
    if not covers(sharp, region):
        return None
    cfg = setup.config
    margin = (int(psf.size) // 2 * float(psf.pixel_scale) + 3.0  # type: ignore[attr-defined]
              if cfg.margin_arcsec == "auto" else float(cfg.margin_arcsec))
    img, seg = read_sharp(sharp, region, margin_arcsec=margin,
                          storage_options=setup.storage_options)
    labels = np.nan_to_num(seg.data, nan=0.0).astype(np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    lone = ~np.isin(ids, np.unique(labels[labels > 0]))
    extra = pd.DataFrame({"id": ids[lone], "ra": ra[lone], "dec": dec[lone]}) \
        if lone.any() else None
    opts = {k: v for k, v in cfg.fit_options().items() if k != "register"}
    # drawn on the region grown by a PSF stamp: sources just off it light it too
    pad = int(getattr(psf, "wing_size", None) or psf.size) // 2 + 2  # type: ignore[attr-defined]
    wcs = region.wcs.deepcopy()
    wcs.wcs.crpix = wcs.wcs.crpix + pad
    ny, nx = region.shape
    got, _, stamps = template_stamps(np.zeros((ny + 2 * pad, nx + 2 * pad)), wcs, psf,
                                     np.where(np.isfinite(img.data), img.data, 0.0),
                                     img.wcs, sharp.psf, labels, extra=extra, **opts)
    amp = pd.Series(np.asarray(flux, dtype=np.float64), index=ids)
    amp = amp[~amp.index.duplicated()].reindex(got).fillna(0.0).to_numpy()
    full = scatter_stamps(stamps, amp, (ny + 2 * pad, nx + 2 * pad))
    return full[pad:pad + ny, pad:pad + nx]
