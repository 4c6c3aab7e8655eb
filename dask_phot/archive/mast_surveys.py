"""JWST and HST survey mosaics from MAST: level-3 products or a team's HLSP, on S3 if there.

A survey (:class:`SurveySpec`) is found on MAST (astroquery's ``Observations``) by
its proposal ids, instrument and filters (the MAST pipeline's level-3 mosaics:
JWST ``i2d``, HST ``drz``/``drc``) and/or by its HLSP provenance name
(``provenance_name = 'CEERS'``, ``obs_collection = 'HLSP'``: the team's contributed
mosaics, level 4). Where a filter has both, the level-3 products are used
(``prefer="hlsp"`` turns that round) and the choice is recorded per band, with
what was left (:attr:`SurveyImages.choices`); level-2 exposures (``cal``,
``flt``) are never mosaics and are only counted.

Each mosaic's pixels, noise and coverage are extensions of one file for the
pipelines' products (``x_i2d.fits[SCI]``, ``[WHT]`` or ``[ERR]``, ``[CON]``;
``x_drz.fits[SCI]``, ``[WHT]``, ``[CTX]``) or separate files for HLSPs that ship
them so (``..._drz.fits`` with ``..._wht.fits``). A file is given as an ``s3://``
URI of MAST's public bucket (``stpubdata``) when MAST's path look-up knows its
path and the object is in the bucket, else as a MAST download URL (HTTPS).

Every reply (observations, products, path look-up, bucket check) is cached by
:class:`~dask_phot.archive.ArchiveCache` and usable offline.

Examples
--------
>>> band_of("CLEAR;F200W"), band_of("F150W2;F162M"), band_of("F814W;CLEAR2L")
('f200w', 'f150w2-f162m', 'f814w')
>>> mosaic_kind("jw01345-o001_t001_nircam_clear-f200w_i2d.fits")
('science', 'i2d')
>>> mosaic_kind("hlsp_candels_hst_acs_egs-tot-30mas_f814w_v1.0_wht.fits")
('weight', 'wht')
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pandas as pd

from dask_phot.archive._cache import ArchiveCache, ArchiveError, Query, calling, table_to_frame
from dask_phot.archive.mast import MAST_URL, observations_class, query_products, require_columns
from dask_phot.archive.sia import ImageSet

__all__ = ["MAST_BUCKET", "SurveyImages", "SurveySpec", "band_of", "mosaic_kind",
           "survey_images"]

logger = logging.getLogger(__name__)

#: MAST's public S3 bucket.
MAST_BUCKET = "stpubdata"
_MOSAIC_RE = re.compile(r"_(?P<kind>i2d|drz|drc|sci|wht|err|rms|unc|ctx|con|exp)\.fits(\.gz)?$",
                        re.IGNORECASE)
_KINDS = {"i2d": "science", "drz": "science", "drc": "science", "sci": "science",
          "wht": "weight", "err": "uncertainty", "rms": "uncertainty", "unc": "uncertainty",
          "ctx": "coverage", "con": "coverage", "exp": "exposure"}
_NOISE_EXT = {"WHT": "weight", "ERR": "uncertainty"}
_PATH_BATCH = 50


def band_of(filters: Any) -> str:
    """The band name of a MAST ``filters`` value: filters other than CLEAR, lower case."""
    parts = [p.strip().lower() for p in re.split(r"[;,]", str(filters or "")) if p.strip()]
    useful = [p for p in parts if not p.startswith("clear") and p not in ("n/a", "none")]
    return "-".join(useful or parts)


def mosaic_kind(filename: str) -> tuple[str, str] | None:
    """``(role, suffix)`` of a mosaic file name (science, weight, uncertainty...), else None."""
    m = _MOSAIC_RE.search(filename)
    if m is None:
        return None
    return _KINDS[m["kind"].lower()], m["kind"].lower()


@dataclass(frozen=True)
class SurveySpec:
    """What identifies a survey on MAST.

    Parameters
    ----------
    name : str
        The survey's name in dask-phot (output names).
    proposal_id : tuple of str
        Proposal (program) ids of its level-3 products, e.g. ``("1345",)``.
    hlsp : str
        HLSP provenance name, e.g. ``"ceers"`` ("" for none).
    instrument : str
        MAST ``instrument_name`` of the level-3 products (``"NIRCAM/IMAGE"``,
        ``"ACS/WFC"``...).
    filters : tuple of str
        Filters to keep (MAST names, ``"F200W"``); empty: all.
    collection : str
        ``obs_collection`` of the level-3 products: ``"JWST"`` or ``"HST"``.
    """

    name: str
    proposal_id: tuple[str, ...] = ()
    hlsp: str = ""
    instrument: str = "NIRCAM/IMAGE"
    filters: tuple[str, ...] = ()
    collection: str = "JWST"

    def __post_init__(self) -> None:
        if not self.proposal_id and not self.hlsp:
            raise ValueError(f"survey {self.name!r}: give proposal_id and/or hlsp")


@dataclass(frozen=True)
class SurveyImages:
    """A survey's mosaics per band and how they were chosen.

    Attributes
    ----------
    survey : str
    bands : mapping of str to ImageSet
        Per band (``"f200w"``): ``images`` (``...[SCI]``), ``noise`` and
        ``noise_kind``, ``extra["coverage"]`` (context maps) where known.
    choices : mapping of str to dict
        Per band: ``used`` ("level3" or "hlsp"), the number of mosaics of each
        kind found, the level-2 exposures not used, and where the files are
        (``s3_urls`` and ``https_urls`` counts, of images, noise and coverage).
    """

    survey: str
    bands: Mapping[str, ImageSet]
    choices: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# ---------------------------------------------------------------------- MAST queries
def _criteria_query(spec: SurveySpec, hlsp: bool, mast_url: str,
                    service_name: str) -> tuple[Query, dict[str, list[str]]]:
    if hlsp:
        criteria = {"obs_collection": ["HLSP"], "provenance_name": [spec.hlsp.upper()]}
    else:
        criteria = {"obs_collection": [spec.collection], "proposal_id": list(spec.proposal_id),
                    "instrument_name": [spec.instrument]}
    if spec.filters:
        criteria["filters"] = list(spec.filters)
    criteria["dataproduct_type"] = ["image"]
    params = {"service": "Mast.Caom.Filtered",
              **{k: ",".join(v) for k, v in criteria.items()}}
    return Query(service_name, mast_url, params), criteria


def _observations(spec: SurveySpec, hlsp: bool, mast_url: str, cache: ArchiveCache,
                  service_name: str) -> pd.DataFrame:
    query, criteria = _criteria_query(spec, hlsp, mast_url, service_name)

    def fetch() -> pd.DataFrame:
        with calling(query):
            obs = observations_class(mast_url)
            try:
                return table_to_frame(obs.query_criteria(**criteria), lowercase=False)
            finally:
                obs._session.close()

    frame = cache.get(query, fetch)
    if len(frame):
        require_columns(frame, ("obsid", "filters", "calib_level"), query)
    return frame.assign(kind="hlsp" if hlsp else "level3")


def _products(obsids: Sequence[str], mast_url: str, cache: ArchiveCache,
              service_name: str) -> pd.DataFrame:
    query = Query(service_name, mast_url, {"service": "Mast.Caom.Products",
                                           "obsid": ",".join(obsids)})

    def fetch() -> pd.DataFrame:
        with calling(query):
            return query_products(mast_url, obsids)

    frame = cache.get(query, fetch)
    require_columns(frame, ("obsID", "productFilename", "dataURI"), query)
    return frame


def _path_lookup(uris: Sequence[str], mast_url: str, cache: ArchiveCache,
                 service_name: str) -> dict[str, str | None]:
    """MAST's relative path of each data URI (None: not known), as the bucket holds it."""
    url = f"{mast_url.rstrip('/')}/api/v0.1/path_lookup/"
    query = Query(service_name, url, {"uri": ",".join(sorted(uris))})

    def fetch() -> pd.DataFrame:
        import requests

        rows = []
        with calling(query), requests.Session() as session:
            for i in range(0, len(uris), _PATH_BATCH):
                chunk = list(uris[i:i + _PATH_BATCH])
                reply = session.get(url, params={"uri": chunk}, timeout=60)
                reply.raise_for_status()
                found = reply.json()
                for uri in chunk:
                    entry = found.get(uri) or {}
                    rows.append({"uri": uri, "path": entry.get("path")})
        return pd.DataFrame(rows, columns=["uri", "path"])

    frame = cache.get(query, fetch)
    return {u: (None if p is None or p != p else _bucket_key(str(p)))
            for u, p in zip(frame["uri"], frame["path"], strict=True)}


