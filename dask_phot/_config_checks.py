"""Validation of the merged run configuration (used by :func:`dask_phot.config.load_config`).

:class:`Checker` walks the merged dict section by section with the value checks
of ``_SPECS`` and builds the :class:`~dask_phot.config.RunConfig`; errors are
:class:`~dask_phot.config.ConfigError` naming the layer (file, environment
variable, overrides) each key came from and its dotted key.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NoReturn

from dask_phot.bands import PRESETS, Band, BandError, band_from_config
from dask_phot.config import (
    _DEFAULTS_LABEL,
    MAX_CELL_ORDER,
    BandImages,
    CellsConfig,
    ClusterConfig,
    ConfigError,
    EngineConfig,
    OutputConfig,
    PriorsConfig,
    RunConfig,
    logger,
)

__all__ = ["Checker"]

_SECTIONS = ("priors", "bands", "band_defaults", "cells", "engine", "output", "cluster",
             "storage")
_IMAGE_KEYS = ("images", "noise", "noise_kind", "sky")
_BAND_KEYS = (*(f.name for f in fields(Band) if f.name != "name"), "preset")
_NOISE_KINDS = ("weight", "uncertainty", "variance", "none")
_SKY_WORDS = ("fit", "clipped", "none")
_CREDENTIAL_KEYS = ("key", "secret", "token", "profile")
_SCHEDULER_RE = re.compile(r"^(tcp|tls|ws|wss|inproc|ucx)://\S+$")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class _Bad(Exception):
    """A rejected value; :class:`Checker` adds where it came from and its key."""


Check = Callable[[Any], Any]


def _string(*, empty: bool = True, pattern: str | None = None) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or (not empty and not v) \
                or (pattern is not None and not re.match(pattern, v)):
            what = f"matching {pattern}" if pattern else "" if empty else "non-empty"
            raise _Bad(f"must be a {what + ' ' if what else ''}string, got {v!r}")
        return v
    return check


def _strings(*, empty: bool = True) -> Check:
    def check(v: Any) -> tuple[str, ...]:
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list | tuple) or not all(isinstance(s, str) and s for s in items) \
                or (not empty and not items):
            raise _Bad(f"must be a{'' if empty else ' non-empty'} list of non-empty strings, "
                       f"got {v!r}")
        return tuple(items)
    return check


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _number(lo: float, *, strict: bool, auto: bool = False, integer: bool = False,
            hi: float | None = None) -> Check:
    def check(v: Any) -> Any:
        if auto and v == "auto":
            return v
        ok = _is_number(v) and (v > lo if strict else v >= lo) and (hi is None or v <= hi) \
            and (isinstance(v, int) or not integer)
        if not ok:
            span = f"{lo:g}..{hi:g}" if hi is not None else f"{'>' if strict else '>='} {lo:g}"
            tail = ' or "auto"' if auto else ""
            raise _Bad(f"must be {'an integer' if integer else 'a number'} {span}{tail}, "
                       f"got {v!r}")
        return v if integer else float(v)
    return check


def _one_of(*choices: Any) -> Check:
    def check(v: Any) -> Any:
        if not any(v == c and type(v) is type(c) for c in choices):
            raise _Bad(f"must be one of {', '.join(map(repr, choices))}, got {v!r}")
        return v
    return check


def _sky(v: Any) -> str | float:
    if isinstance(v, str):
        return _one_of(*_SKY_WORDS)(v)
    if not _is_number(v):
        raise _Bad(f"must be 'fit', 'clipped', 'none' or a number, got {v!r}")
    return float(v)


def _scheduler(v: Any) -> str:
    if v not in ("local", "kubernetes") and not (isinstance(v, str) and _SCHEDULER_RE.match(v)):
        raise _Bad(f"must be 'local', 'kubernetes' or a scheduler address like "
                   f"tcp://host:8786, got {v!r}")
    return v


def _memory(v: Any) -> str | int:
    from dask.utils import parse_bytes

    try:
        ok = v == "auto" or (not isinstance(v, bool) and parse_bytes(v) > 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise _Bad(f"must be a size like '4GiB', a number of bytes or 'auto', got {v!r}")
    return v


_NAME = _string(empty=False)
_SPECS: dict[str, tuple[type, dict[str, Check]]] = {
    "priors": (PriorsConfig, {
        "path": _NAME, "ra_column": _NAME, "dec_column": _NAME, "id_column": _NAME,
        "keep_columns": _strings(), "flux_guess_column": _string()}),
    "cells": (CellsConfig, {
        "order": _number(0, strict=False, hi=MAX_CELL_ORDER, integer=True, auto=True),
        "rows_per_partition": _number(1, strict=False, integer=True),
        "margin_arcsec": _number(0, strict=False, auto=True),
        "read_merge_gap": _number(0, strict=False, integer=True)}),
    "engine": (EngineConfig, {
        "mode": _one_of("scene", "cutout"), "fit_sky": _one_of(True, False),
        "sky_model": _one_of("constant", "plane"),
        "fit_positions": _one_of(False, True, "source", "global"),
        "max_shift": _number(0, strict=True), "position_snr": _number(0, strict=False),
        "high_chi2": _number(0, strict=True)}),
    "output": (OutputConfig, {
        "path": _NAME, "catalog_name": _string(pattern=r"^[A-Za-z0-9_.-]+$")}),
    "cluster": (ClusterConfig, {
        "scheduler": _scheduler, "n_workers": _number(1, strict=False, integer=True),
        "threads_per_worker": _number(1, strict=False, integer=True), "memory_limit": _memory,
        "retries": _number(0, strict=False, integer=True), "performance_report": _string()}),
    "band_defaults": (dict, {
        "images": _strings(empty=False), "noise": _strings(),
        "noise_kind": _one_of(*_NOISE_KINDS), "sky": _sky}),
    "storage": (dict, {"anon": _one_of(True, False), "endpoint_url": _NAME}),
}


@dataclass
class Checker:
    """Validates the merged dict; errors name the layer a key came from."""

    origins: dict[str, str]
    label: str

    def where(self, key: str) -> str:
        probe = key
        while probe and probe not in self.origins:
            probe = probe.rpartition(".")[0]
        return self.origins.get(probe, self.label)

    def fail(self, key: str, msg: str) -> NoReturn:
        raise ConfigError(f"{self.where(key)}: {key}: {msg}")

    def table(self, key: str, value: Any, known: Iterable[str] | None) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(key, f"must be a table, got {value!r}")
        names = list(known) if known is not None else None
        for name in value:
            if names is not None and name not in names:
                close = difflib.get_close_matches(str(name), names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(f"{key}.{name}", f"unknown key; known keys: {', '.join(names)}{hint}")
        return dict(value)

    def values(self, key: str, t: Mapping[str, Any], spec: Mapping[str, Check]) -> dict:
        out = dict(t)
        for name, check in spec.items():
            if name in t:
                try:
                    out[name] = check(t[name])
                except _Bad as exc:
                    self.fail(f"{key}.{name}", str(exc))
        return out

    def section(self, d: Mapping[str, Any], name: str) -> Any:
        cls, spec = _SPECS[name]
        t = self.table(name, d.get(name, {}), None if name == "storage" else spec)
        return self.values(name, t, spec) if cls is dict else cls(**self.values(name, t, spec))

    def run_config(self, d: dict[str, Any]) -> RunConfig:
        for name in d:
            if name not in _SECTIONS:
                close = difflib.get_close_matches(name, _SECTIONS, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(name, f"unknown section; known sections: {', '.join(_SECTIONS)}{hint}")
        if "path" not in d.get("priors", {}):
            raise ConfigError(f"{self.label}: priors.path: required (the priors catalog)")
        priors = self.section(d, "priors")
        if not d.get("bands"):
            self.fail("bands", "at least one [bands.<name>] table is required")
        defaults = self.section(d, "band_defaults")
        bands = tuple(self.band_images(name, table, defaults)
                      for name, table in self.table("bands", d["bands"], None).items())
        return RunConfig(priors=priors, bands=bands, cells=self.section(d, "cells"),
                         engine=self.section(d, "engine"), output=self.section(d, "output"),
                         cluster=self.section(d, "cluster"), storage=self.storage(d),
                         source=self.label)

    def band_images(self, name: str, value: Any, defaults: dict[str, Any]) -> BandImages:
        key = f"bands.{name}"
        if not _NAME_RE.match(str(name)):
            self.fail(key, "band name must start with a letter and hold only letters, digits "
                           "and '_' (it names output columns)")
        table = self.table(key, value, _IMAGE_KEYS + _BAND_KEYS)
        if "images" not in table:
            self.fail(f"{key}.images", "required (paths, globs or URLs of the band's images)")
        t = {**defaults, **self.values(key, table, _SPECS["band_defaults"][1])}
        images, noise, kind = t["images"], t.get("noise", ()), t.get("noise_kind", "weight")
        if noise and kind == "none":
            self.fail(f"{key}.noise_kind", "is 'none' but noise files are given")
        if len(noise) not in (0, 1, len(images)):
            self.fail(f"{key}.noise", f"must list one file per image ({len(images)}) or one "
                                      f"glob, got {len(noise)}")
        return BandImages(name=name, band=self.band(name, table), images=images, noise=noise,
                          noise_kind=kind if noise else "none", sky=t.get("sky", "fit"))

    def band(self, name: str, table: dict[str, Any]) -> Band:
        definition = {k: v for k, v in table.items() if k in _BAND_KEYS}
        if not definition and name in PRESETS:
            return PRESETS[name]
        if "preset" not in definition and name.lower() in PRESETS:
            definition = {"preset": name.lower(), **definition}
        if "preset" not in definition and not {"psf_file", "pixel_scale"} <= definition.keys():
            self.fail(f"bands.{name}", f"not a preset band ({', '.join(PRESETS)}): give "
                                       f"preset = '<name>' or psf_file and pixel_scale")
        try:
            return band_from_config(name, definition)
        except (BandError, TypeError) as exc:
            raise ConfigError(f"{self.where(f'bands.{name}')}: {exc}") from exc

    def storage(self, d: Mapping[str, Any]) -> dict[str, Any]:
        t = self.section(d, "storage")
        if any(k in t for k in _CREDENTIAL_KEYS) and self.where("storage.anon") == _DEFAULTS_LABEL:
            logger.info("storage: credentials given, so anon = false")
            t["anon"] = False
        return t
