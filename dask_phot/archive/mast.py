"""GALEX intensity maps from MAST (astroquery): deep tiles, science and sky-background pairs.

As the COSMOS notebook does: GALEX observations overlapping the region are listed
(``Observations.query_criteria``), those shorter than an exposure-time cut are
dropped (and, by default, all but the deepest observation of each tile and
filter), their products are listed (``Observations.get_product_list``), and for
each band the intensity map ``<tile>-nd-int.fits.gz`` (NUV; ``-fd-`` FUV) is
paired with its sky background ``<tile>-nd-skybg.fits.gz``. Catalogs and every
other product are left out. The files are MAST download URLs (HTTPS); dask-phot
reads them through its gzip cache.

Both MAST replies (observations, products) are cached by :class:`ArchiveCache`.

Examples
--------
>>> galex_product("COSMOS_01-nd-int.fits.gz"), galex_product("COSMOS_01-fd-skybg.fits")
(('COSMOS_01', 'nuv', 'int'), ('COSMOS_01', 'fuv', 'skybg'))
>>> galex_product("COSMOS_01-xd-mcat.fits.gz") is None
True
>>> sets = galex_images(SkyRegion.cone(150.01, 2.2, 0.1))            # doctest: +SKIP
>>> sets["nuv"].images, sets["nuv"].extra["skybg"]                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from dask_phot.archive._cache import ArchiveCache, ArchiveError, Query, calling, table_to_frame
from dask_phot.archive.region import SkyRegion
from dask_phot.archive.sia import ImageSet

__all__ = ["GALEX_FILTERS", "MAST_URL", "galex_images", "galex_product"]

logger = logging.getLogger(__name__)

#: The MAST portal's base URL.
MAST_URL = "https://mast.stsci.edu"
#: dask-phot band -> (MAST ``filters`` value, GALEX file-name letter).
GALEX_FILTERS = {"nuv": ("NUV", "n"), "fuv": ("FUV", "f")}
_PRODUCT_RE = re.compile(r"^(?P<tile>.+)-(?P<band>[nf])d-(?P<kind>int|skybg)\.fits(\.gz)?$",
                         re.IGNORECASE)
_OBS_COLUMNS = ("obsid", "filters", "t_exptime", "target_name")
_PRODUCT_COLUMNS = ("obsID", "productFilename", "dataURI")


def galex_product(filename: str) -> tuple[str, str, str] | None:
    """``(tile, band, kind)`` of a GALEX intensity or sky-background file name, else None."""
    m = _PRODUCT_RE.match(filename.rsplit("/", 1)[-1])
    if m is None:
        return None
    band = "nuv" if m["band"].lower() == "n" else "fuv"
    return m["tile"], band, m["kind"].lower()


def observations_class(mast_url: str):  # -> astroquery ObservationsClass
    from astroquery.mast import ObservationsClass

    obs = ObservationsClass()
    portal = obs._portal_api_connection  # the documented place of the portal's URLs
    base = mast_url.rstrip("/")
    portal.MAST_REQUEST_URL = f"{base}/api/v0/invoke"
    portal.COLUMNS_CONFIG_URL = f"{base}/portal/Mashup/Mashup.asmx/columnsconfig"
    portal.MAST_DOWNLOAD_URL = f"{base}/api/v0.1/Download/file"
    return obs


def _cone(region: SkyRegion) -> tuple[float, float, float]:
    return region.ra, region.dec, region.bounding_radius()


def _query_observations(mast_url: str, region: SkyRegion) -> pd.DataFrame:
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    ra, dec, radius = _cone(region)
    obs = observations_class(mast_url)
    try:
        table = obs.query_criteria(coordinates=SkyCoord(ra, dec, unit="deg"),
                                   radius=radius * u.deg, obs_collection="GALEX")
    finally:
        obs._session.close()
    return table_to_frame(table, lowercase=False)


def query_products(mast_url: str, obsids: Sequence[str]) -> pd.DataFrame:
    """MAST's product list of the observations ``obsids`` (astroquery), as a frame."""
    obs = observations_class(mast_url)
    try:
        return table_to_frame(obs.get_product_list(list(obsids)), lowercase=False)
    finally:
        obs._session.close()


