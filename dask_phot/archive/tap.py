"""Priors from a TAP service: a cone or box over one table, fetched in HEALPix pieces.

A small region is one synchronous ADQL query. A large one (the 48' COSMOS field) is
cut into the nested HEALPix cells of one order (:mod:`dask_phot.cells`) whose
circumscribed circle is at most ``max_piece_radius`` degrees: each piece asks for
the cell's circle, so neighbouring pieces overlap, and keeps only the rows whose
position falls in that cell and in the region. Every source lies in exactly one
cell, so the pieces put back together hold each row once; each piece's reply is
cached on its own, so an interrupted fetch resumes where it stopped.

The result is a DataFrame with the service's column names in lower case (ADQL
names are case-insensitive), ready for :func:`dask_phot.priors.read_priors`.

Examples
--------
>>> region = SkyRegion.cone(150.01, 2.2, 0.8)
>>> pieces = plan_pieces(region, table="cosmos2015", columns=["ra", "dec", "id"],
...                      max_piece_radius=0.2)
>>> len(pieces), pieces[0].cell.order
(53, 8)
>>> print(pieces[0].adql)
SELECT ra, dec, id FROM cosmos2015 WHERE CONTAINS(POINT('ICRS', ra, dec), CIRCLE('ICRS', 150.1171875, 1.342992806, 0.1760107413)) = 1
>>> df = query_priors(region, table="cosmos2015",
...                   columns=["ra", "dec", "id", "ks_flux_aper2"])  # doctest: +SKIP
"""  # noqa: E501

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dask_phot.archive._cache import ArchiveCache, ArchiveError, Query, calling, table_to_frame
from dask_phot.archive.region import SkyRegion
from dask_phot.cells import MAX_ORDER, Cell, healpix_29

__all__ = ["IRSA_TAP_URL", "TapPiece", "build_adql", "plan_pieces", "query_priors"]

logger = logging.getLogger(__name__)

#: IRSA's TAP service (the COSMOS2015 catalog is its table ``cosmos2015``).
IRSA_TAP_URL = "https://irsa.ipac.caltech.edu/TAP"
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: Extra radius of a piece's circle over its cell's, so rounding never loses an edge row.
_PAD_DEG = 1.0 / 3600.0


@dataclass(frozen=True)
class TapPiece:
    """One query of a (possibly split) priors fetch.

    Attributes
    ----------
    adql : str
        The query sent.
    cell : Cell or None
        The HEALPix cell whose rows this piece keeps; None when the region is
        fetched in one query.
    """

    adql: str
    cell: Cell | None = None


def _columns(columns: Sequence[str], required: Sequence[str]) -> list[str]:
    """Stripped, de-duplicated (case-insensitively) column list with ``required`` added."""
    if isinstance(columns, str):
        raise TypeError("columns must be a list of column names, not one string")
    out: list[str] = []
    for name in [*columns, *required]:
        name = str(name).strip()
        if name == "*":
            return ["*"]
        if not _IDENT_RE.match(name):
            raise ValueError(f"not a column name: {name!r} (letters, digits and _ only)")
        if name.lower() not in {c.lower() for c in out}:
            out.append(name)
    return out


def build_adql(table: str, columns: Sequence[str], constraint: str,
               where: str | None = None) -> str:
    """``SELECT columns FROM table WHERE constraint [AND (where)]``.

    Examples
    --------
    >>> build_adql("cosmos2015", ["ra", "dec"], "dec > 2", "type = 0")
    'SELECT ra, dec FROM cosmos2015 WHERE dec > 2 AND (type = 0)'
    """
    if not _TABLE_RE.match(table.strip()):
        raise ValueError(f"not a table name: {table!r}")
    text = f"SELECT {', '.join(columns)} FROM {table.strip()} WHERE {constraint}"
    if where and where.strip():
        text += f" AND ({where.strip()})"
    return text


