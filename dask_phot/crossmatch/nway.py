"""Run nway (Salvato et al. 2018) on two catalogues and return its association table.

nway is AGPL-3.0 licensed (https://github.com/JohannesBuchner/nway). dask-phot
(BSD-3-Clause) does not ship or import it at module load: it is an optional
dependency (``pip install 'dask-phot[crossmatch]'``) imported only when a
match runs, so using it is the user's choice under the AGPL's terms.

Two ways in, giving the same numbers (a test runs both):

* :func:`run_nway` calls nway's Python API, ``nwaylib.nway_match``, in process;
* :func:`write_nway_fits` writes the FITS tables its command line ``nway.py``
  reads (``EXTNAME`` = the catalogue name, header ``SKYAREA`` in deg², an
  ``ID`` column, positional errors in arcsec) and :func:`nway_command` builds
  the command that matches them, for users who want nway's own output file.

On import, nway's matcher makes a ``cache/`` directory in the working
directory and caches every cross product there through ``joblib``, and it
draws ``tqdm`` progress bars on stderr; :func:`load_nway` imports it from a
temporary directory, calls the uncached matcher and turns the bars off, so a
library call leaves no files behind and prints nothing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.crossmatch.footprint import footprint_area

__all__ = [
    "ASSOCIATION_COLUMNS",
    "MatchCatalog",
    "load_nway",
    "nway_command",
    "run_nway",
    "sort_associations",
    "write_nway_fits",
]

logger = logging.getLogger(__name__)
_IMPORT_LOCK = threading.Lock()

#: Columns of :func:`run_nway`'s table besides the two ID columns.
ASSOCIATION_COLUMNS = ("separation", "ncat", "dist_bayesfactor", "dist_post", "p_single",
                       "p_any", "p_i", "match_flag")


@dataclass(frozen=True)
class MatchCatalog:
    """One catalogue handed to nway.

    Parameters
    ----------
    name : str
        Table name: nway's column prefix and the FITS ``EXTNAME`` (letters,
        digits, underscores), e.g. ``"CHANDRA"``.
    table : pandas.DataFrame
        The sources.
    pos_err : str or float
        Name of a column of 1-sigma circular positional errors in arcsec, or
        one error for every source.
    ra, dec : str
        Position columns, degrees.
    id_column : str, optional
        Unique source identifier; default the row number (0-based).
    area_deg2 : float, optional
        Sky area of the catalogue; default :func:`footprint_area` of its
        positions.

    Examples
    --------
    >>> cat = MatchCatalog("X", pd.DataFrame({"ra": [1.0, 2.0], "dec": [0.0, 0.0]}),
    ...                    pos_err=1.5, area_deg2=4.0)
    >>> cat.errors().tolist(), cat.ids().tolist(), cat.area()
    ([1.5, 1.5], [0, 1], 4.0)
    """

    name: str
    table: pd.DataFrame
    pos_err: str | float
    ra: str = "ra"
    dec: str = "dec"
    id_column: str | None = None
    area_deg2: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier()):
            raise ValueError(f"catalogue name must be an identifier (FITS EXTNAME, nway "
                             f"column prefix), got {self.name!r}")
        cols = [self.ra, self.dec] + [c for c in (self.id_column,) if c is not None]
        if isinstance(self.pos_err, str):
            cols.append(self.pos_err)
        missing = [c for c in cols if c not in self.table.columns]
        if missing:
            raise KeyError(f"catalogue {self.name}: no column(s) {missing}; "
                           f"have {list(self.table.columns)}")
        if self.id_column is not None and not self.table[self.id_column].is_unique:
            raise ValueError(f"catalogue {self.name}: {self.id_column!r} has duplicates")
        if self.area_deg2 is not None and not float(self.area_deg2) > 0:
            raise ValueError(f"catalogue {self.name}: area_deg2 must be > 0")

    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ra, dec)`` as float64 arrays, degrees."""
        return (np.asarray(self.table[self.ra], dtype=np.float64),
                np.asarray(self.table[self.dec], dtype=np.float64))

    def errors(self) -> np.ndarray:
        """Positional error of every source, arcsec (float64)."""
        if isinstance(self.pos_err, str):
            err = np.asarray(self.table[self.pos_err], dtype=np.float64)
        else:
            err = np.full(len(self.table), float(self.pos_err))
        if not (np.isfinite(err).all() and (err > 0).all()):
            raise ValueError(f"catalogue {self.name}: positional errors must be finite and > 0")
        return err

    def ids(self) -> np.ndarray:
        """Source identifiers (``id_column``, or row numbers)."""
        if self.id_column is None:
            return np.arange(len(self.table))
        return self.table[self.id_column].to_numpy()

    def area(self) -> float:
        """Sky area in deg²: ``area_deg2``, or the footprint of the positions."""
        if self.area_deg2 is not None:
            return float(self.area_deg2)
        return footprint_area(*self.positions())

    def with_table(self, table: pd.DataFrame, area_deg2: float) -> MatchCatalog:
        """The same catalogue settings on other rows and area (one sky cell)."""
        return MatchCatalog(self.name, table, self.pos_err, self.ra, self.dec,
                            self.id_column, area_deg2)