def require_columns(frame: pd.DataFrame, columns: Sequence[str], query: Query) -> None:
    """One :class:`ArchiveError` line naming the reply's missing and present columns."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ArchiveError(f"{query.describe()}: the reply has no column "
                           f"{', '.join(map(repr, missing))}; it has: "
                           f"{', '.join(map(str, frame.columns))}")


def _select(obs: pd.DataFrame, bands: Sequence[str], min_exptime: float, deepest_only: bool,
            query: Query) -> pd.DataFrame:
    """Observation rows of the wanted filters above the exposure cut (deepest per tile)."""
    filters = {GALEX_FILTERS[b][0]: b for b in bands}
    exptime = pd.to_numeric(obs["t_exptime"], errors="coerce").to_numpy(np.float64,
                                                                         na_value=np.nan)
    rows = obs.assign(band=obs["filters"].astype(str).str.upper().map(filters),
                      t_exptime=exptime)
    deep = rows[rows["band"].notna() & (rows["t_exptime"] > min_exptime)]
    if deep.empty:
        seen = rows[rows["band"].notna()]
        best = f"; the deepest is {np.nanmax(seen['t_exptime']):g} s" if len(seen) else ""
        raise ArchiveError(f"{query.describe()}: no GALEX {'/'.join(filters)} observation "
                           f"longer than {min_exptime:g} s ({len(seen)} found{best})")
    if deepest_only:
        deep = (deep.sort_values("t_exptime", ascending=False, kind="stable")
                .drop_duplicates(["target_name", "band"]))
    return deep.sort_values(["band", "target_name"], kind="stable").reset_index(drop=True)


def _pairs(products: pd.DataFrame, deep: pd.DataFrame, band: str,
           mast_url: str) -> tuple[list[str], list[str]]:
    obsids = set(deep.loc[deep["band"] == band, "obsid"].astype(str))
    files: dict[tuple[str, str], str] = {}
    for _, row in products.iterrows():
        parsed = galex_product(str(row["productFilename"]))
        if parsed is None or parsed[1] != band or str(row["obsID"]) not in obsids:
            continue
        tile, _, kind = parsed
        uri = quote(str(row["dataURI"]), safe=":/")
        files.setdefault((tile, kind), f"{mast_url.rstrip('/')}/api/v0.1/Download/file?uri={uri}")
    tiles = sorted({t for t, _ in files})
    unpaired = [t for t in tiles if (t, "int") not in files or (t, "skybg") not in files]
    if unpaired:
        logger.warning("GALEX %s: tile(s) without both -int and -skybg files left out: %s",
                       band, ", ".join(unpaired))
    paired = [t for t in tiles if t not in unpaired]
    return [files[(t, "int")] for t in paired], [files[(t, "skybg")] for t in paired]


def galex_images(
    region: SkyRegion,
    *,
    bands: Sequence[str] = ("nuv", "fuv"),
    min_exptime: float = 40000.0,
    deepest_only: bool = True,
    mast_url: str = MAST_URL,
    cache: ArchiveCache | None = None,
    service_name: str = "MAST",
) -> dict[str, ImageSet]:
    """GALEX intensity maps (and their sky backgrounds) overlapping ``region``.

    Parameters
    ----------
    region : SkyRegion
        Observations whose footprint meets the region's bounding circle.
    bands : sequence of {"nuv", "fuv"}
    min_exptime : float
        Keep observations longer than this, seconds (the notebook's 40000).
    deepest_only : bool
        Of several observations of one tile in one filter, keep the longest.
    mast_url : str
        The MAST portal (default ``https://mast.stsci.edu``).
    cache : ArchiveCache, optional
    service_name : str

    Returns
    -------
    dict of str to ImageSet
        Per band: ``images`` the ``-int`` maps, ``extra["skybg"]`` their
        ``-skybg`` maps (same order); no noise maps (``noise_kind`` ``"none"``).

    Raises
    ------
    ArchiveError
        Unreachable service or error reply, no observation passing the cut,
        a band without any complete int/skybg pair, missing columns.
    """
    unknown = [b for b in bands if b not in GALEX_FILTERS]
    if unknown:
        raise ValueError(f"unknown GALEX band(s) {unknown}; known: {', '.join(GALEX_FILTERS)}")
    cache = cache if cache is not None else ArchiveCache()
    ra, dec, radius = _cone(region)
    q_obs = Query(service_name, mast_url, {"service": "Mast.Caom.Filtered.Position",
                                           "obs_collection": "GALEX",
                                           "position": f"{ra:.10g}, {dec:.10g}, {radius:.10g}"})

    def fetch_obs() -> pd.DataFrame:
        with calling(q_obs):
            return _query_observations(mast_url, region)

    obs = cache.get(q_obs, fetch_obs)
    if obs.empty:
        raise ArchiveError(f"{q_obs.describe()}: no GALEX observations")
    require_columns(obs, _OBS_COLUMNS, q_obs)
    deep = _select(obs, bands, min_exptime, deepest_only, q_obs)
    obsids = sorted(set(deep["obsid"].astype(str)))
    q_prod = Query(service_name, mast_url, {"service": "Mast.Caom.Products",
                                            "obsid": ",".join(obsids)})

    def fetch_products() -> pd.DataFrame:
        with calling(q_prod):
            return query_products(mast_url, obsids)

    products = cache.get(q_prod, fetch_products)
    require_columns(products, _PRODUCT_COLUMNS, q_prod)
    out: dict[str, ImageSet] = {}
    for band in bands:
        images, skybg = _pairs(products, deep, band, mast_url)
        if not images:
            raise ArchiveError(f"{q_prod.describe()}: no GALEX {band.upper()} intensity map "
                               "with its sky background (-int and -skybg files)")
        out[band] = ImageSet(band, tuple(images), (), "none", {"skybg": tuple(skybg)})
        logger.info("%s: GALEX %s: %d tile(s) (%s)", service_name, band, len(images),
                    ", ".join(f"{t:g} s" for t in deep.loc[deep["band"] == band, "t_exptime"]))
    return out
