"""The ``dask-phot detect CONFIG`` configuration: typed, validated, unknown keys are errors.

A TOML file with a ``[detect]`` table (and optional ``[detect.params]``,
``[detect.background]``, ``[detect.aperture]``, ``[detect.reference]``,
``[cluster]`` and ``[storage]`` tables), merged over the packaged defaults
``dask_phot/data/detect.toml``, which documents every key. It is loaded by the
same mechanism as the run configuration (:mod:`dask_phot.config`): relative
paths are taken from the file's directory, ``DASK_PHOT__DETECT__<KEY>`` (and
``DASK_PHOT__CLUSTER__<KEY>``...) environment variables override, and
``[cluster]`` and ``[storage]`` are the run configuration's sections, checked
the same way.

Examples
--------
>>> cfg = load_detect_config({"detect": {"images": ["/d/*.fits"],
...                                      "params": {"thresh": 3.0}}}, environ={})
>>> cfg.params.thresh, cfg.tile_size, cfg.aperture.radii
(3.0, 2048, (2.0, 4.0, 6.0, 8.0, 10.0))
>>> load_detect_config({"detect": {"images": ["x.fits"], "tile_sise": 10}}, environ={})
Traceback (most recent call last):
...
dask_phot.config.ConfigError: <dict>: detect.tile_sise: unknown key; known keys: images, noise, noise_kind, coverage, group_by, group_pattern, output, tile_size, tile_overlap, merge_radius_arcsec, gain, to_ujy, psf_file, params, background, aperture, reference (did you mean 'tile_size'?)
"""  # noqa: E501

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dask_phot.config import ClusterConfig, build_section, check_storage, setting
from dask_phot.config.checks import Invalid, number, strings, table
from dask_phot.config.layers import load_layers
from dask_phot.config.sections import validate
from dask_phot.detect.extract import DetectionParams

__all__ = [
    "DETECT_PATHS",
    "ApertureSettings",
    "BackgroundSettings",
    "DetectConfig",
    "ReferenceSettings",
    "load_detect_config",
]

#: Path-valued keys, taken from the configuration file's directory.
DETECT_PATHS = ("detect.images", "detect.noise", "detect.coverage", "detect.output",
                "detect.psf_file", "detect.reference.path", "cluster.performance_report")
_SECTIONS = ("detect", "cluster", "storage")


@dataclass(frozen=True, kw_only=True)
class BackgroundSettings:
    """``[detect.background]``: :func:`~dask_phot.detect.measure_background` options."""

    box_size: int = setting(64, check=number(1, integer=True))
    filter_size: int = setting(3, check=number(1, integer=True))
    mask_sources: bool = True


@dataclass(frozen=True, kw_only=True)
class ApertureSettings:
    """``[detect.aperture]``: :func:`~dask_phot.aperture.measure_sources` options."""

    radii: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0)
    annulus: tuple[float, ...] = (10.0, 15.0)
    kron_factor: float = setting(2.5, check=number(0, strict=True))
    min_kron_radius: float = setting(3.5, check=number(0))
    min_diameter: float = setting(3.5, check=number(0))

    def __post_init__(self) -> None:
        if not self.radii or min(self.radii) <= 0:
            raise ValueError(f"radii must be > 0, got {list(self.radii)}")
        if len(self.annulus) not in (0, 2) or (self.annulus and not
                                               0 <= self.annulus[0] < self.annulus[1]):
            raise ValueError(f"annulus must be [] or [r_in, r_out] with r_in < r_out, "
                             f"got {list(self.annulus)}")


@dataclass(frozen=True, kw_only=True)
class ReferenceSettings:
    """``[detect.reference]``: a reference catalog to match (and align) to."""

    path: str = ""
    radius_arcsec: float = setting(1.0, check=number(0, strict=True))
    ra_column: str = "ra"
    dec_column: str = "dec"
    columns: tuple[str, ...] = setting((), check=strings())
    apply_shift: bool = False


def _group_by(v: Any) -> str:
    if not (isinstance(v, str) and (v in ("filename", "none") or v.startswith("header:"))):
        raise Invalid(f"must be 'filename', 'none' or 'header:KEY', got {v!r}")
    return v


def _group_pattern(v: Any) -> str:
    if not isinstance(v, str) or "(?P<group>" not in v:
        raise Invalid(f"must be a regular expression with a named group (?P<group>...), "
                      f"got {v!r}")
    try:
        re.compile(v)
    except re.error as exc:
        raise Invalid(f"not a regular expression ({exc}): {v!r}") from None
    return v


@dataclass(frozen=True, kw_only=True)
class DetectConfig:
    """A validated ``dask-phot detect`` configuration (see the module docstring).

    ``cluster`` and ``storage`` come from the file's ``[cluster]`` and
    ``[storage]`` tables; the other fields are the keys of ``[detect]``.
    """

    images: tuple[str, ...] = setting(check=strings(empty=False))
    noise: tuple[str, ...] = setting((), check=strings())
    noise_kind: Literal["weight", "uncertainty", "variance", "none"] = "weight"
    coverage: tuple[str, ...] = setting((), check=strings())
    group_by: str = setting("filename", check=_group_by)
    group_pattern: str = setting(r"^(?P<group>.+?)(_(sci|drz|drc|i2d|img|mosaic))?$",
                                 check=_group_pattern)
    output: str = "detections"
    tile_size: int = setting(2048, check=number(64, integer=True))
    tile_overlap: int = setting(64, check=number(0, integer=True))
    merge_radius_arcsec: float = setting(0.3, check=number(0, strict=True))
    gain: float = setting(0.0, check=number(0))
    to_ujy: float = setting(0.0, check=number(0))
    psf_file: str = ""
    params: DetectionParams = field(default_factory=DetectionParams)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    aperture: ApertureSettings = field(default_factory=ApertureSettings)
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    storage: dict[str, Any] = setting(factory=dict, check=table)

    def __post_init__(self) -> None:
        validate(self)


def load_detect_config(
    path_or_dict: str | os.PathLike[str] | Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> DetectConfig:
    """Read and validate a ``dask-phot detect`` configuration.

    Parameters
    ----------
    path_or_dict : path-like or mapping
        A TOML file (relative paths are taken from its directory), or its
        content as a dict.
    overrides : mapping, optional
        Applied last; nested or dotted (``{"cluster.n_workers": 1}``) keys.
    environ : mapping, optional
        Environment to read ``DASK_PHOT__*`` overrides from; default ``os.environ``.

    Raises
    ------
    ConfigError
        Unreadable file, unknown sections or keys, wrong types or values; the
        message names the file and the dotted key.
    """
    layers = load_layers(path_or_dict, defaults="detect", sections=_SECTIONS,
                         paths=DETECT_PATHS, environ=environ, overrides=overrides)
    d, origin = layers.merged, layers.origin
    origin.known("", d, _SECTIONS, what="section")
    if "images" not in d.get("detect", {}):
        origin.fail("detect.images", "required (the mosaics to detect sources on)", here=True)
    cluster = build_section(ClusterConfig, d.get("cluster", {}), key="cluster", origin=origin)
    storage = check_storage(d.get("storage", {}), origin, anon_default=None)
    return build_section(DetectConfig, d["detect"], key="detect", origin=origin,
                         skip=("cluster", "storage"),
                         extra={"cluster": cluster, "storage": storage})
