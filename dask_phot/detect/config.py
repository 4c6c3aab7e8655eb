"""The ``dask-phot detect CONFIG`` configuration: typed, validated, unknown keys are errors.

A TOML file with a ``[detect]`` table (and optional ``[detect.params]``,
``[detect.background]``, ``[detect.aperture]``, ``[detect.reference]``,
``[cluster]`` and ``[storage]`` tables)::

    [detect]
    images = ["mosaics/*_sci.fits"]    # paths, globs, s3:// prefixes
    noise = ["mosaics/*_wht.fits"]     # optional, paired with images
    noise_kind = "weight"              # weight | uncertainty | variance | none
    coverage = []                      # optional coverage (exposure count) maps, paired
    group_by = "filename"              # "filename" (group_pattern), "header:KEY" or "none"
    group_pattern = '^(?P<group>.+?)(_(sci|drz|drc|i2d|img|mosaic))?$'  # on the file stem
    output = "detections"              # <group>.parquet per group and merged.parquet
    tile_size = 2048                   # pixels; large mosaics are cut into tiles
    tile_overlap = 64                  # pixels read around each tile (> source + annulus)
    merge_radius_arcsec = 0.3          # duplicates across mosaics and groups
    gain = 0.0                         # electrons per image unit; 0 = no Poisson term
    to_ujy = 0.0                       # 0: from the header (PHOTFNU, PHOTFLAM, ...) if any
    psf_file = ""                      # PSF for aperture corrections (optional)

    [detect.params]                    # dask_phot.detect.DetectionParams
    thresh = 1.5

Relative paths are taken from the file's directory.

Examples
--------
>>> cfg = detect_config_from_dict({"detect": {"images": ["/d/*.fits"],
...                                           "params": {"thresh": 3.0}}})
>>> cfg.params.thresh, cfg.tile_size, cfg.aperture.radii
(3.0, 2048, (2.0, 4.0, 6.0, 8.0, 10.0))
>>> detect_config_from_dict({"detect": {"images": ["x.fits"], "tile_sise": 10}})
Traceback (most recent call last):
...
dask_phot.config.ConfigError: <dict>: detect.tile_sise: unknown key; known keys: images, noise, noise_kind, coverage, group_by, group_pattern, output, tile_size, tile_overlap, merge_radius_arcsec, gain, to_ujy, psf_file, params, background, aperture, reference (did you mean 'tile_size'?)
"""  # noqa: E501

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from dask_phot.config import ClusterConfig, ConfigError
from dask_phot.detect.extract import DetectionParams

__all__ = [
    "ApertureSettings",
    "BackgroundSettings",
    "DetectConfig",
    "ReferenceSettings",
    "detect_config_from_dict",
    "load_detect_config",
]

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class BackgroundSettings:
    """``[detect.background]``: :func:`~dask_phot.detect.measure_background` options."""

    box_size: int = 64
    filter_size: int = 3
    mask_sources: bool = True


@dataclass(frozen=True)
class ApertureSettings:
    """``[detect.aperture]``: :func:`~dask_phot.aperture.measure_sources` options."""

    radii: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0)
    annulus: tuple[float, ...] = (10.0, 15.0)
    kron_factor: float = 2.5
    min_kron_radius: float = 3.5
    min_diameter: float = 3.5

    def __post_init__(self) -> None:
        if not self.radii or min(self.radii) <= 0:
            raise ValueError(f"radii must be > 0, got {list(self.radii)}")
        if len(self.annulus) not in (0, 2) or (self.annulus and not
                                               0 <= self.annulus[0] < self.annulus[1]):
            raise ValueError(f"annulus must be [] or [r_in, r_out] with r_in < r_out, "
                             f"got {list(self.annulus)}")


@dataclass(frozen=True)
class ReferenceSettings:
    """``[detect.reference]``: a reference catalog to match (and align) to."""

    path: str = ""
    radius_arcsec: float = 1.0
    ra_column: str = "ra"
    dec_column: str = "dec"
    columns: tuple[str, ...] = ()
    apply_shift: bool = False


