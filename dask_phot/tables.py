"""Catalogue tables on disk: a run's output, Parquet, FITS or CSV; their band columns.

:func:`read_table` reads what the commands take as a catalogue (a dask-phot
output directory, or a Parquet, FITS or CSV file) and :func:`write_table`
writes one; :func:`band_names`, :func:`xray_column`, :func:`uv_detected` and
:func:`find_source` find the columns and rows the plots and the report need.

Examples
--------
>>> cat = pd.DataFrame({"source_id": [7, 9], "flux_nuv": [3.0, 1.0],
...                     "flux_err_nuv": [0.5, 0.5], "chandra_match": [False, True]})
>>> band_names(cat), xray_column(cat), uv_detected(cat).tolist()
(['nuv'], 'chandra_match', [True, False])
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["band_names", "find_source", "read_table", "uv_detected", "write_table",
           "xray_column"]

_FLUX_RE = re.compile(r"^flux_(?!err_|true_)([A-Za-z][A-Za-z0-9_]*)$")


def _kind(path: Path) -> str:
    suffix = "".join(path.suffixes).lower()
    if ".fits" in suffix or suffix.endswith(".fit"):
        return "fits"
    if ".csv" in suffix:
        return "csv"
    return "parquet"


def read_table(path: str | Path, *, partial: bool = False) -> pd.DataFrame:
    """A catalogue from a dask-phot output directory, or a Parquet, FITS or CSV file.

    ``partial``: read an output directory whose run has not finished (see
    :func:`dask_phot.pipeline.read_catalog`).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    dask_phot.pipeline.IncompleteCatalogError
        An output directory whose run has not finished (and ``partial`` is False).
    """
    path = Path(path)
    if path.is_dir():
        from dask_phot.pipeline import read_catalog

        return read_catalog(path, partial=partial)
    if not path.exists():
        raise FileNotFoundError(f"no catalogue at {path}")
    kind = _kind(path)
    if kind == "fits":
        from astropy.table import Table

        with warnings.catch_warnings():  # non-standard unit strings in archive tables
            warnings.simplefilter("ignore")
            return Table.read(path).to_pandas()
    if kind == "csv":
        return pd.read_csv(path)
    return pd.read_parquet(path)


def write_table(table: pd.DataFrame, path: str | Path) -> Path:
    """Write a table as Parquet, FITS or CSV (by the file's suffix; default Parquet)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = _kind(path)
    if kind == "fits":
        from astropy.table import Table

        Table.from_pandas(table).write(path, overwrite=True)
    elif kind == "csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    return path


def band_names(catalog: pd.DataFrame) -> list[str]:
    """Bands with a ``flux_{band}`` column, in column order.

    Examples
    --------
    >>> band_names(pd.DataFrame(columns=["flux_irac1", "flux_err_irac1", "flux_true_nuv",
    ...                                  "flux_nuv"]))
    ['irac1', 'nuv']
    """
    return [m.group(1) for c in catalog.columns if (m := _FLUX_RE.match(str(c)))]


def xray_column(catalog: pd.DataFrame) -> str | None:
    """The first ``*_match`` column (added by :func:`dask_phot.crossmatch.crossmatch`)."""
    return next((c for c in catalog.columns if str(c).endswith("_match")), None)


def uv_detected(catalog: pd.DataFrame, band: str = "nuv", snr: float = 3.0) -> np.ndarray | None:
    """Rows detected at ``snr`` in ``band`` (None when the band is absent)."""
    if f"flux_{band}" not in catalog.columns or f"flux_err_{band}" not in catalog.columns:
        return None
    f, e = catalog[f"flux_{band}"].to_numpy(float), catalog[f"flux_err_{band}"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(f / e) >= snr


def find_source(catalog: pd.DataFrame, source: str) -> pd.Series:
    """The row whose ``source_id`` (or ``ID``/``id``) is ``source``."""
    for col in ("source_id", "ID", "id"):
        if col in catalog.columns:
            hit = catalog[catalog[col].astype(str) == str(source)]
            if len(hit):
                return hit.iloc[0]
    raise KeyError(f"no source {source!r} in the catalogue")
