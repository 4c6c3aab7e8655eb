"""Image cutouts with the catalogue's model: does the photometry explain the pixels?

For a finished run, the mosaics are found again from the configuration the run
recorded (``RESULT/dask_phot_run.json``). The *model* of a cutout is the
catalogue itself: every catalogue source on the cutout rendered with its model
(point or Sersic galaxy, from the shape columns the catalogue carries) through the
band's PSF, wings included, at its measured flux (uJy converted back to image
units; a band with ``model = "template"``: each source's template from the
sharp mosaic of ``[templates]``), plus a constant sky,
the median of data minus sources. The residual is what the catalogue does not
explain, in units of the pixel noise from the weight map.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.engine.wings import model_image
from dask_phot.images import icrs_to_pixel
from dask_phot.models.shapes import Shapes
from dask_phot.pipeline.kernel import source_shapes
from dask_phot.plots.images import BandPanel

__all__ = ["RunImages", "band_cutout", "cell_panels", "cutouts_for"]

logger = logging.getLogger(__name__)


@dataclass
class RunImages:
    """A run's bands: where their mosaics are and how to model them.

    Attributes
    ----------
    config : dask_phot.config.RunConfig
    indexes : dict
        Band name -> list of :class:`~dask_phot.images.Mosaic`.
    """

    config: Any
    indexes: dict[str, list[Any]]

    @classmethod
    def from_result(cls, result: str | Path, config: Any = None) -> RunImages:
        """Load a run's recorded configuration (or ``config``) and index its mosaics.

        Raises
        ------
        FileNotFoundError
            No ``dask_phot_run.json`` in ``result`` and no ``config`` given.
        """
        from dask_phot.config import load_config, storage_options
        from dask_phot.images import build_index
        from dask_phot.storage import check_endpoint

        if config is None:
            record = Path(result) / "dask_phot_run.json"
            if not record.exists():
                raise FileNotFoundError(f"{record}: no run record to find the images from")
            config = load_config(json.loads(record.read_text())["config"])
        elif not hasattr(config, "bands"):
            config = load_config(config)
        storage = storage_options(config)
        check_endpoint(storage, [u for b in config.bands for u in b.images])
        indexes = {b.name: build_index(list(b.images), list(b.noise) or None,
                                       noise_kind=b.noise_kind, band=b.name,
                                       storage_options=storage)
                   for b in config.bands}
        return cls(config, indexes)

    @property
    def bands(self) -> tuple[str, ...]:
        """Band names in configuration order."""
        return tuple(self.config.band_names)


def _read_box(run: RunImages, band: str, ra: np.ndarray, dec: np.ndarray,
              pad_pix: float) -> Any:
    from dask_phot.config import storage_options
    from dask_phot.images import read_region, select_mosaic, sky_to_box

    mosaic = select_mosaic(run.indexes[band], float(np.mean(ra)), float(np.mean(dec)))
    if mosaic is None:
        raise LookupError(f"{band}: no mosaic covers ({np.mean(ra):.5f}, {np.mean(dec):.5f})")
    xr, yr = sky_to_box(mosaic, ra, dec, pad_pix)
    if xr[1] <= xr[0] or yr[1] <= yr[0]:
        raise LookupError(f"{band}: the box is off the mosaic")
    return read_region(mosaic, xr, yr, storage_options=storage_options(run.config))


def _panel(run: RunImages, catalog: pd.DataFrame, band: str, region: Any,
           marks: np.ndarray, chi2: np.ndarray) -> BandPanel:
    """Model the region with every catalogue source on it; mark ``marks`` rows."""
    spec = run.config.band(band)
    psf = spec.band.load_psf()
    ra, dec = catalog["ra"].to_numpy(float), catalog["dec"].to_numpy(float)
    x, y = icrs_to_pixel(region.wcs, ra, dec)
    half = int(getattr(psf, "wing_size", psf.size)) // 2 + 1
    ny, nx = region.shape
    near = (x > -half) & (x < nx + half) & (y > -half) & (y < ny + half)
    flux = catalog[f"flux_{band}"].to_numpy(float)[near] / (
        spec.band.to_ujy * spec.band.flux_correction())
    sources = None
    if spec.model == "template":  # the catalogue's fluxes drawn with their templates
        from dask_phot.config import storage_options
        from dask_phot.templates.cell import TemplateSetup
        from dask_phot.templates.cell import model_image as template_image

        sources = template_image(
            catalog["source_id"].to_numpy()[near], ra[near], dec[near], flux, region, psf,
            TemplateSetup(run.config.templates, storage_options(run.config)))
    if sources is None:
        shapes = None
        if spec.model == "auto" and set(run.config.priors.shape_columns.values()) <= set(
                catalog):
            found = source_shapes(catalog[near], region, x[near], y[near], run.config.priors)
            shapes = None if found is None else Shapes.from_mapping(found, int(near.sum()))
        sources = model_image(region.shape, psf, x[near], y[near], flux, shapes)
    data = region.data
    rest = data - sources
    sky = float(np.nanmedian(rest)) if np.isfinite(rest).any() else 0.0
    sigma = None
    if region.weight is not None:
        with np.errstate(divide="ignore"):
            sigma = np.where(region.weight > 0, 1 / np.sqrt(np.maximum(region.weight, 1e-300)),
                             np.nan)
    return BandPanel(band, data, sources + sky, sigma, chi2, x[marks], y[marks])


def band_cutout(run: RunImages, catalog: pd.DataFrame, band: str, ra: float, dec: float, *,
                size_arcsec: float = 30.0) -> BandPanel:
    """A square cutout of one band around a position, with the catalogue's model.

    Parameters
    ----------
    run : RunImages
    catalog : pandas.DataFrame
        The run's catalogue (``ra``, ``dec``, ``flux_{band}``).
    band : str
    ra, dec : float
        Centre, degrees.
    size_arcsec : float
        Side of the cutout.

    Returns
    -------
    BandPanel
        Data, model, noise; the centre position marked.

    Raises
    ------
    LookupError
        No mosaic of the band covers the position.
    """
    region = _read_box(run, band, np.array([ra]), np.array([dec]),
                       size_arcsec / 2 / _pixel_scale(run, band))
    marks = np.zeros(len(catalog), dtype=bool)
    panel = _panel(run, catalog, band, region, marks, np.zeros(0))
    cx, cy = (float(v[0]) for v in icrs_to_pixel(region.wcs, ra, dec))
    panel.x, panel.y = np.atleast_1d(cx), np.atleast_1d(cy)
    return panel


def _pixel_scale(run: RunImages, band: str) -> float:
    return float(run.config.band(band).band.pixel_scale)


def _cell_order(result: Path) -> int:
    info = result / "partition_info.csv"
    if info.exists():
        return int(pd.read_csv(info)["Norder"].max())
    orders = [int(p.name.split("=")[1]) for p in (result / "dataset").glob("Norder=*")]
    if not orders:
        raise FileNotFoundError(f"{result}: not a dask-phot catalogue (no partition_info.csv)")
    return max(orders)


def cell_panels(result: str | Path, catalog: pd.DataFrame, *, cell: int | None = None,
                bands: Sequence[str] | None = None, run: RunImages | None = None,
                ) -> list[BandPanel]:
    """Per band, the pixels of one sky cell with the catalogue's model and chi2.

    Parameters
    ----------
    result : path-like
        The run's output directory.
    catalog : pandas.DataFrame
        Its catalogue (:func:`dask_phot.pipeline.read_catalog`).
    cell : int, optional
        HEALPix pixel (at the run's order); default the cell with most sources.
    bands : sequence of str, optional
        Default every band of the run.
    run : RunImages, optional
        Already loaded images (default from ``result``).

    Returns
    -------
    list of BandPanel
        Bands whose mosaics cover the cell (the others are logged and skipped).
    """
    from dask_phot.cells import HEALPIX_COLUMN, MAX_ORDER

    result = Path(result)
    run = run or RunImages.from_result(result)
    order = _cell_order(result)
    pix = catalog[HEALPIX_COLUMN].to_numpy(np.int64) >> (2 * (MAX_ORDER - order))
    if cell is None:
        values, counts = np.unique(pix, return_counts=True)
        cell = int(values[np.argmax(counts)])
    inside = pix == cell
    if not inside.any():
        raise ValueError(f"no catalogue source in cell {cell} (order {order})")
    members = catalog[inside]
    panels = []
    for band in bands or run.bands:
        try:
            region = _read_box(run, band, members["ra"].to_numpy(float),
                                  members["dec"].to_numpy(float), 4.0)
        except LookupError as exc:
            logger.warning("cell %d: %s", cell, exc)
            continue
        chi2 = members[f"chi2_{band}"].to_numpy(float)
        panels.append(_panel(run, catalog, band, region, inside, chi2))
    return panels


def cutouts_for(run: RunImages, catalog: pd.DataFrame, row: Mapping[str, Any], *,
                bands: Sequence[str] | None = None, size_arcsec: float = 30.0,
                ) -> dict[str, BandPanel | str]:
    """Per band, the source's cutout, or the reason there is none."""
    out: dict[str, BandPanel | str] = {}
    for band in bands or run.bands:
        try:
            out[band] = band_cutout(run, catalog, band, float(row["ra"]), float(row["dec"]),
                                    size_arcsec=size_arcsec)
        except (LookupError, OSError, ValueError) as exc:
            out[band] = f"{type(exc).__name__}: {exc}"
    return out
