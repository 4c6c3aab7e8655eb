"""Typed, validated run configuration from one TOML file.

:func:`load_config` merges, in order: the packaged defaults
(``dask_phot/data/default.toml``, which documents every key), the user's
file (or a dict), environment variables ``DASK_PHOT__<SECTION>__<KEY>`` (or
``DASK_PHOT__BANDS__<NAME>__<KEY>``, values parsed as TOML, else taken as
strings) and finally ``overrides``. Relative paths are taken from the
configuration file's directory (from the working directory for dicts,
environment variables and overrides); URLs (``s3://``, ``https://``...) are
kept as they are. Unknown keys and bad values raise :class:`ConfigError`,
whose message names where the value came from and the dotted key; the checks
themselves are in ``dask_phot._config_checks``.

Examples
--------
>>> cfg = load_config({"priors": {"path": "/data/priors.parquet"},
...                    "bands": {"irac1": {"images": ["/data/irac1_*.fits"]}}},
...                   environ={})
>>> cfg.band_names, cfg.cells.order, round(cfg.margin_arcsec, 2)
(('irac1',), 'auto', 13.58)
>>> cfg.engine.forced_kwargs()["mode"]
'scene'
>>> load_config({"priors": {"path": "p.csv"}, "bands": {"irac1": {"images": ["i.fits"]}},
...              "engine": {"fit_skyy": True}}, environ={})
Traceback (most recent call last):
...
dask_phot.config.ConfigError: <dict>: engine.fit_skyy: unknown key; known keys: mode, fit_sky, sky_model, fit_positions, max_shift, position_snr, high_chi2 (did you mean 'fit_sky'?)
"""  # noqa: E501

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from dask_phot.bands import Band, packaged_psf_files

__all__ = [
    "BandImages",
    "CellsConfig",
    "ClusterConfig",
    "ConfigError",
    "EngineConfig",
    "OutputConfig",
    "PriorsConfig",
    "RunConfig",
    "default_config",
    "load_config",
    "storage_options",
]

logger = logging.getLogger(__name__)

ENV_PREFIX = "DASK_PHOT__"
MAX_CELL_ORDER = 13
_DEFAULTS_LABEL = "dask_phot/data/default.toml"
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

NoiseKind = Literal["weight", "uncertainty", "variance", "none"]


class ConfigError(ValueError):
    """An unusable configuration: the message names the file (or source) and dotted key."""


