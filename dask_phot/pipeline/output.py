"""The output catalog: a HATS-layout Parquet dataset on local disk or S3, written cell by cell.

Layout (the HATS convention, read by pandas, pyarrow and ``lsdb.read_hats``;
paths built by ``hats.io.paths``)::

    OUT/hats.properties, OUT/properties
    OUT/partition_info.csv
    OUT/dataset/_metadata, _common_metadata
    OUT/dataset/Norder=K/Dir=D/Npix=P.parquet
    OUT/cells/Norder=K/Npix=P.json       # per-cell report: status, errors, inputs, timings
    OUT/dask_phot_run.json               # the run record: "running" or "finished"

``OUT`` is a local folder or any fsspec URL (``s3://bucket/prefix``), through
:class:`CatalogStore`. Every object is written whole or not at all: a local file
is written under a temporary name and renamed, an S3 object is one PUT (visible
only once complete). A cell's Parquet file is written before its report, so a
report means a complete cell. A run marks the record "running" before it
changes anything (and removes the HATS metadata, so that lsdb refuses a half
written catalog) and "finished" when the metadata is written again.
"""

from __future__ import annotations

import datetime as _dt
import functools
import io
import json
import os
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dask_phot.cells import Cell
from dask_phot.storage import StorageError, open_fs, resolve_options

__all__ = ["RECORD_NAME", "CatalogStore", "IncompleteCatalogError", "arrow_table"]

#: The run record's file name in the output folder.
RECORD_NAME = "dask_phot_run.json"
_REPORT_RE = re.compile(r"Norder=(\d+)/Npix=(\d+)\.json$")
_PARQUET_RE = re.compile(r"Norder=(\d+)/Dir=\d+/Npix=(\d+)\.parquet$")
_HATS_FILES = ("hats.properties", "properties", "partition_info.csv", "dataset/_metadata",
               "dataset/_common_metadata")


class IncompleteCatalogError(ValueError):
    """A catalog whose run has not finished (the message says how to finish it)."""

    __module__ = "dask_phot.pipeline"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _column(name: str, t: pa.DataType, unit: str, description: str) -> Any:
    """An empty astropy Column with a field's name, type, unit and description."""
    from astropy.table import Column

    numeric = pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
    return Column([], name=name, dtype=t.to_pandas_dtype() if numeric else "U1",
                  unit=unit or None, description=description or None)


@functools.lru_cache(maxsize=16)
def _table_meta_yaml(columns: tuple[tuple[str, pa.DataType, str, str], ...]) -> str:
    """astropy's ``table_meta_yaml`` of columns ``(name, type, unit, description)``.

    The same for every cell of a run (a pure function of the schema), so each process
    makes it once: YAML's emitter took about as long as the rest of a cell's write.
    """
    from astropy.table import meta as table_meta

    cols = [_column(*c) for c in columns]
    return "\n".join(table_meta.get_yaml_from_header({"cols": cols, "meta": {}}))


def arrow_table(table: pd.DataFrame, info: Mapping[str, tuple[str, str]],
                metadata: Mapping[str, str] | None = None) -> pa.Table:
    """A cell's table as Arrow, with each column's unit and description attached.

    The units go twice: in each field's metadata (``unit``, ``description``, what
    pyarrow users see) and in astropy's ``table_meta_yaml`` (what
    ``astropy.table.Table.read`` turns into column units).

    Parameters
    ----------
    table : pandas.DataFrame
        The cell's rows.
    info : mapping
        Column -> ``(unit, description)`` (:func:`dask_phot.schema.column_info`);
        columns not in it get neither.
    metadata : mapping, optional
        Extra schema metadata (string keys and values).
    """
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    fields, cols = [], []
    for f in arrow.schema:
        unit, description = info.get(f.name, ("", ""))
        md = {k: v for k, v in (("unit", unit), ("description", description)) if v}
        fields.append(f.with_metadata(md) if md else f)
        cols.append((f.name, f.type, unit, description))
    yaml = _table_meta_yaml(tuple(cols))
    extra = {**(metadata or {}), "table_meta_yaml": yaml}
    schema_md = {**(arrow.schema.metadata or {}), **{k.encode(): v.encode()
                                                    for k, v in extra.items()}}
    return pa.Table.from_arrays(arrow.columns, schema=pa.schema(fields, metadata=schema_md))