# ---------------------------------------------------------------------- nway itself
@functools.cache
def _silent_tqdm() -> Any:
    import types

    import tqdm

    return types.SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))


def load_nway() -> Any:
    """Import ``nwaylib`` without its side effects (see the module docstring).

    Returns
    -------
    module
        ``nwaylib``, whose ``nway_match`` :func:`run_nway` calls.

    Raises
    ------
    ImportError
        nway is not installed; the message says how to install it.
    """
    with _IMPORT_LOCK:
        if "nwaylib.fastskymatch" not in sys.modules:
            if importlib.util.find_spec("nwaylib") is None:
                raise ImportError("cross-matching needs nway (AGPL-3.0): pip install "
                                  "'dask-phot[crossmatch]'")
            with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
                importlib.import_module("nwaylib.fastskymatch")
        fsm = sys.modules["nwaylib.fastskymatch"]
        if hasattr(fsm.crossproduct, "func"):  # joblib.Memory wrapper: call it uncached
            fsm.crossproduct = fsm.crossproduct.func
        fsm.tqdm = _silent_tqdm()
        nwaylib = importlib.import_module("nwaylib")
    return nwaylib


def _match_dict(cat: MatchCatalog, area: float) -> dict[str, Any]:
    ra, dec = cat.positions()
    return {"name": cat.name, "ra": ra, "dec": dec, "error": cat.errors(), "area": area,
            "mags": [], "magnames": [], "maghists": []}


def _nway_table(nwaylib: Any, tables: list[dict[str, Any]], radius: float,
                completeness: float, ratio: float) -> pd.DataFrame:
    from nwaylib.logger import NullOutputLogger

    with warnings.catch_warnings():
        # nway's own groupby-apply and its "radius" hints are not the caller's problem
        warnings.simplefilter("ignore")
        table = nwaylib.nway_match(tables, match_radius=radius, prior_completeness=completeness,
                                   prob_ratio_secondary=ratio, store_mag_hists=False,
                                   logger=NullOutputLogger())
    first = tables[0]["name"]
    if first not in table.columns:  # pandas >= 3 moves the group key into the index
        table = table.reset_index(level=first)
    return table.reset_index(drop=True)


def run_nway(primary: MatchCatalog, secondary: MatchCatalog, *, radius_arcsec: float = 15.0,
             prior_completeness: float = 0.9, prob_ratio_secondary: float = 0.5,
             areas: tuple[float, float] | None = None) -> pd.DataFrame:
    """Two-catalogue nway association: every primary source and its candidates.

    Parameters
    ----------
    primary : MatchCatalog
        The catalogue whose sources look for counterparts (the X-ray one).
    secondary : MatchCatalog
        The counterpart catalogue (the photometry).
    radius_arcsec : float
        Search radius; several times the largest positional error.
    prior_completeness : float
        Prior fraction of primary sources with a counterpart in ``secondary``.
    prob_ratio_secondary : float
        Candidates with ``p_i`` above this fraction of the best get ``match_flag=2``.
    areas : (float, float), optional
        Sky areas (deg²) to give nway; default each catalogue's :meth:`MatchCatalog.area`.

    Returns
    -------
    pandas.DataFrame
        One row per primary source with no counterpart (``ncat=1``) and one per
        candidate pair: ``{primary.name}_ID``, ``{secondary.name}_ID`` (the
        catalogues' IDs; the secondary's is missing in the no-counterpart row),
        then :data:`ASSOCIATION_COLUMNS` (``separation`` in arcsec, ``p_any``:
        probability that the primary source has any counterpart, ``p_i``: that
        this candidate is it, ``match_flag``: 1 best, 2 comparable, 0 other),
        in primary-catalogue order, then by ``p_i`` descending.
    """
    nwaylib = load_nway()
    areas = areas or (primary.area(), secondary.area())
    if len(primary.table) == 0 or len(secondary.table) == 0:
        return _unmatched_table(primary, secondary)
    tables = [_match_dict(primary, areas[0]), _match_dict(secondary, areas[1])]
    logger.info("nway: %d %s x %d %s sources within %.1f arcsec (areas %.4g, %.4g deg2)",
                len(primary.table), primary.name, len(secondary.table), secondary.name,
                radius_arcsec, *areas)
    try:
        raw = _nway_table(nwaylib, tables, radius_arcsec, prior_completeness,
                          prob_ratio_secondary)
    except nwaylib.EmptyResultException:
        return _unmatched_table(primary, secondary)
    return _tidy(raw, primary, secondary)


