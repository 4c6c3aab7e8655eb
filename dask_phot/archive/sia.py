"""Image lists from an SIA v2 service (IRSA's): science mosaics and their noise maps.

One search per collection and region (cached) returns ObsCore rows; each row is
a file, described by ``energy_bandpassname`` (``IRAC1``...) and
``dataproduct_subtype`` (``science``, ``uncertainty``, ``coverage``...). For each
band the science files become the band's ``images`` and the matching noise files
(same ``obs_id``) its ``noise``. Where IRSA serves a file from the cloud, its
``cloud_access`` column holds JSON naming the S3 bucket and key; that ``s3://``
URI is used (dask-phot reads only the pixels it needs, anonymously), and the
``access_url`` (HTTPS) otherwise.

Examples
--------
>>> cloud_uri('{"aws": {"bucket_name": "nasa-irsa-spitzer", "region": "us-east-1", '
...           '"key": "spitzer/scosmos/irac_ch1_go2_sci_10.fits"}}')
's3://nasa-irsa-spitzer/spitzer/scosmos/irac_ch1_go2_sci_10.fits'
>>> sets = irsa_images(SkyRegion.cone(150.01, 2.2, 0.1), collection="spitzer_scosmos",
...                    bands={"irac1": "IRAC1"})                      # doctest: +SKIP
>>> sets["irac1"].config_entry()                                     # doctest: +SKIP
{'images': ['s3://...sci...fits'], 'noise': ['s3://...unc...fits'], 'noise_kind': 'uncertainty'}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from dask_phot.archive._cache import ArchiveCache, ArchiveError, Query, calling, table_to_frame
from dask_phot.archive.region import SkyRegion

__all__ = ["IRSA_SIA_URL", "ImageSet", "cloud_uri", "irsa_images", "sia_search"]

logger = logging.getLogger(__name__)

#: IRSA's SIA v2 query endpoint.
IRSA_SIA_URL = "https://irsa.ipac.caltech.edu/SIA"
_NEEDED = ("access_url", "energy_bandpassname", "dataproduct_subtype")


@dataclass(frozen=True)
class ImageSet:
    """One band's files, as the ``[bands.<name>]`` entries of a run configuration.

    Attributes
    ----------
    band : str
    images : tuple of str
        Science images (``s3://`` or ``https://``).
    noise : tuple of str
        Noise maps paired one to one with ``images`` (empty: none).
    noise_kind : str
        What ``noise`` holds (``"uncertainty"``...), ``"none"`` without noise maps.
    extra : mapping of str to tuple of str
        Other products found beside them (``coverage`` maps, GALEX ``skybg``
        sky-background maps paired with ``images``), for the record.
    """

    band: str
    images: tuple[str, ...]
    noise: tuple[str, ...] = ()
    noise_kind: str = "none"
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def config_entry(self) -> dict[str, Any]:
        """``{"images": [...], "noise": [...], "noise_kind": ...}`` for ``[bands.<name>]``.

        Examples
        --------
        >>> ImageSet("nuv", ("https://x/a-nd-int.fits.gz",)).config_entry()
        {'images': ['https://x/a-nd-int.fits.gz'], 'noise': [], 'noise_kind': 'none'}
        """
        kind = self.noise_kind if self.noise else "none"
        return {"images": list(self.images), "noise": list(self.noise), "noise_kind": kind}


def cloud_uri(cloud_access: Any) -> str | None:
    """The ``s3://bucket/key`` in an IRSA ``cloud_access`` JSON value, or None.

    Examples
    --------
    >>> cloud_uri(""), cloud_uri(None), cloud_uri("not json")
    (None, None, None)
    """
    if not isinstance(cloud_access, str) or not cloud_access.strip():
        return None
    try:
        info = json.loads(cloud_access)
    except ValueError:
        logger.debug("cloud_access is not JSON: %r", cloud_access[:200])
        return None
    aws = info.get("aws") if isinstance(info, dict) else None
    if not isinstance(aws, dict):
        return None
    bucket, key = aws.get("bucket_name"), aws.get("key")
    if not (isinstance(bucket, str) and isinstance(key, str) and bucket and key):
        return None
    return f"s3://{bucket}/{key.lstrip('/')}"


def _search(url: str, region: SkyRegion, collection: str, maxrec: int | None) -> pd.DataFrame:
    from pyvo.dal import SIA2Service
    from pyvo.utils.http import create_session

    with create_session() as session:
        service = SIA2Service(url, session=session, check_baseurl=False)
        result = service.search(pos=region.sia_pos(), collection=collection or None,
                                maxrec=maxrec)
        return table_to_frame(result.to_table())


def sia_search(
    region: SkyRegion,
    *,
    collection: str,
    sia_url: str = IRSA_SIA_URL,
    maxrec: int | None = None,
    cache: ArchiveCache | None = None,
    service_name: str = "IRSA SIA",
) -> pd.DataFrame:
    """All files of a collection that overlap ``region`` (one SIA v2 query, cached).

    Returns
    -------
    pandas.DataFrame
        The service's ObsCore rows, column names in lower case.

    Raises
    ------
    ArchiveError
        Unreachable service, an error reply, no rows, a reply without the
        ``access_url``, ``energy_bandpassname`` or ``dataproduct_subtype`` columns.
    """
    cache = cache if cache is not None else ArchiveCache()
    query = Query(service_name, sia_url, {"POS": " ".join(map(str, region.sia_pos())),
                                          "COLLECTION": collection, "MAXREC": maxrec})

    def fetch() -> pd.DataFrame:
        with calling(query):
            return _search(sia_url, region, collection, maxrec)

    frame = cache.get(query, fetch)
    if frame.empty:
        raise ArchiveError(f"{query.describe()}: no images of collection {collection!r} in "
                           f"the {region.describe()}")
    missing = [c for c in _NEEDED if c not in frame.columns]
    if missing:
        raise ArchiveError(f"{query.describe()}: the reply has no column "
                           f"{', '.join(map(repr, missing))}; it has: "
                           f"{', '.join(map(str, frame.columns))}")
    return frame


def _url(row: pd.Series, prefer_cloud: bool) -> str:
    if prefer_cloud:
        uri = cloud_uri(row.get("cloud_access"))
        if uri:
            return uri
    return str(row["access_url"])


def _pairs(science: pd.DataFrame, noise: pd.DataFrame, band: str) -> list[int | None]:
    """For each science row, the position in ``noise`` of its noise map (same obs_id)."""
    if noise.empty:
        return [None] * len(science)
    if "obs_id" not in science.columns:
        if len(noise) == len(science):
            return list(range(len(noise)))
        return [None] * len(science)
    by_obs: dict[Any, list[int]] = {}
    for j, obs in enumerate(noise["obs_id"]):
        by_obs.setdefault(obs, []).append(j)
    out: list[int | None] = []
    for obs in science["obs_id"]:
        js = by_obs.get(obs, [])
        out.append(js.pop(0) if js else None)
    if None in out:
        logger.warning("%s: %d of %d science image(s) have no noise map", band,
                       out.count(None), len(out))
    return out


def _band_set(rows: pd.DataFrame, band: str, *, science_subtype: str, noise_subtype: str,
              noise_kind: str, coverage_subtype: str, prefer_cloud: bool) -> ImageSet | None:
    sub = rows["dataproduct_subtype"].astype(str).str.lower()
    science = rows[sub == science_subtype.lower()].reset_index(drop=True)
    if science.empty:
        return None
    noise = (rows[sub == noise_subtype.lower()].reset_index(drop=True) if noise_subtype
             else rows.iloc[:0])
    pairs = _pairs(science, noise, band)
    if noise_subtype and all(p is not None for p in pairs):
        noise_urls = tuple(_url(noise.iloc[j], prefer_cloud) for j in pairs if j is not None)
    else:
        noise_urls = ()
        if noise_subtype:
            logger.warning("%s: noise maps (%s) incomplete; none used", band, noise_subtype)
    extra = {}
    if coverage_subtype:
        cov = rows[sub == coverage_subtype.lower()]
        if len(cov):
            extra[coverage_subtype] = tuple(_url(r, prefer_cloud) for _, r in cov.iterrows())
    images = tuple(_url(r, prefer_cloud) for _, r in science.iterrows())
    return ImageSet(band, images, noise_urls, noise_kind if noise_urls else "none", extra)


def irsa_images(
    region: SkyRegion,
    *,
    collection: str,
    bands: Mapping[str, str | Sequence[str]],
    sia_url: str = IRSA_SIA_URL,
    science_subtype: str = "science",
    noise_subtype: str = "uncertainty",
    noise_kind: str = "uncertainty",
    coverage_subtype: str = "coverage",
    prefer_cloud: bool = True,
    cache: ArchiveCache | None = None,
    service_name: str = "IRSA SIA",
) -> dict[str, ImageSet]:
    """Each band's science images and noise maps from one SIA v2 search.

    Parameters
    ----------
    region : SkyRegion
    collection : str
        SIA collection, e.g. ``"spitzer_scosmos"`` or ``"spitzer_seip"``.
    bands : mapping
        Band name -> the ``energy_bandpassname`` value(s) of its files
        (case-insensitive), e.g. ``{"irac1": "IRAC1"}``.
    sia_url : str
        The SIA v2 query endpoint (default IRSA's).
    science_subtype, noise_subtype, coverage_subtype : str
        ``dataproduct_subtype`` of science images, of noise maps ("" for none)
        and of coverage maps (kept in :attr:`ImageSet.extra`; "" to skip).
    noise_kind : str
        What the noise maps hold (``"uncertainty"``: standard deviation).
    prefer_cloud : bool
        Use the ``s3://`` URI of a file that IRSA serves from the cloud.
    cache : ArchiveCache, optional
    service_name : str

    Returns
    -------
    dict of str to ImageSet
        In the order of ``bands``.

    Raises
    ------
    ArchiveError
        As :func:`sia_search`, or a band without science images (the message
        lists the band passes and subtypes the reply has).
    """
    frame = sia_search(region, collection=collection, sia_url=sia_url, cache=cache,
                       service_name=service_name)
    passes = frame["energy_bandpassname"].astype(str).str.strip().str.lower()
    out: dict[str, ImageSet] = {}
    for band, names in bands.items():
        wanted = {names.lower()} if isinstance(names, str) else {n.lower() for n in names}
        found = _band_set(frame[passes.isin(wanted)], band, science_subtype=science_subtype,
                          noise_subtype=noise_subtype, noise_kind=noise_kind,
                          coverage_subtype=coverage_subtype, prefer_cloud=prefer_cloud)
        if found is None:
            query = Query(service_name, sia_url, {"POS": " ".join(map(str, region.sia_pos())),
                                                  "COLLECTION": collection})
            have = sorted({f"{p}/{s}" for p, s in zip(frame["energy_bandpassname"],
                                                      frame["dataproduct_subtype"],
                                                      strict=True)})
            raise ArchiveError(f"{query.describe()}: no {science_subtype!r} images with band "
                               f"pass {'/'.join(sorted(wanted))} for band {band!r}; the reply "
                               f"has (band pass/subtype): {', '.join(have)}")
        logger.info("%s: %s: %d image(s), %d noise map(s)", service_name, band,
                    len(found.images), len(found.noise))
        out[band] = found
    return out