@dataclass(frozen=True)
class CatalogStore:
    """An output catalog's location: a local folder or a URL, and its storage options.

    Parameters
    ----------
    url : str
        Local folder (made absolute) or fsspec URL (``s3://bucket/catalog``).
    storage_options : dict
        fsspec options for ``url`` (kept in memory only, never written).
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, url: str | os.PathLike[str],
             storage_options: Mapping[str, Any] | None = None) -> CatalogStore:
        """The store of ``url`` (a local path is made absolute)."""
        text = os.fspath(url)
        if "://" not in text:
            text = os.path.abspath(text)
        return cls(text.rstrip("/"), resolve_options(text, storage_options))

    # ------------------------------------------------------------------ paths
    @property
    def fs(self) -> Any:
        """The fsspec filesystem (cached by fsspec)."""
        return open_fs(self.url, self.storage_options)[0]

    @property
    def root(self) -> str:
        """The catalog's path in :attr:`fs`."""
        return open_fs(self.url, self.storage_options)[1].rstrip("/")

    @property
    def local(self) -> bool:
        """True for a local folder."""
        return "://" not in self.url

    def upath(self) -> Any:
        """The catalog as a ``UPath`` with its storage options (for hats and lsdb).

        Object stores get a 8 MiB block size (hats' default, 32 kiB, suits reads, but
        s3fs writes parts of at least 5 MiB): a metadata file is then one PUT.
        """
        from hats.io.file_io import get_upath

        extra = {} if self.local else {"default_block_size": 8 * 2**20}
        return get_upath(self.url, **{**extra, **self.storage_options})

    def cell_paths(self, cell: Cell) -> tuple[str, str]:
        """Parquet file and report of a cell, in :attr:`fs` (the one place that builds them)."""
        from hats.io.paths import pixel_catalog_file
        from hats.pixel_math.healpix_pixel import HealpixPixel

        parquet = pixel_catalog_file(self.upath(), HealpixPixel(cell.order, cell.pixel)).path
        return parquet, f"{self.root}/cells/Norder={cell.order}/Npix={cell.pixel}.json"

    # ------------------------------------------------------------------ writing
    def check_writable(self) -> None:
        """Write and delete a small probe object, so that a read-only location fails at once.

        Raises
        ------
        StorageError
            One line naming the location and what to change.
        """
        probe = f"{self.root}/.dask-phot-probe-{uuid.uuid4().hex[:12]}"
        try:
            self.put(probe, b"")
            self.fs.rm(probe)
        except OSError as exc:
            hint = "" if self.local else ("; for a private bucket set [storage] anon = false "
                                          "and give credentials")
            raise StorageError(f"{self.url}: cannot write the catalog here ({type(exc).__name__}"
                               f": {exc}){hint}") from None

    def put(self, path: str, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically (rename locally; one PUT on object stores)."""
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = os.path.join(os.path.dirname(path),
                               f".{os.path.basename(path)}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            self.fs.pipe_file(path, data)

    def write_cell(self, cell: Cell, table: pa.Table, report: Mapping[str, Any]) -> None:
        """Write a cell's table, then its report (each atomically)."""
        parquet, report_path = self.cell_paths(cell)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.put(parquet, buf.getvalue())
        self.put(report_path, json.dumps(report, indent=1, default=str).encode())

    def remove_cells(self, cells: Iterable[tuple[int, int]]) -> None:
        """Delete cells' reports, then their Parquet files (missing ones ignored)."""
        paths = [self.cell_paths(Cell(o, p)) for o, p in cells]
        for group in ([r for _, r in paths], [t for t, _ in paths]):
            present = [p for p in group if self.fs.exists(p)]
            if present:
                self.fs.rm(present)

    # ------------------------------------------------------------------ reading
    def _find(self, folder: str, pattern: re.Pattern[str]) -> list[str]:
        """Files under ``folder`` whose path matches ``pattern`` (one listing on S3)."""
        fs = self.fs
        fs.invalidate_cache()  # another process (a worker, an earlier run) wrote them
        try:
            found = fs.find(f"{self.root}/{folder}")
        except FileNotFoundError:
            return []
        return sorted(p for p in found if pattern.search(p))

    def reports(self) -> dict[tuple[int, int], dict[str, Any]]:
        """Every cell report in the folder, by ``(order, pixel)``; unreadable ones skipped."""
        paths = self._find("cells", _REPORT_RE)
        if not paths:
            return {}
        blobs = self.fs.cat(paths, on_error="return")
        out = {}
        for path, blob in blobs.items():
            match = _REPORT_RE.search(path)
            if match is None or isinstance(blob, BaseException):
                continue
            try:
                out[int(match[1]), int(match[2])] = json.loads(blob)
            except ValueError:
                continue
        return out

    def written_cells(self) -> set[tuple[int, int]]:
        """Cells whose Parquet file exists."""
        found = (_PARQUET_RE.search(p) for p in self._find("dataset", _PARQUET_RE))
        return {(int(m[1]), int(m[2])) for m in found if m}

    def record(self) -> dict[str, Any] | None:
        """The run record (:data:`RECORD_NAME`), or None when there is none."""
        try:
            return json.loads(self.fs.cat_file(f"{self.root}/{RECORD_NAME}"))
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------ life cycle
    def begin(self, record: Mapping[str, Any]) -> None:
        """Mark a run as started: record "running", remove the HATS metadata files."""
        self.put(f"{self.root}/{RECORD_NAME}",
                 json.dumps({**record, "status": "running", "started": _now()},
                            indent=1, default=str).encode())
        old = [f"{self.root}/{name}" for name in _HATS_FILES]
        present = [p for p in old if self.fs.exists(p)]
        if present:
            self.fs.rm(present)

    def finish(self, cells: Iterable[Cell], *, name: str, record: Mapping[str, Any]) -> int:
        """Write the HATS metadata of ``cells`` and mark the run finished; total rows.

        ``_metadata`` and ``_common_metadata`` (hats), ``partition_info.csv`` and the
        properties (without ``hats_index_extra_column``: the builder is recorded as
        ``hats_builder``), then the record with status "finished".
        """
        import hats
        from hats.catalog import PartitionInfo, TableProperties
        from hats.io.paths import get_partition_info_pointer
        from hats.pixel_math.healpix_pixel import HealpixPixel

        from dask_phot import __version__

        base = self.upath()
        pixels = sorted((HealpixPixel(c.order, c.pixel) for c in cells),
                        key=lambda p: (p.order, p.pixel))
        total = int(hats.io.write_parquet_metadata(base))
        PartitionInfo.from_healpix(pixels).write_to_file(get_partition_info_pointer(base))
        TableProperties(
            catalog_name=name, catalog_type="object", total_rows=total, ra_column="ra",
            dec_column="dec", healpix_column="_healpix_29", healpix_order=29,
            hats_builder=f"dask-phot {__version__}",
        ).to_properties_file(base)
        previous = self.record() or {}
        done = {**previous, **record, "status": "finished", "finished": _now(),
                "total_rows": total}
        self.put(f"{self.root}/{RECORD_NAME}", json.dumps(done, indent=1, default=str).encode())
        return total

    def check_finished(self, *, allow_partial: bool = False) -> dict[str, Any]:
        """The run record, if the run finished; else an error (or, partial allowed, the record).

        Raises
        ------
        FileNotFoundError
            No catalog at :attr:`url`.
        IncompleteCatalogError
            The run writing it has not finished (and ``allow_partial`` is False).
        """
        record = self.record()
        if record is None:
            if not self.written_cells():
                raise FileNotFoundError(f"{self.url}: no dask-phot catalog here")
            record = {"status": "running"}
        record.setdefault("status", "finished")  # a record of an earlier version
        if record["status"] != "finished" and not allow_partial:
            n = len(self.written_cells())
            planned = record.get("n_cells")
            of = f" of {planned}" if planned else ""
            raise IncompleteCatalogError(
                f"{self.url}: the run writing this catalog has not finished ({n}{of} cells "
                "written); run `dask-phot run` again with the same configuration and output "
                "to finish it (or read it with partial=True / report --partial)")
        return record
