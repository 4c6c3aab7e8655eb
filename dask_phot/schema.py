"""Output schema and quality flags: the one place that defines them.

Every table that dask-phot produces (the engine's per-band result, a cell's
multiband catalog, the final Parquet/HATS dataset) takes its columns, dtypes
and flag bits from here, and every ``map_partitions`` gets its ``meta`` from
:func:`cell_meta`.

Flag bits
---------
The ``flags`` of a measurement is the bitwise OR of :class:`Flag` members.
A measurement whose flux is NaN always has at least one of the bits in
:data:`FATAL_FLAGS` set; the other bits are warnings about a finite flux.

========================  =====  ===============================================
name                      bit    meaning
========================  =====  ===============================================
``OFF_IMAGE``             1      position outside the image: no flux measured
``NO_DATA``               2      footprint has no usable pixel (all NaN/zero weight)
``EDGE``                  4      footprint truncated by the image edge
``MASKED_PIXELS``         8      some footprint pixels are NaN or zero weight
``CENTER_MASKED``         16     the pixel at the source position is masked
``DEGENERATE``            32     same model as an earlier source: not fitted (NaN)
``HAS_DEGENERATE``        64     an indistinguishable later source was merged in
``BLENDED``               128    a neighbour lies within one PSF FWHM
``NEGATIVE_FLUX``         256    fitted flux is negative (kept, not clipped)
``POSITION_AT_BOUND``     512    position refinement hit its bound
``POSITION_NOT_FIT``      1024   position refinement asked for but skipped (low S/N)
``FIT_FAILED``            2048   the linear solve failed for this source's group
``HIGH_CHI2``             4096   reduced chi2 over the footprint above threshold
``NOT_COVERED``           8192   pipeline: no mosaic of this band covers the source
``CELL_FAILED``           16384  pipeline: the cell/band task failed (see status)
``MODEL_MISMATCH``        32768  residual shows the source is more (or less)
                                 extended than its model
``MODEL_TRUNCATED``       65536  the galaxy's stamp was cut (max stamp size)
========================  =====  ===============================================
"""

from __future__ import annotations

import enum

import numpy as np
import pandas as pd

__all__ = [
    "FATAL_FLAGS",
    "Flag",
    "band_columns",
    "cell_meta",
    "describe_flags",
]


class Flag(enum.IntFlag):
    """Bit flags attached to every measurement (see the module docstring)."""

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


#: Bits that mean "no flux was measured" (the flux is NaN).
FATAL_FLAGS = (
    Flag.OFF_IMAGE | Flag.NO_DATA | Flag.DEGENERATE | Flag.FIT_FAILED
    | Flag.NOT_COVERED | Flag.CELL_FAILED
)

FLAG_DTYPE = np.int32


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
BAND_COLUMNS: dict[str, tuple[str, str, str]] = {
    "flux": ("float64", "uJy", "forced flux"),
    "flux_err": ("float64", "uJy", "marginal 1-sigma flux uncertainty"),
    "mag": ("float64", "mag(AB)", "AB magnitude of the flux (NaN when flux <= 0)"),
    "mag_err": ("float64", "mag(AB)", "AB magnitude uncertainty"),
    "chi2": ("float64", "", "reduced chi2 over the source footprint"),
    "flags": ("int32", "", "bitwise OR of dask_phot.schema.Flag"),
}

#: Columns every output row carries, independent of bands.
BASE_COLUMNS: dict[str, tuple[str, str, str]] = {
    "source_id": ("int64", "", "row identifier from the priors catalog"),
    "ra": ("float64", "deg", "prior right ascension (ICRS)"),
    "dec": ("float64", "deg", "prior declination (ICRS)"),
    "_healpix_29": ("int64", "", "HEALPix order-29 nested index (HATS spatial index)"),
}


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


def cell_meta(
    bands: list[str] | tuple[str, ...],
    keep: dict[str, str] | None = None,
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
    cols: dict[str, str] = {k: v[0] for k, v in BASE_COLUMNS.items()}
    for name, dtype in (keep or {}).items():
        cols.setdefault(name, dtype)
    for band in bands:
        cols.update({k: v[0] for k, v in band_columns(band).items()})
    return pd.DataFrame({k: pd.Series(dtype=v) for k, v in cols.items()})


def column_units(bands: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Units of every known output column (empty string when dimensionless)."""
    units = {k: v[1] for k, v in BASE_COLUMNS.items()}
    for band in bands:
        units.update({k: v[1] for k, v in band_columns(band).items()})
    return units