def _bucket_key(path: str) -> str:
    """A path-look-up path as a key of the public bucket (MAST's own layout rules)."""
    if path.startswith("/hlsp_local/public/"):
        return "mast/" + path.removeprefix("/hlsp_local/public/")
    if path.startswith("/ps1/"):
        return "panstarrs/ps1/public/" + path.removeprefix("/ps1/")
    return path.lstrip("/")


def _in_bucket(keys: Sequence[str], bucket: str, storage_options: Mapping[str, Any],
               cache: ArchiveCache) -> set[str]:
    """The keys that exist in the bucket (checked once, cached)."""
    if not keys:
        return set()
    endpoint = (storage_options.get("client_kwargs") or {}).get("endpoint_url", "")
    query = Query("S3", f"s3://{bucket}" + (f" at {endpoint}" if endpoint else ""),
                  {"keys": ",".join(sorted(keys))})

    def fetch() -> pd.DataFrame:
        import fsspec

        with calling(query):
            fs = fsspec.filesystem("s3", **{"anon": True, **dict(storage_options)})
            there = [bool(fs.exists(f"{bucket}/{k}")) for k in keys]
        return pd.DataFrame({"key": list(keys), "exists": there})

    frame = cache.get(query, fetch)
    return set(frame.loc[frame["exists"].astype(bool), "key"])


