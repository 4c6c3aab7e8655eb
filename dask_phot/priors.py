"""Read a priors catalog into the pipeline's normalised form.

:func:`read_priors` takes a Parquet, FITS (binary table), CSV or ECSV file,
local or remote (any fsspec URL: ``s3://``, ``https://``...), an
:class:`astropy.table.Table` or a :class:`pandas.DataFrame`, and returns a
frame with ``source_id`` (int64), ``ra`` and ``dec`` (float64 degrees) first,
then the requested extra columns. Every check names the file and the column
(and the row, for a bad value).

Examples
--------
>>> import pandas as pd
>>> raw = pd.DataFrame({"RA": [150.1, 150.2], "DEC": [2.2, 2.3], "objid": [7, 9],
...                     "mag": [21.0, 22.5]})
>>> df = read_priors(raw, ra_column="RA", dec_column="DEC", id_column="objid",
...                  columns=["mag"])
>>> df.columns.tolist(), df["source_id"].tolist()
(['source_id', 'ra', 'dec', 'mag'], [7, 9])
>>> read_priors(raw, ra_column="alpha")
Traceback (most recent call last):
...
ValueError: <DataFrame>: no RA column 'alpha' (ra_column; [priors] ra_column of a run configuration); available columns: RA, DEC, objid, mag

Column names match whatever their case (``ra`` finds ``RA``) when only one does.
"""  # noqa: E501

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["PRIORS_FORMATS", "read_priors"]

logger = logging.getLogger(__name__)

#: File name endings -> reader used by :func:`read_priors`.
PRIORS_FORMATS: Mapping[str, str] = {
    ".parquet": "parquet", ".parq": "parquet", ".pq": "parquet",
    ".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".fit.gz": "fits",
    ".csv": "csv", ".csv.gz": "csv", ".ecsv": "ecsv",
}


def _format(label: str) -> str:
    name = label.lower().split("?", 1)[0]
    for ending in sorted(PRIORS_FORMATS, key=len, reverse=True):
        if name.endswith(ending):
            return PRIORS_FORMATS[ending]
    raise ValueError(f"{label}: unknown priors file type; expected one of "
                     f"{', '.join(PRIORS_FORMATS)}")


def _column_array(col: Any) -> np.ndarray:
    """One astropy column as a native-byte-order array; masked entries become NaN/None."""
    arr = np.asarray(col)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    mask = np.asarray(getattr(col, "mask", False))
    if mask.any():
        if arr.dtype.kind in "fiu":
            arr = np.where(mask, np.nan, arr.astype(np.float64))
        else:
            arr = np.where(mask, None, arr.astype(object))
    if arr.dtype.kind == "S":
        arr = np.char.decode(arr, "utf-8")
    return arr


def _table_to_frame(table: Any, label: str) -> pd.DataFrame:
    """An astropy Table as a DataFrame: native byte order, no multi-dimensional columns."""
    data: dict[str, Any] = {}
    for name in table.colnames:
        col = table[name]
        if col.ndim > 1:
            logger.info("%s: column %r has shape %s per row; dropped", label, name,
                        col.shape[1:])
            continue
        data[name] = _column_array(col)
    return pd.DataFrame(data, index=pd.RangeIndex(len(table)))


def _match(names: Sequence[Any], name: str) -> str | None:
    """``name`` among ``names``: exactly, else the one name equal to it but for case."""
    if name in names:
        return name
    close = [n for n in names if str(n).lower() == name.lower()]
    return close[0] if len(close) == 1 else None


def _read_file(
    label: str, wanted: list[str], id_column: str, storage_options: Mapping[str, Any] | None
) -> pd.DataFrame:
    """Read a file, naming it in every error (a file that is empty, or not of its type)."""
    kind = _format(label)
    try:
        return _read_kind(label, kind, wanted, id_column, storage_options)
    except FileNotFoundError:
        raise FileNotFoundError(f"{label}: no such file") from None
    except (ValueError, OSError, KeyError, IndexError) as exc:
        size = ""
        if "://" not in label and os.path.isfile(label) and os.path.getsize(label) == 0:
            size = "the file is empty (0 bytes); "
        raise ValueError(f"{label}: cannot read it as {kind}: {size}"
                         f"{type(exc).__name__}: {exc}".replace("\n", " ")) from None


def _read_kind(label: str, kind: str, wanted: list[str], id_column: str,
               storage_options: Mapping[str, Any] | None) -> pd.DataFrame:
    """Read a file; Parquet reads only ``wanted`` (all names, no rows, if one is missing)."""
    from dask_phot.storage import open_fs

    compression = "gzip" if label.lower().endswith(".gz") else None
    fs, path = open_fs(label, storage_options)
    with fs.open(path, "rb", compression=compression) as fh:
        if kind == "parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            found = [_match(names, c) for c in wanted]
            if any(f is None for f, c in zip(found, wanted, strict=True) if c != id_column):
                return pd.DataFrame(columns=names)
            return pf.read(columns=list(dict.fromkeys(f for f in found if f))).to_pandas()
        if kind == "csv":
            return pd.read_csv(fh)
        from astropy.table import Table

        if kind == "ecsv":
            table = Table.read(fh.read().decode("utf-8"), format="ascii.ecsv")
        else:
            table = Table.read(io.BytesIO(fh.read()), format="fits")
    return _table_to_frame(table, label)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _coordinate(frame: pd.DataFrame, column: str, what: str, label: str) -> np.ndarray:
    values = frame[column]
    if not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
        converted = pd.to_numeric(values, errors="coerce")
        bad = converted.isna().to_numpy() & values.notna().to_numpy()
        if bad.any():
            row = _first_bad(bad)
            raise ValueError(f"{label}: {what} column {column!r} is not numeric: row {row} "
                             f"holds {values.iloc[row]!r}")
        values = converted
    arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(arr)
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(f"{label}: {what} column {column!r} has a missing or non-finite value "
                         f"at row {row} ({arr[row]!r}); {int(bad.sum())} such row(s)")
    return arr