# ---------------------------------------------------------------------- sections
@dataclass(frozen=True)
class PriorsConfig:
    """``[priors]``: the prior-positions catalog (see :func:`dask_phot.catalog.read_priors`)."""

    path: str
    ra_column: str = "ra"
    dec_column: str = "dec"
    id_column: str = "source_id"
    keep_columns: tuple[str, ...] = ()
    flux_guess_column: str = ""

    def read_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`dask_phot.catalog.read_priors` (not the path)."""
        extra = [*self.keep_columns]
        if self.flux_guess_column and self.flux_guess_column not in extra:
            extra.append(self.flux_guess_column)
        return {"ra_column": self.ra_column, "dec_column": self.dec_column,
                "id_column": self.id_column, "columns": extra}


@dataclass(frozen=True)
class BandImages:
    """``[bands.<name>]``: one band's images and how to treat them.

    ``noise_kind`` is ``"none"`` whenever no noise files are given; ``sky`` is
    ``"fit"``, ``"clipped"``, ``"none"`` or a fixed sky level in image units.
    """

    name: str
    band: Band
    images: tuple[str, ...]
    noise: tuple[str, ...] = ()
    noise_kind: NoiseKind = "none"
    sky: str | float = "fit"

    @property
    def margin_arcsec(self) -> float:
        """The cell margin this band needs, in arcsec.

        With a PSF half-width ``h = psf_size // 2`` pixels, a cell's pixels are
        fitted only within ``margin - h * sqrt(2)`` of its primary sources, where
        no unmodelled source's stamp reaches; the margin
        ``h * sqrt(2) + max(h * sqrt(2), 2 * FWHM)`` keeps every primary source's
        whole footprint (or at least two FWHM of it) in the fit.
        """
        h = self.band.psf_size // 2 * math.sqrt(2.0)
        fwhm = self.band.fwhm / self.band.pixel_scale if self.band.fwhm else h
        return (h + max(h, 2.0 * fwhm)) * self.band.pixel_scale


@dataclass(frozen=True)
class CellsConfig:
    """``[cells]``: HEALPix partitioning (see :mod:`dask_phot.cells`)."""

    order: int | Literal["auto"] = "auto"
    rows_per_partition: int = 10000
    margin_arcsec: float | Literal["auto"] = "auto"
    read_merge_gap: int = 65536


@dataclass(frozen=True)
class EngineConfig:
    """``[engine]``: keyword options of :func:`dask_phot.forced_photometry`."""

    mode: Literal["scene", "cutout"] = "scene"
    fit_sky: bool = True
    sky_model: Literal["constant", "plane"] = "constant"
    fit_positions: bool | Literal["source", "global"] = False
    max_shift: float = 0.5
    position_snr: float = 5.0
    high_chi2: float = 5.0

    def forced_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of :func:`dask_phot.forced_photometry`.

        Examples
        --------
        >>> EngineConfig(fit_sky=False).forced_kwargs()["fit_sky"]
        False
        """
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``: where the HATS catalog is written."""

    path: str
    catalog_name: str = "dask_phot"


@dataclass(frozen=True)
class ClusterConfig:
    """``[cluster]``: the Dask cluster to run on."""

    scheduler: str = "local"
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str | int = "4GiB"
    retries: int = 2
    performance_report: str = ""


@dataclass(frozen=True)
class RunConfig:
    """A complete, validated run configuration (see :func:`load_config`).

    ``source`` (the file, or ``"<dict>"``) is informative and not compared.
    """

    priors: PriorsConfig
    bands: tuple[BandImages, ...]
    cells: CellsConfig
    engine: EngineConfig
    output: OutputConfig
    cluster: ClusterConfig
    storage: dict[str, Any] = field(default_factory=dict)
    source: str = field(default="<dict>", compare=False)

    @property
    def band_names(self) -> tuple[str, ...]:
        """Band names in configuration order."""
        return tuple(b.name for b in self.bands)

    def band(self, name: str) -> BandImages:
        """One band's settings by name."""
        for b in self.bands:
            if b.name == name:
                return b
        raise KeyError(f"{self.source}: no band {name!r}; bands: {', '.join(self.band_names)}")

    @property
    def margin_arcsec(self) -> float:
        """The cell margin in arcsec, ``"auto"`` resolved to the largest PSF half-width."""
        if self.cells.margin_arcsec != "auto":
            return float(self.cells.margin_arcsec)
        return max(b.margin_arcsec for b in self.bands)

    def to_dict(self) -> dict[str, Any]:
        """Plain, TOML/JSON-serialisable dict; ``load_config(cfg.to_dict()) == cfg``.

        Bands are written in full (every :class:`~dask_phot.bands.Band` field),
        so the record does not depend on the presets of a later version.
        """
        def plain(obj: Any) -> dict[str, Any]:
            return {f.name: list(v) if isinstance(v := getattr(obj, f.name), tuple) else v
                    for f in fields(obj)}

        bands = {b.name: {"images": list(b.images), "noise": list(b.noise),
                          "noise_kind": b.noise_kind, "sky": b.sky, **b.band.as_config()}
                 for b in self.bands}
        return {"priors": plain(self.priors), "bands": bands, "cells": plain(self.cells),
                "engine": plain(self.engine), "output": plain(self.output),
                "cluster": plain(self.cluster), "storage": copy.deepcopy(self.storage)}

    def config_hash(self) -> str:
        """SHA-256 (hex) of the science-relevant sections: priors, bands, cells, engine.

        Output, cluster and storage settings do not change it, so a run can
        resume with another cluster or output location.
        """
        d = self.to_dict()
        science = {k: d[k] for k in ("priors", "bands", "cells", "engine")}
        blob = json.dumps(science, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def storage_options(cfg: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """fsspec ``storage_options`` from ``[storage]``: ``endpoint_url`` in s3fs form.

    Parameters
    ----------
    cfg : RunConfig or mapping
        A configuration, or its ``storage`` table.

    Examples
    --------
    >>> storage_options({"anon": False, "endpoint_url": "http://127.0.0.1:5000"})
    {'anon': False, 'client_kwargs': {'endpoint_url': 'http://127.0.0.1:5000'}}
    """
    table = cfg.storage if isinstance(cfg, RunConfig) else cfg
    opts = copy.deepcopy(dict(table))
    endpoint = opts.pop("endpoint_url", None)
    if endpoint:
        client = dict(opts.get("client_kwargs") or {})
        client.setdefault("endpoint_url", endpoint)
        opts["client_kwargs"] = client
    return opts


# ---------------------------------------------------------------------- layers
def default_config() -> dict[str, Any]:
    """The packaged defaults (``dask_phot/data/default.toml``) as a dict."""
    text = resources.files("dask_phot").joinpath("data", "default.toml").read_text("utf-8")
    return tomllib.loads(text)


def _resolve(value: Any, base: Path) -> Any:
    """A path taken from ``base`` (URLs, absolute paths and non-strings unchanged)."""
    if isinstance(value, list | tuple):
        return [_resolve(v, base) for v in value]
    if not isinstance(value, str) or not value or _URL_RE.match(value):
        return value
    path = Path(value).expanduser()
    return os.path.normpath(path if path.is_absolute() else base / path)


def _resolve_layer(layer: dict[str, Any], base: Path) -> dict[str, Any]:
    """Copy of a layer with its path-valued keys resolved against ``base``."""
    out = copy.deepcopy(layer)
    for section, key in (("priors", "path"), ("output", "path"),
                         ("cluster", "performance_report")):
        table = out.get(section)
        if isinstance(table, dict) and key in table:
            table[key] = _resolve(table[key], base)
    bands = out.get("bands")
    for table in (bands.values() if isinstance(bands, dict) else ()):
        if not isinstance(table, dict):
            continue
        for key in ("images", "noise"):
            if key in table:
                table[key] = _resolve(table[key], base)
        psf = table.get("psf_file")
        if isinstance(psf, str) and not (os.path.basename(psf) == psf
                                         and psf in packaged_psf_files()):
            table["psf_file"] = _resolve(psf, base)
    return out


def _merge(into: dict[str, Any], layer: Mapping[str, Any], label: str,
           origins: dict[str, str], prefix: str = "") -> None:
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        origins[dotted] = label
        if isinstance(value, Mapping):
            if not isinstance(into.get(key), dict):
                into[key] = {}
            _merge(into[key], value, label, origins, f"{dotted}.")
        else:
            into[key] = copy.deepcopy(value)


def _parse_env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _env_layers(environ: Mapping[str, str], bands: Iterable[str]) -> list[tuple[str, dict]]:
    """One layer per ``DASK_PHOT__...`` variable, sorted by name."""
    by_lower = {b.lower(): b for b in bands}
    layers = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        value = _parse_env_value(environ[name])
        label = f"environment variable {name}"
        if len(parts) == 2 and all(parts) and parts[0] != "bands":
            layers.append((label, {parts[0]: {parts[1]: value}}))
        elif len(parts) == 3 and parts[0] == "bands" and all(parts):
            band = by_lower.get(parts[1], parts[1])
            layers.append((label, {"bands": {band: {parts[2]: value}}}))
        else:
            raise ConfigError(f"{label}: expected {ENV_PREFIX}<SECTION>__<KEY> or "
                              f"{ENV_PREFIX}BANDS__<NAME>__<KEY>")
    return layers


def _expand_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"engine.fit_sky": False}`` -> ``{"engine": {"fit_sky": False}}`` (nested kept)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        nested = value
        for part in reversed(str(key).split(".")):
            nested = {part: nested}
        _merge(out, nested, "overrides", {})
    return out


def _read_user(path_or_dict: Any) -> tuple[dict[str, Any], str, Path]:
    if isinstance(path_or_dict, Mapping):
        return copy.deepcopy(dict(path_or_dict)), "<dict>", Path.cwd()
    label = os.fspath(path_or_dict)
    path = Path(label).expanduser()
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read the configuration file ({exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from exc
    return data, label, path.resolve().parent


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
    """
    # imported here: the checks import this module's section classes
    from dask_phot._config_checks import Checker

    user, label, base = _read_user(path_or_dict)
    if not isinstance(user.get("bands", {}), Mapping):
        raise ConfigError(f"{label}: bands: must be a table of [bands.<name>] tables")
    env = os.environ if environ is None else environ
    cwd = Path.cwd()
    layers = [(_DEFAULTS_LABEL, _resolve_layer(default_config(), base)),
              (label, _resolve_layer(user, base))]
    layers += [(lab, _resolve_layer(lay, cwd))
               for lab, lay in _env_layers(env, user.get("bands", {}))]
    if overrides:
        layers.append(("overrides", _resolve_layer(_expand_dotted(overrides), cwd)))
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for lab, layer in layers:
        _merge(merged, layer, lab, origins)
    return Checker(origins, label).run_config(merged)