def _piece_order(region: SkyRegion, max_piece_radius: float) -> int:
    """Lowest HEALPix order whose cell at the region's centre fits ``max_piece_radius``."""
    pixel = int(healpix_29([region.ra], [region.dec])[0])
    for order in range(MAX_ORDER + 1):
        if Cell(order, pixel >> 2 * (MAX_ORDER - order)).radius_deg() <= max_piece_radius:
            return order
    return MAX_ORDER  # pragma: no cover - order 29 cells are far below any limit


def plan_pieces(
    region: SkyRegion,
    *,
    table: str,
    columns: Sequence[str],
    ra_column: str = "ra",
    dec_column: str = "dec",
    where: str | None = None,
    max_piece_radius: float = 0.2,
) -> list[TapPiece]:
    """The queries that fetch ``region``: one, or one per HEALPix cell.

    Parameters
    ----------
    region : SkyRegion
    table : str
        Table name, e.g. ``"cosmos2015"``.
    columns : sequence of str
        Columns to fetch (``ra_column`` and ``dec_column`` are added if missing).
    ra_column, dec_column : str
        The table's coordinate columns, ICRS degrees.
    where : str, optional
        Extra ADQL condition, ANDed with the region.
    max_piece_radius : float
        Largest radius, degrees, that one query may cover. A region whose
        bounding circle is larger is split into HEALPix cells no larger.

    Returns
    -------
    list of TapPiece
        In cell order.
    """
    if not max_piece_radius > 0:
        raise ValueError(f"max_piece_radius must be > 0, got {max_piece_radius!r}")
    cols = _columns(columns, [ra_column, dec_column])
    if region.bounding_radius() <= max_piece_radius:
        return [TapPiece(build_adql(table, cols, region.adql(ra_column, dec_column), where))]
    order = _piece_order(region, max_piece_radius)
    pieces = []
    for pixel in region.cells(order):
        cell = Cell(order, pixel)
        circle = SkyRegion.cone(*cell.center(), cell.radius_deg() + _PAD_DEG)
        pieces.append(TapPiece(build_adql(table, cols, circle.adql(ra_column, dec_column),
                                          where), cell))
    return pieces


def _run_sync(url: str, adql: str, maxrec: int | None) -> pd.DataFrame:
    import pyvo
    from pyvo.utils.http import create_session

    with create_session() as session:
        result = pyvo.dal.TAPService(url, session=session).run_sync(adql, maxrec=maxrec)
        return table_to_frame(result.to_table())


def _check_columns(frame: pd.DataFrame, wanted: Sequence[str], query: Query) -> None:
    if wanted == ["*"]:
        return
    missing = [c for c in wanted if c.lower() not in frame.columns]
    if missing:
        raise ArchiveError(f"{query.describe()}: the reply has no column "
                           f"{', '.join(map(repr, missing))}; it has: "
                           f"{', '.join(map(str, frame.columns))}")


def _keep(frame: pd.DataFrame, piece: TapPiece, region: SkyRegion, ra: str, dec: str,
          query: Query) -> pd.DataFrame:
    """Rows of a piece's reply that are in the region and in the piece's own cell."""
    if frame.empty:
        return frame
    try:
        ra_deg = pd.to_numeric(frame[ra.lower()]).to_numpy(np.float64, na_value=np.nan)
        dec_deg = pd.to_numeric(frame[dec.lower()]).to_numpy(np.float64, na_value=np.nan)
    except (KeyError, ValueError, TypeError) as exc:
        raise ArchiveError(f"{query.describe()}: unusable coordinate columns {ra!r}, "
                           f"{dec!r}: {exc}") from None
    ok = np.isfinite(ra_deg) & np.isfinite(dec_deg)
    ok[ok] = region.contains(ra_deg[ok], dec_deg[ok])
    if piece.cell is not None:
        ok[ok] = piece.cell.contains(ra_deg[ok], dec_deg[ok])
    return frame.loc[ok].reset_index(drop=True)