# ---------------------------------------------------------------------- choosing
def _choose(obs: pd.DataFrame, spec: SurveySpec, prefer: str) -> tuple[pd.DataFrame, dict]:
    """Per band, the observations used (level 3 or HLSP) and the record of the choice."""
    level = pd.to_numeric(obs["calib_level"], errors="coerce")
    rows = obs.assign(band=[band_of(f) for f in obs["filters"]], level=level)
    wanted = {band_of(f) for f in spec.filters}
    if wanted:
        rows = rows[rows["band"].isin(wanted)]
    mosaics = rows[(rows["kind"] == "hlsp") | (rows["level"] >= 3)]
    order = ("level3", "hlsp") if prefer == "level3" else ("hlsp", "level3")
    chosen, choices = [], {}
    for band in sorted(set(mosaics["band"]), key=_band_order):
        here = mosaics[mosaics["band"] == band]
        counts = {k: int((here["kind"] == k).sum()) for k in ("level3", "hlsp")}
        used = next(k for k in order if counts[k])
        level2 = int(((rows["band"] == band) & (rows["kind"] == "level3")
                      & (rows["level"] < 3)).sum())
        choices[band] = {"used": used, "level3_observations": counts["level3"],
                         "hlsp_observations": counts["hlsp"], "level2_not_used": level2,
                         "rule": f"{order[0]} preferred"}
        chosen.append(here[here["kind"] == used])
    found = pd.concat(chosen, ignore_index=True) if chosen else rows.iloc[:0]
    return found, choices


def _band_order(band: str) -> tuple[int, str]:
    digits = re.search(r"\d+", band)
    return (int(digits.group()) if digits else 0, band)


def _no_products(spec: SurveySpec, obs: pd.DataFrame, queries: Sequence[Query],
                 found: Sequence[str]) -> ArchiveError:
    """No mosaics for the survey, or for some of its filters: what was asked and found."""
    missing = [f for f in spec.filters if band_of(f) not in {band_of(b) for b in found}]
    asked = ", ".join(missing) or "any filter"
    what = " and ".join(q.describe() for q in queries)
    level2 = 0
    if len(obs):
        bands = {band_of(f) for f in missing} if missing else None
        rows = obs[pd.to_numeric(obs["calib_level"], errors="coerce") < 3]
        level2 = sum(1 for f in rows["filters"] if bands is None or band_of(f) in bands)
    extra = f"; only {level2} level-2 exposure(s) there, which are not mosaics" if level2 else ""
    have = f"; mosaics exist in {', '.join(found)}" if found else ""
    return ArchiveError(f"{what}: survey {spec.name!r}: no level-3 or HLSP mosaics in "
                        f"{asked}{have}{extra}")


