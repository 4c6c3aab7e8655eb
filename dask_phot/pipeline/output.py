"""The output catalog: a HATS-layout Parquet dataset, written cell by cell.

Layout (the HATS convention, read by pandas, pyarrow and ``lsdb.read_hats``)::

    OUT/properties
    OUT/partition_info.csv
    OUT/dataset/_metadata, _common_metadata
    OUT/dataset/Norder=K/Dir=D/Npix=P.parquet
    OUT/cells/Norder=K/Npix=P.json       # per-cell report (status, timings)

Each cell is written to a temporary name and renamed into place, so a file
that exists is complete. A cell counts as done when its Parquet file and its
report exist and the report carries the run's configuration hash.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dask_phot.cells import Cell
from dask_phot.schema import column_units

__all__ = ["cell_paths", "done_cells", "finalize_catalog", "write_cell"]


def cell_paths(out: str | os.PathLike[str], cell: Cell) -> tuple[Path, Path]:
    """Parquet file and report file of a cell (the one place that builds them)."""
    base = Path(out)
    norder, ndir, npix = cell.path_parts()
    return (base / "dataset" / norder / ndir / f"{npix}.parquet",
            base / "cells" / norder / f"{npix}.json")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def write_cell(out: str | os.PathLike[str], cell: Cell, table: pd.DataFrame, report,
               config_hash: str, schema_meta: dict[str, str] | None = None) -> None:
    """Write one cell's table and report atomically (table first, report last).

    ``schema_meta`` (units, configuration hash) goes into the Parquet schema
    metadata, and from there into the dataset's ``_common_metadata``.
    """
    pq_path, js_path = cell_paths(out, cell)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    extra = {k.encode(): v.encode() for k, v in (schema_meta or {}).items()}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **extra})
    _atomic_write(pq_path, lambda p: pq.write_table(arrow, p))
    rep = dataclasses.asdict(report) | {"config_hash": config_hash}
    _atomic_write(js_path, lambda p: p.write_text(json.dumps(rep, indent=1)))


def done_cells(out: str | os.PathLike[str], config_hash: str) -> set[tuple[int, int]]:
    """Cells already finished by a run with the same configuration hash."""
    done = set()
    for js in Path(out).glob("cells/Norder=*/Npix=*.json"):
        try:
            rep = json.loads(js.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        cell = Cell(int(rep["order"]), int(rep["pixel"]))
        if rep.get("config_hash") == config_hash and cell_paths(out, cell)[0].exists():
            done.add((cell.order, cell.pixel))
    return done


def finalize_catalog(out: str | os.PathLike[str], cells: Iterable[Cell], *, name: str,
                     bands: list[str], config: dict, total_rows: int,
                     calibration: dict | None = None) -> None:
    """Write the HATS metadata (``_metadata``, properties, partition info), the units and
    each band's calibration (``dask_phot_run.json``)."""
    import hats
    from hats.catalog import PartitionInfo, TableProperties
    from hats.pixel_math.healpix_pixel import HealpixPixel

    base = Path(out)
    pixels = sorted((HealpixPixel(c.order, c.pixel) for c in cells),
                    key=lambda p: (p.order, p.pixel))
    hats.io.write_parquet_metadata(base)
    PartitionInfo.from_healpix(pixels).write_to_file(base / "partition_info.csv")
    props = TableProperties(
        catalog_name=name, catalog_type="object", total_rows=int(total_rows),
        ra_column="ra", dec_column="dec", healpix_column="_healpix_29", healpix_order=29,
        extra_columns={"hats_builder": "dask-phot"},
    )
    props.to_properties_file(base)
    meta = {"units": column_units(bands), "bands": bands, "calibration": calibration or {},
            "config": config}
    (base / "dask_phot_run.json").write_text(json.dumps(meta, indent=1, default=str))
