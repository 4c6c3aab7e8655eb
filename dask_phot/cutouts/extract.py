"""One partition of sources: read each source's box in every band, write FITS and PNGs.

:func:`cutout_partition` is the unit of work on the cluster: for each band it
assigns each source to the mosaic it is most central in, reads all the
partition's boxes of that mosaic in one concurrent fetch
(:func:`dask_phot.images.read_boxes`: only the boxes' rows, merged where
``max_gap`` allows), writes one FITS file per source (an image extension per
band, ``EXTNAME`` = band, with its WCS and flux conversion) and the colour
composites, and last the partition's index (``_parts/part-NNNNN.parquet``),
which marks it done for a resumed run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from astropy.io import fits

from dask_phot.cutouts.colour import composite, robust_noise, write_png
from dask_phot.cutouts.spec import ColourSpec, CutoutSpec, odd_pixels

__all__ = ["CARRIED", "BandBox", "CutoutJob", "cutout_partition", "part_path"]

_SAFE = re.compile(r"[^A-Za-z0-9_.+-]+")
#: Catalog columns copied into the index (for the contact sheet's captions).
CARRIED = ("flag", "snr", "mag_auto")


@dataclass(frozen=True)
class CutoutJob:
    """Everything a partition needs besides its sources and the mosaics.

    Attributes
    ----------
    out : str
        Output directory.
    spec : CutoutSpec
    colour : ColourSpec or None
    id_column : str
    group_column : str or None
        Column naming a sub-directory per source (the survey), or None.
    to_ujy : mapping of (str, int) to float or None
        Microjansky per pixel value of each band's mosaics (from their headers).
    storage_options : dict
    run_hash : str
        What the run makes (:func:`~dask_phot.cutouts.spec.spec_hash`).
    """

    out: str
    spec: CutoutSpec
    colour: ColourSpec | None
    id_column: str = "source_id"
    group_column: str | None = None
    to_ujy: Mapping[tuple[str, int], float | None] = field(default_factory=dict)
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    run_hash: str = ""


@dataclass(frozen=True, eq=False)
class BandBox:
    """One source's box in one band: its pixels and where they come from."""

    data: np.ndarray
    mosaic: Any
    mosaic_index: int
    x0: int
    y0: int


def part_path(out: str | os.PathLike[str], part: int) -> Path:
    """The index file that marks a partition done (the one place that names it)."""
    return Path(out) / "_parts" / f"part-{part:05d}.parquet"