# ---------------------------------------------------------------------- products -> URLs
def _mosaic_rows(products: pd.DataFrame, used: pd.DataFrame) -> pd.DataFrame:
    """Products that are mosaics (science, weight...), with their band and kind."""
    band = dict(zip(used["obsid"].astype(str), used["band"], strict=True))
    kind = dict(zip(used["obsid"].astype(str), used["kind"], strict=True))
    rows = products[products["obsID"].astype(str).isin(band)].copy()
    parsed = [mosaic_kind(str(f)) for f in rows["productFilename"]]
    rows["role"] = [p[0] if p else "" for p in parsed]
    rows["suffix"] = [p[1] if p else "" for p in parsed]
    if "calib_level" in rows.columns:  # members of a level-3 product are listed with it
        level = pd.to_numeric(rows["calib_level"], errors="coerce")
        rows = rows[level.isna() | (level >= 3)]
    rows = rows[rows["role"] != ""]
    rows["band"] = rows["obsID"].astype(str).map(band)
    rows["kind"] = rows["obsID"].astype(str).map(kind)
    return rows.drop_duplicates("dataURI").reset_index(drop=True)


def _stem(filename: str) -> str:
    return _MOSAIC_RE.sub("", filename)


def _band_files(rows: pd.DataFrame, noise: str) -> list[dict[str, str | None]]:
    """Science files of one band and their noise/coverage (extensions or separate files)."""
    by_stem = {(_stem(str(r.productFilename)), r.role): str(r.dataURI)
               for r in rows.itertuples()}
    out = []
    science = rows[rows["role"] == "science"].assign(
        stem=[_stem(str(f)) for f in rows.loc[rows["role"] == "science", "productFilename"]],
        rank=lambda t: t["suffix"].map({"drc": 0, "i2d": 0, "drz": 1, "sci": 2}))
    # an HST visit has a drz and a CTE-corrected drc mosaic of the same pixels: the drc
    science = science.sort_values(["stem", "rank"]).drop_duplicates("stem")
    for r in science.sort_values("productFilename").itertuples():
        stem, uri, mef = _stem(str(r.productFilename)), str(r.dataURI), r.suffix in (
            "i2d", "drz", "drc")
        role = _NOISE_EXT[noise]
        separate = by_stem.get((stem, role))
        coverage = by_stem.get((stem, "coverage"))
        context = "CON" if r.suffix == "i2d" else "CTX"
        out.append({
            "science": (uri, "SCI" if mef and not separate else None),
            "noise": ((separate, None) if separate else (uri, noise) if mef else (None, None)),
            "coverage": ((coverage, None) if coverage else (uri, context) if mef and not
                         separate else (None, None)),
        })
    return out


def _located(uri: str, ext: str | None, keys: Mapping[str, str | None], there: set[str],
             bucket: str, mast_url: str) -> tuple[str, bool]:
    key = keys.get(uri)
    if key is not None and key in there:
        url, s3 = f"s3://{bucket}/{key}", True
    else:
        url, s3 = f"{mast_url.rstrip('/')}/api/v0.1/Download/file?uri={quote(uri, safe=':/')}", \
            False
    return (f"{url}[{ext}]" if ext else url), s3


def _image_set(band: str, files: list[dict], noise: str, keys: Mapping[str, str | None],
               there: set[str], bucket: str, mast_url: str) -> tuple[ImageSet, dict]:
    where = {"s3_urls": 0, "https_urls": 0}

    def url(pair: tuple[str | None, str | None]) -> str | None:
        if pair[0] is None:
            return None
        text, s3 = _located(pair[0], pair[1], keys, there, bucket, mast_url)
        where["s3_urls" if s3 else "https_urls"] += 1
        return text

    images = tuple(url(f["science"]) for f in files)
    noise_urls = [url(f["noise"]) for f in files]
    coverage = [url(f["coverage"]) for f in files]
    complete = all(n is not None for n in noise_urls)
    if not complete:
        logger.warning("%s: %d of %d mosaic(s) have no %s; none used", band,
                       noise_urls.count(None), len(files), _NOISE_EXT[noise])
    extra = {"coverage": tuple(coverage)} if all(c is not None for c in coverage) else {}
    kind = _NOISE_EXT[noise] if complete else "none"
    return (ImageSet(band, images, tuple(noise_urls) if complete else (), kind,  # type: ignore[arg-type]
                     extra), where)


