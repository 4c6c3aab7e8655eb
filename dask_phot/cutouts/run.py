"""Cutouts of a catalog on Dask: partitions of nearby sources, resumable.

:func:`run_cutouts` sorts the sources along the HEALPix curve (nearby sources
together, so a partition's boxes share mosaics and rows), cuts them into
partitions of ``partition_size`` and runs :func:`~dask_phot.cutouts.extract.cutout_partition`
on each, as tasks on a Dask client or here one after another. A partition is
done when its index ``_parts/part-NNNNN.parquet`` exists with the hash of what
it makes (the specs, the bands' mosaics and its sources): a run that stops
resumes with the partitions not done. At the end the partitions' indexes are
gathered into ``cutouts.parquet``.

Examples
--------
>>> part = pd.DataFrame({"source_id": [1, 2], "ra": [10.0, 10.1], "dec": [0.0, 0.0],
...                      "size_arcsec": [3.0, 3.0]})
>>> key = part_key(part, "abc", "source_id")
>>> key == part_key(part.copy(), "abc", "source_id"), key == part_key(
...     part.assign(size_arcsec=[3.0, 5.0]), "abc", "source_id")
(True, False)
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.cutouts.extract import CutoutJob, cutout_partition, part_path
from dask_phot.cutouts.spec import ColourSpec, CutoutSpec, cutout_size_arcsec, spec_hash

__all__ = ["CutoutSummary", "make_cutouts", "part_key", "plan_partitions", "run_cutouts"]

logger = logging.getLogger(__name__)

_META = b"dask_phot_cutouts"


@dataclass
class CutoutSummary:
    """What :func:`run_cutouts` did.

    Attributes
    ----------
    out, index : str
        Output directory and its ``cutouts.parquet``.
    n_sources, n_parts, n_parts_skipped : int
    n_fits, n_png : int
        Files in the whole output (done now or before).
    wall_seconds : float
        Of this run.
    bytes_read, box_bytes, n_box_reads : int
        Of the partitions done in this run: bytes fetched, bytes of the boxes
        themselves, and source-band boxes read.
    n_done : int
        Sources of the partitions done in this run.
    """

    out: str
    index: str
    n_sources: int
    n_parts: int
    n_parts_skipped: int
    n_fits: int
    n_png: int
    wall_seconds: float
    bytes_read: int = 0
    box_bytes: int = 0
    n_box_reads: int = 0
    n_done: int = 0
    parts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cutouts_per_second(self) -> float:
        """Sources cut (every band, FITS and PNG) per second of this run."""
        return self.n_done / max(self.wall_seconds, 1e-9)

    @property
    def read_ratio(self) -> float:
        """Bytes read over bytes of the boxes (1: exactly the boxes)."""
        return self.bytes_read / max(self.box_bytes, 1)


def plan_partitions(catalog: pd.DataFrame, spec: CutoutSpec, *,
                    group_column: str | None = None) -> list[pd.DataFrame]:
    """The sources with ``size_arcsec``, sorted along the HEALPix curve, in partitions."""
    from dask_phot.cells import healpix_29

    extent = catalog[spec.size_column] if spec.size_column in catalog else np.nan
    table = catalog.assign(size_arcsec=cutout_size_arcsec(np.broadcast_to(extent, len(catalog)),
                                                          spec))
    table["_hpx"] = healpix_29(table["ra"].to_numpy(float) % 360.0, table["dec"].to_numpy(float))
    keys = ([group_column] if group_column else []) + ["_hpx"]
    table = table.sort_values(keys, kind="stable").drop(columns="_hpx").reset_index(drop=True)
    size = spec.partition_size
    return [table.iloc[i:i + size] for i in range(0, len(table), size)]


def part_key(sources: pd.DataFrame, run_hash: str, id_column: str) -> str:
    """The hash a partition's index carries: the run's and its sources' (ids, positions,
    sizes)."""
    blob = pd.util.hash_pandas_object(
        sources[[id_column, "ra", "dec", "size_arcsec"]], index=False).to_numpy().tobytes()
    return hashlib.sha256(run_hash.encode() + blob).hexdigest()[:16]


def _done(out: str, part: int, key: str) -> dict[str, Any] | None:
    import json

    import pyarrow.parquet as pq

    path = part_path(out, part)
    if not path.exists():
        return None
    try:
        meta = json.loads((pq.read_schema(path).metadata or {}).get(_META, b"{}"))
    except (OSError, ValueError):
        return None
    return meta if meta.get("run_hash") == key else None


def _check(catalog: pd.DataFrame, id_column: str, group_column: str | None,
           colour: ColourSpec | None, bands: Sequence[str]) -> None:
    for col in ("ra", "dec", id_column, *([group_column] if group_column else [])):
        if col not in catalog.columns:
            raise ValueError(f"catalog has no {col!r} column (it has: "
                             f"{', '.join(map(str, catalog.columns))})")
    keys = [group_column, id_column] if group_column else [id_column]
    dup = catalog.duplicated(keys)
    if dup.any():
        first = catalog.loc[dup, keys].iloc[0].tolist()
        raise ValueError(f"catalog: {int(dup.sum())} duplicated {'/'.join(keys)} (first: "
                         f"{first}); cutouts are named by them")
    if colour is not None and not set(colour.bands) <= set(bands):
        raise ValueError(f"colour bands {list(colour.bands)} must be among the bands "
                         f"{list(bands)}")


def _index(images: Mapping[str, Any], storage_options: Mapping[str, Any]
           ) -> tuple[dict[str, list[Any]], dict[tuple[str, int], float | None]]:
    from dask_phot.images import build_index, header_to_ujy

    indexes = {band: build_index(paths, band=band, storage_options=storage_options)
               for band, paths in images.items()}
    to_ujy = {(band, k): header_to_ujy(m.header, url=m.source_url)
              for band, index in indexes.items() for k, m in enumerate(index)}
    return indexes, to_ujy


def _gather(out: str, n_parts: int) -> pd.DataFrame:
    tables = [pd.read_parquet(part_path(out, k)) for k in range(n_parts)]
    index = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    path = Path(out) / "cutouts.parquet"
    tmp = path.with_name(".cutouts.parquet.tmp")
    index.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return index


def run_cutouts(
    catalog: pd.DataFrame,
    images: Mapping[str, str | Sequence[str]],
    out: str | os.PathLike[str],
    *,
    spec: CutoutSpec | None = None,
    colour: ColourSpec | None = None,
    id_column: str = "source_id",
    group_column: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    client: Any = None,
    on_progress: Callable[[dict[str, Any], int, int], None] | None = None,
) -> CutoutSummary:
    """Cutouts (FITS per source, colour PNGs) of a catalog, partition by partition.

    Parameters
    ----------
    catalog : DataFrame
        ``ra``, ``dec`` (degrees), ``id_column``, ``spec.size_column`` (arcsec;
        missing: every source ``spec.min_size``), ``group_column`` if given.
    images : mapping of str to path/glob/URL or list of them
        Each band's mosaics (``x_i2d.fits[SCI]`` for an extension); only each
        cutout's pixels are read.
    out : path-like
        ``<out>[/<group>]/<id>.fits``, ``<id>_<method>.png``, ``_parts/``,
        ``cutouts.parquet``.
    spec : CutoutSpec, optional
    colour : ColourSpec, optional
        Colour composites to make (none without).
    id_column, group_column : str
        Identifier (file names) and sub-directory (e.g. ``survey``) columns.
    storage_options : mapping, optional
        fsspec options for remote mosaics.
    client : distributed.Client, optional
        Partitions run as tasks on it; here, one after another, without one.
    on_progress : callable, optional
        ``on_progress(stats, n_done, n_todo)`` after each partition.

    Returns
    -------
    CutoutSummary

    Raises
    ------
    ValueError
        A missing column, duplicated ids, colour bands that are not among the bands.
    MosaicError
        A mosaic that cannot be read, or whose units cannot be converted.
    """
    t0 = time.perf_counter()
    spec = spec or CutoutSpec()
    storage = dict(storage_options or {})
    _check(catalog, id_column, group_column, colour, list(images))
    indexes, to_ujy = _index(images, storage)
    parts = plan_partitions(catalog, spec, group_column=group_column)
    mosaics = {b: [m.source_url for m in ix] for b, ix in indexes.items()}
    run_hash = spec_hash(spec, colour, id_column, group_column, mosaics)
    job = CutoutJob(str(out), spec, colour, id_column, group_column, to_ujy, storage, run_hash)
    keys = [part_key(p, run_hash, id_column) for p in parts]
    todo = [k for k in range(len(parts)) if _done(str(out), k, keys[k]) is None]
    logger.info("cutouts: %d source(s) in %d partition(s), %d to do", len(catalog),
                len(parts), len(todo))
    stats = _run(parts, todo, keys, indexes, job, client, on_progress)
    index = _gather(str(out), len(parts))
    return CutoutSummary(
        out=str(out), index=str(Path(out) / "cutouts.parquet"), n_sources=len(catalog),
        n_parts=len(parts), n_parts_skipped=len(parts) - len(todo),
        n_fits=int((index["fits"] != "").sum()) if len(index) else 0,
        n_png=int((index["png"] != "").sum()) if len(index) else 0,
        wall_seconds=time.perf_counter() - t0,
        bytes_read=sum(s["bytes_read"] for s in stats),
        box_bytes=sum(s["box_bytes"] for s in stats),
        n_box_reads=sum(s["n_box_reads"] for s in stats),
        n_done=sum(s["n"] for s in stats), parts=stats)


def _run(parts: Sequence[pd.DataFrame], todo: Sequence[int], keys: Sequence[str],
         indexes: Mapping[str, Any], job: CutoutJob, client: Any,
         on_progress: Callable[[dict[str, Any], int, int], None] | None) -> list[dict]:
    from dataclasses import replace

    stats: list[dict[str, Any]] = []
    jobs = {k: replace(job, run_hash=keys[k]) for k in todo}
    if client is None:
        for k in todo:
            stats.append(cutout_partition(parts[k], indexes, jobs[k], k))
            if on_progress:
                on_progress(stats[-1], len(stats), len(todo))
        return stats
    from distributed import as_completed

    shared = client.scatter(dict(indexes), broadcast=True)
    futures = [client.submit(cutout_partition, parts[k], shared, jobs[k], k,
                             key=f"cutouts-{keys[k]}-{k}", retries=1, pure=False)
               for k in todo]
    for fut in as_completed(futures):
        stats.append(fut.result())
        if on_progress:
            on_progress(stats[-1], len(stats), len(todo))
    return sorted(stats, key=lambda s: s["part"])


def make_cutouts(
    catalog: pd.DataFrame,
    images: Mapping[str, str | Sequence[str]],
    outdir: str | os.PathLike[str],
    *,
    spec: CutoutSpec | None = None,
    rgb: Sequence[str] | None = None,
    stretch: float | None = None,
    q: float | None = None,
    id_column: str = "source_id",
    storage_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Cutouts here, one partition after another; the index (see :func:`run_cutouts`).

    ``rgb`` names the red, green and blue bands of a Lupton composite (``png``),
    whose ``stretch`` and ``q`` are chosen per source unless given.

    Returns
    -------
    DataFrame
        ``id_column``, ``size_arcsec``, ``fits`` and ``png`` paths (``""`` when not
        written), ``bands`` (those covering the source), the stretch chosen...
    """
    if rgb is not None and (len(rgb) != 3 or not set(rgb) <= set(images)):
        raise ValueError(f"rgb must name three of the bands {list(images)}, got {rgb!r}")
    colour = None if rgb is None else ColourSpec(tuple(rgb), stretch=stretch, q=q)  # type: ignore[arg-type]
    summary = run_cutouts(catalog, images, outdir, spec=spec, colour=colour,
                          id_column=id_column, storage_options=storage_options)
    index = pd.read_parquet(summary.index)
    order = pd.Series(np.arange(len(catalog)), index=catalog[id_column].to_numpy())
    return index.iloc[np.argsort(order.loc[index[id_column].to_numpy()].to_numpy(),
                                 kind="stable")].reset_index(drop=True)
