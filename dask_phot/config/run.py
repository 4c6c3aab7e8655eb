"""Loading the run configuration (``dask-phot run``): :func:`load_config`.

The layers (packaged ``dask_phot/data/default.toml``, the user's file, the
environment, overrides; see :mod:`dask_phot.config.layers`) are merged, then
checked section by section into a :class:`~dask_phot.config.model.RunConfig`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dask_phot.bands import packaged_psf_files
from dask_phot.config.band_tables import band_images
from dask_phot.config.layers import load_layers, packaged_defaults, resolve_paths
from dask_phot.config.model import (
    BandFiles,
    CellsConfig,
    ClusterConfig,
    EngineConfig,
    OutputConfig,
    PriorsConfig,
    RunConfig,
    StorageConfig,
    TemplatesConfig,
)
from dask_phot.config.sections import ConfigError, Provenance, build_section

__all__ = ["RUN_PATHS", "RUN_SECTIONS", "check_storage", "default_config", "load_config",
           "resolve_run_paths"]

logger = logging.getLogger(__name__)

#: The tables of a run configuration; ``bands`` holds one ``[bands.<name>]`` per band.
RUN_SECTIONS: Mapping[str, type | None] = {
    "priors": PriorsConfig, "bands": None, "band_defaults": BandFiles, "cells": CellsConfig,
    "engine": EngineConfig, "output": OutputConfig, "cluster": ClusterConfig,
    "storage": StorageConfig, "templates": TemplatesConfig}
#: Path-valued keys, taken from the configuration file's directory.
RUN_PATHS = ("priors.path", "output.path", "cluster.performance_report", "bands.*.images",
             "bands.*.noise", "bands.*.psf_file", "bands.*.psf_stars", "templates.image",
             "templates.segmap", "templates.psf")
_CREDENTIAL_KEYS = ("key", "secret", "token", "profile")
_DEFAULTS = "default"


def _packaged_psf(value: str) -> bool:
    return os.path.basename(value) == value and value in packaged_psf_files()


#: Values kept as written: a band's ``psf_file`` naming a packaged PSF.
_KEEP = {"bands.*.psf_file": _packaged_psf}


def default_config() -> dict[str, Any]:
    """The packaged defaults (``dask_phot/data/default.toml``) as a dict."""
    return packaged_defaults(_DEFAULTS)[0]


def resolve_run_paths(layer: Mapping[str, Any], base: os.PathLike[str] | str) -> dict[str, Any]:
    """A run configuration's (or a recipe's run tables') paths taken from ``base``.

    Examples
    --------
    >>> resolve_run_paths({"priors": {"path": "p.parquet"}}, "/data")
    {'priors': {'path': '/data/p.parquet'}}
    """
    return resolve_paths(layer, Path(base), RUN_PATHS, keep=_KEEP)


def check_storage(value: Any, origin: Provenance, *, anon_default: str | None) -> dict[str, Any]:
    """``[storage]``: fsspec options; ``anon`` and ``endpoint_url`` checked, others kept.

    Credentials (``key``, ``secret``...) turn ``anon`` off unless the user set it;
    ``anon_default`` is the label of the layer whose ``anon`` is only a default.
    """
    table = origin.table("storage", value)
    known = {k: v for k, v in table.items() if k in StorageConfig.__dataclass_fields__}
    build_section(StorageConfig, known, key="storage", origin=origin)
    if any(k in table for k in _CREDENTIAL_KEYS) and table.get("anon") \
            and origin.where("storage.anon") == anon_default:
        logger.info("storage: credentials given, so anon = false")
        table["anon"] = False
    return table


def _run_config(d: Mapping[str, Any], origin: Provenance, base: str = "") -> RunConfig:
    origin.known("", d, RUN_SECTIONS, what="section")
    if "path" not in d.get("priors", {}):
        origin.fail("priors.path", "required (the priors catalog)", here=True)
    if not d.get("bands"):
        origin.fail("bands", "at least one [bands.<name>] table is required")
    sections = {name: build_section(cls, d.get(name, {}), key=name, origin=origin)
                for name, cls in RUN_SECTIONS.items() if cls not in (None, StorageConfig)}
    defaults = sections.pop("band_defaults")
    bands = tuple(band_images(name, table, defaults, origin)
                  for name, table in origin.table("bands", d["bands"]).items())
    storage = check_storage(d.get("storage", {}), origin,
                            anon_default=packaged_defaults(_DEFAULTS)[1])
    for b in bands:
        if b.model == "template" and not sections["templates"].given:
            origin.fail(f"bands.{b.name}.model", "\"template\" needs [templates] image, "
                        "segmap and psf")
    return RunConfig(bands=bands, storage=storage, source=origin.label, base=base, **sections)


def load_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """Load, merge and validate a run configuration.

    Parameters
    ----------
    path_or_dict : path-like or mapping
        A TOML file, or its content as a dict (e.g. :meth:`RunConfig.to_dict`).
    overrides : mapping, optional
        Applied last; nested (``{"engine": {"fit_sky": False}}``) or dotted
        (``{"engine.fit_sky": False}``) keys.
    environ : mapping, optional
        Environment to read ``DASK_PHOT__*`` overrides from; default
        ``os.environ``.

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        Unreadable file, unknown key, bad value, missing ``priors.path`` or
        no band; the message names the file (or other source) and the key.

    Examples
    --------
    >>> cfg = load_config({"priors": {"path": "/data/priors.parquet"},
    ...                    "bands": {"irac1": {"images": ["/data/irac1_*.fits"]}}},
    ...                   environ={})
    >>> cfg.band_names, cfg.cells.order, round(cfg.margin_arcsec, 2)
    (('irac1',), 'auto', 34.89)
    >>> load_config({"priors": {"path": "p.csv"}, "bands": {"irac1": {"images": ["i.fits"]}},
    ...              "engine": {"fit_skyy": True}}, environ={})
    Traceback (most recent call last):
    ...
    dask_phot.config.ConfigError: <dict>: engine.fit_skyy: unknown key; known keys: mode, fit_sky, sky_model, fit_positions, max_shift, position_snr, high_chi2, mismatch_sigma, max_stamp, backend (did you mean 'fit_sky'?)
    """  # noqa: E501
    if not isinstance(path_or_dict, Mapping | str | os.PathLike):
        raise TypeError(f"load_config: a path or a dict, got {type(path_or_dict).__name__}")
    layers = load_layers(path_or_dict, defaults=_DEFAULTS, sections=RUN_SECTIONS,
                         paths=RUN_PATHS, keep=_KEEP, environ=environ, overrides=overrides)
    bands = layers.merged.get("bands", {})
    if not isinstance(bands, Mapping):
        raise ConfigError(f"{layers.origin.label}: bands: must be a table of [bands.<name>] "
                          "tables")
    base = "" if isinstance(path_or_dict, Mapping) else str(layers.base)
    return _run_config(layers.merged, layers.origin, base)
