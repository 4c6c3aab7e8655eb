"""The ``[archive]`` table of a recipe: its keys, their checks and defaults.

Used by :func:`dask_phot.archive.recipe.load_recipe`. Unknown keys and bad values
raise :class:`RecipeError` naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from dask_phot.archive.heasarc import HEASARC_VO_URL
from dask_phot.archive.mast import GALEX_FILTERS, MAST_URL
from dask_phot.archive.region import SkyRegion
from dask_phot.archive.sia import IRSA_SIA_URL
from dask_phot.archive.tap import IRSA_TAP_URL
from dask_phot.config import ConfigError, Provenance, build_section, setting
from dask_phot.config.checks import NAME, Invalid, number, pair, strings, table

__all__ = ["ArchiveSpec", "ImagesSpec", "PriorsSpec", "RecipeError", "ServicesSpec",
           "XraySpec", "check_archive"]

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_COUNT = number(0, integer=True)


class RecipeError(ConfigError):
    """An unusable archive recipe: the message names the file and the dotted key."""

    __module__ = "dask_phot.archive"


def _columns(v: Any) -> str | tuple[str, ...]:
    """``"*"`` (or any single ADQL column list) or a list of column names."""
    if isinstance(v, str) and v.strip():
        return v
    if isinstance(v, str):
        raise Invalid("must be a non-empty string or a list of column names")
    return strings()(v)


def _service_name(kind: str, url: str) -> str:
    """``"IRSA TAP"``, ``"IRSA SIA"``, ``"MAST"``, ``"HEASARC"``; the kind for other hosts."""
    if kind in ("TAP", "SIA"):
        return f"IRSA {kind}" if "irsa.ipac.caltech.edu" in url else kind
    return kind


@dataclass(frozen=True, kw_only=True)
class ServicesSpec:
    """``[archive.services]``: base URLs of the services (a mirror, a test server...)."""

    tap: str = setting(IRSA_TAP_URL, check=NAME)
    sia: str = setting(IRSA_SIA_URL, check=NAME)
    mast: str = setting(MAST_URL, check=NAME)
    heasarc: str = setting(HEASARC_VO_URL, check=NAME)


@dataclass(frozen=True, kw_only=True)
class PriorsSpec:
    """``[archive.priors]``: the TAP query of the priors (see ``query_priors``).

    ``service`` is ``[archive.services] tap`` unless given.
    """

    service: str = ""
    table: str = setting(check=NAME)
    columns: tuple[str, ...] = setting(check=strings(empty=False))
    where: str = ""
    ra_column: str = setting("ra", check=NAME)
    dec_column: str = setting("dec", check=NAME)
    id_column: str = ""
    max_piece_radius_arcmin: float = setting(12.0, check=number(0, strict=True))
    maxrec: int = setting(0, check=_COUNT)

    @property
    def service_name(self) -> str:
        """Name of the service in messages."""
        return _service_name("TAP", self.service)


@dataclass(frozen=True, kw_only=True)
class _SiaKeys:
    """The keys of an ``[archive.images.<band>]`` table with ``source = "sia"``."""

    source: Literal["sia"] = "sia"
    service: str = ""
    collection: str = setting(check=NAME)
    bandpass: tuple[str, ...] = setting((), check=strings(empty=False))
    science: str = setting("science", check=NAME)
    noise: str = "uncertainty"
    noise_kind: Literal["uncertainty", "variance", "weight"] = "uncertainty"
    coverage: str = "coverage"
    cloud: bool = True


@dataclass(frozen=True, kw_only=True)
class _GalexKeys:
    """The keys of an ``[archive.images.<band>]`` table with ``source = "galex"``."""

    source: Literal["galex"] = "galex"
    service: str = ""
    filter: Literal["NUV", "FUV"] | None = None
    min_exptime: float = setting(40000.0, check=number(0, strict=True))
    deepest_only: bool = True


@dataclass(frozen=True)
class ImagesSpec:
    """``[archive.images.<band>]``: where one band's images come from."""

    band: str
    source: str
    service: str
    collection: str = ""
    bandpass: tuple[str, ...] = ()
    science: str = "science"
    noise: str = "uncertainty"
    noise_kind: str = "uncertainty"
    coverage: str = "coverage"
    cloud: bool = True
    galex_band: str = ""
    min_exptime: float = 40000.0
    deepest_only: bool = True

    @property
    def service_name(self) -> str:
        """Name of the service in messages."""
        return _service_name("SIA" if self.source == "sia" else "MAST", self.service)

    def group_key(self) -> tuple[Any, ...]:
        """Bands with the same key are found by one query."""
        if self.source == "sia":
            return ("sia", self.service, self.collection, self.science, self.noise,
                    self.noise_kind, self.coverage, self.cloud)
        return ("galex", self.service, self.min_exptime, self.deepest_only)