@dataclass(frozen=True)
class DetectConfig:
    """A validated ``dask-phot detect`` configuration (see the module docstring)."""

    images: tuple[str, ...]
    noise: tuple[str, ...] = ()
    noise_kind: str = "weight"
    coverage: tuple[str, ...] = ()
    group_by: str = "filename"
    group_pattern: str = r"^(?P<group>.+?)(_(sci|drz|drc|i2d|img|mosaic))?$"
    output: str = "detections"
    tile_size: int = 2048
    tile_overlap: int = 64
    merge_radius_arcsec: float = 0.3
    gain: float = 0.0
    to_ujy: float = 0.0
    psf_file: str = ""
    params: DetectionParams = field(default_factory=DetectionParams)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    aperture: ApertureSettings = field(default_factory=ApertureSettings)
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    storage: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("images: at least one path, glob or prefix is required")
        if self.noise_kind not in ("weight", "uncertainty", "variance", "none"):
            raise ValueError(f"noise_kind: must be weight, uncertainty, variance or none, "
                             f"got {self.noise_kind!r}")
        if not (self.group_by in ("filename", "none") or self.group_by.startswith("header:")):
            raise ValueError(f"group_by: must be 'filename', 'none' or 'header:KEY', "
                             f"got {self.group_by!r}")
        if "(?P<group>" not in self.group_pattern:
            raise ValueError("group_pattern: needs a named group (?P<group>...)")
        re.compile(self.group_pattern)
        if self.tile_size < 64 or self.tile_overlap < 0:
            raise ValueError(f"tile_size must be >= 64 and tile_overlap >= 0, got "
                             f"{self.tile_size}, {self.tile_overlap}")
        for name in ("merge_radius_arcsec",):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0")
        if self.gain < 0 or self.to_ujy < 0:
            raise ValueError("gain and to_ujy must be >= 0 (0: not used / from the header)")


_NESTED = {"params": DetectionParams, "background": BackgroundSettings,
           "aperture": ApertureSettings, "reference": ReferenceSettings}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(where: str, hint: Any, value: Any) -> Any:
    """Check a TOML value against a simple type hint; lists become tuples."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: must be a list, got {value!r}")
        inner = typing.get_args(hint)[0]
        return tuple(_coerce(where, inner, v) for v in value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(where, option, value)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: must be one of {typing.get_args(hint)}, got {value!r}")
        return value
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: must be {getattr(hint, '__name__', hint)}, got {value!r}")
    return value


def _build(cls: type, table: Any, key: str, label: str, skip: tuple[str, ...] = ()) -> Any:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{label}: {key}: must be a table, got {table!r}")
    hints = _hints(cls)
    known = [f.name for f in fields(cls) if f.name not in skip]
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{label}: {key}.{name}: unknown key; known keys: "
                              f"{', '.join(known)}{hint}")
        if name in _NESTED and cls is DetectConfig:
            values[name] = _build(_NESTED[name], value, f"{key}.{name}", label)
        else:
            values[name] = _coerce(f"{label}: {key}.{name}", hints[name], value)
    missing = [f.name for f in fields(cls) if f.default is MISSING
               and f.default_factory is MISSING and f.name not in values]
    if missing:
        raise ConfigError(f"{label}: {key}.{missing[0]}: required")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{label}: {key}: {exc}") from exc


def _resolve(path: str, base: Path | None) -> str:
    if not path or base is None or _URL_RE.match(path) or os.path.isabs(path):
        return path
    return str(base / path)


def detect_config_from_dict(data: Mapping[str, Any], *, base: Path | None = None,
                            label: str = "<dict>") -> DetectConfig:
    """Validate a configuration dict (the parsed TOML).

    Parameters
    ----------
    data : mapping
        ``{"detect": {...}, "cluster": {...}, "storage": {...}}``.
    base : Path, optional
        Directory relative paths are taken from.
    label : str
        Where the values came from, for error messages.

    Raises
    ------
    ConfigError
        Unknown sections or keys, wrong types or values; the message names the key.
    """
    sections = ("detect", "cluster", "storage")
    for name in data:
        if name not in sections:
            close = difflib.get_close_matches(str(name), sections, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{label}: {name}: unknown section; known sections: "
                              f"{', '.join(sections)}{hint}")
    if "detect" not in data:
        raise ConfigError(f"{label}: detect: required (a [detect] table with images)")
    cluster = _build(ClusterConfig, data.get("cluster", {}), "cluster", label)
    storage = data.get("storage", {})
    if not isinstance(storage, Mapping):
        raise ConfigError(f"{label}: storage: must be a table")
    cfg = _build(DetectConfig, data["detect"], "detect", label, skip=("cluster", "storage"))
    ref = cfg.reference
    if ref.path:
        ref = ReferenceSettings(**{**ref.__dict__, "path": _resolve(ref.path, base)})
    return DetectConfig(**{
        **{f.name: getattr(cfg, f.name) for f in fields(cfg)},
        "images": tuple(_resolve(p, base) for p in cfg.images),
        "noise": tuple(_resolve(p, base) for p in cfg.noise),
        "coverage": tuple(_resolve(p, base) for p in cfg.coverage),
        "output": _resolve(cfg.output, base), "psf_file": _resolve(cfg.psf_file, base),
        "reference": ref, "cluster": cluster, "storage": dict(storage)})


def load_detect_config(path: str | os.PathLike[str]) -> DetectConfig:
    """Read and validate a ``dask-phot detect`` TOML file (paths relative to it)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such configuration file: {p}")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return detect_config_from_dict(data, base=p.resolve().parent, label=str(p))
