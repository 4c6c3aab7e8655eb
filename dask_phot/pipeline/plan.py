"""A run's plan: every input checked, cells cut and keyed, before any cluster starts.

:func:`prepare_run` reads the priors and every band's mosaic headers, checks
them (each failure is one :class:`InputError` line naming the file, column or
key), cuts the priors into sky cells, keys each cell on what it is computed
from (:mod:`dask_phot.pipeline.resume`) and compares with what the output folder
holds: cells whose inputs are unchanged are kept, the others are planned with
the reason they run, and cells of another catalog in the folder are refused
(or, with ``overwrite``, planned for removal).

Checks: the S3 endpoint answers (:func:`dask_phot.storage.check_endpoint`);
the priors are readable, have RA and Dec columns with finite values and at least
one row; every mosaic is a FITS image with a celestial WCS, and its pixel scale
is the band's ``pixel_scale`` (within 2%); every band's PSF loads (odd-sized or
with a central peak); some band covers some source (a band that covers none is
a warning).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dask_phot.cells import CellSources, choose_order, partition_priors
from dask_phot.config import BandImages, RunConfig, storage_options
from dask_phot.images import Mosaic, build_index
from dask_phot.images.index import in_threads
from dask_phot.pipeline.memory import OwnerMemo, split_cells
from dask_phot.pipeline.output import CatalogStore
from dask_phot.pipeline.psfs import epsf_keys
from dask_phot.pipeline.resume import (
    CellInputs,
    cell_inputs,
    config_digest,
    mosaic_identities,
    owners,
    why_rerun,
)
from dask_phot.priors import read_priors
from dask_phot.storage import StorageError, check_endpoint, network_errors
from dask_phot.templates.cell import TemplateSetup, check_sharp

__all__ = ["PIXEL_SCALE_TOLERANCE", "InputError", "RunPlan", "plan_cells", "prepare_run"]

log = logging.getLogger(__name__)

#: Largest relative difference between a mosaic's pixel scale and its band's ``pixel_scale``.
PIXEL_SCALE_TOLERANCE = 0.02

CellKey = tuple[int, int]


class InputError(ValueError):
    """An input a run cannot use; the message is one line naming the file, column or key."""

    __module__ = "dask_phot.pipeline"


@dataclass
class RunPlan:
    """What a run will do, decided before it starts.

    Attributes
    ----------
    config : RunConfig
    store : CatalogStore
        The output catalog.
    parts : list of CellSources
        Every cell of the catalog.
    indexes : dict
        Band -> its mosaics.
    inputs : dict
        ``(order, pixel)`` -> the cell's :class:`~dask_phot.pipeline.resume.CellInputs`.
    reasons : dict
        ``(order, pixel)`` -> why the cell runs, for the cells to run.
    stale : set
        Cells in the output folder that are not in this catalog (removed by the run).
    coverage : dict
        Band -> number of sources a mosaic covers.
    warnings : list of str
        What the summary should say (a band covering no source...).
    """

    config: RunConfig
    store: CatalogStore
    parts: list[CellSources]
    indexes: dict[str, list[Mosaic]]
    inputs: dict[CellKey, CellInputs]
    reasons: dict[CellKey, str]
    stale: set[CellKey] = field(default_factory=set)
    coverage: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[CellSources]:
        """The cells to compute, in sky order."""
        return [p for p in self.parts if (p.cell.order, p.cell.pixel) in self.reasons]

    @property
    def n_sources(self) -> int:
        """Sources of the catalog (primary rows)."""
        return sum(p.n_primary for p in self.parts)


def _read_priors(config: RunConfig, storage: Mapping) -> pd.DataFrame:
    path = config.priors.path
    try:
        priors = read_priors(path, storage_options=storage, **config.priors.read_kwargs())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file ([priors] path)") from None
    except (ValueError, OSError) as exc:
        text = str(exc)
        raise InputError(text if path in text else f"{path}: {text}") from None
    except network_errors() as exc:
        raise _unreachable(path, exc) from None
    if priors.empty:
        raise InputError(f"{path}: the priors catalog has no rows: nothing to measure")
    return priors


def _index_band(b: BandImages, storage: Mapping) -> list[Mosaic]:
    try:
        return build_index(list(b.images), list(b.noise) or None, noise_kind=b.noise_kind,
                           band=b.name, storage_options=storage)
    except FileNotFoundError as exc:
        raise InputError(f"{exc} ([bands.{b.name}] images/noise)") from None
    except (ValueError, OSError) as exc:
        raise InputError(f"{exc} ([bands.{b.name}])") from None
    except network_errors() as exc:
        raise _unreachable(f"[bands.{b.name}] images", exc) from None


def _index_bands(config: RunConfig, storage: Mapping) -> dict[str, list[Mosaic]]:
    """Each band's mosaics, the bands' headers read at once (remote headers cost latency);
    an error names the first band, in the configuration's order, that has one."""
    bands = list(config.bands)
    indexes = in_threads(lambda b: _index_band(b, storage), bands)
    return {b.name: index for b, index in zip(bands, indexes, strict=True)}


def _unreachable(what: str, exc: BaseException) -> StorageError:
    return StorageError(f"{what}: the storage cannot be reached ({type(exc).__name__}: "
                        f"{exc}); check storage.endpoint_url, the network and the credentials")


