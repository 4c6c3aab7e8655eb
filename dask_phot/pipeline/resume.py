"""What a cell is computed from, and whether an earlier run's cell can be kept.

A cell's *inputs* are the configuration (:func:`config_digest`: its science
sections, local paths taken relative to the configuration file's folder, so a
project folder moved or copied elsewhere keeps them), the cell's priors rows
(primary and margin: ids, positions, carried columns) and, per band, the identity
of each mosaic the cell reads (path, size and ETag or modification time, noise maps too: see
:func:`dask_phot.storage.file_identity`). A cell report records them; the next run
keeps a cell only when its report says it succeeded and every input is the same,
and otherwise says why it runs again (:func:`why_rerun`).

Examples
--------
>>> old = {"status": {"irac1": "ok"}, "inputs": {"config": "a", "priors": "p",
...                                              "mosaics": {"irac1": "m"}}}
>>> why_rerun(old, CellInputs("a", "p", {"irac1": "m"})) is None
True
>>> why_rerun(old, CellInputs("a", "q", {"irac1": "n"}))
'priors rows, mosaic irac1 changed'
>>> why_rerun({**old, "errors": {"irac1": {"type": "OSError"}}}, CellInputs("a", "p",
...           {"irac1": "m"}))
'failed before'
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dask_phot.cells import CellSources
from dask_phot.config import BandImages, RunConfig, storage_options
from dask_phot.images import Mosaic, assign_group
from dask_phot.images.index import in_threads
from dask_phot.storage import file_identity

__all__ = ["CellInputs", "cell_inputs", "config_digest", "mosaic_identities", "owners",
           "why_rerun"]

#: Reason of a cell computed for the first time.
NEW = "new"


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else
                 json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class CellInputs:
    """Digests of what one cell is computed from."""

    config: str
    priors: str
    mosaics: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The record written in the cell report."""
        return asdict(self)


def config_digest(config: RunConfig) -> str:
    """Digest of the configuration's science sections (:attr:`RunConfig.SCIENCE_SECTIONS`).

    Local paths (images, noise maps, PSF files) are taken relative to the
    configuration file's folder (:attr:`RunConfig.base`); the priors' path is left
    out, since each cell's priors rows are part of its inputs.
    """
    d = config.to_dict()
    science = {k: d[k] for k in config.SCIENCE_SECTIONS}
    science["priors"] = {k: v for k, v in science["priors"].items() if k != "path"}
    for band in science["bands"].values():
        for key in ("images", "noise", "psf_file", "psf_stars"):
            if key in band:
                value = band[key]
                band[key] = ([_where(v, config.base) for v in value] if isinstance(value, list)
                             else _where(value, config.base))
    return _digest(science)


def priors_digest(sources: pd.DataFrame) -> str:
    """Digest of a cell's priors rows: column names, dtypes and values."""
    values = pd.util.hash_pandas_object(sources, index=False).to_numpy()
    header = [[str(c), str(t)] for c, t in sources.dtypes.items()]
    return _digest(header, np.ascontiguousarray(values).tobytes())


def _where(url: str, base: str) -> str:
    return os.path.relpath(url, base) if base and os.path.isabs(url) else url


def mosaic_identities(indexes: Mapping[str, Sequence[Mosaic]], config: RunConfig
                      ) -> dict[str, list[str]]:
    """Per band, the identity of each mosaic (and its noise map), in index order.

    Raises
    ------
    FileNotFoundError
        A mosaic that has gone since it was indexed.
    """
    storage = storage_options(config)
    files = {band: [[m.source_url] + ([m.noise_source_url] if m.noise_source_url else [])
                    for m in index] for band, index in indexes.items()}
    # (one request each, its latency rather than CPU: asked at once, as the index does)
    urls = sorted({u for lists in files.values() for urls in lists for u in urls})
    found = dict(zip(urls, in_threads(lambda u: file_identity(u, storage), urls),
                     strict=True))
    return {band: [" ".join(f"{_where(u, config.base)}={found[u]}" for u in urls)
                   for urls in lists] for band, lists in files.items()}


def owners(part: CellSources, index: Sequence[Mosaic], band: BandImages,
           margin_arcsec: float) -> np.ndarray:
    """Indices of the mosaics that measure the cell's primary sources (-1: not covered).

    The cell's read, memory estimate and inputs all use this assignment: one mosaic for
    the whole cell where one holds the cell's pixel box (its primaries padded by the
    band's margin and half a PSF stamp), else each source's most central mosaic
    (:func:`dask_phot.images.assign_group`).
    """
    src = part.sources
    primary = src["_primary"].to_numpy(dtype=bool)
    pad = margin_arcsec + (band.band.psf_size // 2 + 2) * band.band.pixel_scale
    return assign_group(index, src["ra"].to_numpy()[primary], src["dec"].to_numpy()[primary],
                        pad)


def cell_inputs(part: CellSources, config_digest: str, owner: Mapping[str, np.ndarray],
                identities: Mapping[str, Sequence[str]]) -> CellInputs:
    """The inputs of one cell, from its sources, mosaic owners and mosaic identities."""
    mosaics = {band: _digest(sorted(identities[band][int(k)] for k in np.unique(o) if k >= 0))
               for band, o in owner.items()}
    return CellInputs(config_digest, priors_digest(part.sources), mosaics)


def why_rerun(report: Mapping[str, Any] | None, inputs: CellInputs) -> str | None:
    """Why a cell must be computed again (None: the earlier result stands).

    ``"new"``, ``"failed before"``, or which inputs changed (``"config"``,
    ``"priors rows"``, ``"mosaic <band>"``).
    """
    if report is None:
        return NEW
    if report.get("errors") or any(s != "ok" and not str(s).startswith("not covered")
                                   for s in (report.get("status") or {}).values()):
        return "failed before"
    old = report.get("inputs") or {}
    changed = []
    if old.get("config") != inputs.config:
        changed.append("config")
    if old.get("priors") != inputs.priors:
        changed.append("priors rows")
    before = old.get("mosaics") or {}
    changed += [f"mosaic {b}" for b, d in inputs.mosaics.items() if before.get(b) != d]
    return ", ".join(changed) + " changed" if changed else None