def _ids(frame: pd.DataFrame, column: str, label: str) -> np.ndarray:
    if column not in frame.columns:
        logger.warning("%s: no id column %r; source_id is the row number", label, column)
        return np.arange(len(frame), dtype=np.int64)
    values = frame[column]
    if values.dtype.kind in "iu" and not values.isna().any():
        ids = values.to_numpy(dtype=np.int64)
    else:
        arr = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            row = _first_bad(bad)
            raise ValueError(f"{label}: id column {column!r} must hold integers: row {row} "
                             f"holds {values.iloc[row]!r}")
        ids = arr.astype(np.int64)
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        first = ids[_first_bad(dup)]
        rows = np.flatnonzero(ids == first)[:5].tolist()
        raise ValueError(f"{label}: id column {column!r} has duplicate values: {first} at rows "
                         f"{rows}; {int(dup.sum())} rows share an id")
    return ids


def _normalise(
    frame: pd.DataFrame, label: str, ra: str, dec: str, id_col: str, columns: list[str]
) -> pd.DataFrame:
    available = ", ".join(map(str, frame.columns))
    for what, name, key in (("RA", ra, "ra_column"), ("Dec", dec, "dec_column")):
        if _match(list(frame.columns), name) is None:
            raise ValueError(f"{label}: no {what} column {name!r} ({key}; [priors] {key} of a "
                             f"run configuration); available columns: {available}")
    ra, dec = _match(list(frame.columns), ra), _match(list(frame.columns), dec)
    id_col = _match(list(frame.columns), id_col) or id_col
    for name in columns:
        if name not in frame.columns:
            raise ValueError(f"{label}: no column {name!r} (requested in columns); available "
                             f"columns: {available}")
    ra_deg = _coordinate(frame, ra, "RA", label)
    dec_deg = _coordinate(frame, dec, "Dec", label)
    bad = np.abs(dec_deg) > 90.0
    if bad.any():
        row = _first_bad(bad)
        raise ValueError(f"{label}: Dec column {dec!r} out of range [-90, 90] at row {row} "
                         f"({dec_deg[row]!r})")
    wrapped = (ra_deg < 0.0) | (ra_deg >= 360.0)
    if wrapped.any():
        logger.info("%s: %d RA value(s) outside [0, 360) wrapped", label, int(wrapped.sum()))
        ra_deg = np.mod(ra_deg, 360.0)
    out = pd.DataFrame({"source_id": _ids(frame, id_col, label), "ra": ra_deg, "dec": dec_deg})
    for name in columns:
        if name in out.columns:
            if name in (ra, dec, id_col):
                continue
            raise ValueError(f"{label}: column {name!r} would replace the output's own "
                             f"{name!r} column; rename it")
        out[name] = frame[name].reset_index(drop=True)
    return out


def read_priors(
    source: str | os.PathLike[str] | pd.DataFrame | Any,
    *,
    ra_column: str = "ra",
    dec_column: str = "dec",
    id_column: str = "source_id",
    columns: Sequence[str] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Load and check a priors catalog.

    Parameters
    ----------
    source : str, path-like, astropy.table.Table or pandas.DataFrame
        A file path or fsspec URL (Parquet ``.parquet/.parq/.pq``, FITS binary
        table ``.fits/.fit[.gz]``, ``.csv[.gz]``, ``.ecsv``, by extension) or
        an in-memory table.
    ra_column, dec_column : str
        Names of the ICRS coordinate columns, degrees.
    id_column : str
        Integer identifier column; when absent, ``source_id`` is the row
        number (logged).
    columns : sequence of str, optional
        Extra input columns carried to the output, in this order.
    storage_options : mapping, optional
        fsspec options for a remote ``source`` (see
        :func:`dask_phot.config.storage_options`); ignored for local paths.

    Returns
    -------
    pandas.DataFrame
        ``source_id`` (int64), ``ra`` (float64, wrapped to [0, 360)),
        ``dec`` (float64), then ``columns``; a fresh RangeIndex, input order.

    Raises
    ------
    ValueError
        Unknown file type, missing column (the available ones listed),
        non-numeric, missing or non-finite coordinates, Dec outside
        [-90, 90], non-integer or duplicate ids; the message names the file
        (or ``<DataFrame>``/``<Table>``), the column and a row.
    """
    extra = list(columns or [])
    if isinstance(source, pd.DataFrame):
        label, frame = "<DataFrame>", source
    elif isinstance(source, str | os.PathLike):
        label = os.fspath(source)
        frame = _read_file(label, [ra_column, dec_column, id_column, *extra], id_column,
                           storage_options)
    elif hasattr(source, "colnames"):
        label = "<Table>"
        frame = _table_to_frame(source, label)
    else:
        raise TypeError(f"read_priors: source must be a path, URL, astropy Table or pandas "
                        f"DataFrame, got {type(source).__name__}")
    out = _normalise(frame, label, ra_column, dec_column, id_column, extra)
    logger.debug("%s: %d priors read", label, len(out))
    return out