def _check_bands(config: RunConfig, indexes: Mapping[str, list[Mosaic]]) -> None:
    """Each band's PSF loads and each mosaic has the band's pixel scale."""
    for b in config.bands:
        b.band.load_psf()  # a BandError names the band and its PSF file
        for m in indexes[b.name]:
            scale = m.pixel_scale_arcsec
            if abs(scale / b.band.pixel_scale - 1.0) > PIXEL_SCALE_TOLERANCE:
                raise InputError(
                    f"{m.source_url}: pixel scale {scale:.4g}\"/px, but [bands.{b.name}] "
                    f"pixel_scale = {b.band.pixel_scale:g}\"/px; set the band's pixel_scale "
                    "(and psf_pixel_scale, if its PSF file is not on that grid)")


def plan_cells(config: RunConfig, memo: OwnerMemo | None = None
               ) -> tuple[list[CellSources], dict[str, list[Mosaic]]]:
    """Load and check the priors, cut them into cells and index every band's mosaics.

    ``memo`` receives the mosaic owners of the cells' sources found while sizing them
    (:func:`~dask_phot.pipeline.memory.split_cells`).

    Raises
    ------
    InputError, StorageError, BandError, ConfigError
        One line naming the file, column or key (ConfigError: a ``[templates]``
        file, :func:`dask_phot.templates.cell.check_sharp`).
    """
    storage = storage_options(config)
    urls = [config.priors.path, *(u for b in config.bands for u in (*b.images, *b.noise))]
    check_endpoint(storage, urls)
    priors = _read_priors(config, storage)
    order = config.cells.order
    if order == "auto":
        order = choose_order(priors["ra"].to_numpy(), priors["dec"].to_numpy(),
                             config.cells.rows_per_partition)
    if any(b.model == "template" for b in config.bands):  # bad [templates] files: now
        check_sharp(TemplateSetup(config.templates, storage), priors["ra"].to_numpy(),
                    priors["dec"].to_numpy())
    parts = partition_priors(priors, order=int(order), margin_arcsec=config.margin_arcsec)
    indexes = _index_bands(config, storage)
    _check_bands(config, indexes)
    parts = split_cells(parts, indexes, config, memo)
    log.info("%d priors in %d cells at HEALPix order %d (or deeper: split to the memory "
             "budget); margin %.1f\"", len(priors), len(parts), order, config.margin_arcsec)
    return parts, indexes


def _coverage(config: RunConfig, parts: list[CellSources],
              owner: Mapping[CellKey, Mapping[str, np.ndarray]]) -> tuple[dict[str, int],
                                                                          list[str]]:
    covered = {b: sum(int((owner[p.cell.order, p.cell.pixel][b] >= 0).sum()) for p in parts)
               for b in config.band_names}
    n = sum(p.n_primary for p in parts)
    empty = [b for b, c in covered.items() if c == 0]
    if len(empty) == len(covered):
        where = "; ".join(f"[bands.{b.name}] {', '.join(b.images)}" for b in config.bands)
        raise InputError(f"{config.priors.path}: no mosaic covers any of its {n} sources "
                         f"({where}); are the priors and the images of the same field?")
    warnings = [f"band {b}: no mosaic covers any of the {n} sources (all NOT_COVERED)"
                for b in empty]
    return covered, warnings


def prepare_run(config: RunConfig, *, output: str | os.PathLike[str] | None = None,
                overwrite: bool = False) -> RunPlan:
    """Check every input and plan the run (nothing is computed; the output location is
    only probed for write access).

    Parameters
    ----------
    config : RunConfig
        The run.
    output : path or URL, optional
        The catalog's location (default ``config.output.path``).
    overwrite : bool
        Remove cells of another catalog found in the output folder, instead of
        refusing to run.

    Raises
    ------
    InputError, StorageError, BandError, ConfigError
        One line naming the file, column or key (ConfigError: a ``[templates]``
        file, :func:`dask_phot.templates.cell.check_sharp`).
    """
    storage = storage_options(config)
    out = os.fspath(output or config.output.path)
    check_endpoint(storage, [out])
    memo: OwnerMemo = {}
    parts, indexes = plan_cells(config, memo)
    margins = config.band_margins()
    owner: dict[CellKey, dict[str, np.ndarray]] = {}
    for p in parts:  # the owners found while sizing the cells, the rest now
        found = memo.get((p.cell.order, p.cell.pixel), {})
        owner[p.cell.order, p.cell.pixel] = {
            b: found[b] if b in found else owners(p, indexes[b], config.band(b), margins[b])
            for b in indexes}
    coverage, warnings = _coverage(config, parts, owner)
    try:
        identities = mosaic_identities(indexes, config)
    except FileNotFoundError as exc:
        raise InputError(f"{exc}: a mosaic disappeared while the run was planned") from None
    except network_errors() as exc:
        raise _unreachable("mosaics", exc) from None
    # a band's ePSF (psf = "empirical") is an input of its cells too
    for band, keys in epsf_keys(config, parts, indexes).items():
        identities[band] = [f"{i} epsf={k}" for i, k in zip(identities[band], keys, strict=True)]
    digest = config_digest(config)
    inputs = {key: cell_inputs(p, digest, owner[key], identities)
              for p in parts for key in [(p.cell.order, p.cell.pixel)]}
    store = CatalogStore.open(out, storage)
    store.check_writable()
    reports, written = store.reports(), store.written_cells()
    stale = (set(reports) | written) - set(inputs)
    if stale and not overwrite:
        raise InputError(
            f"{store.url}: holds {len(stale)} cell(s) of another catalog (other priors or "
            "cell order); run with --overwrite (overwrite=True) to remove them, or write to "
            "another output folder")
    reasons = {}
    for key, cell_in in inputs.items():
        why = why_rerun(reports.get(key), cell_in)
        if why is None and key not in written:
            why = "output missing"
        if why is not None:
            reasons[key] = why
    return RunPlan(config, store, parts, indexes, inputs, reasons, stale, coverage, warnings)