def _read_band(index: Sequence[Any], ra: np.ndarray, dec: np.ndarray, sides: np.ndarray,
               job: CutoutJob) -> tuple[list[BandBox | None], int, int]:
    """Every source's box in one band; bytes read and bytes of the boxes themselves."""
    from dask_phot.images import assign_mosaics, read_boxes

    which = assign_mosaics(index, ra, dec)
    found: list[BandBox | None] = [None] * len(ra)
    nbytes = box_bytes = 0
    for k in np.unique(which[which >= 0]):
        mosaic = index[int(k)]
        sel = np.flatnonzero(which == k)
        x, y = mosaic.wcs.world_to_pixel_values(ra[sel], dec[sel])
        cx = np.floor(np.asarray(x) + 0.5).astype(int)
        cy = np.floor(np.asarray(y) + 0.5).astype(int)
        half = np.array([odd_pixels(s, mosaic.pixel_scale_arcsec) // 2 for s in sides[sel]])
        boxes = np.c_[cx - half, cx + half + 1, cy - half, cy + half + 1]
        arrays, n = read_boxes(mosaic, boxes, max_gap=job.spec.max_gap,
                               storage_options=job.storage_options)
        nbytes += n
        box_bytes += int(np.sum((2 * half + 1) ** 2)) * (abs(mosaic.bitpix) // 8)
        for j, s in enumerate(sel):
            found[s] = BandBox(arrays[j], mosaic, int(k), int(boxes[j, 0]), int(boxes[j, 2]))
    return found, nbytes, box_bytes


def _hdu(band: str, box: BandBox, to_ujy: float | None) -> fits.ImageHDU:
    from dask_phot.images import box_wcs

    ny, nx = box.data.shape
    header = box_wcs(box.mosaic.wcs, box.x0, box.y0, nx, ny).to_header()
    header["BAND"] = (band, "band")
    header["MOSAIC"] = (os.path.basename(box.mosaic.source_url)[-68:], "source mosaic")
    header["X0"] = (box.x0, "mosaic pixel (0-based) of this pixel (0, 0)")
    header["Y0"] = (box.y0, "mosaic pixel (0-based) of this pixel (0, 0)")
    header["PIXSCALE"] = (box.mosaic.pixel_scale_arcsec, "[arcsec/pixel]")
    if box.mosaic.header.get("BUNIT"):
        header["BUNIT"] = box.mosaic.header["BUNIT"]
    if to_ujy is not None:
        header["TOUJY"] = (to_ujy, "microjansky per (pixel value x pixel)")
    return fits.ImageHDU(box.data.astype(np.float32), header, name=band.upper())


def _on_grid(src: BandBox, dst: BandBox) -> np.ndarray:
    """``src``'s pixels on ``dst``'s grid (identical grids as they are, else bilinear)."""
    from scipy import ndimage

    same = (src.mosaic is dst.mosaic or src.mosaic.wcs.wcs.compare(dst.mosaic.wcs.wcs)) \
        and (src.x0, src.y0) == (dst.x0, dst.y0) and src.data.shape == dst.data.shape
    if same:
        return src.data
    ny, nx = dst.data.shape
    yy, xx = np.mgrid[:ny, :nx]
    ra, dec = dst.mosaic.wcs.pixel_to_world_values(xx + dst.x0, yy + dst.y0)
    sx, sy = src.mosaic.wcs.world_to_pixel_values(ra, dec)
    data = np.nan_to_num(src.data, nan=0.0)
    return ndimage.map_coordinates(data, [np.asarray(sy) - src.y0, np.asarray(sx) - src.x0],
                                   order=1, cval=0.0)


def _colour_images(boxes: Sequence[BandBox],
                   factors: Sequence[float | None]) -> list[np.ndarray]:
    """The three bands on the red band's grid, in uJy/arcsec^2 (else in noise units)."""
    images = [_on_grid(b, boxes[0]) for b in boxes]
    if all(f is not None for f in factors):
        return [im * f for im, f in zip(images, factors, strict=True)]  # type: ignore[operator]
    return [im / (robust_noise(im)[1] or 1.0) for im in images]


def _composites(boxes: Mapping[str, BandBox], job: CutoutJob, base: Path) -> dict[str, Any]:
    colour = job.colour
    if colour is None or not all(b in boxes for b in colour.bands):
        return {}
    trio = [boxes[b] for b in colour.bands]
    factors = []
    for band, box in zip(colour.bands, trio, strict=True):
        f = job.to_ujy.get((band, box.mosaic_index))
        factors.append(None if f is None else f / box.mosaic.pixel_scale_arcsec**2)
    images = _colour_images(trio, factors)
    row: dict[str, Any] = {}
    for i, method in enumerate(colour.methods):
        rgb, how = composite(images, method=method, noise_level=colour.noise_level,
                             max_noise_level=colour.max_noise_level, white=colour.white,
                             stretch=colour.stretch, q=colour.q)
        path = write_png(rgb, base.with_name(f"{base.name}_{method}.png"), how)
        row["png" if i == 0 else f"png_{method}"] = str(path)
        row[f"{method}_stretch"], row[f"{method}_q"] = how.stretch, how.q
        row[f"{method}_white"], row[f"{method}_noise_level"] = how.white, how.noise_level
        row.setdefault("peak_snr", how.peak / (float(np.mean(how.noise)) or 1.0))
    return row


def _write_fits(hdus: list[fits.ImageHDU], sid: Any, ra: float, dec: float, side: float,
                path: Path) -> None:
    primary = fits.PrimaryHDU()
    primary.header["SRC_ID"] = (str(sid), "catalog id")
    primary.header["RA"] = (float(ra), "[deg] catalog position")
    primary.header["DEC"] = (float(dec), "[deg] catalog position")
    primary.header["SIZEAS"] = (float(side), "[arcsec] cutout side")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fits.HDUList([primary, *hdus]).writeto(tmp, overwrite=True)
    os.replace(tmp, path)


def _source_rows(sources: pd.DataFrame, sides: np.ndarray,
                 per_band: Mapping[str, list[BandBox | None]], job: CutoutJob) -> list[dict]:
    rows = []
    groups = (sources[job.group_column].astype(str).tolist() if job.group_column
              else [""] * len(sources))
    carried = [c for c in CARRIED if c in sources.columns]
    extra = sources[carried].to_dict("records")
    table = sources[[job.id_column, "ra", "dec"]].itertuples(index=False)
    for i, (sid, ra, dec) in enumerate(table):
        boxes = {b: found[i] for b, found in per_band.items() if found[i] is not None}
        row: dict[str, Any] = {job.id_column: sid, "group": groups[i], "ra": float(ra),
                               "dec": float(dec), "size_arcsec": float(sides[i]),
                               "bands": ",".join(boxes), "fits": "", "png": "", **extra[i]}
        if boxes:
            base = Path(job.out) / _SAFE.sub("_", groups[i]) / _SAFE.sub("_", str(sid))
            hdus = [_hdu(b, box, job.to_ujy.get((b, box.mosaic_index)))
                    for b, box in boxes.items()]
            _write_fits(hdus, sid, ra, dec, sides[i], base.with_suffix(".fits"))
            row["fits"] = str(base.with_suffix(".fits"))
            row.update(_composites(boxes, job, base))
        rows.append(row)
    return rows


def cutout_partition(sources: pd.DataFrame, indexes: Mapping[str, Sequence[Any]],
                     job: CutoutJob, part: int) -> dict[str, Any]:
    """Make one partition's cutouts; write its index last (it marks the partition done).

    Parameters
    ----------
    sources : DataFrame
        ``job.id_column``, ``ra``, ``dec``, ``size_arcsec`` (and ``job.group_column``).
    indexes : mapping of str to list of Mosaic
        Each band's mosaics.
    job : CutoutJob
    part : int
        The partition's number.

    Returns
    -------
    dict
        ``part``, ``n``, ``n_fits``, ``n_png``, ``seconds``, ``bytes_read``,
        ``box_bytes`` and ``n_box_reads`` (source-band boxes read).
    """
    t0 = time.perf_counter()
    ra, dec = sources["ra"].to_numpy(float), sources["dec"].to_numpy(float)
    sides = sources["size_arcsec"].to_numpy(float)
    per_band, nbytes, box_bytes = {}, 0, 0
    for band, index in indexes.items():
        per_band[band], n, b = _read_band(index, ra, dec, sides, job)
        nbytes, box_bytes = nbytes + n, box_bytes + b
    table = pd.DataFrame(_source_rows(sources, sides, per_band, job))
    stats = {"part": part, "n": len(sources), "n_fits": int((table["fits"] != "").sum()),
             "n_png": int((table["png"] != "").sum()), "seconds": time.perf_counter() - t0,
             "bytes_read": nbytes, "box_bytes": box_bytes,
             "n_box_reads": sum(sum(b is not None for b in v) for v in per_band.values())}
    _write_part(table, stats, job, part)
    return stats


def _write_part(table: pd.DataFrame, stats: Mapping[str, Any], job: CutoutJob,
                part: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = part_path(job.out, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = {b"dask_phot_cutouts": json.dumps({"run_hash": job.run_hash, **stats,
                                              "spec": dataclasses.asdict(job.spec)}).encode()}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **meta})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(arrow, tmp)
    os.replace(tmp, path)