def survey_images(
    spec: SurveySpec,
    *,
    prefer: str = "level3",
    noise: str = "WHT",
    cloud: bool = True,
    bucket: str = MAST_BUCKET,
    mast_url: str = MAST_URL,
    storage_options: Mapping[str, Any] | None = None,
    cache: ArchiveCache | None = None,
    service_name: str = "MAST",
) -> SurveyImages:
    """A survey's mosaics per band: level-3 or HLSP products, as S3 or HTTPS URLs.

    Parameters
    ----------
    spec : SurveySpec
    prefer : {"level3", "hlsp"}
        Which products to use for a filter that has both.
    noise : {"WHT", "ERR"}
        The noise to pair with each mosaic: the inverse-variance weight (``WHT``
        extension or ``_wht`` file) or the 1-sigma uncertainty (``ERR``, ``_err``,
        ``_rms``).
    cloud : bool
        Use ``s3://`` URIs of ``bucket`` where the files are there.
    bucket : str
        MAST's public bucket (``stpubdata``).
    mast_url : str
        The MAST portal (default ``https://mast.stsci.edu``).
    storage_options : mapping, optional
        s3fs options for the bucket check (anonymous by default).
    cache : ArchiveCache, optional
    service_name : str

    Returns
    -------
    SurveyImages

    Raises
    ------
    ArchiveError
        An unreachable service or error reply; no mosaics (a survey with no
        products, or without one of the filters asked for); missing columns.
    """
    if prefer not in ("level3", "hlsp"):
        raise ValueError(f"prefer must be 'level3' or 'hlsp', got {prefer!r}")
    if noise not in _NOISE_EXT:
        raise ValueError(f"noise must be 'WHT' or 'ERR', got {noise!r}")
    cache = cache if cache is not None else ArchiveCache()
    parts = [_observations(spec, hlsp, mast_url, cache, service_name)
             for hlsp in (False, True) if (spec.hlsp if hlsp else spec.proposal_id)]
    obs = pd.concat(parts, ignore_index=True)
    used, choices = _choose(obs, spec, prefer) if len(obs) else (obs, {})
    queries = [_criteria_query(spec, h, mast_url, service_name)[0]
               for h in (False, True) if (spec.hlsp if h else spec.proposal_id)]
    missing = [f for f in spec.filters if band_of(f) not in choices]
    if not choices or missing:
        raise _no_products(spec, obs, queries, [b.upper() for b in choices])
    obsids = sorted(set(used["obsid"].astype(str)))
    rows = _mosaic_rows(_products(obsids, mast_url, cache, service_name), used)
    uris = sorted(set(rows["dataURI"].astype(str)))
    keys = _path_lookup(uris, mast_url, cache, service_name) if cloud else {}
    there = _in_bucket(sorted({k for k in keys.values() if k}), bucket,
                       dict(storage_options or {}), cache) if cloud else set()
    bands: dict[str, ImageSet] = {}
    for band in choices:
        files = _band_files(rows[rows["band"] == band], noise)
        if not files:
            raise _no_products(spec, obs, queries, [b.upper() for b in bands]) from None
        bands[band], where = _image_set(band, files, noise, keys, there, bucket, mast_url)
        choices[band].update(mosaics=len(files), **where)
        logger.info("%s: %s %s: %d %s mosaic(s) (%d s3:// URLs)", service_name, spec.name,
                    band, len(files), choices[band]["used"], where["s3_urls"])
    return SurveyImages(spec.name, bands, choices)


def survey_frame(found: SurveyImages) -> pd.DataFrame:
    """One row per mosaic: survey, band, image, noise, coverage URLs (for manifests)."""
    rows = []
    for band, s in found.bands.items():
        cov = s.extra.get("coverage", ())
        for i, image in enumerate(s.images):
            rows.append({"survey": found.survey, "band": band, "image": image,
                         "noise": s.noise[i] if s.noise else None,
                         "coverage": cov[i] if cov else None})
    return pd.DataFrame(rows)