@dataclass(frozen=True, kw_only=True)
class XraySpec:
    """``[archive.xray]``: the HEASARC catalog to fetch (see ``xray_catalog``).

    ``service`` is ``[archive.services] heasarc`` unless given.
    """

    service: str = ""
    catalog: str = setting(check=NAME)
    radius_arcmin: float = setting(0.0, check=number(0))
    columns: str | tuple[str, ...] = setting("*", check=_columns)
    keep: tuple[str, ...] = setting((), check=strings())
    maxrec: int = setting(100_000, check=_COUNT)

    @property
    def service_name(self) -> str:
        """Name of the service in messages."""
        return _service_name("HEASARC", self.service)


@dataclass(frozen=True, kw_only=True)
class ArchiveSpec:
    """``[archive]``: the region, where the results go, and what to fetch."""

    center: tuple[float, float] = setting(check=pair)
    radius_arcmin: float | None = setting(None, check=number(0, strict=True))
    box_arcmin: tuple[float, float] | None = setting(None, check=pair)
    output_dir: str = setting("fetched", check=NAME)
    cache_dir: str = ""
    services: ServicesSpec = field(default_factory=ServicesSpec)
    priors: PriorsSpec = setting()
    images: dict[str, Any] = setting(factory=dict, check=table)
    xray: XraySpec | None = None


def _images(band: str, value: Any, services: ServicesSpec, origin: Provenance) -> ImagesSpec:
    where = f"archive.images.{band}"
    if not _NAME_RE.match(band):
        origin.fail(where, "band names are letters, digits and _")
    t = origin.table(where, value)
    kind = t.get("source", "galex" if band.lower() in GALEX_FILTERS else "sia")
    if kind not in ("sia", "galex"):
        origin.fail(f"{where}.source", f"must be 'sia' or 'galex', got {kind!r}")
    if kind == "sia":
        v = build_section(_SiaKeys, t, key=where, origin=origin)
        return ImagesSpec(band, "sia", v.service or services.sia, v.collection,
                          v.bandpass or (band.upper(),), v.science, v.noise, v.noise_kind,
                          v.coverage, v.cloud)
    g = build_section(_GalexKeys, t, key=where, origin=origin)
    if g.filter is None and band.lower() not in GALEX_FILTERS:
        origin.fail(f"{where}.filter", f"required for a band not named "
                                       f"{' or '.join(GALEX_FILTERS)} ('NUV' or 'FUV')")
    galex = {f: b for b, (f, _) in GALEX_FILTERS.items()}
    galex_band = galex[g.filter] if g.filter else band.lower()
    return ImagesSpec(band, "galex", g.service or services.mast, galex_band=galex_band,
                      min_exptime=g.min_exptime, deepest_only=g.deepest_only)


def _region(spec: ArchiveSpec, origin: Provenance) -> SkyRegion:
    if (spec.radius_arcmin is None) == (spec.box_arcmin is None):
        origin.fail("archive", "give radius_arcmin (a cone) or box_arcmin = [width, height] "
                               "(a box), not both or neither")
    ra, dec = spec.center
    try:
        if spec.radius_arcmin is not None:
            return SkyRegion.cone(ra, dec, spec.radius_arcmin / 60.0)
        width, height = spec.box_arcmin  # type: ignore[misc]
        return SkyRegion.box(ra, dec, width / 60.0, height / 60.0)
    except ValueError as exc:
        origin.fail("archive", str(exc))


def check_archive(value: Any, label: str) -> dict[str, Any]:
    """Check a recipe's ``[archive]`` table.

    Returns
    -------
    dict
        ``region`` (SkyRegion), ``output_dir`` and ``cache_dir`` (str),
        ``priors`` (PriorsSpec), ``images`` (tuple of ImagesSpec), ``xray``
        (XraySpec or None).
    """
    origin = Provenance(label, error=RecipeError)
    spec = build_section(ArchiveSpec, value, key="archive", origin=origin)
    services = spec.services
    priors = dataclasses.replace(spec.priors, service=spec.priors.service or services.tap)
    images = tuple(_images(b, t, services, origin) for b, t in spec.images.items())
    xray = spec.xray
    if xray is not None:
        xray = dataclasses.replace(xray, service=xray.service or services.heasarc)
    return {"region": _region(spec, origin), "output_dir": spec.output_dir,
            "cache_dir": spec.cache_dir, "priors": priors, "images": images, "xray": xray}
