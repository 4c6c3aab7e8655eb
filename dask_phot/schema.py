"""Output schema and quality flags: the one place that defines them.

Every table that dask-phot produces (the engine's per-band result, a cell's
multiband catalog, the final Parquet/HATS dataset) takes its columns, dtypes
and flag bits from here: :func:`band_table` builds one band's measurements and
:func:`cell_table` a cell's output rows from :data:`BASE_COLUMNS` and
:data:`BAND_COLUMNS`, and every ``map_partitions`` gets its ``meta`` from
:func:`cell_meta`.

Magnitudes
----------
``mag_<band>`` and ``mag_err_<band>`` are given only where the flux is significant,
``flux / flux_err >= MAG_MIN_SNR`` (3); elsewhere they are NaN and the flux, with its
error, is the measurement (a magnitude of an insignificant or negative flux has no
meaningful error).

Units
-----
Every column's unit and description (:func:`column_info`) travel with the catalog's
Parquet files, where astropy (``Table.read``) and pyarrow (each field's metadata:
``unit``, ``description``) find them.

Flag bits
---------
The ``flags`` of a measurement is the bitwise OR of :class:`Flag` members.
A measurement whose flux is NaN always has at least one of the bits in
:data:`FATAL_FLAGS` set; the other bits are warnings about a finite flux.
The table is :data:`FLAG_MEANINGS`:

{flag_table}
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.bands import flux_to_mag

__all__ = [
    "BAND_COLUMNS",
    "BASE_COLUMNS",
    "FATAL_FLAGS",
    "FLAG_MEANINGS",
    "MAG_MIN_SNR",
    "MODEL_CODES",
    "UNRELIABLE_FLAGS",
    "Flag",
    "band_columns",
    "band_table",
    "band_values",
    "cell_dtypes",
    "cell_meta",
    "cell_table",
    "column_info",
    "column_units",
    "describe_flags",
    "flag_table",
]


class Flag(enum.IntFlag):
    """Bit flags attached to every measurement (meanings: :data:`FLAG_MEANINGS`)."""

    OFF_IMAGE = 1
    NO_DATA = 2
    EDGE = 4
    MASKED_PIXELS = 8
    CENTER_MASKED = 16
    DEGENERATE = 32
    HAS_DEGENERATE = 64
    BLENDED = 128
    NEGATIVE_FLUX = 256
    POSITION_AT_BOUND = 512
    POSITION_NOT_FIT = 1024
    FIT_FAILED = 2048
    HIGH_CHI2 = 4096
    NOT_COVERED = 8192
    CELL_FAILED = 16384
    MODEL_MISMATCH = 32768
    MODEL_TRUNCATED = 65536


#: What each flag bit means (the module documentation's table is made from this).
FLAG_MEANINGS: Mapping[Flag, str] = MappingProxyType({
    Flag.OFF_IMAGE: "position outside the image: no flux measured",
    Flag.NO_DATA: "footprint has no usable pixel (all NaN/zero weight)",
    Flag.EDGE: "footprint truncated by the image edge",
    Flag.MASKED_PIXELS: "some footprint pixels are NaN or zero weight",
    Flag.CENTER_MASKED: "the pixel at the source position is masked",
    Flag.DEGENERATE: "same model as an earlier source: not fitted (NaN)",
    Flag.HAS_DEGENERATE: "an indistinguishable later source was merged in",
    Flag.BLENDED: "a neighbour lies within one PSF FWHM",
    Flag.NEGATIVE_FLUX: "fitted flux is negative (kept, not clipped)",
    Flag.POSITION_AT_BOUND: "position refinement hit its bound",
    Flag.POSITION_NOT_FIT: "position refinement asked for but skipped (low S/N)",
    Flag.FIT_FAILED: "the linear solve failed for this source's group",
    Flag.HIGH_CHI2: "reduced chi2 over the footprint above threshold",
    Flag.NOT_COVERED: "pipeline: no mosaic of this band covers the source",
    Flag.CELL_FAILED: "pipeline: the cell/band task failed (see status)",
    Flag.MODEL_MISMATCH: "the residual shows the source is more (or less) extended than "
                         "its model",
    Flag.MODEL_TRUNCATED: "the galaxy's model was cut to the largest stamp size",
})

#: Bits that mean "no flux was measured" (the flux is NaN).
FATAL_FLAGS = (
    Flag.OFF_IMAGE | Flag.NO_DATA | Flag.DEGENERATE | Flag.FIT_FAILED
    | Flag.NOT_COVERED | Flag.CELL_FAILED
)

#: Bits that mean "do not trust this flux": none measured, a masked centre, a model
#: that does not describe the source (mismatch, chi2, truncation) or a merged twin. The
#: other bits (EDGE, MASKED_PIXELS, BLENDED, NEGATIVE_FLUX, the position bits) describe a
#: flux whose error already accounts for them. Keep ``(flags & UNRELIABLE_FLAGS) == 0``.
UNRELIABLE_FLAGS = (
    FATAL_FLAGS | Flag.CENTER_MASKED | Flag.HAS_DEGENERATE | Flag.HIGH_CHI2
    | Flag.MODEL_MISMATCH | Flag.MODEL_TRUNCATED
)

FLAG_DTYPE = np.int32

#: Magnitudes are given where ``flux / flux_err`` is at least this (else NaN): a 3-sigma
#: measurement has a magnitude error of 0.36 mag.
MAG_MIN_SNR = 3.0


def flag_table() -> str:
    """The flags as a reStructuredText table: name, bit, meaning."""
    rows = [(f"``{f.name}``", str(int(f)), FLAG_MEANINGS[f]) for f in Flag]
    widths = [max(len(r[i]) for r in [*rows, ("name", "bit", "meaning")]) for i in range(3)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(h.ljust(w) for h, w in zip(("name", "bit", "meaning"), widths,
                                                       strict=True)).rstrip(), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join([*lines, rule])


def describe_flags(value: int) -> list[str]:
    """Return the names of the bits set in ``value``.

    Examples
    --------
    >>> describe_flags(Flag.EDGE | Flag.BLENDED)
    ['EDGE', 'BLENDED']
    >>> describe_flags(0)
    []
    """
    return [f.name for f in Flag if int(value) & int(f)]


#: Per-band measurement columns: suffix -> (dtype, unit, description).
BAND_COLUMNS: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "flux": ("float64", "uJy", "forced flux"),
    "flux_err": ("float64", "uJy", "marginal 1-sigma flux uncertainty"),
    "mag": ("float64", "mag(AB)", "AB magnitude of the flux where flux / flux_err >= 3 "
                                  "(else NaN)"),
    "mag_err": ("float64", "mag(AB)", "AB magnitude uncertainty (where mag is given)"),
    "chi2": ("float64", "", "reduced chi2 over the source footprint"),
    "mismatch": ("float64", "", "significance of the residual's broadening (> 0: the source "
                                "is more extended than its model; see Flag.MODEL_MISMATCH)"),
    "model": ("int8", "", "source model: 0 point, 1 Sersic (shape from the priors), 2 "
                          "template, 3 round Sersic chosen by the band's fit (MODEL_CODES); "
                          "-1 none fitted"),
    "flags": ("int32", "", "bitwise OR of dask_phot.schema.Flag"),
})

#: Codes of the per-band ``model`` column.
MODEL_CODES: Mapping[str, int] = MappingProxyType({"none": -1, "point": 0, "sersic": 1,
                                                   "template": 2, "chosen": 3})

#: Columns every output row carries, independent of bands.
BASE_COLUMNS: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "source_id": ("int64", "", "row identifier from the priors catalog"),
    "ra": ("float64", "deg", "prior right ascension (ICRS)"),
    "dec": ("float64", "deg", "prior declination (ICRS)"),
    "_healpix_29": ("int64", "", "HEALPix order-29 nested index (HATS spatial index)"),
})


def band_columns(band: str) -> dict[str, tuple[str, str, str]]:
    """Columns measured for one band, e.g. ``flux_irac1``.

    Parameters
    ----------
    band : str
        Band name.

    Returns
    -------
    dict
        Column name -> (dtype, unit, description).

    Examples
    --------
    >>> list(band_columns("nuv"))[:2]
    ['flux_nuv', 'flux_err_nuv']
    """
    return {f"{k}_{band}": v for k, v in BAND_COLUMNS.items()}


def band_table(n: int, *, flags: int | np.ndarray = 0, flux: Any = None,
               flux_err: Any = None, chi2: Any = None, mismatch: Any = None,
               model: Any = None) -> pd.DataFrame:
    """One band's measurements of ``n`` sources, with the columns of :data:`BAND_COLUMNS`.

    The magnitudes follow from the fluxes (:func:`dask_phot.bands.flux_to_mag`)
    where ``flux / flux_err >= MAG_MIN_SNR``; a quantity not given is NaN, so
    ``band_table(n, flags=Flag.NOT_COVERED)`` is a band in which nothing was measured.

    Parameters
    ----------
    n : int
        Number of sources.
    flags : int or array of int
        :class:`Flag` bits of every source, or one value for all.
    flux, flux_err, chi2, mismatch : array_like, optional
        Fluxes and their errors in uJy, reduced chi2, model mismatch.
    model : array_like of int, optional
        :data:`MODEL_CODES` of the models fitted (default: none).

    Examples
    --------
    >>> band_table(3, flux=[1.0, -1.0, 0.2], flux_err=[0.1, 0.1, 0.1], flags=[0, 256, 0],
    ...            model=0)
       flux  flux_err   mag   mag_err  chi2  mismatch  model  flags
    0   1.0       0.1  23.9  0.108574   NaN       NaN      0      0
    1  -1.0       0.1   NaN       NaN   NaN       NaN      0    256
    2   0.2       0.1   NaN       NaN   NaN       NaN      0      0
    """
    return pd.DataFrame(band_values(n, flags=flags, flux=flux, flux_err=flux_err, chi2=chi2,
                                    mismatch=mismatch, model=model))


def band_values(n: int, *, flags: int | np.ndarray = 0, flux: Any = None,
                flux_err: Any = None, chi2: Any = None, mismatch: Any = None,
                model: Any = None) -> dict[str, np.ndarray]:
    """:func:`band_table`'s columns as arrays (name -> a new, writable array of the column's
    dtype), without the DataFrame: what the cells' kernel passes between its steps.

    Examples
    --------
    >>> band_values(2, flags=Flag.NOT_COVERED)["flags"]
    array([8192, 8192], dtype=int32)
    """
    nan = np.full(n, np.nan)
    f = nan if flux is None else np.asarray(flux, dtype=np.float64)
    e = nan if flux_err is None else np.asarray(flux_err, dtype=np.float64)
    mag, mag_err = flux_to_mag(f, e)
    with np.errstate(divide="ignore", invalid="ignore"):
        significant = f / e >= MAG_MIN_SNR
    mag, mag_err = np.where(significant, mag, np.nan), np.where(significant, mag_err, np.nan)
    values = {"flux": f, "flux_err": e, "mag": mag, "mag_err": mag_err,
              "chi2": nan if chi2 is None else chi2,
              "mismatch": nan if mismatch is None else mismatch,
              "model": np.broadcast_to(np.asarray(MODEL_CODES["none"] if model is None
                                                  else model), (n,)),
              "flags": np.broadcast_to(np.asarray(flags), (n,))}
    return {name: np.array(values[name], dtype=dtype)
            for name, (dtype, _, _) in BAND_COLUMNS.items()}


def cell_meta(
    bands: Sequence[str],
    keep: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Empty DataFrame with the exact columns and dtypes of a cell's output.

    Parameters
    ----------
    bands : sequence of str
        Band names, in output order.
    keep : dict, optional
        Extra input columns to carry through (name -> dtype).

    Returns
    -------
    pandas.DataFrame
        Zero-row frame usable as ``meta`` for ``map_partitions``.
    """
    return pd.DataFrame({k: pd.Series(dtype=v) for k, v in cell_dtypes(bands, keep).items()})