def _unmatched_table(primary: MatchCatalog, secondary: MatchCatalog) -> pd.DataFrame:
    """What nway gives a primary source without candidates: its no-counterpart row."""
    n = len(primary.table)
    s_ids = pd.Series(secondary.ids()[:0])
    s_ids = s_ids.astype("Int64" if np.issubdtype(s_ids.dtype, np.integer) else object)
    return pd.DataFrame({
        f"{primary.name}_ID": primary.ids(),
        f"{secondary.name}_ID": s_ids.reindex(range(n)),
        "separation": np.full(n, np.nan), "ncat": np.ones(n, dtype=np.int64),
        "dist_bayesfactor": np.zeros(n), "dist_post": np.ones(n), "p_single": np.ones(n),
        "p_any": np.zeros(n), "p_i": np.zeros(n), "match_flag": np.zeros(n, dtype=np.int64)})


def _tidy(raw: pd.DataFrame, primary: MatchCatalog, secondary: MatchCatalog) -> pd.DataFrame:
    p_row = raw[primary.name].to_numpy(dtype=np.int64)
    s_row = raw[secondary.name].to_numpy(dtype=np.int64)
    s_ids = pd.Series(secondary.ids()).take(np.maximum(s_row, 0)).reset_index(drop=True)
    s_ids = s_ids.astype("Int64" if np.issubdtype(s_ids.dtype, np.integer) else object)
    s_ids[s_row < 0] = pd.NA
    out = pd.DataFrame({
        f"{primary.name}_ID": primary.ids()[p_row],
        f"{secondary.name}_ID": s_ids,
        "separation": raw[f"Separation_{primary.name}_{secondary.name}"].to_numpy(),
        "ncat": raw["ncat"].to_numpy(dtype=np.int64),
        "dist_bayesfactor": raw["dist_bayesfactor"].to_numpy(dtype=np.float64),
        "dist_post": raw["dist_post"].to_numpy(dtype=np.float64),
        "p_single": raw["p_single"].to_numpy(dtype=np.float64),
        "p_any": raw["prob_has_match"].to_numpy(dtype=np.float64),
        "p_i": raw["prob_this_match"].to_numpy(dtype=np.float64),
        "match_flag": raw["match_flag"].to_numpy(dtype=np.int64),
    })
    return sort_associations(out, p_row)


def sort_associations(table: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Order by primary row, then ``p_i`` descending, then separation (no-counterpart last)."""
    table = table.assign(_row=rows, _sep=table["separation"].fillna(np.inf))
    table = table.sort_values(["_row", "p_i", "_sep"], ascending=[True, False, True],
                              kind="stable")
    return table.drop(columns=["_row", "_sep"]).reset_index(drop=True)


# ---------------------------------------------------------------------- the CLI way
def write_nway_fits(cat: MatchCatalog, path: str | os.PathLike[str], *,
                    columns: Sequence[str] = (), area_deg2: float | None = None) -> Path:
    """Write a catalogue as the FITS table that ``nway.py`` reads.

    Parameters
    ----------
    cat : MatchCatalog
    path : path-like
        Output file (overwritten).
    columns : sequence of str
        Extra columns to carry into nway's output.
    area_deg2 : float, optional
        ``SKYAREA``; default :meth:`MatchCatalog.area`.

    Returns
    -------
    pathlib.Path
        The file: HDU 1 has ``EXTNAME = cat.name``, ``SKYAREA`` (deg²) and
        columns ``ID``, ``RA``, ``DEC``, ``POS_ERR`` (arcsec) then ``columns``.
    """
    from astropy.io import fits
    from astropy.table import Table

    ra, dec = cat.positions()
    table = Table({"ID": cat.ids(), "RA": ra, "DEC": dec, "POS_ERR": cat.errors()})
    for c in columns:
        if c.upper() in ("ID", "RA", "DEC", "POS_ERR"):
            raise ValueError(f"extra column {c!r} clashes with a column nway needs")
        table[c] = cat.table[c].to_numpy()
    hdu = fits.table_to_hdu(table)
    hdu.name = cat.name
    hdu.header["SKYAREA"] = (cat.area() if area_deg2 is None else float(area_deg2),
                             "sky area of the catalogue, deg2 (for nway)")
    path = Path(path)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)
    return path


def nway_command(primary: str | os.PathLike[str], secondary: str | os.PathLike[str],
                 out: str | os.PathLike[str], *, secondary_pos_err: float | None = None,
                 radius_arcsec: float = 15.0, prior_completeness: float = 0.9) -> list[str]:
    """Arguments of the ``nway.py`` call matching two :func:`write_nway_fits` files.

    Errors come from each file's ``POS_ERR`` column, or ``secondary_pos_err``
    (arcsec) for every secondary source.

    Examples
    --------
    >>> nway_command("x.fits", "opt.fits", "out.fits", secondary_pos_err=0.1)[1:]
    ['x.fits', ':POS_ERR', 'opt.fits', '0.1', '--out', 'out.fits', '--radius', '15.0', \
'--prior-completeness', '0.9']
    """
    err2 = ":POS_ERR" if secondary_pos_err is None else f"{float(secondary_pos_err):g}"
    return ["nway.py", str(primary), ":POS_ERR", str(secondary), err2, "--out", str(out),
            "--radius", str(float(radius_arcsec)),
            "--prior-completeness", str(float(prior_completeness))]
