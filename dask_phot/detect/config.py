"""The ``dask-phot detect CONFIG`` configuration: typed, validated, unknown keys are errors.

A TOML file with a ``[detect]`` table (and optional ``[detect.params]``,
``[detect.background]``, ``[detect.aperture]``, ``[detect.reference]``,
``[detect.cosmics]``, ``[detect.surveys.<name>]``, ``[cluster]`` and ``[storage]``
tables), merged over the packaged defaults
``dask_phot/data/detect.toml``, which documents every key. It is loaded by the
same mechanism as the run configuration (:mod:`dask_phot.config`): relative
paths are taken from the file's directory, ``DASK_PHOT__DETECT__<KEY>`` (and
``DASK_PHOT__CLUSTER__<KEY>``...) environment variables override, and
``[cluster]`` and ``[storage]`` are the run configuration's sections, checked
the same way. The mosaics are ``[detect] images`` (one catalog) or, for several
surveys in one run, a ``[detect.surveys.<name>]`` table per survey with its own
``images``, ``noise`` and ``coverage`` (one merged catalog per survey).

Examples
--------
>>> cfg = load_detect_config({"detect": {"images": ["/d/*.fits"],
...                                      "params": {"thresh": 3.0}}}, environ={})
>>> cfg.params.thresh, cfg.tile_size, cfg.aperture.radii
(3.0, 2048, (2.0, 4.0, 6.0, 8.0, 10.0))
>>> load_detect_config({"detect": {"images": ["x.fits"], "tile_sise": 10}}, environ={})
Traceback (most recent call last):
...
dask_phot.config.ConfigError: <dict>: detect.tile_sise: unknown key; known keys: images, noise, noise_kind, coverage, coverage_kind, surveys, group_by, group_pattern, output, tile_size, tile_overlap, merge_radius_arcsec, min_snr, gain, to_ujy, psf_file, params, background, aperture, reference, cosmics (did you mean 'tile_size'?)
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
from dask_phot.config.sections import section_keys, validate
from dask_phot.detect.extract import DetectionParams

__all__ = [
    "DETECT_PATHS",
    "ApertureSettings",
    "BackgroundSettings",
    "CosmicsSettings",
    "DetectConfig",
    "ReferenceSettings",
    "SurveyInputs",
    "load_detect_config",
]

#: Path-valued keys, taken from the configuration file's directory.
DETECT_PATHS = ("detect.images", "detect.noise", "detect.coverage", "detect.output",
                "detect.psf_file", "detect.reference.path", "cluster.performance_report",
                "detect.surveys.*.images", "detect.surveys.*.noise",
                "detect.surveys.*.coverage")
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


@dataclass(frozen=True, kw_only=True)
class CosmicsSettings:
    """``[detect.cosmics]``: cosmic-ray masks (:func:`~dask_phot.detect.cosmic_ray_mask`)
    computed in each tile where the coverage map says at most ``max_exposures``."""

    enabled: bool = False
    max_exposures: int = setting(1, check=number(1, integer=True))
    gain: float = setting(0.0, check=number(0))
    readnoise: float = setting(0.0, check=number(0))
    sigclip: float = setting(4.5, check=number(0, strict=True))
    sigfrac: float = setting(0.3, check=number(0, strict=True))
    objlim: float = setting(5.0, check=number(0, strict=True))
    niter: int = setting(4, check=number(1, integer=True))
    grow: int = setting(1, check=number(0, integer=True))


@dataclass(frozen=True, kw_only=True)
class SurveyInputs:
    """``[detect.surveys.<name>]``: one survey's mosaics (as the keys of ``[detect]``)."""

    images: tuple[str, ...] = setting(check=strings(empty=False))
    noise: tuple[str, ...] = setting((), check=strings())
    noise_kind: Literal["weight", "uncertainty", "variance", "none"] = "weight"
    coverage: tuple[str, ...] = setting((), check=strings())
    coverage_kind: Literal["count", "context"] = "count"
    archive: dict[str, Any] = setting(factory=dict, check=table)


def _group_by(v: Any) -> str:
    if not (isinstance(v, str) and (v in ("filename", "filter", "none")
                                    or v.startswith("header:"))):
        raise Invalid(f"must be 'filename', 'filter', 'none' or 'header:KEY', got {v!r}")
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

    images: tuple[str, ...] = setting((), check=strings())
    noise: tuple[str, ...] = setting((), check=strings())
    noise_kind: Literal["weight", "uncertainty", "variance", "none"] = "weight"
    coverage: tuple[str, ...] = setting((), check=strings())
    coverage_kind: Literal["count", "context"] = "count"
    surveys: dict[str, SurveyInputs] = setting(factory=dict, check=table)
    group_by: str = setting("filename", check=_group_by)
    group_pattern: str = setting(r"^(?P<group>.+?)(_(sci|drz|drc|i2d|img|mosaic))?$",
                                 check=_group_pattern)
    output: str = "detections"
    tile_size: int = setting(2048, check=number(64, integer=True))
    tile_overlap: int = setting(64, check=number(0, integer=True))
    merge_radius_arcsec: float = setting(0.3, check=number(0, strict=True))
    min_snr: float = setting(0.0, check=number(0))
    gain: float = setting(0.0, check=number(0))
    to_ujy: float = setting(0.0, check=number(0))
    psf_file: str = ""
    params: DetectionParams = field(default_factory=DetectionParams)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    aperture: ApertureSettings = field(default_factory=ApertureSettings)
    reference: ReferenceSettings = field(default_factory=ReferenceSettings)
    cosmics: CosmicsSettings = field(default_factory=CosmicsSettings)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    storage: dict[str, Any] = setting(factory=dict, check=table)

    def __post_init__(self) -> None:
        validate(self)
        if bool(self.images) == bool(self.surveys):
            raise ValueError("give the mosaics as detect.images or as [detect.surveys.<name>] "
                             "tables, not both or neither")

    def inputs(self) -> dict[str, SurveyInputs]:
        """The mosaics by survey; without surveys, ``images`` as the survey ``""``."""
        if self.surveys:
            return dict(self.surveys)
        return {"": SurveyInputs(images=self.images, noise=self.noise,
                                 noise_kind=self.noise_kind, coverage=self.coverage,
                                 coverage_kind=self.coverage_kind)}


def _surveys(value: Any, origin: Any) -> dict[str, SurveyInputs]:
    tables = origin.table("detect.surveys", value)
    out = {}
    for name, t in tables.items():
        if not re.match(r"^[A-Za-z0-9_.-]+$", str(name)):
            origin.fail(f"detect.surveys.{name}", "survey names are letters, digits, _ . -")
        out[str(name)] = build_section(SurveyInputs, t, key=f"detect.surveys.{name}",
                                       origin=origin)
    return out


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
    detect = d.get("detect", {})
    if "images" not in detect and not detect.get("surveys"):
        origin.fail("detect.images", "required (the mosaics to detect sources on), or "
                                     "[detect.surveys.<name>] tables", here=True)
    cluster = build_section(ClusterConfig, d.get("cluster", {}), key="cluster", origin=origin)
    storage = check_storage(d.get("storage", {}), origin, anon_default=None)
    origin.known("detect", detect, section_keys(DetectConfig, ("cluster", "storage")))
    surveys = _surveys(detect.get("surveys", {}), origin)
    detect = {k: v for k, v in detect.items() if k != "surveys"}
    return build_section(DetectConfig, detect, key="detect", origin=origin,
                         skip=("cluster", "storage", "surveys"),
                         extra={"cluster": cluster, "storage": storage, "surveys": surveys})