def cell_dtypes(bands: Sequence[str], keep: Mapping[str, str] | None = None) -> dict[str, str]:
    """The columns of a cell's output and their dtypes, in order (:func:`cell_meta`'s).

    Examples
    --------
    >>> list(cell_dtypes(["nuv"], {"z": "float32"}).items())[3:6]
    [('_healpix_29', 'int64'), ('z', 'float32'), ('flux_nuv', 'float64')]
    """
    cols: dict[str, str] = {k: v[0] for k, v in BASE_COLUMNS.items()}
    for name, dtype in (keep or {}).items():
        cols.setdefault(name, dtype)
    for band in bands:
        cols.update({k: v[0] for k, v in band_columns(band).items()})
    return cols


def cell_table(base: Mapping[str, Any], bands: Mapping[str, Mapping[str, Any]],
               keep: Mapping[str, pd.Series] | None = None,
               order: np.ndarray | None = None) -> pd.DataFrame:
    """A cell's output rows: the columns and dtypes of :func:`cell_meta`.

    Parameters
    ----------
    base : mapping
        The :data:`BASE_COLUMNS` (``source_id``, ``ra``, ``dec``, ``_healpix_29``).
    bands : mapping
        Band name -> that band's :func:`band_table` or :func:`band_values` (rows in
        ``base``'s order).
    keep : mapping, optional
        Input columns carried to the output, as Series (their dtype is kept).
    order : ndarray of int, optional
        The rows to output, in order (default: all, in ``base``'s order).
    """
    keep = dict(keep or {})
    dtypes = cell_dtypes(list(bands), {k: str(v.dtype) for k, v in keep.items()})
    values: dict[str, Any] = {k: np.asarray(base[k]) for k in BASE_COLUMNS}
    values.update({k: v.to_numpy() for k, v in keep.items()})
    for band, table in bands.items():
        values.update({f"{col}_{band}": np.asarray(table[col]) for col in BAND_COLUMNS})
    other: dict[str, str] = {}  # columns of a pandas extension or object dtype: astype
    columns: dict[str, Any] = {}
    for c, dtype in dtypes.items():
        v = values[c] if order is None else values[c][order]
        if _numeric(dtype):
            columns[c] = np.asarray(v, dtype=dtype)
        else:
            columns[c], other[c] = v, dtype
    table = pd.DataFrame(columns)
    return table.astype(other) if other else table


def _numeric(dtype: str) -> bool:
    """True when ``dtype`` names a numeric numpy dtype (not an object, string or pandas
    extension dtype, which :meth:`pandas.DataFrame.astype` converts)."""
    try:
        return np.dtype(dtype).kind in "biufc"
    except TypeError:
        return False


def column_units(bands: Sequence[str]) -> dict[str, str]:
    """Units of every known output column (empty string when dimensionless)."""
    return {name: unit for name, (unit, _) in column_info(bands).items()}


def column_info(bands: Sequence[str]) -> dict[str, tuple[str, str]]:
    """``(unit, description)`` of every known output column (unit ``""``: dimensionless).

    Examples
    --------
    >>> column_info(["nuv"])["flux_nuv"]
    ('uJy', 'forced flux (nuv)')
    """
    info = {k: (v[1], v[2]) for k, v in BASE_COLUMNS.items()}
    for band in bands:
        info.update({f"{k}_{band}": (v[1], f"{v[2]} ({band})")
                     for k, v in BAND_COLUMNS.items()})
    return info


__doc__ = (__doc__ or "").replace("{flag_table}", flag_table())
