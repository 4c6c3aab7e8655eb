"""X-ray catalogs of a region from HEASARC (astroquery; HEASARC answers over TAP).

:func:`xray_catalog` queries one HEASARC table (``ccosmoscat``, the Chandra
COSMOS catalog the notebook cross-matches with; ``xmmssc`` for XMM...) over a
region and keeps what a positional cross-match needs: the source name,
position, positional-error columns and flux columns. Which columns those are is
read from their names (see :func:`classify_columns`); name them yourself with
``keep`` when a table spells them differently.

Examples
--------
>>> classify_columns(["name", "ra", "dec", "lii", "error_radius", "soft_flux",
...                   "soft_flux_error", "hardness_ratio"])
{'id': ['name'], 'position': ['ra', 'dec'], 'position_error': ['error_radius'], 'flux': ['soft_flux', 'soft_flux_error']}
>>> xray = xray_catalog(SkyRegion.cone(150.01, 2.2, 1.0),
...                     catalog="ccosmoscat")                       # doctest: +SKIP
"""  # noqa: E501

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import pandas as pd

from dask_phot.archive._cache import ArchiveCache, ArchiveError, Query, calling, table_to_frame
from dask_phot.archive.region import SkyRegion

__all__ = ["HEASARC_VO_URL", "classify_columns", "xray_catalog"]

logger = logging.getLogger(__name__)

#: HEASARC's VO base URL (its TAP service is ``<this>/tap``).
HEASARC_VO_URL = "https://heasarc.gsfc.nasa.gov/xamin/vo"
_ID_RE = re.compile(r"^(name|.*_name|src_?id|source_?id|iauname|srcid)$")
_POS_ERR_RE = re.compile(r"^(error_radius|err_?radius|pos_?err.*|.*_pos_?err.*|radec_?err.*|"
                         r"err_?(ra|dec|pos|maj|min).*|(ra|dec)_?err(or)?|sc_poserr)$")
_FLUX_RE = re.compile(r"flux")


def classify_columns(columns: Sequence[str]) -> dict[str, list[str]]:
    """Split column names into ``id``, ``position``, ``position_error`` and ``flux``.

    Names are matched in lower case: ``ra``/``dec`` are the position;
    ``error_radius``, ``pos_err``, ``ra_err``... positional errors; anything
    with ``flux`` in it (fluxes and their errors) a flux column; ``name``,
    ``srcid``... the identifier.
    """
    out: dict[str, list[str]] = {"id": [], "position": [], "position_error": [], "flux": []}
    for col in columns:
        low = col.lower()
        if low in ("ra", "dec"):
            out["position"].append(col)
        elif _POS_ERR_RE.match(low):
            out["position_error"].append(col)
        elif _FLUX_RE.search(low):
            out["flux"].append(col)
        elif _ID_RE.match(low):
            out["id"].append(col)
    return out


def _query(url: str, catalog: str, region: SkyRegion, columns: str,
           maxrec: int | None) -> pd.DataFrame:
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astroquery.heasarc import HeasarcClass
    from pyvo.utils.http import create_session

    heasarc = HeasarcClass()
    heasarc.VO_URL = url.rstrip("/")  # where its TAP service (<VO_URL>/tap) is asked
    centre = SkyCoord(region.ra, region.dec, unit="deg")
    with create_session() as session:
        heasarc._set_session(session)
        if region.kind == "cone":
            table = heasarc.query_region(centre, catalog=catalog, columns=columns,
                                         radius=region.radius * u.deg, maxrec=maxrec)
        else:
            (lo, hi), half = region.dec_range(), region.ra_half_width()
            corners = [SkyCoord(region.ra + dx, d, unit="deg")
                       for dx, d in ((-half, lo), (half, lo), (half, hi), (-half, hi))]
            table = heasarc.query_region(catalog=catalog, spatial="polygon", polygon=corners,
                                         columns=columns, maxrec=maxrec)
        return table_to_frame(table)


def xray_catalog(
    region: SkyRegion,
    *,
    catalog: str = "ccosmoscat",
    columns: str | Sequence[str] = "*",
    keep: Sequence[str] | None = None,
    heasarc_url: str = HEASARC_VO_URL,
    maxrec: int | None = 100_000,
    cache: ArchiveCache | None = None,
    service_name: str = "HEASARC",
) -> pd.DataFrame:
    """Sources of a HEASARC X-ray catalog in ``region``: positions, errors, fluxes.

    Parameters
    ----------
    region : SkyRegion
    catalog : str
        HEASARC table name, e.g. ``"ccosmoscat"`` (Chandra COSMOS), ``"xmmssc"``.
    columns : str or sequence of str
        Columns asked of the service (default all, ``"*"``).
    keep : sequence of str, optional
        Columns to return; default: identifier, ``ra``, ``dec``, positional
        errors and fluxes, found by :func:`classify_columns`.
    heasarc_url : str
        HEASARC's VO base URL (astroquery's ``Heasarc.VO_URL``).
    maxrec : int, optional
        Row limit asked of the service; a truncated reply is an error.
    cache : ArchiveCache, optional
    service_name : str

    Returns
    -------
    pandas.DataFrame
        Column names in lower case.

    Raises
    ------
    ArchiveError
        Unreachable service or error reply, no rows, no position, positional
        error or flux column (or a ``keep`` column missing).
    """
    cache = cache if cache is not None else ArchiveCache()
    cols = columns if isinstance(columns, str) else ", ".join(c.strip() for c in columns)
    query = Query(service_name, heasarc_url, {"catalog": catalog, "region": region.describe(),
                                              "columns": cols, "maxrec": maxrec})

    def fetch() -> pd.DataFrame:
        with calling(query):
            return _query(heasarc_url, catalog, region, cols, maxrec)

    frame = cache.get(query, fetch)
    if frame.empty:
        raise ArchiveError(f"{query.describe()}: no sources in the {region.describe()}")
    if keep is not None:
        wanted = [k.lower() for k in keep]
    else:
        kinds = classify_columns(list(frame.columns))
        absent = [k for k in ("position", "position_error", "flux") if not kinds[k]]
        if len(kinds["position"]) < 2 or absent:
            raise ArchiveError(f"{query.describe()}: found no {', '.join(absent) or 'ra/dec'} "
                               f"column(s) among: {', '.join(frame.columns)}; name them "
                               "with keep=")
        wanted = [c for k in ("id", "position", "position_error", "flux") for c in kinds[k]]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise ArchiveError(f"{query.describe()}: the reply has no column "
                           f"{', '.join(map(repr, missing))}; it has: "
                           f"{', '.join(frame.columns)}")
    logger.info("%s: %s: %d sources, columns %s", service_name, catalog, len(frame),
                ", ".join(wanted))
    return frame[wanted].reset_index(drop=True)