def _fetch_piece(piece: TapPiece, region: SkyRegion, wanted: list[str], url: str, name: str,
                 maxrec: int | None, cache: ArchiveCache,
                 coords: tuple[str, str]) -> tuple[pd.DataFrame, int]:
    """One piece's rows in the region and its cell, and how many rows the reply had."""
    query = Query(name, url, {"QUERY": piece.adql, "MAXREC": maxrec})

    def fetch() -> pd.DataFrame:
        with calling(query):
            return _run_sync(url, piece.adql, maxrec)

    frame = cache.get(query, fetch)
    _check_columns(frame, wanted, query)
    kept = _keep(frame, piece, region, *coords, query)
    logger.debug("%s: piece %s: %d rows, %d kept", name, piece.cell, len(frame), len(kept))
    return kept, len(frame)


def query_priors(
    region: SkyRegion,
    *,
    table: str,
    columns: Sequence[str],
    service_url: str = IRSA_TAP_URL,
    ra_column: str = "ra",
    dec_column: str = "dec",
    id_column: str | None = None,
    where: str | None = None,
    max_piece_radius: float = 0.2,
    maxrec: int | None = None,
    cache: ArchiveCache | None = None,
    service_name: str = "TAP",
) -> pd.DataFrame:
    """Fetch a priors catalog from a TAP service (synchronous queries, cached).

    Parameters
    ----------
    region : SkyRegion
        The area to fetch.
    table, columns, ra_column, dec_column, where, max_piece_radius
        As in :func:`plan_pieces`; ``id_column``, when given, is fetched too.
    service_url : str
        The TAP service's base URL (default IRSA's).
    id_column : str, optional
        Identifier column; checked to be unique over the assembled catalog.
    maxrec : int, optional
        Row limit asked of the service per query (default: the service's). A
        reply the service truncated is an error, never a silently short catalog.
    cache : ArchiveCache, optional
        Where replies are kept; ``ArchiveCache(offline=True)`` uses it only.
        Default :class:`ArchiveCache` in its default directory.
    service_name : str
        Name of the service in messages and the cache, e.g. ``"IRSA TAP"``.

    Returns
    -------
    pandas.DataFrame
        The rows in ``region`` (each once), columns in lower case, in piece order.

    Raises
    ------
    ArchiveError
        Unreachable service, an error from the service (a missing column...),
        a requested column absent from the reply, a truncated reply, no rows at
        all, offline without a cached reply; the message names the service and
        the query.
    """
    cache = cache if cache is not None else ArchiveCache()
    extra = [id_column] if id_column else []
    wanted = _columns(columns, [ra_column, dec_column, *extra])
    pieces = plan_pieces(region, table=table, columns=wanted, ra_column=ra_column,
                         dec_column=dec_column, where=where, max_piece_radius=max_piece_radius)
    if pieces[0].cell is not None:
        logger.info("%s: %s in %d pieces (HEALPix order %d cells)", service_name,
                    region.describe(), len(pieces), pieces[0].cell.order)
    kept = [_fetch_piece(piece, region, wanted, service_url, service_name, maxrec,
                         cache, (ra_column, dec_column)) for piece in pieces]
    fetched = sum(n for _, n in kept)
    rows = [k for k, _ in kept if len(k)]
    if not rows:
        first = Query(service_name, service_url, {"QUERY": pieces[0].adql})
        split = f" ({len(pieces)} pieces)" if len(pieces) > 1 else ""
        raise ArchiveError(f"{first.describe()}: no rows in the {region.describe()}{split}")
    out = pd.concat(rows, ignore_index=True) if len(rows) > 1 else rows[0]
    if id_column and out[id_column.lower()].duplicated().any():
        dup = out[id_column.lower()][out[id_column.lower()].duplicated()].iloc[0]
        logger.warning("%s: id column %r repeats values (first: %r) in the service's table",
                       service_name, id_column, dup)
    logger.info("%s: %d rows from %d piece(s) (%d fetched, overlaps removed)", service_name,
                len(out), len(pieces), fetched)
    return out
