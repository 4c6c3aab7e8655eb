"""From per-tile detections to catalogs: one per group, one merged per survey, the selection.

Per survey (:class:`~dask_phot.detect.config.SurveyInputs`, or the one set of
``[detect] images``) and group (filter): detections with S/N below
``min_snr`` are dropped, duplicates across tiles and overlapping mosaics are
merged (:func:`deduplicate`, the highest S/N wins), the group is optionally
matched and aligned to a reference catalog, then the groups are merged into the
survey's catalog. What was selected, and how, is written beside it
(``selection.json``) and into the Parquet schema metadata (``dask_phot_selection``):
the mosaics of each group, the detection settings, the cuts, the counts at each
step, and what the archive look-up chose (``[detect.surveys.<name>] archive``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.config import storage_options
from dask_phot.detect.config import DetectConfig
from dask_phot.detect.extract import COSMIC_RAY, SINGLE_EXPOSURE

__all__ = ["DetectSummary", "assemble_catalogs", "deduplicate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectSummary:
    """What :func:`~dask_phot.detect.run_detect` wrote.

    Attributes
    ----------
    groups : dict of str to str
        Catalog of each group (``"<survey>/<group>"`` keys with surveys).
    merged : str
        The merged catalog (the only survey's; "" with several surveys).
    n_sources : int
        Sources in the merged catalog(s).
    n_tiles : int
    offsets_arcsec : dict of str to (float, float)
        Per group, the median offset to the reference catalog.
    surveys : dict of str to str
        Merged catalog of each survey (``{"": merged}`` without surveys).
    counts : dict of str to int
        Sources in each survey's merged catalog.
    """

    groups: dict[str, str]
    merged: str
    n_sources: int
    n_tiles: int
    offsets_arcsec: dict[str, tuple[float, float]]
    surveys: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def deduplicate(table: pd.DataFrame, radius_arcsec: float, *,
                score: str = "snr") -> pd.DataFrame:
    """Keep one row per position: the highest ``score`` within ``radius_arcsec``.

    Adds ``n_dup``, how many rows each kept one stands for.

    Examples
    --------
    >>> t = pd.DataFrame({"ra": [10.0, 10.0 + 0.1 / 3600, 10.1], "dec": [0.0, 0.0, 0.0],
    ...                   "snr": [5.0, 9.0, 3.0]})
    >>> deduplicate(t, 0.3)[["snr", "n_dup"]].values.tolist()
    [[9.0, 2.0], [3.0, 1.0]]
    """
    from scipy.spatial import cKDTree

    if table.empty:
        return table.assign(n_dup=np.zeros(0, np.int64))
    ra, dec = np.radians(table["ra"].to_numpy()), np.radians(table["dec"].to_numpy())
    xyz = np.c_[np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)]
    chord = 2.0 * math.sin(math.radians(radius_arcsec / 3600.0) / 2.0)
    order = np.argsort(-np.nan_to_num(table[score].to_numpy(dtype=float), nan=-np.inf),
                       kind="stable")
    tree = cKDTree(xyz)
    taken = np.zeros(len(table), bool)
    keep, count = [], []
    for i in order:
        if taken[i]:
            continue
        near = [j for j in tree.query_ball_point(xyz[i], chord) if not taken[j]]
        taken[near] = True
        keep.append(i)
        count.append(len(near))
    out = table.iloc[keep].copy()
    out["n_dup"] = np.asarray(count, dtype=np.int64)
    return out.sort_values(["dec", "ra"], kind="stable").reset_index(drop=True)


def _read_reference(cfg: DetectConfig) -> pd.DataFrame | None:
    from dask_phot.priors import read_priors

    ref = cfg.reference
    if not ref.path:
        return None
    return read_priors(ref.path, ra_column=ref.ra_column, dec_column=ref.dec_column,
                       id_column="source_id", columns=list(ref.columns),
                       storage_options=storage_options(cfg))


def _align(table: pd.DataFrame, reference: pd.DataFrame | None,
           cfg: DetectConfig) -> tuple[pd.DataFrame, tuple[float, float]]:
    from dask_phot.detect.match import match_reference

    if reference is None or table.empty:
        return table, (math.nan, math.nan)
    ref = cfg.reference
    res = match_reference(table["ra"], table["dec"], reference, radius_arcsec=ref.radius_arcsec,
                          columns=tuple(ref.columns))
    out = pd.concat([table.reset_index(drop=True), res.table], axis=1)
    if ref.apply_shift and res.n_matched:
        cosd = np.cos(np.radians(out["dec"].to_numpy()))
        out["ra"] = np.mod(out["ra"] + res.dra_arcsec / 3600.0 / cosd, 360.0)
        out["dec"] = out["dec"] + res.ddec_arcsec / 3600.0
    return out, (res.dra_arcsec, res.ddec_arcsec)


def _write(table: pd.DataFrame, path: str, storage: dict[str, Any],
           meta: Mapping[str, Any] | None = None) -> str:
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, local = fsspec.core.url_to_fs(path, **(storage if "://" in path else {}))
    fs.makedirs(str(PurePosixPath(local).parent), exist_ok=True)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if meta:
        extra = {b"dask_phot_selection": json.dumps(meta, default=str).encode()}
        arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **extra})
    with fs.open(local, "wb") as f:
        pq.write_table(arrow, f)
    return path


def _write_json(data: Mapping[str, Any], path: str, storage: dict[str, Any]) -> None:
    import fsspec

    fs, local = fsspec.core.url_to_fs(path, **(storage if "://" in path else {}))
    with fs.open(local, "w") as f:
        f.write(json.dumps(data, indent=1, default=str))


def _settings(cfg: DetectConfig) -> dict[str, Any]:
    return {"params": dataclasses.asdict(cfg.params),
            "background": dataclasses.asdict(cfg.background),
            "aperture": dataclasses.asdict(cfg.aperture),
            "cosmics": dataclasses.asdict(cfg.cosmics),
            "min_snr": cfg.min_snr, "merge_radius_arcsec": cfg.merge_radius_arcsec,
            "tile_size": cfg.tile_size, "tile_overlap": cfg.tile_overlap,
            "deduplication": "within merge_radius_arcsec, the highest snr is kept",
            "reference": dataclasses.asdict(cfg.reference)}


def _survey_catalog(rows: pd.DataFrame, survey: str, mosaics: Sequence[Mapping[str, Any]],
                    cfg: DetectConfig, reference: pd.DataFrame | None,
                    archive: Mapping[str, Any]) -> tuple[dict[str, str], dict, pd.DataFrame,
                                                          dict[str, Any]]:
    base = cfg.output.rstrip("/") + (f"/{survey}" if survey else "")
    storage = storage_options(cfg)
    written, offsets, per_group, groups = {}, {}, [], {}
    for group, found in rows.groupby("group", sort=True):
        kept = found[found["snr"] >= cfg.min_snr] if cfg.min_snr > 0 else found
        cat = deduplicate(kept, cfg.merge_radius_arcsec)
        cat, offsets[str(group)] = _align(cat, reference, cfg)
        cat.insert(0, "id", np.arange(1, len(cat) + 1, dtype=np.int64))
        label = f"{survey}/{group}" if survey else str(group)
        written[label] = _write(cat, f"{base}/{group}.parquet", storage)
        per_group.append(cat)
        flags = cat["flag"].to_numpy() if "flag" in cat else np.zeros(len(cat), int)
        groups[str(group)] = {"detected": len(found), "after_min_snr": len(kept),
                              "single_exposure": int(np.sum(flags & SINGLE_EXPOSURE > 0)),
                              "cosmic_ray_flagged": int(np.sum(flags & COSMIC_RAY > 0)),
                              "after_deduplication": len(cat), "catalog": written[label],
                              "mosaics": [m for m in mosaics if m["group"] == group]}
    merged = deduplicate(pd.concat(per_group, ignore_index=True) if per_group else rows,
                         cfg.merge_radius_arcsec).rename(columns={"n_dup": "n_groups"})
    merged = merged.drop(columns=["id"], errors="ignore")
    merged.insert(0, "source_id", np.arange(1, len(merged) + 1, dtype=np.int64))
    if survey:
        merged.insert(1, "survey", survey)
    selection = {"survey": survey, "n_sources": len(merged), "groups": groups,
                 "settings": _settings(cfg), "archive": dict(archive),
                 "merge": "groups merged within merge_radius_arcsec, the highest snr kept; "
                          "n_groups counts the groups that detected each source"}
    path = _write(merged, f"{base}/merged.parquet", storage, selection)
    _write_json(selection, f"{base}/selection.json", storage)
    return written, {(f"{survey}/{g}" if survey else g): o for g, o in offsets.items()}, \
        merged, {"path": path}


def assemble_catalogs(tables: Sequence[pd.DataFrame], mosaics: Sequence[Mapping[str, Any]],
                      cfg: DetectConfig, n_tiles: int) -> DetectSummary:
    """Write the group and survey catalogs from the tiles' tables (see the module docstring).

    Parameters
    ----------
    tables : sequence of DataFrame
        :func:`~dask_phot.detect.mosaics.detect_tile` results (``survey`` and
        ``group`` columns).
    mosaics : sequence of mapping
        ``survey``, ``group``, ``image``, ``noise``, ``coverage`` of every mosaic.
    cfg : DetectConfig
    n_tiles : int
    """
    reference = _read_reference(cfg)
    found = [t for t in tables if not t.empty]
    empty = pd.DataFrame({"ra": [], "dec": [], "snr": [], "group": [], "survey": []})
    rows = pd.concat(found, ignore_index=True) if found else empty
    inputs = cfg.inputs()
    groups, offsets, surveys, counts = {}, {}, {}, {}
    for survey, spec in inputs.items():
        part = rows[rows["survey"] == survey].drop(columns=["survey"])
        archive = getattr(spec, "archive", {}) or {}
        written, off, merged, info = _survey_catalog(
            part, survey, [m for m in mosaics if m["survey"] == survey], cfg, reference,
            archive)
        groups.update(written)
        offsets.update(off)
        surveys[survey], counts[survey] = info["path"], len(merged)
        logger.info("detect: %s%d source(s) -> %s", f"{survey}: " if survey else "",
                    len(merged), info["path"])
    merged_path = next(iter(surveys.values())) if len(surveys) == 1 else ""
    return DetectSummary(groups=groups, merged=merged_path, n_sources=sum(counts.values()),
                         n_tiles=n_tiles, offsets_arcsec=offsets, surveys=surveys,
                         counts=counts)
